"""Looking before sending: previews and the check, from the command line."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

from tests.conftest import RunCli
from tests.smtp import SmtpServer


def test_preview_writes_three_files_per_letter_and_an_index(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    result = run_cli("preview", env=smtp_server.env())
    assert result.code == 0, result.stderr
    folder = project / "out" / "preview"
    for suffix in (".eml", ".html", ".txt"):
        assert len(list(folder.glob(f"*{suffix}"))) == 195 + (suffix == ".html")
    assert (folder / "index.html").exists()
    assert "Wrote 195 letters to out/preview/" in result.stdout
    chile = message_from_bytes((folder / "CHL.eml").read_bytes(), policy=policy.default)
    assert chile["To"] == "Permanent Mission of Chile to the United Nations <chl@missions.example>"
    # A preview never talks to a server, even when one is configured.
    assert smtp_server.handler.connections == 0


def test_preview_without_any_settings_marks_the_sender(run_cli: RunCli, project: Path) -> None:
    result = run_cli("preview", "--only", "CHL")
    assert result.code == 0, result.stderr
    eml = (project / "out" / "preview" / "CHL.eml").read_text()
    assert "From: MAIL_FROM is not set <mail-from-not-set@sender.invalid>" in eml


def test_preview_only_limit_and_out(run_cli: RunCli, project: Path) -> None:
    result = run_cli("preview", "--only", "CHL,VAT,BOL", "--limit", "2", "--out", "look")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in (project / "look").glob("*.eml")) == ["BOL.eml", "CHL.eml"]


def test_a_failed_preview_keeps_the_last_good_one(run_cli: RunCli, project: Path) -> None:
    assert run_cli("preview", "--only", "CHL").code == 0
    (project / "templates" / "en" / "letter.txt.j2").write_text("{{ nickname }}")
    result = run_cli("preview")
    assert result.code == 2
    assert "Error: templates/en/letter.txt.j2, line 1: 'nickname' is undefined" in result.stderr
    assert result.stderr.count("Error:") == 1  # one broken template is one line, not 195
    assert (project / "out" / "preview" / "CHL.eml").exists()


def test_preview_never_overwrites_a_folder_it_did_not_write(run_cli: RunCli, project: Path) -> None:
    documents = project / "documents"
    documents.mkdir()
    (documents / "budget.xlsx").write_text("precious")
    result = run_cli("preview", "--out", "documents")
    assert result.code == 2
    assert "holds files that outreach did not write" in result.stderr
    assert (documents / "budget.xlsx").read_text() == "precious"


def test_check_on_the_shipped_campaign(run_cli: RunCli) -> None:
    result = run_cli("check")
    assert result.code == 0, result.stderr
    assert "195 in contacts.csv" in result.stdout
    assert "195 are placeholders" in result.stdout


def test_check_lists_every_problem_and_exits_2(run_cli: RunCli, project: Path) -> None:
    contacts = project / "contacts.csv"
    text = contacts.read_text(encoding="utf-8")
    text = text.replace("chl@missions.example", "chl@@missions.example")
    text = text.replace("fra@missions.example", "kenya@missions.example;")
    text = text.replace("ken@missions.example", "kenya@missions.example")
    contacts.write_text(text, encoding="utf-8")
    result = run_cli("check")
    assert result.code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2
    assert "contacts.csv, line 36, column 6 (email): 'chl@@missions.example'" in errors[0]
    assert "kenya@missions.example is also the address of FRA on line" in errors[1]
    assert "Traceback" not in result.stderr


def test_a_preview_again_is_the_preview_anew(run_cli: RunCli, project: Path) -> None:
    """A later preview replaces the files of the one before, and only those."""
    assert run_cli("preview").code == 0
    (project / "out" / "preview" / "notes.txt").write_text("mine")
    assert run_cli("preview", "--only", "CHL,BOL").code == 0
    folder = project / "out" / "preview"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".outreach-preview",
        "BOL.eml",
        "BOL.html",
        "BOL.txt",
        "CHL.eml",
        "CHL.html",
        "CHL.txt",
        "index.html",
        "notes.txt",
    ]
    assert (folder / "notes.txt").read_text() == "mine"
    assert run_cli("preview", "--only", "CHL,BOL", "--out", "fresh").code == 0
    for name in ("BOL.html", "BOL.txt", "CHL.html", "CHL.txt", "index.html"):
        assert (folder / name).read_bytes() == (project / "fresh" / name).read_bytes(), name
    # Nothing is left beside the preview.
    assert sorted(p.name for p in (project / "out").iterdir()) == ["preview"]
