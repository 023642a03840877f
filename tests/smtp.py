"""A real SMTP server on loopback for the tests, with replies that can be scripted.

aiosmtpd speaks real SMTP over a real socket; the tests decide, command by
command, what it answers: a temporary refusal, a permanent one, a dropped
connection before the data or after its final dot.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import warnings
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USERNAME = "campaign@coalition.example"
PASSWORD = "correct horse battery staple"

#: A scripted action: a reply line to answer with, or "drop" to close the connection.
DROP = "drop"
#: A reply that is no SMTP reply at all (no code); after the data, the server has the letter.
GARBLED = "Thank you, we have it"


def parse(data: bytes) -> EmailMessage:
    """A message as a mail program reads it (the modern ``email`` API)."""
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes
    tls: bool
    authenticated: bool

    @property
    def message(self) -> EmailMessage:
        return parse(self.data)


@dataclass
class Script:
    """Queued answers per stage; when a queue is empty the server says yes."""

    mail: deque[str] = field(default_factory=deque)
    rcpt: defaultdict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    data: deque[str] = field(default_factory=deque)
    #: Answers for every RCPT, whatever the address (after the per-address ones).
    any_rcpt: deque[str] = field(default_factory=deque)
    always_refuse: dict[str, str] = field(default_factory=dict)
    #: Hold the answer to every letter's data from the one after this many on,
    #: until ``Handler.release`` is set (``Handler.holding`` says one is held):
    #: a test stops a run at a known letter, however fast the machine.
    hold_after: int | None = None


class Handler:
    def __init__(self) -> None:
        self.script = Script()
        self.received: list[Received] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.script.mail:
            action = self.script.mail.popleft()
            if action == DROP:
                server.transport.close()
                return "421 closing"
            if not action.startswith("2"):
                return action
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        queue = self.script.rcpt[address] or self.script.any_rcpt
        action = queue.popleft() if queue else self.script.always_refuse.get(address, "250 OK")
        if action == DROP:
            server.transport.close()
            return "421 closing"
        if action.startswith("2"):
            envelope.rcpt_tos.append(address)
        return action

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        hold = self.script.hold_after
        if hold is not None and len(self.received) >= hold and not self.release.is_set():
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        action = self.script.data.popleft() if self.script.data else "250 2.0.0 Ok: queued as Q1"
        if action.startswith("2") or action in (DROP, GARBLED):
            with self.lock:
                self.received.append(
                    Received(
                        mail_from=envelope.mail_from,
                        recipients=list(envelope.rcpt_tos),
                        data=envelope.original_content,
                        tls=server.transport.get_extra_info("ssl_object") is not None,
                        authenticated=bool(session.authenticated),
                    )
                )
        if action == DROP:
            # The message is in; the answer never leaves.
            server.transport.close()
            return "250 lost"
        return action


def password_checker(accounts: dict[str, str]) -> Any:
    """An authenticator that takes the names and passwords in ``accounts``, as UTF-8."""

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and any(
            auth_data.login == name.encode() and auth_data.password == password.encode()
            for name, password in accounts.items()
        )
        return AuthResult(success=ok, handled=False)

    return authenticator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    handler: Handler
    controller: Controller
    port: int
    ca_file: Path | None
    #: The logins the server takes (name: password); tests may add one.
    accounts: dict[str, str] = field(default_factory=dict)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def script(self) -> Script:
        return self.handler.script

    def env(self, **extra: str) -> dict[str, str]:
        """Settings for outreach to send to this server."""
        values = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.port),
            "SMTP_SECURITY": "none",
            "MAIL_FROM": "campaign@coalition.example",
            "MAIL_FROM_NAME": "The Coalition",
            "SEND_RATE_PER_MINUTE": "0",
            "SEND_RETRY_WAIT_SECONDS": "0.01",
            "SEND_RETRY_MAX_WAIT_SECONDS": "0.05",
            # A bound on silence, not on speed: a busy machine never reaches it.
            "SMTP_TIMEOUT": "60",
        }
        values.update(extra)
        return values


def tls_material(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate from a private CA, and that CA's file."""
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    ca_file = folder / "private-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


def run_server(mode: str, folder: Path) -> Iterator[SmtpServer]:
    """Start a server: ``plain``, ``starttls`` (with AUTH) or ``ssl`` (implicit TLS, AUTH)."""
    handler = Handler()
    port = free_port()
    ca_file = None
    accounts = {USERNAME: PASSWORD}
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port}
    if mode in ("starttls", "ssl"):
        context, ca_file = tls_material(folder)
        kwargs.update(authenticator=password_checker(accounts), auth_require_tls=True)
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            # aiosmtpd advertises AUTH with require-TLS only after STARTTLS; on an
            # implicit-TLS socket the whole session is encrypted already.
            kwargs.update(ssl_context=context, auth_require_tls=False)
    controller = Controller(handler, **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
        controller.start()
    try:
        yield SmtpServer(handler, controller, port, ca_file, accounts)
    finally:
        controller.stop()
