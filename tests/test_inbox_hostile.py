"""A mailbox can't stop `outreach inbox`: hostile servers, hostile messages, hostile files.

The IMAP server is tests/hostile_imap.py, on 127.0.0.1, misbehaving in one
way per test. Timeouts are made small through the settings (IMAP_DEADLINE),
and the tests look at what the run did, never at how long it took.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from outreach.inbox import last_read
from outreach.sendlog import SendLog, read_log
from outreach.settings import load_settings
from tests.conftest import FakeClock, RunCli
from tests.hostile_imap import Behaviour, hostile_imap
from tests.smtp import SmtpServer
from tests.test_inbox import send_letters
from tests.test_notices import nested

MAIL = Path(__file__).resolve().parent / "data" / "mail"
LETTERS = ["CHL", "FRA", "BRA"]
REPLY = (MAIL / "reply.eml").read_bytes()  # Chile answers
OUT_OF_OFFICE = (MAIL / "out-of-office.eml").read_bytes()  # France is away


@pytest.fixture
def sent(project: Path, smtp_server: SmtpServer, clock: FakeClock) -> SmtpServer:
    send_letters(smtp_server, clock, LETTERS)
    return smtp_server


def imap_env(server: SmtpServer, port: int, **extra: str) -> dict[str, str]:
    settings = {
        "IMAP_HOST": "127.0.0.1",
        "IMAP_PORT": str(port),
        "IMAP_SECURITY": "none",
        "IMAP_USERNAME": "campaign@coalition.example",
        "IMAP_PASSWORD": "imap-secret",
        "IMAP_DEADLINE": "1",
    }
    return server.env(**{**settings, **extra})


def recorded(project: Path) -> set[tuple[str, str]]:
    return {
        (r.contact_id, r.status) for r in read_log(project / "logs" / "send-log.csv") if r.notice_id
    }


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("behaviour", "said"),
    [
        pytest.param(Behaviour(uidvalidity=None), "without a valid UIDVALIDITY", id="none"),
        pytest.param(Behaviour(uidvalidity="abc"), "a UIDVALIDITY that is no number", id="abc"),
        pytest.param(Behaviour(uidvalidity="0"), "without a valid UIDVALIDITY", id="zero"),
    ],
)
def test_a_folder_without_a_usable_uidvalidity_is_one_line_and_reads_nothing(
    run_cli: RunCli, sent: SmtpServer, project: Path, behaviour: Behaviour, said: str
) -> None:
    behaviour.messages = {1: REPLY}
    with hostile_imap(behaviour) as port:
        done = run_cli("inbox", env=imap_env(sent, port))
    assert done.code == 2
    assert said in one_line_error(done.stderr)
    assert recorded(project) == set()


@pytest.mark.parametrize(
    ("behaviour", "said"),
    [
        pytest.param(Behaviour(trickle_greeting=True), "IMAP_DEADLINE=1 s", id="trickled-greeting"),
        pytest.param(Behaviour(endless_untagged=True), "IMAP_DEADLINE=1 s", id="endless-untagged"),
        pytest.param(Behaviour(huge_literal=True), "announced 3000000000 bytes", id="huge-literal"),
    ],
)
def test_a_server_that_drags_on_or_announces_gigabytes_is_left_and_the_log_freed(
    run_cli: RunCli, sent: SmtpServer, project: Path, behaviour: Behaviour, said: str
) -> None:
    behaviour.messages = {1: REPLY}
    with hostile_imap(behaviour) as port:
        done = run_cli("inbox", env=imap_env(sent, port, SMTP_TIMEOUT="60"))
        assert done.code == 2
        assert said in one_line_error(done.stderr)
        # The send log's lock is free again: a send could start now.
        with SendLog(project / "logs" / "send-log.csv"):
            pass
    assert recorded(project) == set()


def test_a_fetch_without_the_message_keeps_the_position_before_it(
    run_cli: RunCli, sent: SmtpServer, project: Path
) -> None:
    behaviour = Behaviour(messages={1: REPLY, 2: OUT_OF_OFFICE}, without_body={1})
    with hostile_imap(behaviour) as port:
        first = run_cli("inbox", env=imap_env(sent, port))
        assert first.code == 0, first.stderr
        assert "INBOX, UID 1: the server did not give the message" in first.stderr
        assert recorded(project) == {("FRA", "auto-replied")}
        state = json.loads((project / "logs" / "inbox-state.json").read_text(encoding="utf-8"))
        assert "mailboxes" in state
        assert all(
            folder.get("last_uid", 0) == 0
            for account in state["mailboxes"].values()
            for folder in account.values()
        )
        behaviour.without_body.clear()
        again = run_cli("inbox", env=imap_env(sent, port))
    assert again.code == 0, again.stderr
    assert recorded(project) == {("FRA", "auto-replied"), ("CHL", "replied")}


DAMAGED_STATES = {
    "an-account-that-is-text": lambda state: {
        **state,
        "mailboxes": dict.fromkeys(state["mailboxes"], "x"),
    },
    "a-folder-that-is-a-list": lambda state: {
        **state,
        "mailboxes": {a: {key: [] for key in f} for a, f in state["mailboxes"].items()},
    },
    "a-read-time-without-a-zone": lambda state: {**state, "read_at": "2026-11-30T09:00:00"},
}


@pytest.mark.parametrize("damage", DAMAGED_STATES.values(), ids=DAMAGED_STATES.keys())
def test_a_damaged_position_file_means_reading_again_and_nothing_twice(
    run_cli: RunCli, sent: SmtpServer, project: Path, damage: Any
) -> None:
    """The position file is only a shortcut: in any shape, the next read goes on."""
    state_file = project / "logs" / "inbox-state.json"
    with hostile_imap(Behaviour(messages={1: REPLY, 2: OUT_OF_OFFICE})) as port:
        assert run_cli("inbox", env=imap_env(sent, port)).code == 0
        state = json.loads(state_file.read_text(encoding="utf-8"))
        state_file.write_text(json.dumps(damage(state)), encoding="utf-8")
        # What a reminder's plan says of the last read: a time it can compare, or none.
        read_at = last_read(load_settings(environ=imap_env(sent, port), env_file=None))
        assert read_at is None or read_at.tzinfo is not None
        again = run_cli("inbox", env=imap_env(sent, port))
    assert again.code == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert recorded(project) == {("FRA", "auto-replied"), ("CHL", "replied")}
    rows = [r for r in read_log(project / "logs" / "send-log.csv") if r.notice_id]
    assert len(rows) == 2


@pytest.mark.parametrize(
    ("user", "password"),
    [("campaign@coalition.example", "Pässwörd-ß€"), ("håkan@coalition.example", "plain-ascii")],
    ids=["password", "user-name"],
)
def test_a_password_beyond_ascii_signs_in_with_authenticate_plain(
    run_cli: RunCli, sent: SmtpServer, project: Path, user: str, password: str
) -> None:
    behaviour = Behaviour(messages={1: REPLY})
    with hostile_imap(behaviour) as port:
        done = run_cli(
            "inbox", env=imap_env(sent, port, IMAP_USERNAME=user, IMAP_PASSWORD=password)
        )
    assert done.code == 0, done.stderr
    assert behaviour.sign_ins == [("PLAIN", user, password)]
    assert recorded(project) == {("CHL", "replied")}


def test_an_ascii_password_still_signs_in_with_login(
    run_cli: RunCli, sent: SmtpServer, project: Path
) -> None:
    behaviour = Behaviour(messages={1: REPLY})
    with hostile_imap(behaviour) as port:
        done = run_cli("inbox", env=imap_env(sent, port))
    assert done.code == 0, done.stderr
    assert behaviour.sign_ins == [("LOGIN", "campaign@coalition.example", "imap-secret")]


def test_a_message_dated_9999_or_3000_levels_deep_stops_nothing_behind_it(
    run_cli: RunCli, sent: SmtpServer, project: Path
) -> None:
    dated_9999 = OUT_OF_OFFICE.replace(
        b"Date: ", b"Date: Fri, 31 Dec 9999 23:59:59 -0100\r\nX-Old-Date: ", 1
    )
    behaviour = Behaviour(messages={1: dated_9999, 2: nested(3000), 3: REPLY})
    with hostile_imap(behaviour) as port:
        done = run_cli("inbox", env=imap_env(sent, port))
        assert done.code == 0, done.stderr
        assert "INBOX, UID 2: more than 100 nested MIME parts: not read" in done.stdout
        assert recorded(project) == {("FRA", "auto-replied"), ("CHL", "replied")}
        again = run_cli("inbox", env=imap_env(sent, port))
    assert again.code == 0, again.stderr
    assert "Recorded:      nothing new" in again.stdout


# -- --from: regular files only ------------------------------------------------------------


def test_from_a_maildir_with_a_fifo_and_a_link_to_a_device_reads_the_rest(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.reply").write_bytes(REPLY)
    os.mkfifo(maildir / "new" / "2.fifo")
    (maildir / "new" / "3.zero").symlink_to("/dev/zero")
    (maildir / "cur" / "4.ooo:2,S").write_bytes(OUT_OF_OFFICE)
    done = run_cli("inbox", "--from", str(maildir), env=sent.env())
    assert done.code == 0, done.stderr
    assert "Not read:      2 message(s)" in done.stdout
    assert "2.fifo: not read: not a regular file" in done.stdout
    assert "3.zero: not read: not a regular file" in done.stdout
    assert recorded(project) == {("FRA", "auto-replied"), ("CHL", "replied")}


def test_from_a_fifo_or_a_device_itself_is_one_line(
    run_cli: RunCli, sent: SmtpServer, tmp_path: Path
) -> None:
    fifo = tmp_path / "export.mbox"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        done = run_cli("inbox", "--from", str(path), env=sent.env())
        assert done.code == 2
        assert "not a regular file" in one_line_error(done.stderr)


def test_a_folder_of_eml_files_skips_links(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "a.eml").write_bytes(REPLY)
    (folder / "b.eml").symlink_to("/dev/zero")
    shutil.copy(MAIL / "out-of-office.eml", folder / "c.eml")
    done = run_cli("inbox", "--from", str(folder), env=sent.env())
    assert done.code == 0, done.stderr
    assert "b.eml: not read: not a regular file" in done.stdout
    assert recorded(project) == {("FRA", "auto-replied"), ("CHL", "replied")}


def test_nothing_printed_from_mail_carries_a_control_character(
    run_cli: RunCli, sent: SmtpServer, tmp_path: Path
) -> None:
    escape = "\x1b]0;owned\x07"
    hostile = (MAIL / "unknown-message.eml").read_text(encoding="utf-8")
    hostile = hostile.replace(
        "<caf4lunch-not-a-letter@mail.coalition.example>", f"<{escape}@x.example>"
    ).replace("Subject: ", f"Subject: {escape}", 1)
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "bounce.eml").write_text(hostile, encoding="utf-8")
    for flags in ((), ("--verbose",)):
        done = run_cli("inbox", "--from", str(folder), *flags, env=sent.env())
        assert done.code == 0, done.stderr
        assert "owned" in done.stdout
        assert not any(c in done.stdout + done.stderr for c in "\x1b\x07\r")
    table = run_cli("report", env=sent.env()).stdout
    assert "owned" in table
    assert "\x1b" not in table
