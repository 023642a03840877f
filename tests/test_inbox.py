"""`outreach inbox --from PATH`: what came back, into the send log, the plan and the report.

Seven letters go to a real SMTP server on loopback; the mail that comes
back is the fixtures of tests/data/mail/ (one of each shape), read from a
folder of .eml files, a Maildir or an mbox file. The mail-system tests
(test_mailsystem.py) do the same over IMAP with a real Postfix and Dovecot.
"""

from __future__ import annotations

import json
import mailbox
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.errors import SendLogError
from outreach.ledger import Ledger
from outreach.message import message_id_for
from outreach.sendlog import (
    COLUMNS_WITHOUT_SUBJECT,
    LogRow,
    SendLog,
    read_log,
    with_notice,
)
from tests.conftest import FakeClock, RunCli
from tests.smtp import SmtpServer

MAIL = Path(__file__).resolve().parent / "data" / "mail"
SENT = ["CHL", "FRA", "KEN", "DEU", "BRA", "JPN", "MEX"]
#: What the fixtures come to, contact by contact: (status, address, code).
EXPECTED = {
    ("BRA", "bounced", "bra@missions.example", "5.1.1"),
    ("KEN", "bounced", "ken@missions.example", "5.1.10"),
    ("DEU", "bounced", "deu@missions.example", "5.1.1"),
    ("MEX", "bounced", "mex@missions.example", "5.1.1"),
    ("MEX", "delayed", "protocol@mex.missions.example", "4.4.7"),
    ("JPN", "delayed", "jpn@missions.example", "4.4.1"),
    ("CHL", "replied", "chl@missions.example", None),
    ("FRA", "auto-replied", "fra@missions.example", None),
}


def set_cell(project: Path, old: str, new: str) -> None:
    contacts = project / "contacts.csv"
    text = contacts.read_text(encoding="utf-8")
    assert old in text
    contacts.write_text(text.replace(old, new, 1), encoding="utf-8")


def send_letters(server: SmtpServer, clock: FakeClock, ids: list[str] = SENT) -> None:
    """What `outreach send --yes --only …` does, through the library."""
    settings = load_settings(environ=server.env(), env_file=None)
    campaign = Campaign.open(settings)
    with campaign.open_log() as log:
        plan = campaign.plan(log, campaign.select(ids), now=clock.now())
        outcome = campaign.send(plan, log, clock=clock)
    assert outcome.counts["sent"] == len(ids)


@pytest.fixture
def sent(project: Path, smtp_server: SmtpServer, clock: FakeClock) -> SmtpServer:
    """The seven letters sent; Mexico's with a copy to its protocol office."""
    set_cell(
        project, "mex@missions.example,,", "mex@missions.example,protocol@mex.missions.example,"
    )
    send_letters(smtp_server, clock)
    return smtp_server


def folder_of_eml(tmp_path: Path) -> Path:
    folder = tmp_path / "exported"
    shutil.copytree(MAIL, folder, ignore=shutil.ignore_patterns("*.md"))
    return folder


def maildir_of(tmp_path: Path) -> Path:
    path = tmp_path / "Maildir"
    box = mailbox.Maildir(path, create=True)
    for file in sorted(MAIL.glob("*.eml")):
        box.add(file.read_bytes())
    return path


def mbox_of(tmp_path: Path) -> Path:
    path = tmp_path / "exported.mbox"
    box = mailbox.mbox(path, create=True)
    for file in sorted(MAIL.glob("*.eml")):
        box.add(file.read_bytes())
    box.close()
    return path


def snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``path``: its bytes and when it last changed."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


def counted(table: str) -> dict[str, int]:
    """The counts of the report's table in the terminal, status by status."""
    found = re.findall(r"^│ ([a-z -]+?) +│ +(\d+) │$", table, re.M)
    return {status: int(n) for status, n in found if status != "total"}


