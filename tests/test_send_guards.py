"""The guards a plausible one-line slip would remove, each seen at work: the library's
own repeat check, a permanent refusal at RCPT whatever its code, the do-not-contact
list against a letter still owed, and the ``sending`` row on the disk before the data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.errors import RepeatError
from outreach.sendlog import read_log
from tests.conftest import FakeClock, RunCli, system_program
from tests.smtp import SmtpServer
from tests.test_send import send, statuses


def test_the_library_s_send_refuses_a_repeat_as_the_command_does(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """A script calling Campaign.send, not only `outreach send`, never sends a letter twice."""
    send(smtp_server, clock, ["CHL"], CAMPAIGN="code-of-conduct-2015")
    settings = load_settings(
        environ=smtp_server.env(CAMPAIGN="code-of-conduct-2051"), env_file=None
    )
    campaign = Campaign.open(settings)
    with campaign.open_log() as log:
        plan = campaign.plan(log, campaign.select(["CHL"]), now=clock.now())
        assert plan.repeats
        with pytest.raises(RepeatError, match="would go again"):
            campaign.send(plan, log, clock=clock)
    assert len(smtp_server.received) == 1
    assert {r.campaign for r in read_log(settings.send_log)} == {"code-of-conduct-2015"}


@pytest.mark.parametrize(
    "reply",
    [
        "501 5.1.3 Bad recipient address syntax",
        "550 5.1.1 No such user",
        "553 5.1.2 Mailbox name not allowed",
        "554 5.7.1 Relay access denied",
    ],
)
def test_a_permanent_refusal_at_rcpt_fails_the_letter_at_once_whatever_its_code(
    project: Path, smtp_server: SmtpServer, clock: FakeClock, reply: str
) -> None:
    smtp_server.script.always_refuse["fra@missions.example"] = reply
    outcome, rows = send(smtp_server, clock, ["CHL", "FRA"], SEND_MAX_ATTEMPTS="5")
    assert (outcome.counts["sent"], outcome.counts["failed"]) == (1, 1)
    assert statuses(rows, "FRA") == ["sending", "failed"]  # tried once, never again
    failed = next(r for r in rows if r.status == "failed")
    assert f"{failed.smtp_code} {failed.smtp_reply}" == reply
    assert [r.recipients for r in smtp_server.received] == [["chl@missions.example"]]


@pytest.mark.parametrize(
    ("refusal", "status", "options"),
    [
        pytest.param("450 4.2.1 Mailbox busy", "deferred", (), id="deferred"),
        pytest.param("550 5.1.1 No such user", "failed", ("--retry-failed",), id="failed-retried"),
    ],
)
def test_a_mission_listed_after_its_letter_was_held_up_is_never_sent_it(
    run_cli: RunCli,
    project: Path,
    smtp_server: SmtpServer,
    refusal: str,
    status: str,
    options: tuple[str, ...],
) -> None:
    smtp_server.script.always_refuse["fra@missions.example"] = refusal
    env = smtp_server.env(SEND_MAX_ATTEMPTS="2")
    first = run_cli("send", "--yes", "--only", "CHL,FRA", env=env)
    assert first.code == 1, first.stdout + first.stderr
    rows = read_log(project / "logs" / "send-log.csv")
    assert statuses(rows, "FRA")[-1] == status
    # France asks not to be written to; the server would now take the letter.
    del smtp_server.script.always_refuse["fra@missions.example"]
    (project / "do-not-contact.csv").write_text("FRA # asked on 2026-10-02\n")
    again = run_cli("send", "--yes", *options, "--only", "CHL,FRA", env=env)
    assert again.code == 0, again.stdout + again.stderr
    assert "Held back:     1 on the do-not-contact list (do-not-contact.csv): FRA" in again.stdout
    assert [r.recipients for r in smtp_server.received] == [["chl@missions.example"]]


def test_each_sending_row_is_on_the_disk_before_the_letter_s_data_goes(
    project: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Watched from outside, as the kernel sees the process: for every letter, the
    ``sending`` row is written and fsynced, and only then is DATA sent."""
    strace = system_program("strace")
    trace = tmp_path / "trace"
    done = subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-s",
            "200",
            "-e",
            "trace=write,fsync,fdatasync,sendto,sendmsg",
            "-o",
            str(trace),
            sys.executable,
            "-m",
            "outreach",
            "send",
            "--yes",
            "--only",
            "CHL,FRA,KEN",
        ],
        cwd=project,
        env={**os.environ, **smtp_server.env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = str((project / "logs" / "send-log.csv").resolve())
    events = []
    for line in trace.read_text().splitlines():
        if re.search(rf"\bwrite\(\d+<{re.escape(log)}>, \".*,sending,", line):
            events.append("row")
        elif re.search(rf"\bf(data)?sync\(\d+<{re.escape(log)}>", line):
            events.append("fsync")
        elif re.search(r"\bsend(to|msg)\(\d+<(TCP|socket):.*\"DATA\\r\\n\"", line):
            events.append("DATA")
    assert events.count("DATA") == 3, events
    # Reduced to the order that matters: row, then its fsync, then DATA, per letter.
    order = [e for i, e in enumerate(events) if e != "fsync" or events[i - 1] == "row"]
    assert order == ["row", "fsync", "DATA"] * 3, events
