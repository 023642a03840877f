"""The ``outreach`` command run on a real pseudo-terminal, answering its questions.

For what only a terminal shows: the questions a send asks before it sends.
The process is under test here, so it is a process of its own.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Mapping
from pathlib import Path

from tests.conftest import Result

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _take_terminal() -> None:
    """In the child: make its standard input (the pseudo-terminal) its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_in_terminal(
    args: list[str], cwd: Path, env: Mapping[str, str], answers: Mapping[str, str]
) -> Result:
    """Run ``outreach ARGS`` on a terminal; type each answer once its question appears.

    The output is what the terminal showed (stdout and stderr together,
    without colours), in ``Result.stdout``.
    """
    main, side = os.openpty()
    environment = {**os.environ, "TERM": "dumb", "COLUMNS": "120", "NO_COLOR": "1", **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "outreach", *args],
        cwd=cwd,
        env=environment,
        stdin=side,
        stdout=side,
        stderr=side,
        close_fds=True,
        # A session of its own, the pseudo-terminal its terminal: a password
        # prompt reads /dev/tty, which must be this one, never the developer's.
        start_new_session=True,
        preexec_fn=_take_terminal,
    )
    os.close(side)
    shown = b""
    waiting = dict(answers)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the other side closed: the process ended
                    break
                if not chunk:
                    break
                shown += chunk
                text = shown.decode("utf-8", "replace")
                for question in list(waiting):
                    if question in text:
                        os.write(main, waiting.pop(question).encode() + b"\n")
            elif process.poll() is not None:
                break
        else:
            process.kill()
            raise AssertionError(f"no end in sight; the terminal showed: {shown[-2000:]!r}")
    finally:
        code = process.wait(timeout=30)
        os.close(main)
    text = _ANSI.sub("", shown.decode("utf-8", "replace")).replace("\r\n", "\n")
    return Result(code, text, "")
