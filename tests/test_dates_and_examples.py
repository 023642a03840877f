"""The dates a letter carries, and the example values staff leave in place.

A reminder names the first letter by its date, written as its own language writes a
date line; a LETTER_DATE long past is pointed out; a subject too long is traced to
the file it comes from; ``check`` does not call letters in order while ``.env`` still
holds an example server or README's example client id.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from outreach.render import long_date
from outreach.sendlog import LogRow, SendLog
from outreach.settings import load_settings
from tests.conftest import ROOT, RunCli
from tests.smtp import SmtpServer
from tests.test_follow_up import FIRST, REMINDER


def first_letter_sent(
    project: Path,
    when: datetime,
    contact_id: str = "CHL",
    subject: str = "Request to endorse the Code of Conduct",
) -> None:
    """The send log of the first campaign: one letter, sent at ``when``."""
    with SendLog(project / "logs" / "send-log.csv") as log:
        log.append(
            LogRow(
                time=when,
                campaign=FIRST,
                contact_id=contact_id,
                email=f"{contact_id.lower()}@missions.example",
                status="sent",
                attempt=1,
                smtp_code=250,
                smtp_reply="2.0.0 Ok",
                message_id=f"<first-{contact_id}@coalition.example>",
                subject=subject,
            )
        )


def test_the_shipped_reminder_names_the_first_letter_by_its_date(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    first_letter_sent(project, datetime(2026, 11, 29, 9, tzinfo=UTC))
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    result = run_cli("send", "--yes", env=env)
    assert result.code == 0, result.stdout + result.stderr
    [received] = smtp_server.received
    text = received.message.get_body(("plain",))
    assert text is not None
    words = " ".join(text.get_content().split())
    assert "follow up on our letter of 29 November 2026, which requested" in words
    assert "31 August 2015, which" not in words


@pytest.mark.parametrize(
    ("language", "written"),
    [
        ("en", "29 November 2026"),
        ("fr", "29 novembre 2026"),
        ("es", "29 de noviembre de 2026"),
        ("xx", "29 November 2026"),
    ],
)
def test_a_reminder_in_french_or_spanish_dates_the_first_letter_in_its_language(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, language: str, written: str
) -> None:
    first_letter_sent(project, datetime(2026, 11, 29, 9, tzinfo=UTC))
    contacts = project / "contacts.csv"
    contacts.write_text(
        contacts.read_text().replace(
            "chl@missions.example,,es,", f"chl@missions.example,,{language},"
        )
    )
    if language not in ("en", "xx"):
        folder = project / "templates" / language / "follow-up"
        shutil.copytree(project / "templates" / "en" / "follow-up", folder)
        (folder / "letter.txt.j2").write_text("Notre lettre du {{ original_date }}.\n")
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    result = run_cli("send", "--yes", env=env)
    assert result.code == 0, result.stdout + result.stderr
    [received] = smtp_server.received
    text = received.message.get_body(("plain",))
    assert text is not None
    assert written in " ".join(text.get_content().split())


def test_the_reminder_s_date_is_written_as_a_letter_dated_that_day_would_be(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    """With LETTER_DATE empty a letter is dated the day it goes: the reminder's
    ``original_date`` is then exactly the first letter's own date line."""
    first = run_cli(
        "send", "--yes", "--only", "CHL", env=smtp_server.env(CAMPAIGN=FIRST, LETTER_DATE="")
    )
    assert first.code == 0, first.stderr
    first_text = smtp_server.received[0].message.get_body(("plain",))
    assert first_text is not None
    date_line = first_text.get_content().splitlines()[0].strip()
    assert date_line == long_date(datetime.now(UTC).date(), "en")
    reminder = run_cli("send", "--yes", env=smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST))
    assert reminder.code == 0, reminder.stderr
    second = smtp_server.received[1].message.get_body(("plain",))
    assert second is not None
    assert f"our letter of {date_line}, which" in " ".join(second.get_content().split())


def test_a_letter_date_long_past_is_pointed_out_by_check(run_cli: RunCli) -> None:
    result = run_cli("check")
    assert result.code == 0, result.stderr
    assert "Date:      LETTER_DATE='31 August 2015' is " in result.stdout
    assert "years ago: every letter is dated then" in result.stdout
    assert "Everything is in order." not in result.stdout
    today = run_cli("check", env={"LETTER_DATE": f"{date.today():%d %B %Y}"})
    assert "Date:" not in today.stdout


@pytest.mark.parametrize(
    ("text", "warned"),
    [
        ("31 August 2015", True),
        ("2015-08-31", True),
        ("1 September 2026", True),
        ("30 November 2026", False),
        ("the day it goes", False),
        ("", False),
    ],
)
def test_which_letter_dates_are_long_past(text: str, warned: bool) -> None:
    settings = load_settings(environ={"LETTER_DATE": text}, env_file=None)
    assert (settings.stale_letter_date(date(2026, 12, 7)) is not None) == warned


def test_a_reminder_s_long_subject_names_where_it_comes_from(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    long = "Request to endorse the Code of Conduct regarding Security Council action; again"
    first_letter_sent(project, datetime(2026, 11, 29, 9, tzinfo=UTC), subject=long)
    result = run_cli("check", env={"CAMPAIGN": REMINDER, "FOLLOW_UP_OF": FIRST})
    assert result.code == 0, result.stderr
    assert (
        "'Re: ' and the first letter's subject: templates/en/follow-up has no subject.txt.j2"
    ) in result.stdout
    assert "(templates/en/subject.txt.j2)" not in result.stdout
    (project / "templates" / "en" / "follow-up" / "subject.txt.j2").write_text("x" * 90 + "\n")
    own = run_cli("check", env={"CAMPAIGN": REMINDER, "FOLLOW_UP_OF": FIRST})
    assert "(templates/en/follow-up/subject.txt.j2)" in own.stdout


@pytest.mark.parametrize(
    ("line", "named"),
    [
        pytest.param("", "SMTP_HOST=smtp.example.org is an example name", id="example-env"),
        pytest.param(
            "OAUTH_CLIENT_ID=00000000-0000-0000-0000-000000000000\n",
            "OAUTH_CLIENT_ID=00000000-0000-0000-0000-000000000000 is README's example",
            id="readme-client-id",
        ),
    ],
)
def test_check_refuses_to_call_letters_in_order_with_example_settings(
    run_cli: RunCli, project: Path, line: str, named: str
) -> None:
    (project / ".env").write_text((ROOT / "config.example.env").read_text() + line)
    result = run_cli("check")
    assert result.code == 2
    assert named in result.stdout
    assert "Error: .env still holds example values (listed above under Settings)" in (result.stderr)
    assert "in order" not in result.stdout
