"""One SMTP connection: secure it, log in, and hand over one message at a time.

This is where the replies of a real server are sorted into what the sending
loop must do with each recipient of a letter: it has the letter (``sent``),
it may have it (``ambiguous``: the connection was lost after the final dot
and before the answer), it refused it for good (``failed``), or it refused
it for now (``retry``). A refusal for now is sorted further, because the
loop answers each differently: the server asked to slow down (a throttle),
has too many connections from us (busy), or the connection failed (a
fault: reconnect, nothing else changes). Problems no retry can fix (a wrong
password, a refused sender, TLS that does not verify) stop the whole run.

Every command waits at most SMTP_TIMEOUT seconds for its whole reply, not
only for each piece of it: a server that trickles out a greeting line by
line, forever, is hung up on like one that says nothing. A letter's data is
different: it goes out a piece at a time, and SMTP_TIMEOUT bounds each
piece, not the whole: an 18 MB letter to a server that reads 150 KB a
second takes two minutes, and only a server that reads nothing for
SMTP_TIMEOUT seconds is given up on. The connection's send buffer is kept
small, so that once the last piece is handed over, little is left for the
server to read before it answers.
"""

from __future__ import annotations

import contextlib
import functools
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from outreach.credentials import (
    Credentials,
    PasswordPrompt,
    credentials_for,
    oauthbearer,
    sasl_b64,
    xoauth2,
)
from outreach.errors import DeliveryError
from outreach.message import Letter
from outreach.settings import Settings, unencrypted_password

_T = TypeVar("_T")
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Reply:
    """A server's reply: its code and its text on one line (secrets blotted out)."""

    code: int
    text: str

    @property
    def enhanced(self) -> str:
        """The enhanced status code (RFC 3463) at the start of the text, such as ``4.7.0``."""
        found = _ENHANCED.match(self.text)
        return found.group(0) if found else ""

    @property
    def is_valid(self) -> bool:
        return 200 <= self.code <= 599

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip() if self.is_valid else self.text


#: What a temporary refusal asks of the sending loop.
THROTTLE, BUSY, FAULT, REFUSAL = "throttle", "busy", "fault", "refusal"
#: The server refused the access token the session signed in with (it expired,
#: or was revoked): reconnect at once with a fresh one, neither waiting nor slowing.
RECONNECT = "reconnect"
_TOKEN_REFUSED = re.compile(
    r"\btoken\b.*\b(expired|invalid|revoked|not valid|no longer valid)\b"
    r"|\b(expired|invalid|revoked)\b.*\btoken\b",
    re.IGNORECASE,
)
#: How much of a letter's data goes to the socket at a time: SMTP_TIMEOUT bounds each.
DATA_CHUNK = 64 * 1024
#: The socket's send buffer (the kernel doubles it): what the server may still
#: have to read when the last piece is handed over, before it answers.
SEND_BUFFER = 64 * 1024


def temporary_kind(reply: Reply) -> str:
    """What a 4xx reply (or a lost connection) means for the run.

    A throttle is a 4.7.x enhanced status (Gmail's ``421 4.7.0 Try again
    later``, Microsoft's ``421 4.7.500 Server busy``): send more slowly.
    Microsoft's ``432 4.3.2 … thread limit exceeded`` says too many
    connections at once: use fewer. Any other ``421`` (``4.3.2 Service
    shutting down``, ``4.4.x``) closes the connection: a fault, to reconnect
    after a pause with the rate unchanged; other 4xx replies refuse this
    letter for now. A reply that says the access token expired or is not
    valid (``421 4.7.0 Access token expired``) asks for a reconnection now,
    with a fresh token.
    """
    if 400 <= reply.code < 500 and _TOKEN_REFUSED.search(reply.text):
        # ``421 4.7.0 Access token expired`` is no throttle: a new token is enough.
        return RECONNECT
    if reply.enhanced.startswith("4.7."):
        return THROTTLE
    if reply.code == 432:
        return BUSY
    if reply.code == 421 or not reply.is_valid:
        return FAULT
    return REFUSAL


@dataclass(frozen=True)
class Attempt:
    """What one SMTP transaction did with the recipients it was given.

    ``status`` is what became of the ``accepted`` recipients: ``sent``,
    ``ambiguous``, ``failed``, ``retry`` (with ``kind``), or ``""`` when the
    server accepted none. ``refused`` are those it refused at RCPT, each with
    its reply (4xx for now, 5xx for good).
    """

    accepted: tuple[str, ...]
    refused: dict[str, Reply]
    status: str
    reply: Reply
    kind: str = ""


