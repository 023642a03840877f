"""A send as staff see it in an 80-column terminal: a real one, under tmux.

What is under test is what the terminal shows (a progress bar cleared
before the next line, lines broken between words rather than at the last
column), so ``outreach`` runs as a process of its own in a tmux pane of
80 columns, sending to a server on loopback. tmux's ``capture-pane -J``
joins the lines the terminal itself broke: when it shows as many lines as
the plain capture, every break on screen is one outreach made, between
words. Nothing here depends on how fast the machine is: each run is
waited for until it prints its exit status.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import squash, system_program
from tests.smtp import SmtpServer

WIDTH = 80
DONE = "EXIT="


class Pane:
    """One tmux pane of 80 columns on a tmux server of the test's own."""

    def __init__(self, tmux: str, socket: str) -> None:
        self.tmux = tmux
        self.socket = socket

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [self.tmux, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def start(self, cwd: Path, command: list[str], env: Mapping[str, str]) -> None:
        """Run ``outreach COMMAND`` in the pane, then print its exit status after DONE."""
        script = cwd / "run-in-terminal.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        outreach = shlex.join([sys.executable, "-m", "outreach", *command])
        script.write_text(
            f"unset COLUMNS LINES NO_COLOR\n{exports}{outreach}\necho {DONE}$?\nsleep 600\n"
        )
        self._run("new-session", "-d", "-x", str(WIDTH), "-y", "60", "-c", str(cwd), f"sh {script}")

    def screen(self, *, joined: bool = False) -> list[str]:
        """The pane's lines as shown (``joined``: with the terminal's own breaks undone)."""
        shown = self._run("capture-pane", "-p", *(["-J"] if joined else []))
        return [line.rstrip() for line in shown.rstrip("\n").split("\n")]

    def wait_for(self, text: str) -> list[str]:
        """The screen once ``text`` is on it (a hang guard, not a measure of speed)."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            lines = self.screen()
            if any(text in line for line in lines):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never came; the terminal showed:\n" + "\n".join(lines))

    def type(self, keys: str) -> None:
        self._run("send-keys", keys, "Enter")


@pytest.fixture
def pane() -> Iterator[Pane]:
    tmux = system_program("tmux")
    found = Pane(tmux, f"outreach-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield found
    finally:
        subprocess.run([tmux, "-L", found.socket, "kill-server"], capture_output=True, check=False)


def assert_broken_only_between_words(pane: Pane) -> None:
    """Every line on screen ends where outreach ended it: the terminal broke none."""
    assert pane.screen(joined=True) == pane.screen(), "a line ran past column 80:\n" + "\n".join(
        pane.screen()
    )


def test_a_send_at_80_columns_clears_its_bars_and_breaks_no_word(
    project: Path, smtp_server: SmtpServer, pane: Pane
) -> None:
    pane.start(project, ["send", "--yes", "--limit", "34"], smtp_server.env(CAMPAIGN="at-80"))
    screen = pane.wait_for(DONE)
    text = "\n".join(screen)
    assert f"{DONE}0" in text
    assert len(smtp_server.received) == 34
    # The bars of checking, scoring and sending are gone once their stage is over,
    # and the line after them starts on a line of its own.
    assert "━" not in text
    assert not [line for line in screen if line.startswith(("Checking", "Spam score", "Sending"))]
    assert any(line.startswith("Warnings:") for line in screen)
    assert_broken_only_between_words(pane)
    # A long line goes on under its value, every word whole.
    sender = next(i for i, line in enumerate(screen) if line.startswith("Sender domain:"))
    assert screen[sender + 1].startswith(" " * len("Sender domain: ") + "and")
    assert (
        "Sender domain: not checked: coalition.example is a name reserved for examples and "
        "tests, never looked up"
    ) in squash(text)
    assert "Done: 34 sent." in screen


@pytest.mark.parametrize(
    ("rate", "duration"),
    [
        pytest.param("30", "Duration:      about 7 minutes at 30 a minute", id="30-a-minute"),
        pytest.param("1", "Duration:      about 3 hours 14 minutes at 1 a minute", id="1-a-minute"),
        pytest.param("0", None, id="no-limit"),
    ],
)
def test_the_plan_at_80_columns_says_how_long_the_195_letters_will_take(
    project: Path, smtp_server: SmtpServer, pane: Pane, rate: str, duration: str | None
) -> None:
    settings = smtp_server.env(CAMPAIGN="at-80", SEND_RATE_PER_MINUTE=rate)
    pane.start(project, ["send"], settings)
    screen = pane.wait_for("Send 195 letters now?")
    pane.type("n")
    screen = pane.wait_for(DONE)
    assert f"{DONE}0" in "\n".join(screen)
    assert "Nothing sent." in screen
    assert smtp_server.received == []
    if duration is None:
        assert not [line for line in screen if line.startswith("Duration:")]
        assert any(line.endswith(", no limit") for line in screen if "SMTP server:" in line)
    else:
        assert duration in screen
    assert_broken_only_between_words(pane)


def test_a_check_at_80_columns_clears_its_bars_and_breaks_no_word(
    project: Path, pane: Pane
) -> None:
    pane.start(project, ["check"], {"CAMPAIGN": "at-80"})
    screen = pane.wait_for(DONE)
    assert f"{DONE}0" in "\n".join(screen)
    assert "━" not in "\n".join(screen)
    assert any(line.startswith("Warnings:") for line in screen)
    assert_broken_only_between_words(pane)
