"""A local SMTP server that keeps every message as a file: the embedded default.

It lets the whole job run on one machine, with nothing leaving it: ``make
demo`` sends every letter here, and the received ``.eml`` files can be opened
in any mail program to see exactly what a mission would get.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from outreach.addresses import is_loopback
from outreach.errors import OutreachError


class SinkHandler:
    """Stores each message, with its envelope, as ``NNNNNN.eml``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutreachError(f"--dir {folder}: cannot be made ({err.strerror})") from err
        taken = [int(p.stem) for p in folder.glob("*.eml") if p.stem.isdigit()]
        self._numbers = itertools.count(max(taken, default=0) + 1)
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{next(self._numbers):06d}.eml"
        recipients = ", ".join(envelope.rcpt_tos)
        head = (
            f"X-Sink-Envelope-From: {envelope.mail_from}\r\nX-Sink-Envelope-To: {recipients}\r\n"
        ).encode("utf-8", "replace")
        try:
            (self.folder / name).write_bytes(head + envelope.original_content)
        except OSError as err:
            # A full disk: the sender keeps the letter and tries again later.
            (self.folder / name).unlink(missing_ok=True)
            return f"452 4.3.1 cannot store the message in {self.folder} ({err.strerror})"
        self.received += 1
        return f"250 2.0.0 Ok: stored as {name}"


def start_sink(host: str, port: int, folder: Path) -> Controller:
    """Start the sink in a background thread; ``.stop()`` it when done.

    It listens on this machine only: a sink on a public address would take
    mail from anyone.
    """
    if not is_loopback(host):
        raise OutreachError(f"--host {host}: the sink listens on this machine only (127.0.0.1)")
    controller = Controller(SinkHandler(folder), hostname=host, port=port)
    try:
        controller.start()
    except (OSError, RuntimeError) as err:
        controller.loop.close()  # its event loop never ran: nothing else will close it
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise OutreachError(f"cannot listen on {host}:{port} ({reason})") from err
    return controller
