"""A campaign over weeks: a reminder, in the same conversation, to the missions that
have the first letter and have not answered; never to one that replied."""

from __future__ import annotations

import shutil
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from outreach.sendlog import read_log
from tests.conftest import RunCli
from tests.smtp import DROP, SmtpServer

FIRST = "code-of-conduct-2015"
REMINDER = "code-of-conduct-2015-reminder-1"
SIX = "CHL,FRA,KEN,AFG,ALB,DZA"


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


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
        assert "follow up on our letter of 31 August 2015" in " ".join(text.get_content().split())
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
