"""SMTP_TIMEOUT is for a server that has gone silent, not for a slow line: a large
letter to a server that reads it steadily but slowly goes, however long that takes."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outreach.sendlog import read_log
from tests.conftest import RunCli
from tests.smtp import parse

#: The server reads this much, then waits a little: about 320 KB a second.
READ_BYTES = 32 * 1024
READ_PAUSE = 0.1


class SlowReader:
    """An SMTP server on loopback that reads a letter's data slowly and steadily.

    Its receive buffer is small, so the sender cannot hand the whole letter
    to the kernel at once: the upload really takes as long as the reading.
    """

    def __init__(self, quit_trickle: int = 0) -> None:
        #: Answer QUIT a byte at a time, this many bytes, a tenth of a second apart.
        self.quit_trickle = quit_trickle
        self.quit_bytes_sent = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.letters: list[bytes] = []
        self.longest_silence = 0.0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                with connection:
                    self._session(connection)

    def _session(self, connection: socket.socket) -> None:
        pending = b""

        def line() -> bytes:
            nonlocal pending
            while b"\r\n" not in pending:
                chunk = connection.recv(1024)
                if not chunk:
                    raise ConnectionError
                pending += chunk
            first, pending = pending.split(b"\r\n", 1)
            return first

        connection.sendall(b"220 slow.example ESMTP\r\n")
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                command = line().upper()
                if command.startswith((b"EHLO", b"HELO")):
                    connection.sendall(b"250-slow.example\r\n250 SIZE 50000000\r\n")
                elif command.startswith(b"DATA"):
                    connection.sendall(b"354 go ahead\r\n")
                    data = pending
                    while not data.endswith(b"\r\n.\r\n"):
                        time.sleep(READ_PAUSE)
                        chunk = connection.recv(READ_BYTES)
                        if not chunk:
                            raise ConnectionError
                        data += chunk
                    pending = b""
                    self.letters.append(data)
                    connection.sendall(b"250 2.0.0 queued\r\n")
                elif command.startswith(b"QUIT"):
                    for byte in b"221-" + b"b" * self.quit_trickle:
                        time.sleep(READ_PAUSE)
                        connection.sendall(bytes([byte]))
                        self.quit_bytes_sent += 1
                    connection.sendall(b"221 bye\r\n")
                    return
                else:
                    connection.sendall(b"250 OK\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def slow_reader() -> Iterator[SlowReader]:
    server = SlowReader()
    try:
        yield server
    finally:
        server.close()


def test_a_large_letter_on_a_slow_line_goes_though_it_takes_longer_than_the_timeout(
    run_cli: RunCli, project: Path, slow_reader: SlowReader
) -> None:
    """About 1.4 MB at no more than 320 KB a second: several times SMTP_TIMEOUT (2 s),
    the server never silent for more than a tenth of a second."""
    (project / "annex.pdf").write_bytes(os.urandom(1_000_000))
    env = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(slow_reader.port),
        "SMTP_SECURITY": "none",
        "SMTP_TIMEOUT": "2",
        "MAIL_FROM": "campaign@coalition.example",
        "SEND_RATE_PER_MINUTE": "0",
        "SEND_MAX_ATTEMPTS": "1",
        "ATTACHMENTS": "annex.pdf",
    }
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 0, result.stdout + result.stderr
    [row] = [r for r in read_log(project / "logs" / "send-log.csv") if r.status != "sending"]
    assert row.status == "sent"
    [data] = slow_reader.letters
    letter = parse(data.removesuffix(b".\r\n").replace(b"\r\n..", b"\r\n."))
    [attached] = letter.iter_attachments()
    assert attached.get_payload(decode=True) == (project / "annex.pdf").read_bytes()


def test_a_server_that_answers_quit_a_byte_at_a_time_does_not_hold_the_run(
    run_cli: RunCli, project: Path
) -> None:
    """The letter has gone; a goodbye that never ends is cut at SMTP_TIMEOUT (1 s),
    where the server would take 30 s to say it."""
    server = SlowReader(quit_trickle=300)
    try:
        env = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none",
            "SMTP_TIMEOUT": "1",
            "MAIL_FROM": "campaign@coalition.example",
            "SEND_RATE_PER_MINUTE": "0",
        }
        result = run_cli("send", "--yes", "--only", "CHL", env=env)
    finally:
        server.close()
    assert result.code == 0, result.stdout + result.stderr
    assert "Done: 1 sent." in result.stdout
    assert server.quit_bytes_sent < 100
