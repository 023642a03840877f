"""What staff tripped over: a command run from another folder, a mistyped FOLLOW_UP_OF,
a demo on a port already taken, and a demo that installed the developers' tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, RunCli
from tests.smtp import SmtpServer
from tests.test_follow_up import FIRST, REMINDER


@pytest.mark.parametrize(
    ("command", "said"),
    [
        pytest.param(["check"], "templates: no such folder", id="check-no-templates"),
        pytest.param(["preview"], "templates: no such folder", id="preview-no-templates"),
        pytest.param(["report"], "no send log yet", id="report-no-log"),
    ],
)
def test_run_from_another_folder_a_command_says_no_env_was_found_there(
    run_cli: RunCli, project: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], said: str
) -> None:
    elsewhere = project / "Downloads"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run_cli(*command)
    assert said in result.stdout + result.stderr
    assert (
        f"Note: no .env in {elsewhere}, so every setting not in the environment is its default: "
        "run outreach in the campaign's folder, or give --env-file"
    ) in result.stderr


def test_in_the_campaign_s_folder_with_its_env_there_is_no_such_note(
    run_cli: RunCli, project: Path
) -> None:
    (project / ".env").write_text("CAMPAIGN=code-of-conduct-2015\n")
    result = run_cli("report")
    assert "no send log yet" in result.stdout
    assert "Note: no .env" not in result.stderr


def test_a_mistyped_follow_up_of_names_the_campaigns_the_log_has(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    first = run_cli("send", "--yes", "--only", "CHL", env=smtp_server.env(CAMPAIGN=FIRST))
    assert first.code == 0, first.stderr
    for command in (["send", "--yes"], ["preview"], ["check"]):
        result = run_cli(
            *command, env=smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF="code-of-conduct-2051")
        )
        assert result.code == 2, result.stdout + result.stderr
        assert (
            "Error: FOLLOW_UP_OF='code-of-conduct-2051': the send log logs/send-log.csv has no "
            f"letter of that campaign (it has: {FIRST}); check the name"
        ) in result.stderr
        assert "Nothing to send" not in result.stdout
    assert len(smtp_server.received) == 1


def test_a_demo_on_a_port_already_taken_says_how_to_choose_another(
    run_cli: RunCli, project: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("demo", "--port", str(port))
    assert result.code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert (
        f"choose another port: make demo DEMO_PORT={port + 1} (or outreach demo --port {port + 1})"
    ) in result.stderr


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """The project's Makefile and pyproject.toml in a folder with no .venv yet."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("target", ["demo", "preview", "check", "send", "report", "inbox"])
def test_staff_commands_install_outreach_without_the_developer_tools(
    fresh_clone: Path, target: str
) -> None:
    """What `make demo` would run on a fresh clone (``make -n``: nothing is run)."""
    shown = subprocess.run(
        ["make", "-n", target],
        cwd=fresh_clone,
        env={**os.environ, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet -e .\n" in shown
    assert "[dev]" not in shown


@pytest.mark.parametrize("target", ["test", "lint"])
def test_developer_commands_install_the_developer_tools(fresh_clone: Path, target: str) -> None:
    shown = subprocess.run(
        ["make", "-n", target],
        cwd=fresh_clone,
        env={**os.environ, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet -e '.[dev]'" in shown