@dataclass(frozen=True)
class Server:
    """Where and how to connect; built from the settings."""

    host: str
    port: int
    security: str
    timeout: float
    credentials: Credentials = field(default_factory=lambda: Credentials("", ""), repr=False)
    ca_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, ask: PasswordPrompt | None = None) -> Server:
        """The settings' server; ``ask`` gives the password at sign-in when no setting does."""
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            timeout=settings.smtp_timeout,
            credentials=credentials_for(settings, "SMTP", ask),
            ca_file=settings.smtp_ca_file,
        )

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def username(self) -> str:
        return self.credentials.username if self.credentials.mechanism else ""


#: What a provider's refusal means, and what to do, by (code, enhanced status).
PROVIDER_REPLIES = {
    (535, "5.7.139"): "SMTP AUTH is turned off for this mailbox or tenant: an administrator "
    "turns on Authenticated SMTP for {user} (Microsoft 365 admin center: Users, the mailbox, "
    "Mail, Manage email apps)",
    (550, "5.7.30"): "basic authentication (a password) is switched off for sending: use "
    "SMTP_AUTH=xoauth2 and run `outreach login`, or set SMTP_TOKEN_COMMAND",
    (535, "5.7.3"): "the server did not accept the credentials of {user}: check SMTP_USERNAME "
    "and the password or token",
    (534, "5.7.9"): "Google wants an app password for {user} (Google Account, Security, App "
    "passwords), or SMTP_AUTH=xoauth2 with SMTP_TOKEN_COMMAND",
    (535, "5.7.8"): "the user name and password of {user} were not accepted: check "
    "SMTP_USERNAME and SMTP_PASSWORD (with 2-Step Verification, an app password)",
}
#: Microsoft's words for a sender the account may not send as (at MAIL or after the data).
SEND_AS_DENIED = ("5.2.252", "5.7.60")


def provider_words(reply: Reply, user: str) -> str | None:
    """What a provider's sign-in refusal means, in words, or None."""
    words = PROVIDER_REPLIES.get((reply.code, reply.enhanced))
    return None if words is None else words.format(user=user)


def _dot_stuffed(msg: bytes) -> bytes:
    """The message as SMTP carries it: every line that starts with a dot gets
    another (RFC 5321, 4.5.2), and the last line ends in CRLF.

    Lines end in CRLF, as the server reads them: a dot after a bare LF is
    inside a line, and a dot added there would reach the mission.
    """
    payload = msg.replace(b"\r\n.", b"\r\n..")
    if payload.startswith(b"."):
        payload = b"." + payload
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return payload


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificates and host names verified, always; a private CA may be added."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class StopRun(DeliveryError):
    """The server refused a letter for a reason every other letter shares: stop the run.

    The letter itself is still owed: it was refused, never delivered.
    """

    def __init__(self, reply: Reply, problem: str) -> None:
        super().__init__(problem)
        self.reply = reply


class _TimedOut(Exception):
    """A reply did not come whole within SMTP_TIMEOUT."""