def inbox_rows(project: Path) -> set[tuple[str, str, str, str | int | None]]:
    rows = read_log(project / "logs" / "send-log.csv")
    return {
        (r.contact_id, r.status, r.email, r.smtp_code)
        for r in rows
        if r.status in ("bounced", "delayed", "replied", "auto-replied")
    }


@pytest.mark.parametrize(
    "make", [folder_of_eml, maildir_of, mbox_of], ids=["eml", "maildir", "mbox"]
)
def test_every_shape_is_recorded_once_and_the_source_is_untouched(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path, make: object
) -> None:
    assert callable(make)
    source = make(tmp_path)
    before = snapshot(source)
    done = run_cli("inbox", "--from", str(source), env=sent.env())
    assert done.code == 0, done.stderr
    assert "Read 10 messages" in done.stdout
    assert "Recorded:      1 auto-replied, 4 bounced, 2 delayed, 1 replied" in done.stdout
    assert "Unmatched:     3 message(s) about no letter accepted" in done.stdout
    assert "Other mail:    1 (about no letter)" in done.stdout
    assert inbox_rows(project) == EXPECTED
    again = run_cli("inbox", "--from", str(source), env=sent.env())
    assert "Recorded:      nothing new" in again.stdout
    assert "Already in the send log: 8" in again.stdout
    assert inbox_rows(project) == EXPECTED
    assert snapshot(source) == before


