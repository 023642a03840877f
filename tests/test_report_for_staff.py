"""The report as staff read it weeks into a campaign: when a bounce came, how fast the
letters really went, which countries have not answered, and one reply said once."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from outreach.cli import cli
from outreach.sendlog import read_log
from tests.conftest import FakeClock, Result, RunCli, squash, write_csv
from tests.smtp import SmtpServer
from tests.test_follow_up import FIRST, REMINDER, reply
from tests.test_inbox import MAIL, send_letters
from tests.test_report import Event, sent, write_log

#: When the letters go (FakeClock's start) and when `outreach inbox` reads the mail.
SENT_AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
READ_AT = SENT_AT + timedelta(days=10)


def invoke(clock: FakeClock, *args: str, env: Mapping[str, str]) -> Result:
    """The ``outreach`` command in this process, on ``clock``'s time."""
    done = CliRunner().invoke(
        cli, list(args), env={"COLUMNS": "200", "NO_COLOR": "1", **env}, obj={"clock": clock}
    )
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return Result(done.exit_code, done.stdout, done.stderr)


# -- a bounce's time is the bounce's own date -------------------------------------------------


@pytest.mark.parametrize(
    ("date_line", "shown"),
    [
        pytest.param(
            "Date: Sat, 28 Nov 2026 10:00:02 +0100\n",
            datetime(2026, 11, 28, 9, 0, 2, tzinfo=UTC),
            id="its-own-date-in-utc",
        ),
        pytest.param("", READ_AT, id="no-date-read-time"),
        pytest.param("Date: Tue, 1 Jan 2030 00:00:00 +0000\n", READ_AT, id="in-the-future"),
        pytest.param(
            "Date: Mon, 31 Aug 2015 12:00:00 +0000\n", READ_AT, id="before-the-letter-went"
        ),
        pytest.param("Date: Fri, 31 Dec 9999 23:59:59 +0000\n", READ_AT, id="year-9999"),
        pytest.param("Date: yesterday, around noon\n", READ_AT, id="not-a-date"),
    ],
)
def test_a_bounce_read_days_later_is_dated_by_its_own_date(
    project: Path,
    smtp_server: SmtpServer,
    clock: FakeClock,
    tmp_path: Path,
    date_line: str,
    shown: datetime,
) -> None:
    send_letters(smtp_server, clock, ["BRA"])
    mail = tmp_path / "mail"
    mail.mkdir()
    bounce = (MAIL / "postfix-bounce.eml").read_text(encoding="utf-8")
    bounce = bounce.replace("Date: Sat, 28 Nov 2026 09:00:02 +0000 (UTC)\n", date_line, 1)
    (mail / "bounce.eml").write_text(bounce, encoding="utf-8")
    clock.elapsed = (READ_AT - clock.start).total_seconds()

    read = invoke(clock, "inbox", "--from", str(mail), env=smtp_server.env())
    assert read.code == 0, read.stdout + read.stderr
    (row,) = [r for r in read_log(project / "logs" / "send-log.csv") if r.status == "bounced"]
    assert row.time == shown

    table = invoke(clock, "report", env=smtp_server.env()).stdout
    assert f"BRA  Brazil  bounced  1 attempt, dated {shown:%Y-%m-%d %H:%M:%S} UTC" in table
    data = json.loads(invoke(clock, "report", "--format", "json", env=smtp_server.env()).stdout)
    (bra,) = [c for c in data["problems"] if c["id"] == "BRA"]
    assert bra["last_time"] == shown.isoformat()
    page = invoke(clock, "report", "--format", "html", env=smtp_server.env()).stdout
    assert f'<span class="when">{shown:%Y-%m-%d %H:%M} UTC</span>' in page


def test_an_answer_is_dated_by_its_own_date_in_every_format(
    project: Path, smtp_server: SmtpServer, clock: FakeClock, tmp_path: Path
) -> None:
    send_letters(smtp_server, clock, ["CHL"])
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "reply.eml").write_bytes((MAIL / "reply.eml").read_bytes())
    clock.elapsed = (READ_AT - clock.start).total_seconds()
    assert invoke(clock, "inbox", "--from", str(mail), env=smtp_server.env()).code == 0
    data = json.loads(invoke(clock, "report", "--format", "json", env=smtp_server.env()).stdout)
    (chl,) = data["replies"]
    # The time the report gives is the one the answer's text gives, not the reading's.
    said = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d) UTC, from", chl["smtp_reply"])
    assert said is not None
    assert chl["last_time"].startswith(said.group(1).replace(" ", "T"))
    assert not chl["last_time"].startswith(READ_AT.date().isoformat())


