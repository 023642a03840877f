"""Sending: every letter reaches its mission once, and the log says so.

Each test sends to a real SMTP server on loopback (aiosmtpd) and looks at
what that server received and at the send log, never at mocks.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.errors import DeliveryError, SendLogError
from outreach.message import Letter
from outreach.ratelimit import WINDOW_SECONDS, RateLimiter
from outreach.sending import Outcome, Sender, make_plan
from outreach.sendlog import LogRow, SendLog, read_log
from outreach.transport import Connection, Server
from tests.conftest import FakeClock, RunCli, run_python
from tests.smtp import DROP, PASSWORD, USERNAME, SmtpServer

THREE = ["CHL", "FRA", "KEN"]


def send(
    server: SmtpServer,
    clock: FakeClock,
    ids: list[str] = THREE,
    *,
    retry_failed: bool = False,
    resend_ambiguous: bool = False,
    **env: str,
) -> tuple[Outcome, list[LogRow]]:
    """What `outreach send --yes --only …` does, through the library, on a fake clock."""
    settings = load_settings(environ=server.env(**env), env_file=None)
    campaign = Campaign.open(settings)
    with campaign.open_log() as log:
        plan = campaign.plan(
            log,
            campaign.select(ids),
            retry_failed=retry_failed,
            resend_ambiguous=resend_ambiguous,
            now=clock.now(),
        )
        outcome = campaign.send(plan, log, clock=clock)
    return outcome, read_log(settings.send_log)


def statuses(rows: list[LogRow], contact_id: str) -> list[str]:
    return [row.status for row in rows if row.contact_id == contact_id]


def received_ids(server: SmtpServer) -> list[str]:
    return [str(r.message["Message-ID"]) for r in server.received]


def test_each_letter_is_sent_once_and_logged(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    outcome, rows = send(smtp_server, clock)
    assert outcome.counts["sent"] == 3
    assert outcome.all_sent
    assert [r.recipients for r in smtp_server.received] == [
        ["chl@missions.example"],
        ["fra@missions.example"],
        ["ken@missions.example"],
    ]
    for contact_id in THREE:
        assert statuses(rows, contact_id) == ["sending", "sent"]
    sent = [r for r in rows if r.status == "sent"]
    assert all(r.smtp_code == 250 and "queued as Q1" in r.smtp_reply for r in sent)
    assert [r.message_id for r in sent] == received_ids(smtp_server)


def test_a_second_run_sends_nothing(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    send(smtp_server, clock)
    outcome, _ = send(smtp_server, clock)
    assert outcome.attempted == 0
    assert len(smtp_server.received) == 3


def test_starttls_with_private_ca_and_login(
    project: Path, starttls_server: SmtpServer, clock: FakeClock
) -> None:
    assert starttls_server.ca_file is not None
    outcome, _ = send(
        starttls_server,
        clock,
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(starttls_server.ca_file),
        SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD=PASSWORD,
    )
    assert outcome.counts["sent"] == 3
    assert all(r.tls and r.authenticated for r in starttls_server.received)


def test_implicit_tls_with_login(project: Path, ssl_server: SmtpServer, clock: FakeClock) -> None:
    assert ssl_server.ca_file is not None
    outcome, _ = send(
        ssl_server,
        clock,
        SMTP_SECURITY="ssl",
        SMTP_CA_FILE=str(ssl_server.ca_file),
        SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD=PASSWORD,
    )
    assert outcome.counts["sent"] == 3
    assert all(r.tls and r.authenticated for r in ssl_server.received)


def test_certificate_that_does_not_verify_stops_before_sending(
    project: Path, starttls_server: SmtpServer, clock: FakeClock
) -> None:
    with pytest.raises(DeliveryError, match=r"does not verify.*SMTP_CA_FILE"):
        send(starttls_server, clock, SMTP_SECURITY="starttls")
    assert starttls_server.received == []


def test_starttls_not_offered_is_never_a_silent_downgrade(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
        send(smtp_server, clock, SMTP_SECURITY="starttls")
    assert smtp_server.received == []


def test_wrong_password_stops_and_the_password_is_nowhere(
    project: Path, starttls_server: SmtpServer, clock: FakeClock
) -> None:
    assert starttls_server.ca_file is not None
    wrong = "Wr0ng-Secret-Value"
    with pytest.raises(DeliveryError) as caught:
        send(
            starttls_server,
            clock,
            SMTP_SECURITY="starttls",
            SMTP_CA_FILE=str(starttls_server.ca_file),
            SMTP_USERNAME=USERNAME,
            SMTP_PASSWORD=wrong,
        )
    assert "535" in str(caught.value)
    assert "SMTP_PASSWORD" in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value)
    assert starttls_server.received == []
    assert not any(
        wrong in p.read_text()
        for p in project.rglob("*")
        if p.is_file() and p.suffix in (".csv", ".log")
    )


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param("rcpt", id="451-at-rcpt"),
        pytest.param("data", id="451-at-end-of-data"),
        pytest.param("mail", id="451-at-mail"),
    ],
)
def test_temporary_refusal_is_retried_with_the_same_message_id(
    project: Path, smtp_server: SmtpServer, clock: FakeClock, stage: str
) -> None:
    reply = "451 4.3.0 Try again later"
    {
        "rcpt": smtp_server.script.any_rcpt,
        "data": smtp_server.script.data,
        "mail": smtp_server.script.mail,
    }[stage].append(reply)
    outcome, rows = send(smtp_server, clock, ["CHL"])
    assert outcome.counts["sent"] == 1
    assert len(smtp_server.received) == 1
    chile = [r for r in rows if r.contact_id == "CHL"]
    assert [r.status for r in chile][-2:] == ["sending", "sent"]
    retry = next(r for r in chile if r.status == "retry")
    assert (retry.smtp_code, retry.smtp_reply) == (451, "4.3.0 Try again later")
    assert len({r.message_id for r in chile}) == 1
    assert len(clock.sleeps) >= 1


def test_421_slows_every_connection_and_reconnects(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    smtp_server.script.mail.append("421 4.7.0 Too many messages, slow down")
    outcome, rows = send(
        smtp_server, clock, SEND_RETRY_WAIT_SECONDS="10", SEND_RETRY_MAX_WAIT_SECONDS="10"
    )
    assert outcome.counts["sent"] == 3
    assert statuses(rows, "CHL") == ["retry", "sending", "sent"]
    # After the 421 the unlimited rate became one a second: the later letters waited.
    assert sum(1 for s in clock.sleeps if 0.9 <= s <= 1.0 + 1e-9) >= 1


def test_a_refused_sender_stops_the_run_with_the_letter_still_owed(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """Nothing began: no `sending` row, so the next run sends the letter
    rather than counting it as perhaps delivered."""
    smtp_server.script.mail.append("553 5.7.1 Sender address rejected")
    with pytest.raises(DeliveryError, match="refused the sender MAIL_FROM="):
        send(smtp_server, clock, ["CHL", "FRA"])
    settings = load_settings(environ=smtp_server.env(), env_file=None)
    assert not settings.send_log.exists() or statuses(read_log(settings.send_log), "CHL") == []
    outcome, rows = send(smtp_server, clock, ["CHL", "FRA"])
    assert outcome.counts["sent"] == 2
    assert statuses(rows, "CHL") == ["sending", "sent"]
    assert len(smtp_server.received) == 2


def test_permanent_refusal_fails_that_letter_only(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    smtp_server.script.rcpt["fra@missions.example"].append("550 5.1.1 No such user")
    outcome, rows = send(smtp_server, clock)
    assert (outcome.counts["sent"], outcome.counts["failed"]) == (2, 1)
    assert not outcome.all_sent
    failed = next(r for r in rows if r.status == "failed")
    assert (failed.contact_id, failed.smtp_code, failed.smtp_reply) == (
        "FRA",
        550,
        "5.1.1 No such user",
    )
    # The attempt began once the sender was accepted; the recipient was refused.
    assert statuses(rows, "FRA") == ["sending", "failed"]
    again, _ = send(smtp_server, clock)
    assert again.attempted == 0
    retried, _ = send(smtp_server, clock, retry_failed=True)
    assert retried.counts["sent"] == 1


def test_attempts_exhausted_defers_the_letter_to_the_next_run(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    for _ in range(3):
        smtp_server.script.rcpt["chl@missions.example"].append("452 4.2.2 Mailbox full")
    outcome, rows = send(smtp_server, clock, ["CHL"], SEND_MAX_ATTEMPTS="3")
    assert outcome.counts["deferred"] == 1
    assert statuses(rows, "CHL") == ["sending", "retry"] * 2 + ["sending", "deferred"]
    assert [r.attempt for r in rows if r.contact_id == "CHL"] == [1, 1, 2, 2, 3, 3]
    outcome, rows = send(smtp_server, clock, ["CHL"])
    assert outcome.counts["sent"] == 1
    assert [r.attempt for r in rows if r.contact_id == "CHL"][-2:] == [4, 4]


def test_connection_lost_before_the_data_is_retried(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    smtp_server.script.any_rcpt.append(DROP)
    outcome, rows = send(smtp_server, clock, ["CHL"])
    assert outcome.counts["sent"] == 1
    assert statuses(rows, "CHL") == ["sending", "retry", "sending", "sent"]
    assert len(smtp_server.received) == 1


def test_connection_lost_after_the_final_dot_is_ambiguous_and_not_resent(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    smtp_server.script.data.append(DROP)
    outcome, rows = send(smtp_server, clock, ["CHL", "FRA"])
    assert (outcome.counts["ambiguous"], outcome.counts["sent"]) == (1, 1)
    assert statuses(rows, "CHL") == ["sending", "ambiguous"]
    assert len(smtp_server.received) == 2  # the server did get it
    again, _ = send(smtp_server, clock, ["CHL", "FRA"])
    assert again.attempted == 0
    assert len(smtp_server.received) == 2
    resent, _ = send(smtp_server, clock, ["CHL", "FRA"], resend_ambiguous=True)
    assert resent.counts["sent"] == 1
    ids = received_ids(smtp_server)
    assert ids[0] == ids[2]  # the same Message-ID, so the mission can tell it is the same letter


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nend\r\n", id="dot-lines"),
        pytest.param(b".first line\r\n\r\nbody", id="first-byte-and-no-final-crlf"),
        pytest.param(b"Subject: x\r\n\r\nline\n.bare-lf\r\n", id="after-a-bare-lf"),
    ],
)
def test_lines_that_start_with_a_dot_arrive_as_written(
    project: Path, smtp_server: SmtpServer, data: bytes
) -> None:
    """A line holding only a dot would end the message early (RFC 5321, 4.5.2)."""
    settings = load_settings(environ=smtp_server.env(), env_file=None)
    letter = Letter(
        "CHL", "campaign@coalition.example", ("chl@missions.example",), "<x@y>", "", data
    )
    connection = Connection(Server.from_settings(settings))
    try:
        delivered = connection.send(letter, lambda: lambda: None)
    finally:
        connection.close()
    assert delivered.code == 250
    (received,) = smtp_server.received
    expected = data if data.endswith(b"\r\n") else data + b"\r\n"
    assert received.data == expected


LOG_CANNOT_GROW = """
import json, os, resource, signal
from outreach import Campaign, load_settings
from outreach.clock import SystemClock
from outreach.errors import SendLogError
from outreach.sending import Sender, make_plan
from outreach.sendlog import SendLog

