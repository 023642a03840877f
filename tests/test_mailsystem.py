"""The whole loop through a real mail system: send, bounce, answer, read back, send again.

Postfix on loopback takes the letters and bounces those to users that do
not exist, writing its own delivery status notifications into the
sender's Maildir; Dovecot serves that Maildir over IMAP with TLS; outreach
reads it back without changing it. See tests/mailsystem.py.
"""

from __future__ import annotations

import csv
import io
import smtplib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient

from outreach.sendlog import read_log
from outreach.transport import tls_context
from tests.conftest import CONTACTS, RunCli
from tests.mailsystem import (
    COALITION,
    PASSWORD,
    SENDER,
    TOKEN,
    UTF8_PASSWORD,
    UTF8_USER,
    MailSystem,
    run_mail_system,
)
from tests.smtp import free_port
from tests.test_inbox import counted

#: The campaign's 20 contacts: the first 20 missions of the tests' contacts.
TWENTY = list(csv.DictReader(io.StringIO(CONTACTS.read_text(encoding="utf-8"))))[:20]
#: Five whose address in the contacts file is an old one, which no longer exists.
GONE = [row["id"] for row in TWENTY[3:20:4]]


def address(contact_id: str) -> str:
    return f"{contact_id.lower()}@missions.example"


def old_address(contact_id: str) -> str:
    return f"old.{contact_id.lower()}@missions.example"


@pytest.fixture(scope="module")
def mail_system() -> Iterator[MailSystem]:
    """Postfix and Dovecot, once for the module; every mission's current address exists."""
    yield from run_mail_system({row["id"].lower() for row in TWENTY})


def write_contacts(project: Path) -> None:
    lines = ["id,country,email"]
    for row in TWENTY:
        email = old_address(row["id"]) if row["id"] in GONE else address(row["id"])
        lines.append(f"{row['id']},{row['country']},{email}")
    (project / "contacts.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def deliver(system: MailSystem, sender: str, message: EmailMessage) -> None:
    """Mail from a mission to the campaign's mailbox, through Postfix."""
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=10) as smtp:
        smtp.send_message(message, from_addr=sender, to_addrs=[SENDER])


