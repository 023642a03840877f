"""A campaign over weeks: a reminder, in the same conversation, to the missions that
have the first letter and have not answered; never to one that replied."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from outreach.render import long_date
from outreach.sendlog import LogRow, SendLog, read_log
from tests.conftest import RunCli
from tests.smtp import DROP, SmtpServer, parse

FIRST = "code-of-conduct-2015"
REMINDER = "code-of-conduct-2015-reminder-1"
SIX = "CHL,FRA,KEN,AFG,ALB,DZA"


@pytest.fixture
def first_letters(run_cli: RunCli, project: Path, smtp_server: SmtpServer) -> dict[str, str]:
    """The first letter went to CHL, FRA and KEN; AFG's was refused, ALB's may have
    arrived (the connection dropped after its data), DZA never got one. Their Message-IDs."""
    smtp_server.script.rcpt["afg@missions.example"].append("550 5.1.1 No such user")
    smtp_server.script.data.append(DROP)  # the first data is Albania's
    env = smtp_server.env(CAMPAIGN=FIRST)
    result = run_cli("send", "--yes", "--only", "CHL,FRA,KEN,AFG,ALB", env=env)
    assert result.code == 1, result.stdout + result.stderr
    rows = read_log(project / "logs" / "send-log.csv")
    smtp_server.received.clear()
    return {r.contact_id: r.message_id for r in rows if r.status == "sent"}


def test_the_reminder_goes_to_those_who_have_the_letter_threaded_on_it(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, first_letters: dict[str, str]
) -> None:
    env = smtp_server.env(CAMPAIGN=REMINDER)
    result = run_cli("send", "--yes", "--follow-up-of", FIRST, "--only", SIX, env=env)
    assert result.code == 0, result.stdout + result.stderr
    assert "To send:       3" in result.stdout
    assert (
        f"Follows up:    {FIRST}, threaded on its letters; not reminded: 1 ambiguous, "
        "1 failed, 1 never got the first letter"
    ) in result.stdout
    assert "Repeats" not in result.stdout
    received = {r.recipients[0].split("@")[0].upper(): parse(r.data) for r in smtp_server.received}
    assert sorted(received) == ["CHL", "FRA", "KEN"]
    for contact_id, message in received.items():
        assert message["In-Reply-To"] == first_letters[contact_id]
        assert message["References"] == first_letters[contact_id]
        assert message["Message-ID"] != first_letters[contact_id]
        assert message["Subject"] == (
            "Re: Request to endorse the Code of Conduct regarding Security Council action"
        )
        text = message.get_body(preferencelist=("plain",))
        assert text is not None
        sent = next(
            r.time
            for r in read_log(project / "logs" / "send-log.csv")
            if r.contact_id == contact_id and r.status == "sent" and r.campaign == FIRST
        )
        expected = f"follow up on our letter of {long_date(sent.date(), 'en')}, which"
        assert expected in " ".join(text.get_content().split())
    # Its own Message-IDs are stable: a rerun finds it all sent.
    again = run_cli("send", "--yes", "--follow-up-of", FIRST, "--only", SIX, env=env)
    assert "Nothing to send." in again.stdout


def test_the_setting_names_the_campaign_followed_and_templates_may_use_the_first_letter(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, first_letters: dict[str, str]
) -> None:
    folder = project / "templates" / "en" / "follow-up"
    (folder / "subject.txt.j2").write_text("Reminder: {{ original_subject }}\n")
    text = folder / "letter.txt.j2"
    text.write_text(
        text.read_text().replace("Sincerely,", "Sent first on {{ original_date }}.\n\nSincerely,")
    )
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    assert run_cli("send", "--yes", "--only", "CHL", env=env).code == 0
    (received,) = smtp_server.received
    message = parse(received.data)
    assert message["Subject"] == (
        "Reminder: Request to endorse the Code of Conduct regarding Security Council action"
    )
    sent_on = next(
        r.time for r in read_log(project / "logs" / "send-log.csv") if r.status == "sent"
    )
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert f"Sent first on {sent_on.day} {sent_on:%B %Y}." in body.get_content()


def test_the_preview_of_a_reminder_shows_only_the_missions_it_would_go_to(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, first_letters: dict[str, str]
) -> None:
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    result = run_cli("preview", "--out", "reminders", env=env)
    assert result.code == 0, result.stderr
    letters = sorted(p.stem for p in (project / "reminders" / "letters").glob("*.eml"))
    assert letters == ["CHL", "FRA", "KEN"]


def test_a_reminder_without_templates_of_its_own_never_sends_the_first_letter_again(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, first_letters: dict[str, str]
) -> None:
    shutil.rmtree(project / "templates" / "en" / "follow-up")
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 2
    assert "templates/en/follow-up/letter.txt.j2: missing" in result.stderr
    assert smtp_server.received == []


def test_a_campaign_cannot_follow_itself(run_cli: RunCli) -> None:
    result = run_cli("check", env={"CAMPAIGN": FIRST, "FOLLOW_UP_OF": FIRST})
    assert result.code == 2
    assert "FOLLOW_UP_OF='code-of-conduct-2015' is CAMPAIGN itself" in result.stderr


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        (FIRST, "FOLLOW_UP_OF='code-of-conduct-2015' is CAMPAIGN itself"),
        ("x\nBcc: all@example.org", "FOLLOW_UP_OF is not valid: it holds the control character"),
    ],
    ids=["itself", "a-line-break"],
)
def test_the_option_is_checked_as_the_setting_is(
    run_cli: RunCli, smtp_server: SmtpServer, option: str, problem: str
) -> None:
    result = run_cli("send", "--yes", "--follow-up-of", option, env=smtp_server.env(CAMPAIGN=FIRST))
    assert result.code == 2
    assert problem in result.stderr
    assert smtp_server.received == []


def test_first_letters_still_owed_are_counted_together(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    """Whether the last try was refused for now (retry) or for the run (deferred)."""
    sent = datetime(2015, 8, 31, 12, tzinfo=UTC)
    with SendLog(project / "logs" / "send-log.csv") as log:
        for contact_id, status in [("AFG", "retry"), ("ALB", "deferred"), ("DZA", "retry")]:
            email = f"{contact_id.lower()}@missions.example"
            for row_status in ("sending", status):
                log.append(LogRow(sent, FIRST, contact_id, email, row_status, 1, None, "", "<x>"))
    env = smtp_server.env(CAMPAIGN=REMINDER)
    result = run_cli("send", "--yes", "--follow-up-of", FIRST, "--only", "AFG,ALB,DZA", env=env)
    assert result.code == 0, result.stdout + result.stderr
    assert "not reminded: 3 still owed the first letter\n" in result.stdout


def test_a_test_letter_needs_a_contact_the_reminder_would_go_to(
    run_cli: RunCli, smtp_server: SmtpServer, first_letters: dict[str, str]
) -> None:
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    result = run_cli("test-send", "--to", "me@coalition.org", "--only", "AFG", env=env)
    assert result.code == 2
    assert result.stderr == (
        f"Error: no contact to take the test letter from: a follow-up of {FIRST} has a letter "
        "only for contacts whose first letter was sent and not answered, and --only AFG names "
        "none of them\n"
    )
    assert smtp_server.received == []


# -- with what came back to the mailbox ----------------------------------------------------


def reply(contact_id: str, *refs: str, automatic: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = f"{contact_id.lower()}@missions.example"
    message["To"] = "campaign@coalition.example"
    message["Subject"] = "Re: Request to endorse the Code of Conduct"
    message["Message-ID"] = f"<answer-{contact_id}-{len(refs)}@missions.example>"
    message["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
    message["In-Reply-To"] = refs[-1]
    message["References"] = " ".join(refs)
    if automatic:
        message["Auto-Submitted"] = "auto-replied"
    message.set_content("Thank you for your letter." if not automatic else "I am away.")
    return bytes(message)


def report(contact_id: str, letter_id: str, action: str, status: str) -> bytes:
    """An RFC 3464 delivery status notification about one letter."""
    address = f"{contact_id.lower()}@missions.example"
    return (
        "From: MAILER-DAEMON@mail.coalition.example\r\n"
        "To: campaign@coalition.example\r\n"
        f"Subject: Delivery Status Notification ({action})\r\n"
        f"Message-ID: <dsn-{contact_id}@mail.coalition.example>\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nA letter could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mail.coalition.example\r\n\r\n"
        f"Final-Recipient: rfc822; {address}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {status} no such mailbox\r\n\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {letter_id}\r\nTo: {address}\r\n\r\n"
        "--b--\r\n"
    ).encode()


def test_only_missions_that_have_the_letter_and_have_not_answered_are_reminded(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    env = smtp_server.env(CAMPAIGN=FIRST)
    five = "CHL,FRA,KEN,DZA,AND"
    assert run_cli("send", "--yes", "--only", five, env=env).code == 0
    ids = {r.contact_id: r.message_id for r in read_log(project / "logs" / "send-log.csv")}
    mail = project / "mail"
    mail.mkdir()
    (mail / "1.eml").write_bytes(report("CHL", ids["CHL"], "failed", "5.1.1"))
    (mail / "2.eml").write_bytes(reply("FRA", ids["FRA"]))
    (mail / "3.eml").write_bytes(reply("KEN", ids["KEN"], automatic=True))
    (mail / "4.eml").write_bytes(report("DZA", ids["DZA"], "delayed", "4.4.7"))
    read = run_cli("inbox", "--from", str(mail), env=env)
    assert read.code == 0, read.stdout + read.stderr
    smtp_server.received.clear()

    env["CAMPAIGN"] = REMINDER
    result = run_cli("send", "--yes", "--follow-up-of", FIRST, "--only", five, env=env)
    assert result.code == 0, result.stdout + result.stderr
    assert "not reminded: 1 bounced, 1 replied" in result.stdout
    assert "Inbox:         read " in result.stdout
    reminded = sorted(r.recipients[0] for r in smtp_server.received)
    assert reminded == ["and@missions.example", "dza@missions.example", "ken@missions.example"]

    # Algeria answers the reminder: the answer names both letters of the thread.
    reminder_ids = {
        r.contact_id: r.message_id
        for r in read_log(project / "logs" / "send-log.csv")
        if r.campaign == REMINDER and r.status == "sent"
    }
    (mail / "5.eml").write_bytes(reply("DZA", ids["DZA"], reminder_ids["DZA"]))
    assert run_cli("inbox", "--from", str(mail), env=env).code == 0
    smtp_server.received.clear()
    env["CAMPAIGN"] = "code-of-conduct-2015-reminder-2"
    # The same reminder again is a repeat of the first reminder: it needs a yes.
    refused = run_cli("send", "--yes", "--follow-up-of", FIRST, "--only", five, env=env)
    assert refused.code == 2
    assert "campaign 'code-of-conduct-2015-reminder-1'" in refused.stderr
    second = run_cli(
        "send", "--yes", "--allow-repeat", "--follow-up-of", FIRST, "--only", five, env=env
    )
    assert second.code == 0, second.stdout + second.stderr
    assert sorted(r.recipients[0] for r in smtp_server.received) == [
        "and@missions.example",
        "ken@missions.example",
    ]


def test_the_plan_says_to_read_the_inbox_first_when_it_was_not_read_today(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, first_letters: dict[str, str]
) -> None:
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert (
        "Inbox:         never read by outreach inbox: run `make inbox` first, so that no "
        "reminder goes to a mission that answered or whose letter bounced"
    ) in result.stdout
