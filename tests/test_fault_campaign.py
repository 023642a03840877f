"""A fault campaign: the whole send path against a server that draws a fault for every command.

Each seed runs ``outreach send`` (the real command, in a process of its own)
against a server on loopback that answers each command with a fault drawn
from the seed (4xx, 5xx, 421, a dropped connection at every stage, also
after the final dot; an answer that cannot be read; a stall past
SMTP_TIMEOUT), and that kills the sender once, at an exact protocol point
(after MAIL, RCPT, DATA, the dot, or its own 250), with SIGKILL, SIGINT or
SIGTERM. Runs repeat until nothing is owed. After every seed:

- no address has two copies of a letter, unless the log said ``ambiguous``
  and a resend was asked;
- every 250 the sender saw after the dot is logged ``sent``;
- no letter is left ``sending`` after a signal the tool handled;
- the report agrees with the log; no traceback.

The seeds of ``make test`` meet every kill point with every signal; a
failure prints its seed, and ``OUTREACH_FAULT_SEEDS=1000`` runs more.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from outreach.ledger import Ledger
from outreach.sendlog import LogRow, read_log
from tests.conftest import RunCli, with_cc

KILL_POINTS = ("MAIL", "RCPT", "DATA", "dot", "250")
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
IDS = "AFG,ALB,DZA,AND,AGO"
SEEDS = int(os.environ.get("OUTREACH_FAULT_SEEDS", len(KILL_POINTS) * len(SIGNALS)))


@dataclass
class Faults:
    """What the server does, drawn from one seed; and what it saw."""

    seed: int
    rng: random.Random = field(init=False)
    #: Each message the server took: (Message-ID, recipient) -> copies.
    copies: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: The messages whose final dot the server answered 250 for, with their recipients.
    confirmed: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    transactions: int = 0
    kill_at: tuple[int, str, int] | None = None
    killed: str = ""
    kill: Callable[[int], None] = lambda signum: None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        point = KILL_POINTS[self.seed % len(KILL_POINTS)]
        signum = SIGNALS[(self.seed // len(KILL_POINTS)) % len(SIGNALS)]
        self.kill_at = (self.rng.randint(1, 4), point, signum)

    def draw(self, *choices: tuple[str, float]) -> str:
        names, weights = zip(*choices, strict=True)
        return self.rng.choices(names, weights)[0]

    def at(self, point: str) -> None:
        """The sender is killed here, once, in the transaction the seed chose."""
        if self.kill_at is None:
            return
        number, where, signum = self.kill_at
        if self.transactions == number and point == where:
            self.kill_at = None
            self.killed = f"{signal.Signals(signum).name} after {point}"
            self.kill(signum)
            time.sleep(0.05)  # the signal arrives before the answer it precedes


class FaultySmtp(socketserver.StreamRequestHandler):
    """SMTP as a fault-drawing server speaks it: one command, one drawn answer."""

    server: FaultServer
    timeout = 30

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the sender was killed, or hung up: carry on
            self.converse()

    def converse(self) -> None:
        faults = self.server.faults
        self.reply("220 faulty.example ESMTP")
        sender, recipients = "", []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            command = line.decode("ascii", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-faulty.example")
                self.reply("250 8BITMIME")
            elif verb == "MAIL":
                faults.transactions += 1
                sender, recipients = command, []
                faults.at("MAIL")
                answer = faults.draw(
                    ("250 ok", 90), ("451 4.3.0 try later", 4), ("421", 3), ("drop", 3)
                )
                if not self.answer(answer):
                    return
                if not answer.startswith("250"):
                    sender = ""
            elif verb == "RCPT":
                faults.at("RCPT")
                answer = faults.draw(
                    ("250 ok", 82),
                    ("450 4.2.1 busy", 6),
                    ("550 5.1.1 no such user", 5),
                    ("421", 3),
                    ("drop", 2),
                    ("garbled", 2),
                )
                if not self.answer(answer):
                    return
                if answer.startswith("250"):
                    recipients.append(command.partition(":")[2].strip().strip("<>").lower())
            elif verb == "DATA":
                faults.at("DATA")
                answer = faults.draw(
                    ("354 go on", 90), ("451 4.3.0 later", 4), ("554 5.7.1 no", 3), ("drop", 3)
                )
                if not self.answer(answer):
                    return
                if answer.startswith("354") and not self.take_data(sender, recipients):
                    return
            elif verb == "RSET":
                sender, recipients = "", []
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")

    def answer(self, answer: str) -> bool:
        """Give a drawn answer; False when the connection is gone after it."""
        if answer == "drop":
            return False
        if answer == "421":
            self.reply("421 4.3.2 shutting down")  # not 4.7.x: a throttle would slow the run
            return False
        if answer == "garbled":
            self.reply("xyzzy")
            return False
        self.reply(answer)
        return True

    def take_data(self, sender: str, recipients: list[str]) -> bool:
        faults = self.server.faults
        lines = []
        while True:
            line = self.rfile.readline()
            if not line:
                return False
            if line == b".\r\n":
                break
            lines.append(line)
        message_id = next(
            (
                line.split(b":", 1)[1].strip().decode()
                for line in lines
                if line.lower().startswith(b"message-id:")
            ),
            "",
        )
        faults.at("dot")
        answer = faults.draw(
            ("250 2.0.0 queued", 80),
            ("451 4.3.0 later", 4),
            ("554 5.7.1 refused", 4),
            ("drop", 4),
            ("garbled", 4),
            ("stall", 4),
        )
        if answer[0] not in "45":  # taken: 250, or taken and then the answer lost
            for recipient in recipients:
                faults.copies[(message_id, recipient)] += 1
        if answer == "stall":
            time.sleep(1.5)  # past SMTP_TIMEOUT: the sender gives up
            return False
        if answer.startswith("250"):
            faults.confirmed.append((message_id, tuple(recipients)))
            self.reply(answer)
            faults.at("250")
            return True
        return self.answer(answer)


class FaultServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), FaultySmtp)
        self.faults = faults


@contextmanager
def fault_server(faults: Faults) -> Iterator[int]:
    server = FaultServer(faults)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Run:
    code: int
    out: str
    errors: str
    signal: str
    options: tuple[str, ...]


def send(project: Path, port: int, faults: Faults, options: tuple[str, ...]) -> Run:
    env = {
        **os.environ,
        # SpamAssassin's score of each run's check is not what is under test here.
        "PATH": str(project / "no-programs"),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "campaign@coalition.example",
        "SEND_RATE_PER_MINUTE": "0",
        "SEND_RETRY_WAIT_SECONDS": "0",
        "SEND_RETRY_MAX_WAIT_SECONDS": "0",
        "SEND_MAX_ATTEMPTS": "3",
        "SMTP_TIMEOUT": "1",
    }
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "outreach", "send", "--yes", "--only", IDS, *options],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, before)
    faults.kill = process.send_signal
    killed_before = faults.killed
    out, errors = process.communicate(timeout=120)
    faults.kill = lambda signum: None
    how = faults.killed if faults.killed != killed_before else ""
    return Run(process.returncode, out, errors, how, options)


def ever_ambiguous(rows: list[LogRow]) -> set[tuple[str, str]]:
    """Each (Message-ID, address) the log showed ``ambiguous`` at some point."""
    ledger = Ledger(())
    found = set()
    for row in rows:
        ledger.add(row)
        letter = ledger.letter(row.campaign, row.contact_id)
        assert letter is not None
        found |= {(letter.message_id, a) for a in letter.having("ambiguous")}
    return found


def left_on_the_wire(log: Path) -> list[str]:
    """Addresses whose last row is a bare ``sending``: the run stopped mid-letter."""
    letters = Ledger(read_log(log)).campaign("default").values()
    return [
        a
        for letter in letters
        for a, (_, row) in letter.addresses.items()
        if row.status == "sending"
    ]


@pytest.mark.parametrize("seed", range(SEEDS))
def test_no_fault_and_no_signal_sends_a_letter_twice_or_loses_one(
    project: Path, run_cli: RunCli, seed: int
) -> None:
    with_cc(project, "DZA", "desk@dza.example")
    faults = Faults(seed)
    runs: list[Run] = []
    log = project / "logs" / "send-log.csv"
    with fault_server(faults) as port:
        for _ in range(15):
            ambiguous = any(
                letter.status() == "ambiguous"
                for letter in Ledger(read_log(log)).campaign("default").values()
            )
            options = ("--resend-ambiguous",) if ambiguous else ()
            runs.append(send(project, port, faults, options))
            if runs[-1].signal and not runs[-1].signal.startswith("SIGKILL"):
                # A signal the tool handled: the letter on the wire was finished and logged.
                assert left_on_the_wire(log) == [], f"seed {seed}: {runs[-1].signal}"
            if "Nothing to send." in runs[-1].out:
                break
    story = f"seed {seed} (replay: pytest -k 'fault and [{seed}]'); " + "; ".join(
        f"run {n}: exit {r.code} {' '.join(r.options)} {r.signal}" for n, r in enumerate(runs, 1)
    )
    assert "Nothing to send." in runs[-1].out, story
    for run in runs:
        assert "Traceback" not in run.errors, story + "\n" + run.errors
        if not run.signal.startswith("SIGKILL"):
            assert run.code in (0, 1, 130, 143), story + "\n" + run.out + run.errors

    rows = read_log(log)
    letters = Ledger(rows).campaign("default")
    resent = ever_ambiguous(rows) if any(r.options for r in runs) else set()
    for (message_id, address), copies in faults.copies.items():
        assert copies == 1 or (message_id, address) in resent, f"{story}: {address} got {copies}"

    for message_id, recipients in faults.confirmed:
        killed_after_250 = any(r.signal == "SIGKILL after 250" for r in runs)
        logged = {
            a
            for row in rows
            if row.message_id == message_id and row.status == "sent"
            for a in row.addresses
        }
        assert set(recipients) <= logged or killed_after_250, f"{story}: a 250 not logged sent"

    for run in runs:
        if run.signal and not run.signal.startswith("SIGKILL"):
            assert run.code in (130, 143), story
            assert "still owed" in run.out, story

    # Nothing is left owed or on the wire; what is not sent failed for good.
    for letter in letters.values():
        assert letter.status() in ("sent", "failed"), (
            f"{story}: {letter.contact_id} {letter.status()}"
        )
    report = run_cli("report", "--format", "csv").stdout.splitlines()
    shown = {line.split(",")[0]: line.split(",")[3] for line in report[1:]}
    for cid, letter in letters.items():
        assert shown[cid] == letter.status(), story
