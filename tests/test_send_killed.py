"""A send killed at any moment loses nothing and sends nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from outreach.ledger import Ledger
from outreach.sending import ECHO_SECONDS
from outreach.sendlog import read_log
from tests.smtp import SmtpServer

FORTY = (
    "AFG,ALB,DZA,AND,AGO,ATG,ARG,ARM,AUS,AUT,AZE,BHS,BHR,BGD,BRB,BLR,BEL,BLZ,BEN,BTN,"
    "BOL,BIH,BWA,BRA,BRN,BGR,BFA,BDI,CPV,KHM,CMR,CAN,CAF,TCD,CHL,CHN,COL,COM,COG,CRI"
)


def outreach(project: Path, env: dict[str, str], *, errors: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "outreach", "send", "--yes", "--only", FORTY],
        cwd=project,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )


@contextmanager
def ctrl_c_reaches_the_child() -> Iterator[None]:
    """Start the child as from a terminal, where Ctrl-C is not ignored.

    A test run started in the background (``make test &``, some CI runners)
    ignores SIGINT, and a child inherits an ignored signal: it would never
    see the Ctrl-C this test sends. A signal with a handler is reset to its
    default in the child, so a handler here gives the child Python's own.
    """
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if before is None else before)


def sending_from_a_terminal(project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`outreach send` of the forty, started so that Ctrl-C reaches it, its output kept."""
    with ctrl_c_reaches_the_child():
        return subprocess.Popen(
            [sys.executable, "-m", "outreach", "send", "--yes", "--only", FORTY],
            cwd=project,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def wait_for_held(server: SmtpServer, process: subprocess.Popen[Any]) -> None:
    """Until the server holds a letter's answer back (see ``Script.hold_after``)."""
    deadline = time.monotonic() + 120  # only a bound on a hung run, never on speed
    while time.monotonic() < deadline and process.poll() is None:
        if server.handler.holding.wait(0.05):
            return
    pytest.fail("the send never reached the letter held back")


@pytest.mark.parametrize("kill_after", [1, 9, 23])
def test_kill_9_then_resume_sends_every_letter_once(
    project: Path, smtp_server: SmtpServer, kill_after: int
) -> None:
    env = smtp_server.env(SEND_RATE_PER_MINUTE="1500")
    log = project / "logs" / "send-log.csv"
    smtp_server.script.hold_after = kill_after
    first = outreach(project, env, errors=subprocess.DEVNULL)
    wait_for_held(smtp_server, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    smtp_server.handler.release.set()
    assert len(smtp_server.received) == kill_after

    second = outreach(project, env, errors=subprocess.PIPE)
    _, errors = second.communicate(timeout=120)
    assert second.returncode in (0, 1), errors.decode()

    latest = Ledger(read_log(log)).campaign("default")
    assert set(latest) == set(FORTY.split(","))
    ambiguous = {cid for cid, record in latest.items() if record.status() == "ambiguous"}
    assert len(ambiguous) <= 1  # only the letter on the wire at the kill can be in doubt
    assert all(record.status() == "sent" for cid, record in latest.items() if cid not in ambiguous)

    received = Counter(str(r.message["Message-ID"]) for r in smtp_server.received)
    assert max(received.values()) == 1, "a letter was sent twice"
    by_contact = {record.message_id: cid for cid, record in latest.items()}
    delivered = {by_contact[mid] for mid in received}
    assert delivered | ambiguous == set(FORTY.split(","))


@pytest.mark.parametrize(
    ("signum", "code", "how"),
    [
        pytest.param(signal.SIGINT, 130, "Ctrl-C", id="ctrl-c"),
        pytest.param(signal.SIGTERM, 143, "SIGTERM", id="sigterm"),
    ],
)
@pytest.mark.parametrize("delivered_twice", [False, True], ids=["once", "to-process-and-group"])
def test_stopped_mid_send_says_what_went_and_what_is_owed(
    project: Path,
    smtp_server: SmtpServer,
    signum: int,
    code: int,
    how: str,
    delivered_twice: bool,
) -> None:
    env = smtp_server.env(SEND_RATE_PER_MINUTE="300")
    log = project / "logs" / "send-log.csv"
    smtp_server.script.hold_after = 5
    process = sending_from_a_terminal(project, env)
    wait_for_held(smtp_server, process)
    process.send_signal(signum)
    if delivered_twice:
        # `timeout` sends its signal to the process, then to the process group: one stop.
        time.sleep(0.05)
        process.send_signal(signum)
    smtp_server.handler.release.set()  # the letter on the wire finishes
    out, errors = process.communicate(timeout=60)
    assert process.returncode == code, out + errors
    assert "Traceback" not in errors
    rows = read_log(log)
    sent = {r.contact_id for r in rows if r.status == "sent"}
    owed = 40 - len(sent)
    assert len(sent) >= 6  # the five before the signal, and the one on the wire at it
    assert owed > 0
    assert (
        f"Stopped by {how}: {len(sent)} letters sent this run, {owed} still owed. "
        "Run `make send` again to send only the rest."
    ) in out
    # The letter on the wire at the signal finished: nothing is left ambiguous.
    assert all(letter.status() == "sent" for letter in Ledger(rows).campaign("default").values())

    again = subprocess.run(
        [sys.executable, "-m", "outreach", "send", "--yes", "--only", FORTY],
        cwd=project,
        env={**os.environ, **smtp_server.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"To send:       {owed}" in again.stdout
    received = Counter(str(r.message["Message-ID"]) for r in smtp_server.received)
    assert len(received) == 40
    assert max(received.values()) == 1


def test_a_second_ctrl_c_a_moment_later_stops_at_once(
    project: Path, smtp_server: SmtpServer
) -> None:
    """The person insists: the letter on the wire is left as it is, and logged as in doubt."""
    env = smtp_server.env(SEND_RATE_PER_MINUTE="300", SMTP_TIMEOUT="5")
    smtp_server.script.hold_after = 5
    process = sending_from_a_terminal(project, env)
    wait_for_held(smtp_server, process)
    process.send_signal(signal.SIGINT)
    time.sleep(ECHO_SECONDS + 0.5)
    process.send_signal(signal.SIGINT)
    out, errors = process.communicate(timeout=60)
    smtp_server.handler.release.set()
    assert process.returncode == 130, out + errors
    assert errors.endswith("Stopped by Ctrl-C.\n")
    assert "Traceback" not in errors
    letters = Ledger(read_log(project / "logs" / "send-log.csv")).campaign("default")
    states = Counter(letter.status() for letter in letters.values())
    assert states == {"sent": 5, "ambiguous": 1}
