"""A small IMAP server on 127.0.0.1 that misbehaves on purpose, one way at a time.

Enough of IMAP4rev1 for ``outreach inbox`` (CAPABILITY, LOGIN,
AUTHENTICATE PLAIN, EXAMINE, UID SEARCH, UID FETCH, LOGOUT), answered
from a mailbox of numbered messages, and the misbehaviours of hostile or
broken servers: no UIDVALIDITY or a bad one, a greeting trickled a byte at
a time, endless untagged lines, a literal announcing gigabytes, a FETCH
without the message.
"""

from __future__ import annotations

import base64
import re
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Behaviour:
    """What the server does; each field one way of misbehaving (the defaults: none)."""

    messages: dict[int, bytes] = field(default_factory=dict)
    #: The UIDVALIDITY given on EXAMINE: None for none at all.
    uidvalidity: str | None = "7"
    #: The greeting, a byte at a time, each after ``trickle_seconds``.
    trickle_greeting: bool = False
    trickle_seconds: float = 0.05
    #: Untagged ``* OK`` lines without end, in answer to SEARCH.
    endless_untagged: bool = False
    #: A FETCH of a message announces ``{3000000000}`` and sends a byte a second.
    huge_literal: bool = False
    #: UIDs whose FETCH answer leaves out BODY[].
    without_body: set[int] = field(default_factory=set)
    #: The credentials signed in with: (how, user, password).
    sign_ins: list[tuple[str, str, str]] = field(default_factory=list)
    #: Connections whose TLS handshake (implicit TLS) is over.
    secured: int = 0


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def send(self, text: str | bytes) -> None:
        self.wfile.write(text.encode("utf-8") if isinstance(text, str) else text)
        self.wfile.flush()

    def trickle(self, data: bytes) -> None:
        """``data`` a byte at a time, until the server stops."""
        for byte in data:
            if self.server.stopping.wait(self.server.behaviour.trickle_seconds):
                return
            self.send(bytes([byte]))

    def handle(self) -> None:
        behaviour = self.server.behaviour
        greeting = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile IMAP ready\r\n"
        if behaviour.trickle_greeting:
            self.trickle(greeting * 1000)
            return
        self.send(greeting)
        while not self.server.stopping.is_set():
            line = self.rfile.readline(65536)
            if not line:
                return
            tag, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
            command, _, arguments = rest.partition(" ")
            command = command.upper()
            if command == "UID":
                command, _, arguments = arguments.partition(" ")
                command = "UID " + command.upper()
            answer = getattr(self, "do_" + command.replace(" ", "_"), None)
            if answer is None:
                self.send(f"{tag} BAD unknown command\r\n")
            elif answer(tag, arguments) is False:
                return

    def do_CAPABILITY(self, tag: str, arguments: str) -> None:
        self.send(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n")

    def do_LOGIN(self, tag: str, arguments: str) -> None:
        words = re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', arguments)
        user, password = ("".join(w) for w in words[:2])
        self.server.behaviour.sign_ins.append(("LOGIN", user, password))
        self.send(f"{tag} OK signed in\r\n")

    def do_AUTHENTICATE(self, tag: str, arguments: str) -> None:
        self.send("+ \r\n")
        response = base64.b64decode(self.rfile.readline().strip()).decode("utf-8")
        _, user, password = response.split("\0")
        self.server.behaviour.sign_ins.append(("PLAIN", user, password))
        self.send(f"{tag} OK signed in\r\n")

    def do_EXAMINE(self, tag: str, arguments: str) -> None:
        behaviour = self.server.behaviour
        self.send(f"* {len(behaviour.messages)} EXISTS\r\n* 0 RECENT\r\n")
        if behaviour.uidvalidity is not None:
            self.send(f"* OK [UIDVALIDITY {behaviour.uidvalidity}] UIDs valid\r\n")
        self.send(f"* OK [UIDNEXT {max(behaviour.messages, default=0) + 1}] next\r\n")
        self.send(f"{tag} OK [READ-ONLY] EXAMINE completed\r\n")

    def do_UID_SEARCH(self, tag: str, arguments: str) -> None:
        behaviour = self.server.behaviour
        if behaviour.endless_untagged:
            while not self.server.stopping.is_set():
                self.send(b"* OK still searching\r\n" * 100)
            return
        found = re.search(r"UID (\d+):\*", arguments)
        low = int(found.group(1)) if found else 1
        uids = [uid for uid in sorted(behaviour.messages) if uid >= low]
        self.send(f"* SEARCH {' '.join(map(str, uids))}\r\n{tag} OK SEARCH completed\r\n")

    def do_UID_FETCH(self, tag: str, arguments: str) -> bool | None:
        behaviour = self.server.behaviour
        wanted, _, items = arguments.partition(" ")
        uids = [int(u) for u in wanted.split(",") if u.isdigit()]
        for number, uid in enumerate(uids, start=1):
            data = behaviour.messages.get(uid)
            if data is None:
                continue
            if "RFC822.SIZE" in items.upper():
                self.send(f"* {number} FETCH (UID {uid} RFC822.SIZE {len(data)})\r\n")
            elif behaviour.huge_literal:
                self.send(f"* {number} FETCH (UID {uid} BODY[] {{3000000000}}\r\n")
                self.trickle(b"x" * 1000)
                return False
            elif uid in behaviour.without_body:
                self.send(f"* {number} FETCH (UID {uid} FLAGS (\\Seen))\r\n")
            else:
                self.send(f"* {number} FETCH (UID {uid} BODY[] {{{len(data)}}}\r\n")
                self.send(data + b")\r\n")
        self.send(f"{tag} OK FETCH completed\r\n")
        return None

    def do_LOGOUT(self, tag: str, arguments: str) -> bool:
        self.send(f"* BYE logging out\r\n{tag} OK LOGOUT completed\r\n")
        return False

    def do_NOOP(self, tag: str, arguments: str) -> None:
        self.send(f"{tag} OK\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, Any]:
        """Each connection, with implicit TLS (port 993 style) when a context is given."""
        sock, address = super().get_request()
        if self.tls is not None:
            # A client that refuses the certificate ends here (an OSError: no request).
            sock = self.tls.wrap_socket(sock, server_side=True)
            self.behaviour.secured += 1
        return sock, address

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that leaves mid-answer is what these tests make happen: nothing to print."""


@contextmanager
def hostile_imap(behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """Serve ``behaviour`` on 127.0.0.1 for the duration (over TLS with ``tls``); the port."""
    server = _Server(behaviour, tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