# -- the rate of the runs, not of the days between them ---------------------------------------


def run_of(first_second: int, ids: list[str], every: int = 2) -> list[Event]:
    """Letters to ``ids``, one every ``every`` seconds from ``first_second`` on (30 a minute)."""
    events: list[Event] = []
    for n, contact_id in enumerate(ids):
        events.extend(sent(first_second + n * every, contact_id))
    return events


DAY = 24 * 3600


@pytest.mark.parametrize(
    ("events", "rate", "runs"),
    [
        pytest.param(run_of(0, ["AFG", "ALB", "DZA", "AND"]), "30.0 a minute", 1, id="one-run"),
        pytest.param(
            run_of(0, ["AFG", "ALB", "DZA", "AND"]) + run_of(DAY, ["AGO", "ATG", "ARG", "ARM"]),
            "30.0 a minute while sending (2 runs)",
            2,
            id="two-runs-a-day-apart",
        ),
        pytest.param(
            run_of(0, ["AFG", "ALB"])
            + run_of(3 * 3600, ["DZA", "AND"], every=6)
            + run_of(DAY, ["AGO", "ATG"]),
            "18.0 a minute while sending (3 runs)",
            3,
            id="three-runs-one-slower",
        ),
        pytest.param(
            run_of(0, ["AFG", "ALB"]) + run_of(2 + 300, ["DZA", "AND"]),
            "0.6 a minute",
            1,
            id="a-retry-s-pause-is-part-of-the-run",
        ),
        pytest.param(
            run_of(0, ["AFG"]) + run_of(DAY, ["ALB"]),
            "not enough sends to tell",
            2,
            id="one-letter-a-run",
        ),
    ],
)
def test_the_rate_is_that_of_the_runs_never_averaged_over_the_days_between_them(
    run_cli: RunCli, project: Path, events: list[Event], rate: str, runs: int
) -> None:
    write_log(project / "logs" / "send-log.csv", events)
    table = squash(run_cli("report").stdout)
    assert f", rate {rate}" in table
    data = json.loads(run_cli("report", "--format", "json").stdout)
    assert data["runs"] == runs
    assert f"<dt>Rate</dt><dd>{rate}</dd>" in run_cli("report", "--format", "html").stdout


# -- countries, not ids -------------------------------------------------------------------


def test_the_missions_without_an_answer_are_listed_by_country_a_to_z_accents_aside(
    run_cli: RunCli, project: Path
) -> None:
    write_csv(
        project / "contacts.csv",
        "id,country,email\n"
        "HRV,Croatia,hrv@missions.example\n"
        "CIV,Côte d'Ivoire,civ@missions.example\n"
        "CHL,Chile,chl@missions.example\n"
        "ZAF,South Africa,zaf@missions.example\n"
        "ESP,España,esp@missions.example\n",
    )
    write_log(project / "logs" / "send-log.csv", run_of(0, ["HRV", "CIV", "CHL"], every=2))
    page = run_cli("report", "--format", "html").stdout
    assert '<p id="awaiting">Chile, Côte d&#39;Ivoire, Croatia</p>' in page
    assert '<p id="never">España, South Africa</p>' in page
    assert "Never attempted (2): España, South Africa" in run_cli("report").stdout


# -- a reply to a reminder, said once -------------------------------------------------------


def test_a_reply_to_a_reminder_is_said_once_though_it_answers_both_letters(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    env = smtp_server.env(CAMPAIGN=FIRST)
    assert run_cli("send", "--yes", "--only", "DZA", env=env).code == 0
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    assert run_cli("send", "--yes", "--only", "DZA", env=env).code == 0
    ids = {r.campaign: r.message_id for r in read_log(project / "logs" / "send-log.csv")}
    mail = project / "mail"
    mail.mkdir()
    (mail / "answer.eml").write_bytes(reply("DZA", ids[FIRST], ids[REMINDER]))

    read = run_cli("inbox", "--from", str(mail), env=env)
    assert read.code == 0, read.stdout + read.stderr
    assert "Recorded:      1 replied\n" in read.stdout
    said = [line for line in read.stdout.splitlines() if line.startswith("  DZA ")]
    assert said == [
        "  DZA dza@missions.example: replied 2026-11-30 10:00 UTC, from dza@missions.example, "
        "subject: Re: Request to endorse the Code of Conduct"
    ]
    # Both letters of the thread are answered, each in its own row of the log.
    rows = read_log(project / "logs" / "send-log.csv")
    assert sorted(r.campaign for r in rows if r.status == "replied") == [FIRST, REMINDER]
