"""Files sent with the letter: the campaign's own and each contact's, byte for byte,
or a clear refusal before anything is sent."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from outreach.sendlog import read_log
from tests.conftest import RunCli, write_csv
from tests.smtp import SmtpServer, parse

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
CSV = b"name,based_in\nBurma Partnership,\n"


@pytest.fixture
def files(project: Path) -> Path:
    folder = project / "annexes"
    folder.mkdir()
    (folder / "code-of-conduct.pdf").write_bytes(PDF)
    (folder / "annex-en.csv").write_bytes(CSV)
    (folder / "Code de conduite — annexe.pdf").write_bytes(PDF[:500])
    return folder


def test_a_letter_with_two_attachments_arrives_with_both_byte_for_byte(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, files: Path
) -> None:
    write_csv(
        project / "contacts.csv",
        "id,country,email,attachments\n"
        "CHL,Chile,chl@missions.example,annexes/annex-{{ language }}.csv\n"
        "FRA,France,fra@missions.example,\n",
    )
    env = smtp_server.env(ATTACHMENTS="annexes/code-of-conduct.pdf")
    result = run_cli("send", "--yes", env=env)
    assert result.code == 0, result.stdout + result.stderr
    chile, france = (parse(r.data) for r in smtp_server.received)
    assert chile.get_content_type() == "multipart/mixed"
    body, *attached = chile.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [(a.get_filename(), a.get_content_type()) for a in attached] == [
        ("code-of-conduct.pdf", "application/pdf"),
        ("annex-en.csv", "text/csv"),
    ]
    assert [a.get_payload(decode=True) for a in attached] == [PDF, CSV]
    assert [a.get_filename() for a in france.iter_attachments()] == ["code-of-conduct.pdf"]


def test_a_file_name_that_is_not_ascii_is_encoded_and_reads_back(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, files: Path
) -> None:
    env = smtp_server.env(ATTACHMENTS="annexes/Code de conduite — annexe.pdf")
    assert run_cli("send", "--yes", "--only", "CHL", env=env).code == 0
    (received,) = smtp_server.received
    assert b"filename*=utf-8''Code%20de%20conduite%20%E2%80%94%20annexe.pdf" in received.data
    (attached,) = parse(received.data).iter_attachments()
    assert attached.get_filename() == "Code de conduite — annexe.pdf"
    assert attached.get_payload(decode=True) == PDF[:500]


@pytest.mark.parametrize(
    ("cell", "make", "problem"),
    [
        pytest.param("annexes/missing.pdf", None, "no such file", id="missing"),
        pytest.param("annexes", None, "is a folder, not a file", id="a-folder"),
        pytest.param("annexes/pipe", "fifo", "is not a regular file", id="not-a-file"),
        pytest.param(
            "annexes/elsewhere.pdf", "link-out", "lies outside the working folder", id="link-out"
        ),
        pytest.param("../outside.pdf", "outside", "lies outside the working folder", id="dot-dot"),
        pytest.param(
            "annexes/huge.pdf",
            "huge",
            "is 1.0 MB, more than the 1 MB a letter may carry",
            id="too-large",
        ),
    ],
)
def test_a_file_that_cannot_go_is_refused_naming_contact_column_and_path(
    run_cli: RunCli,
    project: Path,
    smtp_server: SmtpServer,
    files: Path,
    cell: str,
    make: str | None,
    problem: str,
) -> None:
    if make == "fifo":
        os.mkfifo(files / "pipe")
    elif make == "link-out":
        (project.parent / "secret.pdf").write_bytes(b"not for missions")
        (files / "elsewhere.pdf").symlink_to(project.parent / "secret.pdf")
    elif make == "outside":
        (project.parent / "outside.pdf").write_bytes(b"x")
    elif make == "huge":
        (files / "huge.pdf").write_bytes(b"x" * (1024 * 1024 + 1))
    write_csv(
        project / "contacts.csv", f"id,country,email,attachments\nCHL,Chile,chl@m.example,{cell}\n"
    )
    env = smtp_server.env(MAX_MESSAGE_MB="1")
    for command in (["check"], ["send", "--yes"]):
        result = run_cli(*command, env=env)
        assert result.code == 2, result.stdout + result.stderr
        assert f"Error: contact CHL (line 2), attachments: '{cell}' {problem}" in result.stderr
    assert smtp_server.received == []
    assert read_log(project / "logs" / "send-log.csv") == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        pytest.param(
            "annex\nBcc: all@example.org.pdf", "holds the control character U+000A", id="newline"
        ),
        pytest.param("annex\r.pdf", "holds the control character U+000D", id="carriage-return"),
        pytest.param("annex\u2028.pdf", "holds the control character U+2028", id="line-separator"),
        pytest.param("=?utf-8?q?annex?=.pdf", "holds an RFC 2047 encoded-word", id="encoded-word"),
    ],
)
def test_a_file_whose_name_would_break_the_headers_is_refused(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, files: Path, name: str, problem: str
) -> None:
    """A file name goes into the letter's headers, where it must not start a header of its own."""
    (files / name).write_bytes(PDF)
    quoted = '"annexes/' + name + '"'
    write_csv(
        project / "contacts.csv",
        f"id,country,email,attachments\nCHL,Chile,chl@m.example,{quoted}\n",
    )
    for command in (["check"], ["send", "--yes"]):
        result = run_cli(*command, env=smtp_server.env())
        assert result.code == 2, result.stdout + result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: contact CHL (line 2), attachments: 'annexes/")
        assert f"has a name that {problem}" in line
    assert smtp_server.received == []


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        pytest.param(
            "annexes/{{ 1 / 0 }}.pdf", "cannot be rendered (division by zero)", id="error"
        ),
        pytest.param(
            "annexes/{{ nothing }}.pdf", "cannot be rendered ('nothing' is", id="undefined"
        ),
        pytest.param("{{ 'a'|center(10**12) }}", "is too large to render", id="huge"),
        pytest.param(
            "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
            "is too large to render",
            id="recursive-macro",
        ),
    ],
)
def test_a_cell_that_cannot_be_rendered_is_one_line_naming_contact_and_column(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, cell: str, problem: str
) -> None:
    write_csv(
        project / "contacts.csv",
        f'id,country,email,attachments\nCHL,Chile,chl@m.example,"{cell}"\n',
    )
    for command in (["check"], ["send", "--yes"]):
        result = run_cli(*command, env=smtp_server.env())
        assert result.code == 2, result.stdout + result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"Error: contact CHL (line 2), attachments: {cell!r} {problem}")
    assert smtp_server.received == []