settings = load_settings(environ=json.loads(os.environ["SERVER"]), env_file=None)
campaign = Campaign.open(settings)
chosen = campaign.contacts.select(["CHL"])
letters = [campaign.compose(contact)[1] for contact in chosen]
# From here no file of this process may grow past 10 bytes: the send log's
# first row cannot be written (EFBIG rather than a signal).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))
log = SendLog(settings.send_log).__enter__()
plan = make_plan(chosen, [], settings, now=SystemClock().now())
try:
    Sender(settings, plan, log, SystemClock()).run(letters)
except SendLogError as err:
    print(err)
"""


def test_a_send_log_that_cannot_be_written_stops_the_letter_before_its_data(
    project: Path, smtp_server: SmtpServer
) -> None:
    """The ``sending`` row is written once the server has accepted the sender;
    when it cannot be, the run stops and the server, never given the message,
    delivers nothing."""
    server = json.dumps(smtp_server.env())
    done = run_python(LOG_CANNOT_GROW, project, SERVER=server)
    assert done.code == 0, done.stderr
    assert "cannot be written (File too large)" in done.stdout
    assert "no letter goes out unrecorded" in done.stdout
    assert smtp_server.received == []


def test_some_recipients_refused_the_rest_get_the_letter(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    contacts = project / "contacts.csv"
    text = contacts.read_text(encoding="utf-8").replace(
        "chl@missions.example,,",
        "chl@missions.example,desk@chile-mission.example;old@chile-mission.example,",
    )
    contacts.write_text(text, encoding="utf-8")
    smtp_server.script.always_refuse["old@chile-mission.example"] = "550 5.1.1 Gone"
    outcome, rows = send(smtp_server, clock, ["CHL"])
    assert outcome.counts["sent"] == 1
    (received,) = smtp_server.received
    assert received.recipients == ["chl@missions.example", "desk@chile-mission.example"]
    refused = [r for r in rows if r.status == "refused"]
    assert [(r.email, r.smtp_code) for r in refused] == [("old@chile-mission.example", 550)]
    assert received.message["Cc"] == "desk@chile-mission.example, old@chile-mission.example"


@pytest.mark.parametrize("connections", [1, 3])
def test_rate_limit_holds_in_every_minute_across_connections(
    project: Path, smtp_server: SmtpServer, clock: FakeClock, connections: int
) -> None:
    ids = ["AFG", "ALB", "DZA", "AND", "AGO", "ATG", "ARG", "ARM", "AUS", "AUT", "AZE", "BHS"]
    outcome, _ = send(
        smtp_server, clock, ids, SEND_RATE_PER_MINUTE="5", SEND_CONNECTIONS=str(connections)
    )
    assert outcome.counts["sent"] == 12
    # Every message starts when the limiter wakes its connection.
    starts = sorted(clock.wakes)
    assert len(starts) == 12
    for i, start in enumerate(starts):
        assert sum(1 for t in starts[i:] if t < start + 60) <= 5
    # Smooth: spaced evenly, not five at once then a minute's wait.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 11.9


def test_rate_limiter_allows_the_full_rate(clock: FakeClock) -> None:
    limiter = RateLimiter(600, clock)
    starts = []
    for _ in range(1800):
        limiter.acquire()
        starts.append(clock.monotonic())
    assert 179 <= starts[-1] <= 181  # 98 % of the allowed amount, at least
    for i in range(0, len(starts), 50):
        assert sum(1 for t in starts[i:] if t < starts[i] + 60) <= 600
    assert WINDOW_SECONDS >= 60


def test_daily_limit_stops_cleanly_and_says_when(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    outcome, _ = send(smtp_server, clock, SEND_DAILY_LIMIT="2")
    assert outcome.counts["sent"] == 2
    assert outcome.stopped is not None
    assert "SEND_DAILY_LIMIT=2 reached" in outcome.stopped
    assert "run again after" in outcome.stopped
    clock.elapsed += 24 * 3600 + 1
    outcome, _ = send(smtp_server, clock, SEND_DAILY_LIMIT="2")
    assert outcome.counts["sent"] == 1


def test_a_second_send_on_the_same_log_is_refused(project: Path) -> None:
    with (
        SendLog(project / "logs" / "send-log.csv"),
        pytest.raises(SendLogError, match="in use by another"),
    ):
        SendLog(project / "logs" / "send-log.csv").open()


def test_unreachable_server_stops_with_nothing_sent(project: Path, clock: FakeClock) -> None:
    from tests.smtp import free_port

    settings_env = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(free_port()),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "campaign@coalition.example",
    }
    settings = load_settings(environ=settings_env, env_file=None)
    campaign = Campaign.open(settings)
    with SendLog(settings.send_log) as log:
        plan = make_plan(campaign.contacts.select(THREE), [], settings, now=clock.now())
        with pytest.raises(DeliveryError, match="refused the connection"):
            Sender(settings, plan, log, clock).run([])
    assert read_log(settings.send_log) == []


# The user's side: the real command in a subprocess.


def test_send_command_plans_sends_and_exits_0(run_cli: RunCli, smtp_server: SmtpServer) -> None:
    result = run_cli("send", "--yes", "--only", "CHL,FRA", env=smtp_server.env())
    assert result.code == 0, result.stderr
    assert "To send:       2" in result.stdout
    assert "Done: 2 sent." in result.stdout
    assert len(smtp_server.received) == 2


def test_send_without_a_terminal_or_yes_refuses(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path
) -> None:
    result = run_cli("send", "--only", "CHL", env=smtp_server.env())
    assert result.code == 2
    assert "Error: no terminal to confirm on: run `outreach send --yes`" in result.stderr
    assert smtp_server.received == []
    assert not (project / "logs" / "send-log.csv").exists()  # a run that sent nothing left nothing


def test_send_exits_1_when_a_letter_failed(run_cli: RunCli, smtp_server: SmtpServer) -> None:
    smtp_server.script.rcpt["fra@missions.example"].append("550 5.1.1 No such user")
    result = run_cli("send", "--yes", "--only", "CHL,FRA", env=smtp_server.env())
    assert result.code == 1
    assert "FRA: failed 550 5.1.1 No such user" in result.stdout


def test_placeholder_addresses_never_leave_this_machine(run_cli: RunCli) -> None:
    result = run_cli(
        "send",
        "--yes",
        env={"SMTP_HOST": "smtp.coalition.example", "MAIL_FROM": "a@coalition.example"},
    )
    assert result.code == 2
    assert "195 addresses are placeholders on a reserved domain" in result.stderr
    assert (
        "CHL (chl@missions.example)" in result.stderr
        or "AFG (afg@missions.example)" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_password_is_never_sent_unencrypted_to_another_host(
    run_cli: RunCli, tmp_path: Path
) -> None:
    contacts = tmp_path / "real.csv"
    shipped = (Path.cwd() / "contacts.csv").read_text(encoding="utf-8").splitlines()
    chile = next(line for line in shipped if line.startswith("CHL,"))
    contacts.write_text(
        shipped[0] + "\n" + chile.replace("chl@missions.example", "chl@chile-mission.org") + "\n",
        encoding="utf-8",
    )
    result = run_cli(
        "send",
        "--yes",
        env={
            "CONTACTS_FILE": str(contacts),
            "SMTP_HOST": "192.0.2.1",
            "SMTP_SECURITY": "none",
            "SMTP_USERNAME": "me",
            "SMTP_PASSWORD": "hunter2-secret",
            "MAIL_FROM": "a@coalition.org",
        },
    )
    assert result.code == 2
    assert "unencrypted" in result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr


def test_test_send_goes_to_one_address_marked_and_does_not_count(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path
) -> None:
    result = run_cli(
        "test-send", "--to", "me@coalition.example", "--only", "CHL", env=smtp_server.env()
    )
    assert result.code == 0, result.stderr
    (received,) = smtp_server.received
    assert received.recipients == ["me@coalition.example"]
    assert received.message["Subject"].startswith("[TEST] ")
    assert received.message["To"] == "me@coalition.example"
    assert "Cc" not in received.message
    rows = read_log(project / "logs" / "send-log.csv")
    assert [r.status for r in rows] == ["test"]
    result = run_cli("send", "--yes", "--only", "CHL", env=smtp_server.env())
    assert "Done: 1 sent." in result.stdout
    assert smtp_server.received[1].recipients == ["chl@missions.example"]


def test_lock_error_from_the_command(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path
) -> None:
    with SendLog(project / "logs" / "send-log.csv"):
        result = run_cli("send", "--yes", "--only", "CHL", env=smtp_server.env())
    assert result.code == 2
    assert (
        f"logs/send-log.csv is in use by another outreach send (pid {os.getpid()})" in result.stderr
    )
    assert smtp_server.received == []