class Connection:
    """An open, secured, logged-in SMTP session that carries many letters."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._smtp: smtplib.SMTP | None = None
        self._timed_out = threading.Event()
        self._sender = ""
        #: The server refused the session's token: the next login asks for a fresh one.
        self._token_refused = False

    # -- deadlines -----------------------------------------------------------------------

    @contextlib.contextmanager
    def deadline(self, smtp: smtplib.SMTP | None = None) -> Iterator[None]:
        """At most SMTP_TIMEOUT seconds for a command and its whole reply.

        The socket's own timeout bounds each read; a server that sends a
        little at a time would never trip it. When the deadline passes, the
        connection is shut down, which ends any read at once.
        """
        self._timed_out.clear()
        timer = threading.Timer(self.server.timeout, self._hang_up, args=(smtp or self._smtp,))
        timer.daemon = True
        timer.start()
        try:
            yield
        except (OSError, smtplib.SMTPException) as err:
            if self._timed_out.is_set():
                raise _TimedOut from err
            raise
        finally:
            timer.cancel()

    def _hang_up(self, smtp: smtplib.SMTP | None) -> None:
        self._timed_out.set()
        sock = smtp.sock if smtp is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _timed(self, step: Callable[[], _T]) -> _T:
        with self.deadline():
            return step()

    # -- opening -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, secure and log in; raise DeliveryError, or Unreachable for a retry.

        In that order: a password asked for at a prompt is asked for at the
        login, once the server's certificate has been checked, so that
        nobody types a password for a server that is not the one meant.
        """
        server = self.server
        unencrypted = unencrypted_password(server.username, server.security, server.host)
        if unencrypted:
            raise DeliveryError(unencrypted)
        try:
            context = tls_context(server.ca_file)
            session, options = (
                (_SessionSSL, {"context": context}) if server.security == "ssl" else (_Session, {})
            )
            smtp = session(server.host, server.port, watch=self, timeout=server.timeout, **options)
            self._smtp = smtp
            if smtp.sock is not None:
                # A small send buffer: what is handed over is soon on its way to the server.
                with contextlib.suppress(OSError):
                    smtp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            self._timed(smtp.ehlo_or_helo_if_needed)
            if server.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{server.name} does not offer STARTTLS, and SMTP_SECURITY=starttls "
                        "never sends without encryption; check SMTP_PORT (587 for "
                        "starttls, 465 for ssl)"
                    )
                self._timed(lambda: smtp.starttls(context=context))
                self._timed(smtp.ehlo_or_helo_if_needed)
            if server.credentials.mechanism:
                self._login(smtp)
        except BaseException as err:
            self.close()
            if isinstance(err, DeliveryError) or not isinstance(err, Exception):
                raise
            raise self._connect_error(err) from None

    def _login(self, smtp: smtplib.SMTP) -> None:
        """Sign in with the mechanism SMTP_AUTH names, if the server offers it.

        A password goes with AUTH PLAIN (or LOGIN) in UTF-8 (RFC 4616):
        smtplib's own login encodes it as ASCII, so ``pässwörd`` could not be
        sent at all. A token goes with XOAUTH2 or OAUTHBEARER; when the
        server refuses it, a fresh one is asked for and tried once more.
        """
        credentials = self.server.credentials
        offered = str(smtp.esmtp_features.get("auth", "")).upper().split()
        if credentials.uses_token:
            wanted = credentials.mechanism.upper()
            if wanted not in offered:
                raise DeliveryError(
                    f"{self.server.name} does not offer SMTP_AUTH={credentials.mechanism} "
                    f"(it offers: {' '.join(offered) or 'no login'}); check SMTP_AUTH"
                )
            fresh, self._token_refused = self._token_refused, False
            code, reply = self._token_login(smtp, wanted, fresh=fresh)
            if code != 235 and not fresh:
                code, reply = self._token_login(smtp, wanted, fresh=True)
        elif "PLAIN" in offered or "LOGIN" in offered:
            user, password = credentials.username, credentials.secret().reveal()
            if "PLAIN" in offered:
                code, reply = self._auth(smtp, "PLAIN " + sasl_b64(f"\0{user}\0{password}"))
            else:
                code, reply = self._auth(smtp, "LOGIN " + sasl_b64(user), sasl_b64(password))
        else:
            raise DeliveryError(
                f"{self.server.name} offers no password login (it offers: "
                f"{' '.join(offered) or 'no login'}); check SMTP_AUTH, SMTP_SECURITY and SMTP_PORT"
            )
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)

    def _token_login(self, smtp: smtplib.SMTP, mechanism: str, *, fresh: bool) -> tuple[int, bytes]:
        """One try with a token; a refusal comes as a 334 with a JSON error, answered empty."""
        credentials = self.server.credentials
        token = credentials.secret(fresh=fresh).reveal()
        make = xoauth2 if mechanism == "XOAUTH2" else oauthbearer
        return self._auth(smtp, f"{mechanism} {sasl_b64(make(credentials.username, token))}", "")

    def _auth(self, smtp: smtplib.SMTP, command: str, then: str | None = None) -> tuple[int, bytes]:
        """AUTH ``command``; a 334 (the server asks more) is answered with ``then``, if given."""
        code, reply = self._timed(lambda: smtp.docmd("AUTH", command))
        if code == 334 and then is not None:
            code, reply = self._timed(lambda: smtp.docmd(then))
        return code, reply

    def _connect_error(self, err: Exception) -> Exception:
        """The error of a failed connection: DeliveryError (stop) or Unreachable (retry)."""
        server = self.server
        if isinstance(err, smtplib.SMTPAuthenticationError):
            reply = self._reply(err.smtp_code, err.smtp_error)
            words = provider_words(reply, server.username)
            secret = "the token" if server.credentials.uses_token else "SMTP_PASSWORD"
            return DeliveryError(
                f"{server.name} refused the login of SMTP_USERNAME={server.username} "
                f"({reply}); " + (words or f"check SMTP_USERNAME and {secret}")
            )
        if isinstance(err, smtplib.SMTPNotSupportedError):
            return DeliveryError(f"{server.name} does not support {err}; check SMTP_SECURITY")
        if isinstance(err, ssl.SSLCertVerificationError):
            return DeliveryError(
                f"the TLS certificate of {server.name} does not verify "
                f"({err.verify_message}); if the server uses a private certificate "
                "authority, set SMTP_CA_FILE to its certificate"
            )
        if isinstance(err, ssl.SSLError):
            return DeliveryError(
                f"TLS with {server.name} failed ({err.reason or err}); check SMTP_SECURITY "
                "and SMTP_PORT (587 for starttls, 465 for ssl)"
            )
        if isinstance(err, socket.gaierror):
            return DeliveryError(f"cannot find the SMTP server SMTP_HOST={server.host} ({err})")
        if isinstance(err, smtplib.SMTPResponseException):
            reply = self._reply(err.smtp_code, err.smtp_error)
            if 400 <= err.smtp_code < 500:
                return Unreachable(reply, temporary_kind(reply))
            return DeliveryError(f"{server.name} refused the connection ({reply})")
        if isinstance(err, ConnectionRefusedError):
            return Unreachable(Reply(0, f"{server.name} refused the connection"), FAULT)
        if isinstance(err, _TimedOut | TimeoutError):
            return Unreachable(self._lost(err), FAULT)
        if isinstance(err, smtplib.SMTPServerDisconnected | OSError):
            return Unreachable(Reply(0, f"lost the connection to {server.name} ({err})"), FAULT)
        return err  # a bug: keep its traceback

    def close(self) -> None:
        if self._smtp is None:
            return
        smtp, self._smtp = self._smtp, None
        try:
            with self.deadline(smtp):  # the connection is no longer self._smtp
                smtp.quit()
        except (smtplib.SMTPException, OSError, _TimedOut):
            smtp.close()

    def _drop(self) -> None:
        """Hang up without a word: the server is mid-transaction, or gone."""
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            smtp.close()

    # -- sending -------------------------------------------------------------------------

    def send(self, letter: Letter, recipients: Sequence[str], begin: Callable[[], None]) -> Attempt:
        """Hand one letter to the server, for ``recipients`` (some or all of its own).

        ``begin`` runs once the server has accepted the sender: the send
        log's ``sending`` row is written there, and is on the disk before
        any of the letter goes out. A problem that stops the whole run
        raises DeliveryError; anything else comes back as the Attempt.
        """
        if self._smtp is None:
            try:
                self.open()
            except Unreachable as err:
                return Attempt((), {}, "retry", err.reply, err.kind)
        smtp = self._smtp
        assert smtp is not None
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        phase: list[str] = []
        try:
            return self._transaction(smtp, letter, recipients, begin, accepted, refused, phase)
        except (smtplib.SMTPException, OSError, _TimedOut) as err:
            self._drop()
            reply = self._lost(err)
            if "dot" in phase:
                return Attempt(tuple(accepted), refused, "ambiguous", reply)
            return Attempt(tuple(accepted), refused, "retry", reply, FAULT)
        except BaseException:
            # Ctrl-C, or the send log that cannot be written: without the final
            # dot the server delivers nothing, and a QUIT would only be read as
            # part of the letter.
            self._drop()
            raise

    def _reply(self, code: int, text: bytes | str) -> Reply:
        """A server's reply on one line, every secret of the sign-in blotted out."""
        plain = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        return Reply(code, self.server.credentials.scrub(" ".join(plain.split())))

    def _lost(self, err: BaseException) -> Reply:
        if isinstance(err, _TimedOut | TimeoutError):
            return Reply(0, f"{self.server.name} did not answer within {self.server.timeout:g} s")
        # The error may quote the server, which may have said the password back.
        return self._reply(0, f"the connection to {self.server.name} was lost ({err or 'closed'})")

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        letter: Letter,
        recipients: Sequence[str],
        begin: Callable[[], None],
        accepted: list[str],
        refused: dict[str, Reply],
        phase: list[str],
    ) -> Attempt:
        self._sender = letter.sender
        code, text = self._timed(lambda: smtp.mail(letter.sender))
        reply = self._reply(code, text)
        if code != 250:
            return self._sender_refused(reply, letter.sender)
        begin()
        for recipient in recipients:
            code, text = self._timed(functools.partial(smtp.rcpt, recipient))
            answer = self._reply(code, text)
            if code in (250, 251):
                accepted.append(recipient)
            elif code == 421 or not answer.is_valid:
                # The server is closing the connection: nothing was decided.
                self._drop()
                return Attempt((), {}, "retry", answer, self._kind(answer))
            else:
                refused[recipient] = answer
        if not accepted:
            self._reset()
            first = min(refused.values(), key=lambda r: r.code)
            return Attempt((), refused, "", first)
        code, text = self._timed(lambda: smtp.docmd("DATA"))
        reply = self._reply(code, text)
        if code != 354:
            return self._refused_data(reply, tuple(accepted), refused)
        self._upload(smtp, _dot_stuffed(letter.data) + b".\r\n")
        phase.append("dot")
        code, text = self._timed(smtp.getreply)
        reply = self._reply(code, text)
        if 200 <= code < 300:
            return Attempt(tuple(accepted), refused, "sent", reply)
        if 400 <= code < 600:
            return self._refused_data(reply, tuple(accepted), refused)
        # After the final dot, a reply that cannot be read may hide a 250.
        self._drop()
        reason = self._reply(
            0, f"an answer that could not be read after the data was sent: {text!r}"
        )
        return Attempt(tuple(accepted), refused, "ambiguous", Reply(0, reason.text[:200]))

    def _upload(self, smtp: smtplib.SMTP, payload: bytes) -> None:
        """The letter's data, a piece at a time: SMTP_TIMEOUT bounds each piece.

        ``sendall`` bounds the whole of what it is given by the socket's
        timeout: given the whole letter, a slow line would be cut however
        steadily the server reads.
        """
        sock = smtp.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("the connection was closed")
        data = memoryview(payload)
        for start in range(0, len(data), DATA_CHUNK):
            sock.sendall(data[start : start + DATA_CHUNK])

    def _kind(self, reply: Reply) -> str:
        """What a temporary refusal asks for; a refused token is also noted for the next login."""
        kind = temporary_kind(reply)
        if kind == RECONNECT:
            self._token_refused = True
        return kind

    def _send_as_denied(self, reply: Reply, sender: str) -> DeliveryError:
        username = self.server.username
        account = f"SMTP_USERNAME={username}" if username else "this login"
        return StopRun(
            reply,
            f"{self.server.name} will not send as MAIL_FROM={sender} ({reply}): it is not a "
            f"mailbox {account} may send as; send from that mailbox, or have an administrator "
            "grant it Send As",
        )

    def _refused_data(
        self, reply: Reply, accepted: tuple[str, ...], refused: dict[str, Reply]
    ) -> Attempt:
        words = provider_words(reply, self.server.username)
        if words is not None or reply.enhanced in SEND_AS_DENIED:
            # Every letter would be refused the same way: the run stops here.
            self._reset()
            if words is not None:
                raise StopRun(reply, f"{self.server.name} refused to send ({reply}); {words}")
            raise self._send_as_denied(reply, self._sender)
        if 500 <= reply.code < 600:
            self._reset()
            return Attempt(accepted, refused, "failed", reply)
        return self._retry(reply, accepted, refused)

    def _sender_refused(self, reply: Reply, sender: str) -> Attempt:
        words = provider_words(reply, self.server.username)
        if words is not None:
            raise DeliveryError(f"{self.server.name} refused to send ({reply}); {words}")
        if reply.enhanced in SEND_AS_DENIED:
            raise self._send_as_denied(reply, sender)
        if reply.code in (530, 535):
            raise DeliveryError(
                f"{self.server.name} requires a login ({reply}); set SMTP_USERNAME and "
                "SMTP_PASSWORD"
            )
        if 500 <= reply.code < 600:
            raise DeliveryError(
                f"{self.server.name} refused the sender MAIL_FROM={sender} ({reply})"
            )
        return self._retry(reply, (), {})

    def _retry(self, reply: Reply, accepted: tuple[str, ...], refused: dict[str, Reply]) -> Attempt:
        """A refusal for now: a lost or refused session is hung up, any other is reset."""
        kind = self._kind(reply)
        if kind in (FAULT, RECONNECT):
            self._drop()
        else:
            self._reset()
        return Attempt(accepted, refused, "retry", reply, kind)

    def _reset(self) -> None:
        smtp = self._smtp
        if smtp is None:
            return
        try:
            self._timed(smtp.rset)
        except (smtplib.SMTPException, OSError, _TimedOut):
            self._drop()


class _Session(smtplib.SMTP):
    """smtplib's SMTP, its greeting read under the connection's deadline."""

    def __init__(self, host: str, port: int, *, watch: Connection, **options: Any) -> None:
        self.watch = watch
        super().__init__(host, port, **options)

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        with self.watch.deadline(self):
            return super().connect(host, port, source_address)


class _SessionSSL(_Session, smtplib.SMTP_SSL):
    """smtplib's SMTP_SSL, its handshake and greeting read under the connection's deadline."""


class Unreachable(Exception):
    """The connection could not be opened, for now: worth another try later."""

    def __init__(self, reply: Reply, kind: str) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.kind = kind
