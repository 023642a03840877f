"""Sending: every letter reaches each of its recipients once, and the log says so.

Each test sends to a real SMTP server on loopback (aiosmtpd) and looks at
what that server received and at the send log, never at mocks. The clock
is the only thing faked: retries and the rate limit wait on it.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.errors import DeliveryError, SendLogError
from outreach.message import Letter
from outreach.ratelimit import QUIET_SECONDS, WINDOW_SECONDS, RateLimiter
from outreach.sending import Outcome
from outreach.sendlog import LogRow, SendLog, read_log
from outreach.transport import Connection, Server
from tests.conftest import FakeClock, RunCli, run_python, with_cc, write_csv
from tests.smtp import DROP, GARBLED, PASSWORD, USERNAME, SmtpServer, free_port

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
    assert all(r.subject.startswith("Request to endorse the Code of Conduct") for r in rows)


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


@pytest.mark.parametrize(
    ("user", "password"),
    [
        pytest.param("campaña@coalition.example", "pässwörd", id="accents"),
        pytest.param("campaign@coalition.example", "пароль-密码-🕊", id="other-scripts"),
        pytest.param("campaign@coalition.example", "pass word:with;specials\\", id="specials"),
    ],
)
def test_a_password_that_is_not_ascii_logs_in(
    project: Path, starttls_server: SmtpServer, clock: FakeClock, user: str, password: str
) -> None:
    """SASL PLAIN carries UTF-8 (RFC 4616); smtplib's own login would fail on it."""
    assert starttls_server.ca_file is not None
    starttls_server.accounts[user] = password
    outcome, _ = send(
        starttls_server,
        clock,
        ["CHL"],
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(starttls_server.ca_file),
        SMTP_USERNAME=user,
        SMTP_PASSWORD=password,
    )
    assert outcome.counts["sent"] == 1
    assert starttls_server.received[0].authenticated


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


# -- every recipient, not only the letter ----------------------------------------------------