def test_each_row_keeps_the_letter_and_the_notice_it_came_from(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    rows = read_log(project / "logs" / "send-log.csv")
    bounce = next(r for r in rows if r.status == "bounced" and r.contact_id == "KEN")
    assert bounce.message_id == message_id_for("default", "KEN", "coalition.example")
    assert bounce.subject.startswith("Request to endorse the Code of Conduct")
    assert bounce.attempt == 1
    assert bounce.reply_text == (
        "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    )
    assert bounce.notice_id == (
        "<0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d@am9pr01mb1234.eurprd01.prod.outlook.com>"
    )
    reply = next(r for r in rows if r.status == "replied")
    assert reply.smtp_reply == (
        "2026-11-30 15:15 UTC, from Ana Pérez <chl@missions.example>, subject: RE: Request to "
        "endorse the Code of Conduct regarding Security Council action "
        "[notice <cab9x7qm1replyfromchile@mail.missions.example>]"
    )
    log_text = (project / "logs" / "send-log.csv").read_text(encoding="utf-8")
    assert "PRIVATE-BODY-TEXT" not in log_text
    assert "out of the office" not in log_text


def test_a_lost_position_or_another_export_records_nothing_twice(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    again = run_cli("inbox", "--from", str(mbox_of(tmp_path)), env=sent.env())
    assert "Recorded:      nothing new" in again.stdout
    assert len([r for r in read_log(project / "logs" / "send-log.csv") if r.notice_id]) == 8


def test_every_message_about_no_letter_is_listed_with_why_and_kept_for_the_report(
    run_cli: RunCli, sent: SmtpServer, tmp_path: Path
) -> None:
    exported = folder_of_eml(tmp_path)
    done = run_cli("inbox", "--from", str(exported), env=sent.env())
    out = done.stdout
    assert ": a bounce of <caf4lunch-not-a-letter@mail.coalition.example>" in out
    assert "which is no letter of the send log" in out
    assert "a delivery report whose delivery-status part cannot be read" in out
    assert "it names someone-else@missions.example, to which the " in out
    assert "subject: Undelivered Mail Returned to Sender" in out
    verbose = run_cli("inbox", "--from", str(exported), "-v", env=sent.env())
    assert "unknown-message.eml" in verbose.stdout
    table = run_cli("report", env=sent.env()).stdout
    assert "Mail about no letter (3), not recorded" in table
    assert "why: a bounce of <caf4lunch-not-a-letter@mail.coalition.example>" in table
    data = json.loads(run_cli("report", "--format", "json", env=sent.env()).stdout)
    page = run_cli("report", "--format", "html", env=sent.env()).stdout
    assert "Mail about no letter (3), not recorded" in page
    assert "a bounce of &lt;caf4lunch-not-a-letter@mail.coalition.example&gt;" in page
    whys = sorted(m["why"][:30] for m in data["unmatched_mail"])
    assert whys == [
        "a bounce of <caf4lunch-not-a-l",
        "a delivery report whose delive",
        "it names someone-else@missions",
    ]


def test_since_reads_only_mail_of_that_day_on(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    done = run_cli(
        "inbox", "--from", str(folder_of_eml(tmp_path)), "--since", "2026-11-29", env=sent.env()
    )
    assert "Recorded:      1 replied" in done.stdout
    assert {row[1] for row in inbox_rows(project)} == {"replied"}


def test_the_plan_counts_answers_as_sent_and_leaves_bounces_alone(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    done = run_cli("send", "--yes", "--only", ",".join(SENT), env=sent.env())
    assert "To send:       0" in done.stdout
    # CHL replied, FRA auto-replied, JPN delayed; MEX's copy is delayed while its own
    # address bounced: the bounce does not hide the copy's delivery.
    assert "Already sent:  4" in done.stdout
    assert "Bounced:       3 (not sent again unless --retry-bounced" in done.stdout
    assert "Nothing to send." in done.stdout
    assert len(sent.received) == len(SENT)


def test_retry_bounced_sends_only_to_a_changed_address(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    set_cell(project, "bra@missions.example", "brazil.un@missions.example")
    done = run_cli("send", "--yes", "--retry-bounced", "--only", ",".join(SENT), env=sent.env())
    assert done.code == 0, done.stdout + done.stderr
    assert "To send:       1" in done.stdout
    assert "Still bounced: 2 (same address in the contacts file: DEU, KEN)" in done.stdout
    [again] = sent.received[len(SENT) :]
    assert again.recipients == ["brazil.un@missions.example"]
    assert str(again.message["Message-ID"]) == message_id_for("default", "BRA", "coalition.example")
    # Brazil is done: nothing goes again, and the report shows the letter sent.
    rerun = run_cli("send", "--yes", "--retry-bounced", "--only", ",".join(SENT), env=sent.env())
    assert "To send:       0" in rerun.stdout
    data = json.loads(run_cli("report", "--format", "json").stdout)
    brazil = next(c for c in data["contacts"] if c["id"] == "BRA")
    assert (brazil["status"], brazil["sent_to"]) == ("sent", "brazil.un@missions.example")


def test_the_report_counts_and_lists_bounces_and_replies_in_every_format(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    data = json.loads(run_cli("report", "--format", "json").stdout)
    assert {k: v for k, v in data["counts"].items() if k != "not attempted"} == {
        "replied": 1,
        "auto-replied": 1,
        "delayed": 2,
        "bounced": 3,
    }
    kenya = next(c for c in data["problems"] if c["id"] == "KEN")
    assert (kenya["status"], kenya["email"], kenya["smtp_code"]) == (
        "bounced",
        "ken@missions.example",
        "5.1.10",
    )
    assert "RESOLVER.ADR.RecipientNotFound" in kenya["smtp_reply"]
    assert "[notice" not in kenya["smtp_reply"]
    assert "run `make send ARGS=--retry-bounced`" in kenya["next_step"]
    assert [(r["id"], r["status"]) for r in data["replies"]] == [
        ("CHL", "replied"),
        ("FRA", "auto-replied"),
    ]

    table = run_cli("report").stdout
    assert counted(table) == {
        "replied": 1,
        "auto-replied": 1,
        "delayed": 2,
        "bounced": 3,
        "not attempted": 188,
    }
    assert "server: 5.1.10 smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound" in table
    assert "Replies (2)" in table
    assert "2026-11-30 15:15 UTC, from Ana Pérez <chl@missions.example>" in table

    rows = run_cli("report", "--format", "csv").stdout.splitlines()
    assert any(line.startswith("KEN,Kenya,ken@missions.example,bounced,1,") for line in rows)
    assert any(",5.1.10,smtp;550 5.1.10 RESOLVER" in line for line in rows)

    page = run_cli("report", "--format", "html").stdout
    assert 'data-status="bounced" data-count="3"' in page
    assert 'data-status="replied" data-count="1"' in page
    assert '<table id="replies">' in page
    assert "Ana Pérez &lt;chl@missions.example&gt;" in page


def test_the_report_names_the_missions_a_reminder_would_go_to(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    """Delivered and not answered: still trying (delayed) or only an out-of-office."""
    run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    data = json.loads(run_cli("report", "--format", "json").stdout)
    states = {c["id"]: c["status"] for c in data["contacts"]}
    awaiting = data["awaiting_answer"]
    assert sorted(states[i] for i in awaiting) == ["auto-replied", "delayed", "delayed"]
    assert {i for i, s in states.items() if s in ("sent", "delayed", "auto-replied")} == set(
        awaiting
    )

    table = run_cli("report").stdout
    assert "No answer yet: 3 (listed by --format html, csv or json)" in table
    assert "a follow-up in a few weeks reminds them" in " ".join(table.split())
    page = run_cli("report", "--format", "html").stdout
    countries = {c["id"]: c["country"] for c in data["contacts"]}
    named = ", ".join(sorted(countries[i] for i in awaiting))
    assert f'<p id="awaiting">{named}</p>' in page


def test_an_older_log_reads_as_before_and_keeps_its_own_columns(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    log = project / "logs" / "send-log.csv"
    rows = read_log(log)
    with log.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(COLUMNS_WITHOUT_SUBJECT) + "\n")
        for row in rows:
            handle.write(",".join(row.cells(COLUMNS_WITHOUT_SUBJECT)) + "\n")
    before = read_log(log)
    done = run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    assert done.code == 0, done.stderr
    after = read_log(log)
    assert after[: len(before)] == before
    assert inbox_rows(project) == EXPECTED
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS_WITHOUT_SUBJECT)
    assert all(line.count(",") >= 8 for line in lines)
    assert read_log(log)[-1].subject == ""


def test_a_status_code_is_kept_as_written(project: Path) -> None:
    log = project / "logs" / "send-log.csv"
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    with SendLog(log) as opened:
        for code in (250, "5.1.1", "5.1.10", "4.4.7", None):
            opened.append(LogRow(now, "default", "CHL", "chl@missions.example", "sent", 1, code))
    assert [r.smtp_code for r in read_log(log)] == [250, "5.1.1", "5.1.10", "4.4.7", None]
    text = log.read_text(encoding="utf-8").replace(",5.1.10,", ",5.1.x,")
    log.write_text(text, encoding="utf-8")
    with pytest.raises(SendLogError, match=r"'5.1.x' is not an SMTP reply code or status"):
        read_log(log)


def test_inbox_without_a_send_log_is_an_error(run_cli: RunCli, tmp_path: Path) -> None:
    done = run_cli("inbox", "--from", str(folder_of_eml(tmp_path)))
    assert done.code == 2
    assert done.stderr == (
        "Error: logs/send-log.csv: no send log yet, so no letter to match the mailbox "
        "against; run outreach inbox after outreach send\n"
    )


def test_from_a_path_that_does_not_exist_is_an_error(run_cli: RunCli, sent: SmtpServer) -> None:
    done = run_cli("inbox", "--from", "nowhere/mail", env=sent.env())
    assert (done.code, done.stderr) == (2, "Error: --from nowhere/mail: no such file or folder\n")


def test_a_message_from_the_sender_itself_is_no_answer(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    reply = (MAIL / "reply.eml").read_text(encoding="utf-8")
    own = reply.replace(
        "From: =?utf-8?q?Ana_P=C3=A9rez?= <chl@missions.example>",
        "From: The Coalition <campaign@coalition.example>",
    )
    (folder / "follow-up.eml").write_text(own, encoding="utf-8")
    done = run_cli("inbox", "--from", str(folder), env=sent.env())
    assert "Recorded:      nothing new" in done.stdout
    assert "Other mail:    1" in done.stdout


def row(status: str, email: str, line: int, code: str | int | None = None) -> LogRow:
    return LogRow(
        datetime(2026, 11, 28, 9, line, tzinfo=UTC),
        "default",
        "CHL",
        email,
        status,
        1,
        code,
        with_notice("…", f"<n{line}@x.example>") if status != "sent" else "",
        "<letter@x.example>",
        line=line,
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        pytest.param(["sent", "replied", "auto-replied"], "replied", id="ooo-after-answer"),
        pytest.param(["sent", "auto-replied", "replied"], "replied", id="answer-after-ooo"),
        pytest.param(["sent", "delayed"], "delayed", id="delayed"),
        pytest.param(["sent", "bounced", "delayed"], "bounced", id="delay-read-after-bounce"),
        pytest.param(["sent", "delayed", "bounced"], "bounced", id="bounce-after-delay"),
        # A notice attaches only to a letter some server accepted.
        pytest.param(["sending", "bounced"], "ambiguous", id="ambiguous-then-bounced"),
        pytest.param(["sending", "replied"], "ambiguous", id="ambiguous-then-answered"),
        pytest.param(["sent", "bounced", "replied"], "replied", id="answered-after-all"),
    ],
)
def test_what_came_back_in_any_order_gives_the_letters_status(
    statuses: list[str], expected: str
) -> None:
    rows = [row(status, "chl@missions.example", n) for n, status in enumerate(statuses, 1)]
    assert Ledger(rows).campaign("default")["CHL"].status() == expected


def test_a_bounced_address_no_longer_in_the_contacts_file_is_history_once_replaced() -> None:
    rows = [
        row("sent", "old@missions.example", 1),
        row("bounced", "old@missions.example", 2, "5.1.1"),
        row("sent", "new@missions.example", 3),
    ]
    letter = Ledger(rows).campaign("default")["CHL"]
    # A later delivery to a corrected address supersedes the bounce at the old one.
    assert letter.status() == "sent"
    assert letter.status(["new@missions.example"]) == "sent"
    assert letter.status(["other@missions.example"]) == "sent"


@pytest.mark.parametrize(
    ("env", "error"),
    [
        pytest.param(
            {},
            "Error: IMAP_HOST is not set: name the IMAP server of the mailbox the letters were "
            "sent from (or read exported mail with --from PATH)\n",
            id="no-host",
        ),
        pytest.param(
            {"IMAP_HOST": "imap.coalition.org", "IMAP_SECURITY": "none"},
            "Error: IMAP_SECURITY=none would send the password of campaign@coalition.org to "
            "imap.coalition.org unencrypted; use ssl or starttls (none is only for a server on "
            "this machine)\n",
            id="none-to-another-host",
        ),
        pytest.param(
            {"IMAP_HOST": "127.0.0.1", "IMAP_PASSWORD": ""},
            "Error: IMAP_USERNAME is set but IMAP_PASSWORD is not (nor SMTP_PASSWORD), and "
            "there is no terminal to ask on (set IMAP_PASSWORD_COMMAND to read it from a "
            "password manager)\n",
            id="no-password-no-terminal",
        ),
    ],
)
def test_settings_that_cannot_read_a_mailbox_are_one_line(
    run_cli: RunCli, sent: SmtpServer, env: dict[str, str], error: str
) -> None:
    settings = {**sent.env(), "IMAP_USERNAME": "campaign@coalition.org", **env}
    done = run_cli("inbox", env=settings)
    assert (done.code, done.stderr) == (2, error)


def test_inbox_waits_for_no_send_it_stops_while_one_has_the_log(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    with SendLog(project / "logs" / "send-log.csv"):
        done = run_cli("inbox", "--from", str(folder_of_eml(tmp_path)), env=sent.env())
    assert done.code == 2
    assert done.stderr.startswith(
        "Error: logs/send-log.csv is in use by another outreach send or inbox; wait for it"
    )
    assert inbox_rows(project) == set()