def test_a_campaign_wide_file_that_cannot_go_names_the_setting(
    run_cli: RunCli, project: Path
) -> None:
    result = run_cli("check", env={"ATTACHMENTS": "annexes/none.pdf"})
    assert result.code == 2
    assert "Error: ATTACHMENTS: 'annexes/none.pdf' no such file" in result.stderr


def test_a_letter_too_large_with_all_its_files_stops_the_run_before_anything_is_sent(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, files: Path
) -> None:
    """Each file is under the limit; base64 and both together are not."""
    (files / "a.bin").write_bytes(os.urandom(450_000))
    (files / "b.bin").write_bytes(os.urandom(450_000))
    env = smtp_server.env(ATTACHMENTS="annexes/a.bin;annexes/b.bin", MAX_MESSAGE_MB="1")
    result = run_cli("send", "--yes", "--only", "CHL,FRA", env=env)
    assert result.code == 2
    assert re.search(
        r"contact CHL \(line \d+\): with its attachments the letter is 1\.\d MB, more than "
        r"MAX_MESSAGE_MB=1",
        result.stderr,
    ), result.stderr
    assert smtp_server.received == []


def test_the_preview_holds_the_files_and_the_gallery_lists_them(
    run_cli: RunCli, project: Path, files: Path
) -> None:
    env = {"ATTACHMENTS": "annexes/code-of-conduct.pdf"}
    assert run_cli("preview", "--only", "CHL", env=env).code == 0
    folder = project / "out" / "preview"
    eml = parse((folder / "letters" / "CHL.eml").read_bytes())
    (attached,) = eml.iter_attachments()
    assert attached.get_payload(decode=True) == PDF
    page = (folder / "index.html").read_text()
    data = json.loads(re.search(r'id="letter-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    (chile,) = data
    (listed,) = chile["attachments"]
    assert (listed["name"], listed["size"]) == ("code-of-conduct.pdf", len(PDF))
    assert (folder / listed["href"]).resolve() == (files / "code-of-conduct.pdf").resolve()


def test_the_spam_check_scores_the_letter_with_its_files(
    project: Path, files: Path, tmp_path: Path
) -> None:
    from outreach import Campaign, load_settings
    from outreach.checks import SpamChecker

    seen = tmp_path / "seen.mbox"
    script = tmp_path / "spamassassin"
    script.write_text(
        f'#!/bin/sh\ncat > "{seen}"\n'
        "printf 'From outreach-check-0@localhost Thu Jan  1 00:00:00 1970\\n"
        "X-Spam-Status: No, score=0.0 required=5.0 tests=none\\n\\n'\n"
    )
    script.chmod(0o755)
    settings = load_settings(environ={"ATTACHMENTS": "annexes/annex-en.csv"}, env_file=None)
    campaign = Campaign.open(settings)
    campaign.check(campaign.select(["CHL"]), spam=SpamChecker(str(script)))
    mbox = seen.read_bytes()
    assert b'filename="annex-en.csv"' in mbox