def answer(contact_id: str, letter_id: str, subject: str, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Mission of {contact_id} <{address(contact_id)}>"
    message["To"] = SENDER
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<answer.{contact_id.lower()}@mail.missions.example>"
    message["In-Reply-To"] = letter_id
    message["References"] = letter_id
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("PRIVATE-BODY-TEXT: we read your letter with interest.")
    return message


def mailbox_state(system: MailSystem) -> tuple[int, dict[int, tuple[bytes, ...]], list[str]]:
    """The sender's INBOX as IMAP shows it (count, each message's flags), and its files."""
    with IMAPClient(
        "127.0.0.1", port=system.imaps_port, ssl_context=tls_context(system.ca_file)
    ) as client:
        client.login(SENDER, PASSWORD)
        selected = client.select_folder("INBOX", readonly=True)
        flags = {uid: tuple(sorted(f)) for uid, f in client.get_flags(client.search()).items()}
        count = int(selected[b"EXISTS"])
    files = sorted(
        f"{p.parent.name}/{p.name}"
        for sub in ("new", "cur")
        for p in (system.maildir / sub).iterdir()
    )
    return count, flags, files


def inbox_rows(project: Path) -> list[tuple[str, str, str, str | int | None]]:
    return sorted(
        (r.contact_id, r.status, r.email, r.smtp_code)
        for r in read_log(project / "logs" / "send-log.csv")
        if r.notice_id
    )


def test_twenty_letters_five_bounces_an_answer_and_an_out_of_office(
    run_cli: RunCli, project: Path, mail_system: MailSystem
) -> None:
    env = mail_system.env()
    write_contacts(project)
    inbox_before = len(mail_system.delivered("campaign", COALITION))

    sent = run_cli("send", "--yes", env=env)
    assert sent.code == 0, sent.stdout + sent.stderr
    assert "Done: 20 sent." in sent.stdout
    # Postfix took all twenty; its delivery agent bounces five, back to the sender.
    mail_system.wait_for("campaign", inbox_before + 5, COALITION)

    letters = {r.contact_id: r.message_id for r in read_log(project / "logs" / "send-log.csv")}
    replying, away = TWENTY[0]["id"], TWENTY[1]["id"]
    deliver(
        mail_system,
        address(replying),
        answer(replying, letters[replying], "Re: Request to endorse the Code of Conduct"),
    )
    deliver(
        mail_system,
        address(away),
        answer(away, letters[away], "Out of Office: back on Monday", Auto_Submitted="auto-replied"),
    )
    mail_system.wait_for("campaign", inbox_before + 7, COALITION)
    before = mailbox_state(mail_system)
    assert before[0] == inbox_before + 7

    first = run_cli("inbox", env=env)
    assert first.code == 0, first.stdout + first.stderr
    assert "Recorded:      1 auto-replied, 5 bounced, 1 replied" in first.stdout
    rows = inbox_rows(project)
    assert [r for r in rows if r[1] == "bounced"] == sorted(
        (contact_id, "bounced", old_address(contact_id), "5.1.1") for contact_id in GONE
    )
    assert [r for r in rows if r[1] != "bounced"] == sorted(
        [
            (replying, "replied", address(replying), None),
            (away, "auto-replied", address(away), None),
        ]
    )
    log_text = (project / "logs" / "send-log.csv").read_text(encoding="utf-8")
    assert "PRIVATE-BODY-TEXT" not in log_text
    replies = {r.reply_text for r in read_log(project / "logs" / "send-log.csv")}
    assert f'X-Postfix; unknown user: "{old_address(GONE[0])}"' in replies

    # A second run reads only what is new: nothing.
    second = run_cli("inbox", env=env)
    assert "Read 0 messages" in second.stdout
    assert "Recorded:      nothing new" in second.stdout
    # Without the remembered position it reads everything again, and records nothing twice.
    (project / "logs" / "inbox-state.json").unlink()
    third = run_cli("inbox", env=env)
    assert f"Read {inbox_before + 7} messages" in third.stdout
    assert "Recorded:      nothing new" in third.stdout
    assert "Already in the send log: 7" in third.stdout
    assert inbox_rows(project) == rows
    # --since reads again what arrived from that day on, and keeps the position where it was.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    fourth = run_cli("inbox", "--since", yesterday, env=env)
    assert f"Read {inbox_before + 7} messages" in fourth.stdout
    assert "Recorded:      nothing new" in fourth.stdout
    assert "Read 0 messages" in run_cli("inbox", env=env).stdout
    # The mailbox is as it was: the same messages, every flag the same, no file moved.
    assert mailbox_state(mail_system) == before

    table = run_cli("report", env=env).stdout
    assert counted(table) == {"sent": 13, "replied": 1, "auto-replied": 1, "bounced": 5}
    assert f"    {old_address(GONE[0])}" in table
    assert "server: 5.1.1 X-Postfix; unknown user:" in table
    assert "put it in contacts.csv, run `make send ARGS=--retry-bounced`" in table
    assert f"from Mission of {replying} <{address(replying)}>" in table
    run_cli("report", "--format", "html", "--out", "report.html", env=env)
    page = (project / "report.html").read_text(encoding="utf-8")
    assert 'data-status="bounced" data-count="5"' in page
    assert 'data-status="auto-replied" data-count="1"' in page
    assert f"Mission of {replying} &lt;{address(replying)}&gt;" in page

    # Two missions' current addresses found: only those two letters go again.
    contacts = project / "contacts.csv"
    text = contacts.read_text(encoding="utf-8")
    for contact_id in GONE[:2]:
        text = text.replace(old_address(contact_id), address(contact_id))
    contacts.write_text(text, encoding="utf-8")
    again = run_cli("send", "--yes", "--retry-bounced", env=env)
    assert again.code == 0, again.stdout + again.stderr
    assert "To send:       2" in again.stdout
    assert f"Still bounced: 3 (same address in the contacts file: {', '.join(GONE[2:])})" in (
        again.stdout
    )
    assert "Done: 2 sent." in again.stdout
    for contact_id in GONE[:2]:
        [letter] = mail_system.wait_for(contact_id.lower(), 1)
        assert letters[contact_id].encode() in letter.read_bytes()
    for contact_id in GONE[2:]:
        assert mail_system.delivered(contact_id.lower()) == []
    time.sleep(0.5)  # no new bounce comes back
    assert len(mail_system.delivered("campaign", COALITION)) == inbox_before + 7


@pytest.fixture
def a_log(project: Path) -> Path:
    """An empty send log: enough for ``outreach inbox`` to connect."""
    log = project / "logs" / "send-log.csv"
    log.parent.mkdir()
    log.touch()
    return log


def test_starttls_reads_the_same_mailbox(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path
) -> None:
    env = mail_system.env(IMAP_SECURITY="starttls", IMAP_PORT=str(mail_system.imap_port))
    done = run_cli("inbox", env=env)
    assert done.code == 0, done.stderr
    assert f"from INBOX of {SENDER} at 127.0.0.1:{mail_system.imap_port}" in done.stdout


def test_no_encryption_only_to_this_machine(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path
) -> None:
    env = mail_system.env(IMAP_SECURITY="none", IMAP_PORT=str(mail_system.imap_port))
    done = run_cli("inbox", env=env)
    assert done.code == 0, done.stderr
    assert f"at 127.0.0.1:{mail_system.imap_port}." in done.stdout


def test_a_wrong_password_is_one_line_and_never_shown(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path
) -> None:
    done = run_cli("inbox", env=mail_system.env(IMAP_PASSWORD="not the password"))
    assert done.code == 2
    assert done.stderr.startswith(
        f"Error: 127.0.0.1:{mail_system.imaps_port} refused the sign-in of IMAP_USERNAME={SENDER} ("
    )
    assert done.stderr.endswith("; check IMAP_USERNAME and IMAP_PASSWORD\n")
    assert done.stderr.count("\n") == 1
    assert "not the password" not in done.stdout + done.stderr


def test_a_password_beyond_ascii_signs_in_to_dovecot(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path
) -> None:
    env = mail_system.env(IMAP_USERNAME=UTF8_USER, IMAP_PASSWORD=UTF8_PASSWORD)
    done = run_cli("inbox", env=env)
    assert done.code == 0, done.stderr
    assert "Read " in done.stdout


def test_a_folder_that_does_not_exist_is_named(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path
) -> None:
    done = run_cli("inbox", env=mail_system.env(IMAP_FOLDERS="INBOX;Bounces"))
    assert done.code == 2
    assert done.stderr.startswith(
        f"Error: IMAP_FOLDERS: the folder 'Bounces' cannot be opened at "
        f"127.0.0.1:{mail_system.imaps_port} ("
    )
    assert done.stderr.endswith("the mailbox has: INBOX\n")


def test_a_certificate_that_does_not_verify_stops_before_signing_in(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path
) -> None:
    done = run_cli("inbox", env=mail_system.env(IMAP_CA_FILE=""))
    assert done.code == 2
    assert done.stderr.startswith(
        f"Error: the TLS certificate of 127.0.0.1:{mail_system.imaps_port} does not verify ("
    )
    assert "set IMAP_CA_FILE to its certificate" in done.stderr


def test_a_port_that_speaks_no_tls_is_named(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path
) -> None:
    port = mail_system.smtp_port  # Postfix's SMTP: no IMAP, no TLS
    done = run_cli("inbox", env=mail_system.env(IMAP_PORT=str(port)))
    assert (done.code, done.stderr) == (
        2,
        f"Error: TLS with 127.0.0.1:{port} failed (WRONG_VERSION_NUMBER); check IMAP_SECURITY "
        "and IMAP_PORT (993 for ssl, 143 for starttls)\n",
    )


def test_nothing_listening_is_named(run_cli: RunCli, mail_system: MailSystem, a_log: Path) -> None:
    port = free_port()
    done = run_cli("inbox", env=mail_system.env(IMAP_PORT=str(port)))
    assert (done.code, done.stderr) == (
        2,
        f"Error: cannot connect to 127.0.0.1:{port}: it refused the connection; check "
        "IMAP_HOST and IMAP_PORT, or whether the server is up\n",
    )


def test_the_mailbox_password_can_come_from_a_password_manager(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path, tmp_path: Path
) -> None:
    password = mail_system.env()["IMAP_PASSWORD"]
    script = tmp_path / "pass"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
    script.chmod(0o700)
    env = mail_system.env(IMAP_PASSWORD="", SMTP_PASSWORD="", IMAP_PASSWORD_COMMAND=str(script))
    done = run_cli("inbox", env=env)
    assert done.code == 0, done.stderr
    assert password not in done.stdout + done.stderr


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_the_mailbox_signs_in_with_a_token_from_a_command(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path, tmp_path: Path, mechanism: str
) -> None:
    script = tmp_path / "token"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{TOKEN}'\n")
    script.chmod(0o700)
    env = mail_system.env(
        SMTP_USERNAME=SENDER,
        IMAP_PASSWORD="",
        SMTP_AUTH=mechanism,
        IMAP_TOKEN_COMMAND=str(script),
    )
    done = run_cli("inbox", env=env)
    assert done.code == 0, done.stderr
    assert f"from INBOX of {SENDER} at 127.0.0.1:{mail_system.imaps_port}" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_a_token_the_mailbox_refuses_twice_is_one_line_and_never_shown(
    run_cli: RunCli, mail_system: MailSystem, a_log: Path, tmp_path: Path
) -> None:
    """The command is asked again once; its second token refused too, the run stops."""
    asked = tmp_path / "asked"
    script = tmp_path / "token"
    script.write_text(f"#!/bin/sh\necho asked >> '{asked}'\nprintf '%s\\n' 'an-expired-token'\n")
    script.chmod(0o700)
    env = mail_system.env(
        SMTP_USERNAME=SENDER,
        IMAP_PASSWORD="",
        SMTP_AUTH="xoauth2",
        IMAP_TOKEN_COMMAND=str(script),
    )
    done = run_cli("inbox", env=env)
    assert done.code == 2
    assert done.stderr.startswith(
        f"Error: 127.0.0.1:{mail_system.imaps_port} refused the sign-in of IMAP_USERNAME={SENDER} ("
    )
    assert done.stderr.endswith("; check IMAP_USERNAME and the token\n")
    assert done.stderr.count("\n") == 1
    assert asked.read_text().count("asked") == 2
    assert "an-expired-token" not in done.stdout + done.stderr