def test_a_temporary_refusal_of_the_to_address_is_not_success(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """450 to the mission's address, the Cc accepted: the mission does not have it yet.

    The To address is tried again on its own, with the same Message-ID; the
    Cc, which has the letter, is never sent it again.
    """
    with_cc(project, "CHL", "desk@chile-mission.example")
    smtp_server.script.rcpt["chl@missions.example"].append("450 4.2.1 Mailbox busy")
    outcome, rows = send(smtp_server, clock, ["CHL"])
    assert outcome.counts["sent"] == 1
    assert [r.recipients for r in smtp_server.received] == [
        ["desk@chile-mission.example"],
        ["chl@missions.example"],
    ]
    assert len(set(received_ids(smtp_server))) == 1
    chile = [(r.status, r.email) for r in rows if r.contact_id == "CHL"]
    assert chile == [
        ("sending", "chl@missions.example;desk@chile-mission.example"),
        ("sent", "desk@chile-mission.example"),
        ("retry", "chl@missions.example"),
        ("sending", "chl@missions.example"),
        ("sent", "chl@missions.example"),
    ]


def test_a_to_address_refused_for_now_until_the_last_attempt_is_owed_not_sent(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    with_cc(project, "CHL", "desk@chile-mission.example")
    smtp_server.script.always_refuse["chl@missions.example"] = "450 4.2.1 Mailbox busy"
    env = smtp_server.env(SEND_MAX_ATTEMPTS="2")
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 1, result.stdout
    assert "Done: 1 deferred." in result.stdout
    csv_report = run_cli("report", "--format", "csv", env=env).stdout
    assert "CHL,Chile,chl@missions.example,deferred," in csv_report
    data = json.loads(run_cli("report", "--format", "json", env=env).stdout)
    (chile,) = [c for c in data["contacts"] if c["id"] == "CHL"]
    assert (chile["status"], chile["sent_to"]) == ("deferred", "desk@chile-mission.example")
    # The next run tries only the mission's own address.
    del smtp_server.script.always_refuse["chl@missions.example"]
    assert run_cli("send", "--yes", "--only", "CHL", env=env).code == 0
    assert [r.recipients for r in smtp_server.received] == [
        ["desk@chile-mission.example"],
        ["chl@missions.example"],
    ]


def test_a_permanent_refusal_of_one_address_fails_the_contact_for_that_address(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    with_cc(project, "CHL", "desk@chile-mission.example;old@chile-mission.example")
    smtp_server.script.always_refuse["old@chile-mission.example"] = "550 5.1.1 Gone"
    env = smtp_server.env()
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 1
    assert "Done: 1 failed." in result.stdout
    assert "CHL old@chile-mission.example: failed 550 5.1.1 Gone" in result.stdout
    (received,) = smtp_server.received
    assert received.recipients == ["chl@missions.example", "desk@chile-mission.example"]
    assert received.message["Cc"] == "desk@chile-mission.example, old@chile-mission.example"
    table = run_cli("report", env=env).stdout
    assert "old@chile-mission.example" in table
    assert "--retry-failed" in table
    csv_report = run_cli("report", "--format", "csv", env=env).stdout
    assert "CHL,Chile,old@chile-mission.example,failed,1," in csv_report
    page = project / "report.html"
    run_cli("report", "--format", "html", "--out", str(page), env=env)
    assert "old@chile-mission.example" in page.read_text()


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


def test_a_reply_that_cannot_be_read_after_the_dot_is_ambiguous_never_failed(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    """The server has the letter; --retry-failed must not send it again."""
    smtp_server.script.data.append(GARBLED)
    env = smtp_server.env()
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 1
    assert "Done: 1 ambiguous." in result.stdout
    rows = read_log(project / "logs" / "send-log.csv")
    assert statuses(rows, "CHL") == ["sending", "ambiguous"]
    assert run_cli("send", "--yes", "--retry-failed", "--only", "CHL", env=env).code == 0
    assert len(smtp_server.received) == 1


@pytest.mark.parametrize("stage", ["mail", "rcpt"])
def test_a_reply_that_cannot_be_read_before_the_data_is_retried(
    project: Path, smtp_server: SmtpServer, clock: FakeClock, stage: str
) -> None:
    queue = smtp_server.script.mail if stage == "mail" else smtp_server.script.any_rcpt
    queue.append("hello? no code here")
    outcome, rows = send(smtp_server, clock, ["CHL"])
    assert outcome.counts["sent"] == 1
    assert "failed" not in statuses(rows, "CHL")
    assert statuses(rows, "CHL")[-2:] == ["sending", "sent"]


# -- throttles and faults --------------------------------------------------------------------


def test_a_throttle_slows_the_run_and_the_rate_comes_back(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """Gmail's 421 4.7.0: every connection pauses and the rate halves; after a
    quiet spell it climbs back to SEND_RATE_PER_MINUTE."""
    lines = ["id,country,email"] + [
        f"C{n:02d},Country {n},c{n}@missions.example" for n in range(30)
    ]
    write_csv(project / "contacts.csv", "\n".join(lines) + "\n")
    ids = [f"C{n:02d}" for n in range(30)]
    smtp_server.script.mail.extend(["250 OK"] * 2 + ["421 4.7.0 Try again later"])
    outcome, rows = send(
        smtp_server,
        clock,
        ids,
        SEND_RATE_PER_MINUTE="30",
        SEND_RETRY_WAIT_SECONDS="5",
        SEND_RETRY_MAX_WAIT_SECONDS="5",
    )
    assert outcome.counts["sent"] == 30
    starts = [r.time for r in rows if r.status == "sending"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps[0] == pytest.approx(2, abs=0.01)  # 30 a minute
    assert max(gaps) >= 4 - 0.01  # 15 a minute after the throttle
    assert gaps[-1] == pytest.approx(2, abs=0.01)  # 30 a minute again
    assert QUIET_SECONDS <= 60


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param("421 4.3.2 Service shutting down", id="shutting-down"),
        pytest.param("421 4.4.2 Connection timed out", id="network"),
        pytest.param(DROP, id="dropped"),
    ],
)
def test_a_fault_reconnects_and_leaves_the_rate_alone(
    project: Path, smtp_server: SmtpServer, clock: FakeClock, reply: str
) -> None:
    smtp_server.script.mail.extend(["250 OK", reply])
    outcome, rows = send(
        smtp_server, clock, ["AFG", "ALB", "DZA", "AND"], SEND_RATE_PER_MINUTE="30"
    )
    assert outcome.counts["sent"] == 4
    starts = [r.time for r in rows if r.status == "sending"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps[-1] == pytest.approx(2, abs=0.01)  # still 30 a minute
    assert smtp_server.handler.connections >= 2


def test_three_hundred_letters_through_a_flaky_server_finish_in_minutes(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """A server that shuts the connection on a few percent of letters, and
    throttles now and then: 300 letters at 30 a minute take ten minutes of the
    clock, give or take the pauses, not hours."""
    lines = ["id,country,email"] + [
        f"C{n:03d},Country {n},c{n}@missions.example" for n in range(300)
    ]
    write_csv(project / "contacts.csv", "\n".join(lines) + "\n")
    answers = ["250 OK"] * 330
    for n in range(0, 330, 30):
        answers[n + 7] = "421 4.3.2 Service shutting down"
    for n in (100, 200):
        answers[n] = "421 4.7.0 Try again later"
    smtp_server.script.mail.extend(answers)
    ids = [f"C{n:03d}" for n in range(300)]
    outcome, _ = send(smtp_server, clock, ids, SEND_RATE_PER_MINUTE="30")
    assert outcome.counts["sent"] == 300
    assert clock.elapsed < 15 * 60


def test_too_many_connections_is_waited_out_on_the_one_connection(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """Microsoft's 432 4.3.2: the letter goes again after a pause."""
    smtp_server.script.mail.append("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded")
    ids = ["AFG", "ALB", "DZA", "AND", "AGO", "ATG"]
    outcome, _ = send(smtp_server, clock, ids)
    assert outcome.counts["sent"] == 6
    assert len(smtp_server.received) == 6


def test_a_server_that_trickles_its_greeting_is_given_up_on(project: Path) -> None:
    """`220-` a line a second, forever: SMTP_TIMEOUT bounds the whole greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            while not stop.is_set():
                try:
                    conn.sendall(b"220-still here\r\n")
                except OSError:
                    return
                time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    environ = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": "none",
        "SMTP_TIMEOUT": "1",
        "MAIL_FROM": "campaign@coalition.example",
    }
    campaign = Campaign.open(load_settings(environ=environ, env_file=None))
    try:
        with campaign.open_log() as log:
            plan = campaign.plan(log, campaign.select(["CHL"]))
            # Without a bound on the whole greeting this would never return.
            with pytest.raises(DeliveryError, match="did not answer within 1 s"):
                campaign.send(plan, log)
    finally:
        stop.set()
        listener.close()


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
        attempt = connection.send(letter, letter.recipients, lambda: None)
    finally:
        connection.close()
    assert attempt.status == "sent"
    (received,) = smtp_server.received
    expected = data if data.endswith(b"\r\n") else data + b"\r\n"
    assert received.data == expected


LOG_CANNOT_GROW = """
import json, os, resource, signal
from outreach import Campaign, load_settings
from outreach.errors import SendLogError

settings = load_settings(environ=json.loads(os.environ["SERVER"]), env_file=None)
campaign = Campaign.open(settings)
with campaign.open_log() as log:
    plan = campaign.plan(log, campaign.select(["CHL"]))
    # From here no file of this process may grow past 10 bytes: the send log's
    # first row cannot be written (EFBIG rather than a signal).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))
    try:
        campaign.send(plan, log)
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


# -- the rate and the day's limit ------------------------------------------------------------


def test_rate_limit_holds_in_every_minute(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    ids = ["AFG", "ALB", "DZA", "AND", "AGO", "ATG", "ARG", "ARM", "AUS", "AUT", "AZE", "BHS"]
    outcome, _ = send(smtp_server, clock, ids, SEND_RATE_PER_MINUTE="5")
    assert outcome.counts["sent"] == 12
    # Every message starts when the limiter wakes its connection.
    starts = sorted(clock.wakes)
    assert len(starts) == 12
    for i, start in enumerate(starts):
        assert sum(1 for t in starts[i:] if t < start + 60) <= 5
    # Smooth: spaced evenly, not five at once then a minute's wait.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 11.9
    # The rate shown counts the intervals between letters: never above the limit.
    assert outcome.rate_per_minute is not None
    assert outcome.rate_per_minute <= 5


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


def test_the_rate_shown_never_exceeds_the_limit(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    """600 a minute is one letter every 0.1 s: N letters span N-1 intervals."""
    ids = "AFG,ALB,DZA,AND,AGO,ATG,ARG,ARM,AUS,AUT,AZE,BHS,BHR,BGD,BRB,BLR,BEL,BLZ,BEN,BTN"
    env = smtp_server.env(SEND_RATE_PER_MINUTE="600")
    result = run_cli("send", "--yes", "--only", ids, env=env)
    assert result.code == 0, result.stdout
    shown = float(result.stdout.split("Rate: ")[1].split()[0])
    assert shown <= 600
    report = json.loads(run_cli("report", "--format", "json", env=env).stdout)
    assert report["rate_per_minute"] <= 600


class ClockReadApart(FakeClock):
    """A wall clock read a moment after the monotonic one, a moment that varies from read
    to read, as two clocks read one after the other are."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return super().now() + timedelta(microseconds=700 + self.reads * 379 % 600)


def test_the_log_keeps_the_limiters_spacing_to_the_millisecond(
    project: Path, smtp_server: SmtpServer
) -> None:
    """The report's rate is read from the log: 600 a minute must read as 0.1 s between starts."""
    ids = ["AFG", "ALB", "DZA", "AND", "AGO", "ATG", "ARG", "ARM", "AUS", "AUT"]
    _, rows = send(smtp_server, ClockReadApart(), ids, SEND_RATE_PER_MINUTE="600")
    starts = [row.time for row in rows if row.status == "sending"]
    assert len(starts) == len(ids)
    assert [b - a for a, b in itertools.pairwise(starts)] == [timedelta(seconds=0.1)] * 9


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


def test_every_attempt_counts_against_the_daily_limit(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """A server that answers 452 after the data: a limit of 2 is 2 transactions, retries too."""
    smtp_server.script.data.extend(["452 4.3.1 Insufficient system storage"] * 8)
    outcome, rows = send(smtp_server, clock, SEND_DAILY_LIMIT="2")
    assert sum(1 for r in rows if r.status == "sending") == 2
    assert outcome.stopped is not None
    assert "SEND_DAILY_LIMIT=2 reached" in outcome.stopped
    first = min(r.time for r in rows if r.status == "sending")
    resume = (first + timedelta(days=1)).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    assert f"run again after {resume} to send the rest" in outcome.stopped


def test_a_fresh_log_says_the_rest_can_go_a_day_after_the_first_send(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    env = smtp_server.env(SEND_DAILY_LIMIT="2")
    result = run_cli("send", "--yes", "--only", "CHL,FRA,KEN", env=env)
    line = next(line for line in result.stdout.splitlines() if line.startswith("Daily limit:"))
    assert "only 2 may go today" in line
    rows = read_log(project / "logs" / "send-log.csv")
    first = min(r.time for r in rows if r.status == "sending")
    # The plan, made before any send, names the day after the first send, not now.
    a_day_later = {
        (first + timedelta(days=1, minutes=m)).astimezone().strftime("%Y-%m-%d %H:%M %Z")
        for m in (-1, 0)
    }
    assert any(f"the rest from {when}" in line for when in a_day_later), line


def test_a_second_send_on_the_same_log_is_refused(project: Path) -> None:
    with (
        SendLog(project / "logs" / "send-log.csv"),
        pytest.raises(SendLogError, match="in use by another"),
    ):
        SendLog(project / "logs" / "send-log.csv").open()


def test_unreachable_server_stops_with_nothing_sent(project: Path, clock: FakeClock) -> None:
    settings_env = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(free_port()),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "campaign@coalition.example",
    }
    settings = load_settings(environ=settings_env, env_file=None)
    campaign = Campaign.open(settings)
    with campaign.open_log() as log:
        plan = campaign.plan(log, campaign.select(THREE), now=clock.now())
        with pytest.raises(DeliveryError, match="refused the connection"):
            campaign.send(plan, log, clock=clock)
    assert read_log(settings.send_log) == []


# -- the user's side: the command ------------------------------------------------------------


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
    assert read_log(project / "logs" / "send-log.csv") == []


def test_send_exits_1_when_a_letter_failed(run_cli: RunCli, smtp_server: SmtpServer) -> None:
    smtp_server.script.rcpt["fra@missions.example"].append("550 5.1.1 No such user")
    result = run_cli("send", "--yes", "--only", "CHL,FRA", env=smtp_server.env())
    assert result.code == 1
    assert "FRA fra@missions.example: failed 550 5.1.1 No such user" in result.stdout


def test_without_a_terminal_a_send_says_how_far_it_got_every_minute(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    from click.testing import CliRunner

    from outreach.cli import cli

    env = {**smtp_server.env(SEND_RATE_PER_MINUTE="10"), "COLUMNS": "200"}
    done = CliRunner().invoke(
        cli,
        ["send", "--yes", "--only", "AFG,ALB,DZA,AND,AGO,ATG,ARG,ARM,AUS,AUT,AZE,BHS"],
        env=env,
        obj={"clock": clock},
    )
    assert done.exit_code == 0, done.output
    progress = [line for line in done.stderr.splitlines() if " UTC: " in line]
    assert len(progress) >= 1
    assert "of 12 done" in progress[0]


def test_placeholder_addresses_never_leave_this_machine(run_cli: RunCli) -> None:
    result = run_cli(
        "send",
        "--yes",
        env={"SMTP_HOST": "192.0.2.1", "MAIL_FROM": "a@coalition.org"},
    )
    assert result.code == 2
    assert "195 addresses are placeholders on a reserved domain" in result.stderr
    assert (
        "CHL (chl@missions.example)" in result.stderr
        or "AFG (afg@missions.example)" in result.stderr
    )


def test_password_is_never_sent_unencrypted_to_another_host(run_cli: RunCli, project: Path) -> None:
    write_csv(project / "real.csv", "id,country,email\nCHL,Chile,chl@chile-mission.org\n")
    result = run_cli(
        "send",
        "--yes",
        env={
            "CONTACTS_FILE": "real.csv",
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


def test_a_test_letter_to_a_server_that_is_not_there_is_one_line(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path
) -> None:
    port = str(free_port())
    result = run_cli(
        "test-send", "--to", "me@coalition.example", env=smtp_server.env(SMTP_PORT=port)
    )
    assert result.code == 2
    assert result.stderr == (
        f"Error: the test letter to me@coalition.example was not sent: 127.0.0.1:{port} refused "
        "the connection\n"
    )
    assert read_log(project / "logs" / "send-log.csv") == []


def test_lock_error_from_the_command(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path
) -> None:
    with SendLog(project / "logs" / "send-log.csv"):
        result = run_cli("send", "--yes", "--only", "CHL", env=smtp_server.env())
    assert result.code == 2
    assert "logs/send-log.csv is in use by another outreach send" in result.stderr
    assert smtp_server.received == []


def test_a_subject_is_rendered_once_and_the_letter_carries_what_the_plan_saw(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """The repeat check reads the subject the letter goes with: one rendering, not two.

    ``lipsum`` writes other words at every rendering, so two renderings of
    this subject would not agree.
    """
    (project / "templates/en/subject.txt.j2").write_text(
        "Code of Conduct: {{ lipsum(1, False, 3, 6) }}\n", encoding="utf-8"
    )
    settings = load_settings(environ=smtp_server.env(), env_file=None)
    campaign = Campaign.open(settings)
    with campaign.open_log() as log:
        plan = campaign.plan(log, campaign.select(THREE), now=clock.now())
        campaign.check(plan.to_send, spam=None, clock=clock)
        campaign.send(plan, log, clock=clock)
    planned = {d.contact.id: d.subject for d in plan.to_send}
    sent = {r.contact_id: r.subject for r in read_log(settings.send_log) if r.status == "sent"}
    received = [str(r.message["Subject"]) for r in smtp_server.received]
    assert sent == planned
    assert received == [planned[i] for i in THREE]
    assert len(set(received)) == 3  # the words do change at every rendering
