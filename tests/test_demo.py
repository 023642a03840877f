"""`make demo` on a fresh machine: the whole job, on this machine only."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RunCli, write_csv
from tests.smtp import free_port, parse

THREE = "id,country,email\nCHL,Chile,chl@missions.example\nFRA,France,fra@missions.example\n"


def test_the_demo_sends_every_letter_to_a_local_sink_and_reports(
    run_cli: RunCli, project: Path
) -> None:
    result = run_cli("demo", "--port", str(free_port()))
    assert result.code == 0, result.stdout + result.stderr
    assert "Done: 195 sent." in result.stdout
    sink = sorted((project / "out" / "demo" / "sink").glob("*.eml"))
    assert len(sink) == 195
    first = parse(sink[0].read_bytes())
    assert first["X-Sink-Envelope-From"] == "campaign@coalition.example"
    assert (project / "out" / "demo" / "preview" / "index.html").exists()
    assert "nothing left this machine" in result.stdout


def test_the_demo_reads_neither_env_nor_the_environment(run_cli: RunCli, project: Path) -> None:
    """A broken .env, and settings for a real server in the environment, change nothing."""
    write_csv(project / "contacts.csv", THREE)
    (project / ".env").write_text("SMTP_PASSWORD='never closed\nSMTP_HOST=smtp.real.org\n")
    result = run_cli(
        "demo",
        "--port",
        str(free_port()),
        env={"SMTP_HOST": "192.0.2.1", "CAMPAIGN": "real", "LOG_DIR": "logs"},
    )
    assert result.code == 0, result.stdout + result.stderr
    assert "Done: 2 sent." in result.stdout
    assert not (project / "logs").exists()


def test_the_demo_runs_again_from_scratch(run_cli: RunCli, project: Path) -> None:
    write_csv(project / "contacts.csv", THREE)
    port = str(free_port())
    assert run_cli("demo", "--port", port).code == 0
    again = run_cli("demo", "--port", port)
    assert again.code == 0, again.stdout + again.stderr
    assert "Done: 2 sent." in again.stdout
    assert len(list((project / "out" / "demo" / "sink").glob("*.eml"))) == 2


def test_the_demo_leaves_a_folder_it_did_not_write_alone(run_cli: RunCli, project: Path) -> None:
    (project / "out" / "demo").mkdir(parents=True)
    (project / "out" / "demo" / "notes.txt").write_text("mine")
    result = run_cli("demo", "--port", str(free_port()))
    assert result.code == 2
    assert "out/demo: exists and was not written by outreach demo" in result.stderr
    assert (project / "out" / "demo" / "notes.txt").read_text() == "mine"
