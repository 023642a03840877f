"""Looking before sending: previews and the check, from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunCli, write_csv
from tests.smtp import SmtpServer, parse


def test_preview_writes_three_files_per_letter_and_an_index(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    result = run_cli("preview", env=smtp_server.env())
    assert result.code == 0, result.stderr
    folder = project / "out" / "preview"
    for suffix in (".eml", ".html", ".txt"):
        assert len(list((folder / "letters").glob(f"*{suffix}"))) == 195
    assert (folder / "index.html").exists()
    assert "Wrote 195 letters to out/preview/" in result.stdout
    data = (folder / "letters" / "CHL.eml").read_bytes()
    chile = parse(data)
    assert chile["To"] == "Permanent Mission of Chile to the United Nations <chl@missions.example>"
    # A preview never talks to a server, even when one is configured.
    assert smtp_server.handler.connections == 0


def test_preview_without_any_settings_marks_the_sender(run_cli: RunCli, project: Path) -> None:
    result = run_cli("preview", "--only", "CHL")
    assert result.code == 0, result.stderr
    eml = (project / "out" / "preview" / "letters" / "CHL.eml").read_text()
    assert "From: MAIL_FROM is not set <mail-from-not-set@sender.invalid>" in eml


def test_preview_only_limit_and_out(run_cli: RunCli, project: Path) -> None:
    result = run_cli("preview", "--only", "CHL,VAT,BOL", "--limit", "2", "--out", "look")
    assert result.code == 0, result.stderr
    letters = sorted(p.name for p in (project / "look" / "letters").glob("*.eml"))
    assert letters == ["BOL.eml", "CHL.eml"]


def test_a_failed_preview_keeps_the_last_good_one(run_cli: RunCli, project: Path) -> None:
    assert run_cli("preview", "--only", "CHL").code == 0
    (project / "templates" / "en" / "letter.txt.j2").write_text("{{ nickname }}")
    result = run_cli("preview")
    assert result.code == 2
    assert "Error: templates/en/letter.txt.j2, line 1: 'nickname' is undefined" in result.stderr
    assert result.stderr.count("Error:") == 1  # one broken template is one line, not 195
    assert (project / "out" / "preview" / "letters" / "CHL.eml").exists()


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


def test_a_preview_again_replaces_its_own_files_and_only_those(
    run_cli: RunCli, project: Path
) -> None:
    assert run_cli("preview").code == 0
    folder = project / "out" / "preview"
    (folder / "notes.txt").write_text("mine")
    (folder / "letters" / "draft.docx").write_text("mine too")
    assert run_cli("preview", "--only", "CHL,BOL").code == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        ".outreach-preview",
        "index.html",
        "letters",
        "notes.txt",
    ]
    assert sorted(p.name for p in (folder / "letters").iterdir()) == [
        "BOL.eml",
        "BOL.html",
        "BOL.txt",
        "CHL.eml",
        "CHL.html",
        "CHL.txt",
        "draft.docx",
    ]
    assert (folder / "notes.txt").read_text() == "mine"
    assert run_cli("preview", "--only", "CHL,BOL", "--out", "fresh").code == 0
    for name in ("BOL.html", "BOL.txt", "CHL.html", "CHL.txt"):
        fresh = project / "fresh" / "letters" / name
        assert (folder / "letters" / name).read_bytes() == fresh.read_bytes(), name
    # Nothing is left beside the preview.
    assert sorted(p.name for p in (project / "out").iterdir()) == ["preview"]


@pytest.mark.parametrize(
    ("preview_dir", "log_dir"),
    [
        pytest.param("out", "out/logs", id="log-inside-preview"),
        pytest.param("out/logs/preview", "out/logs", id="preview-inside-log"),
        pytest.param("out", "out", id="the-same-folder"),
        pytest.param("out/./preview/../", "out", id="the-same-folder-spelt-otherwise"),
    ],
)
def test_preview_never_shares_a_folder_with_the_send_log(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, preview_dir: str, log_dir: str
) -> None:
    """Preview, send, preview, send: the letters went once, and the log is whole."""
    env = smtp_server.env(PREVIEW_DIR=preview_dir, LOG_DIR=log_dir)
    result = run_cli("preview", "--only", "CHL,FRA,KEN", env=env)
    assert result.code == 2
    named = f"PREVIEW_DIR='{Path(preview_dir)}' and LOG_DIR='{Path(log_dir)}' overlap"
    assert named in result.stderr
    assert run_cli("send", "--yes", "--only", "CHL,FRA,KEN", env=env).code == 0
    log = project / log_dir / "send-log.csv"
    before = log.read_bytes()
    assert run_cli("preview", "--only", "CHL", env=env).code == 2
    assert run_cli("send", "--yes", "--only", "CHL,FRA,KEN", env=env).code == 0
    assert len(smtp_server.received) == 3
    assert log.read_bytes() == before


def test_a_preview_folder_that_is_a_symbolic_link_is_refused(
    run_cli: RunCli, project: Path
) -> None:
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    (project / "out").mkdir()
    (project / "out" / "preview").symlink_to(elsewhere)
    result = run_cli("preview", "--only", "CHL")
    assert result.code == 2
    assert "Error: PREVIEW_DIR='out/preview' is a symbolic link" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_an_id_named_index_does_not_take_the_gallery_s_place(
    run_cli: RunCli, project: Path
) -> None:
    write_csv(project / "contacts.csv", "id,country,email\nindex,Chile,chl@missions.example\n")
    assert run_cli("preview").code == 0, run_cli("preview").stderr
    folder = project / "out" / "preview"
    assert "Preview of campaign" in (folder / "index.html").read_text()
    assert "Excellency" in (folder / "letters" / "index.html").read_text()


def test_a_marker_edited_to_name_other_files_removes_none_of_them(
    run_cli: RunCli, project: Path
) -> None:
    assert run_cli("preview", "--only", "CHL").code == 0
    precious = project / "precious.txt"
    precious.write_text("keep")
    marker = project / "out" / "preview" / ".outreach-preview"
    marker.write_text(marker.read_text() + "../../precious.txt\nletters/../../precious.txt\n")
    assert run_cli("preview", "--only", "BOL").code == 0
    assert precious.read_text() == "keep"
