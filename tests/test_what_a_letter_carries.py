"""What a letter carries besides its words: never the settings (passwords and all),
never an empty file, and ``check`` names every file a letter carries, with its size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunCli, write_csv
from tests.smtp import SmtpServer

SETTINGS = "SMTP_PASSWORD=hunter2-from-dotenv\n"


@pytest.mark.parametrize(
    ("cell", "what"),
    [
        pytest.param(".env", "a hidden file (.env)", id="dot-env"),
        pytest.param("{{ '.e' ~ 'nv' }}", "a hidden file (.env)", id="dot-env-from-a-template"),
        pytest.param("./.env", "a hidden file (.env)", id="dot-slash-dot-env"),
        pytest.param("annexes/../.env", "a hidden file (.env)", id="through-a-folder"),
        pytest.param(".git/config", "a hidden file (.git)", id="inside-git"),
        pytest.param("production.env", "a settings file (production.env)", id="other-env-file"),
    ],
)
def test_a_contact_cannot_attach_the_settings_or_a_hidden_file(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, cell: str, what: str
) -> None:
    (project / ".env").write_text(SETTINGS)
    (project / "production.env").write_text(SETTINGS)
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("[remote]\n")
    (project / "annexes").mkdir()
    write_csv(
        project / "contacts.csv",
        f"id,country,email,attachments\nCHL,Chile,chl@missions.example,{cell}\n",
    )
    for command in (["check"], ["send", "--yes"]):
        result = run_cli(*command, env=smtp_server.env())
        assert result.code == 2, result.stdout + result.stderr
        assert "contact CHL (line 2), attachments: " in result.stderr
        assert f"is {what}, which may hold passwords" in result.stderr
        assert "Letters are in order" not in result.stdout
    assert smtp_server.received == []


def test_the_campaign_s_attachments_cannot_be_the_settings_either(
    run_cli: RunCli, project: Path
) -> None:
    (project / ".env").write_text(SETTINGS)
    result = run_cli("check", env={"ATTACHMENTS": ".env"})
    assert result.code == 2
    assert "ATTACHMENTS: '.env' is a hidden file (.env), which may hold passwords" in (
        result.stderr
    )


@pytest.mark.parametrize("setting", ["ATTACHMENTS", "contacts"])
def test_an_empty_file_is_refused_before_anything_is_sent(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, setting: str
) -> None:
    (project / "annexes").mkdir()
    (project / "annexes" / "annex.pdf").write_bytes(b"")
    if setting == "contacts":
        write_csv(
            project / "contacts.csv",
            "id,country,email,attachments\nCHL,Chile,chl@missions.example,annexes/annex.pdf\n",
        )
        env = smtp_server.env()
    else:
        env = smtp_server.env(ATTACHMENTS="annexes/annex.pdf")
    for command in (["check"], ["send", "--yes", "--only", "CHL"]):
        result = run_cli(*command, env=env)
        assert result.code == 2, result.stdout + result.stderr
        assert "'annexes/annex.pdf' is empty (0 bytes)" in result.stderr
        assert "in order" not in result.stdout
    assert smtp_server.received == []


def test_check_names_each_file_a_letter_carries_with_its_size(
    run_cli: RunCli, project: Path
) -> None:
    (project / "annexes").mkdir()
    (project / "annexes" / "code-of-conduct.pdf").write_bytes(b"%PDF" * 30_000)
    (project / "annexes" / "note.txt").write_bytes(b"a short note\n")
    write_csv(
        project / "contacts.csv",
        "id,country,email,attachments\n"
        "CHL,Chile,chl@missions.example,annexes/note.txt\n"
        "FRA,France,fra@missions.example,\n",
    )
    result = run_cli("check", env={"ATTACHMENTS": "annexes/code-of-conduct.pdf"})
    assert result.code == 0, result.stderr
    assert "Files:     code-of-conduct.pdf (117 KB): every letter\n" in result.stdout
    assert "           note.txt (13 bytes): CHL\n" in result.stdout


def test_check_says_when_no_letter_carries_a_file(run_cli: RunCli) -> None:
    result = run_cli("check")
    assert result.code == 0, result.stderr
    assert "Files:     none attached" in result.stdout
