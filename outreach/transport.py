"""One SMTP connection: secure it, log in, and hand over one message at a time.

This is where the replies of a real server are sorted into what the sending
loop must do: retry (a temporary refusal or a lost connection before the end
of the data), give up on one letter (a permanent refusal), stop the whole run
(a wrong password, a refused sender, TLS that does not verify), or record
that the server may have the letter (the connection was lost after the final
dot and before the server's answer).
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from outreach.addresses import is_loopback
from outreach.errors import DeliveryError
from outreach.message import Letter
from outreach.settings import Secret, Settings

_T = TypeVar("_T")


class Transient(Exception):
    """A failure worth another attempt; the connection may need reopening."""

    def __init__(self, code: int | None, reply: str, *, slow_down: bool = False) -> None:
        super().__init__(code, reply)
        self.code = code
        self.reply = reply
        self.slow_down = slow_down


class Permanent(Exception):
    """The server refused this letter for good (a 5xx reply)."""

    def __init__(self, code: int | None, reply: str) -> None:
        super().__init__(code, reply)
        self.code = code
        self.reply = reply


class Ambiguous(Exception):
    """The data went out but no answer came: the server may have the letter."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class Delivered:
    """The server's answer to a letter it took, and the addresses it refused."""

    code: int
    reply: str
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Server:
    """Where and how to connect; built from the settings."""

    host: str
    port: int
    security: str
    timeout: float
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    ca_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Server:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            timeout=settings.smtp_timeout,
            username=settings.smtp_username,
            password=settings.smtp_password,
            ca_file=settings.smtp_ca_file,
        )

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def scrub(self, text: str) -> str:
        """``text`` with the password, plain or as AUTH sends it, blotted out.

        A server that echoes what it was sent must not put the password into
        an error message or the send log.
        """
        secret = self.password.reveal()
        if not secret:
            return text
        forms = {secret, base64.b64encode(secret.encode()).decode()}
        for user in ("", self.username):
            plain = f"{user}\0{user}\0{secret}".encode()
            forms.add(base64.b64encode(plain).decode())
            forms.add(base64.b64encode(f"\0{user}\0{secret}".encode()).decode())
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "********")
        return text


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _send_data(smtp: smtplib.SMTP, msg: bytes, phase: list[bool]) -> tuple[int, bytes]:
    """smtplib's DATA, noting in ``phase`` when the final dot has gone out.

    smtplib's own ``data()`` cannot tell a connection lost while the message
    was being sent (the server cannot have it: retry) from one lost while
    waiting for the answer (it may have it: do not send it again blindly).
    """
    smtp.putcmd("data")
    code, reply = smtp.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    smtp.send(_dot_stuffed(msg) + b".\r\n")
    phase.append(True)
    code, reply = smtp.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)
    return code, reply


def _unless_failing(smtp: smtplib.SMTP, step: Callable[[], _T]) -> _T:
    """``step()``; if it fails, hang up before raising.

    The server is then in the middle of a transaction, perhaps of a message:
    without the final dot it delivers nothing, and QUIT would only be taken
    as part of the text.
    """
    try:
        return step()
    except BaseException:
        smtp.close()
        raise


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


class Connection:
    """An open, secured, logged-in SMTP session that carries many letters."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._smtp: smtplib.SMTP | None = None

    @property
    def is_open(self) -> bool:
        return self._smtp is not None

    def open(self) -> None:
        """Connect, secure and log in; raise DeliveryError or Transient."""
        server = self.server
        if server.username and server.security == "none" and not is_loopback(server.host):
            raise DeliveryError(
                f"SMTP_SECURITY=none would send the password for {server.username} to "
                f"{server.host} unencrypted; use starttls or ssl"
            )
        try:
            context = tls_context(server.ca_file)
            smtp: smtplib.SMTP
            if server.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    server.host, server.port, timeout=server.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
            self._smtp = smtp
            smtp.ehlo()
            if server.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{server.name} does not offer STARTTLS, and SMTP_SECURITY=starttls "
                        "never sends without encryption; check SMTP_PORT (587 for "
                        "starttls, 465 for ssl)"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if server.username:
                smtp.login(server.username, server.password.reveal())
        except DeliveryError:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise self._connect_error(err) from None
        except BaseException:
            self.close()
            raise

    def _connect_error(self, err: Exception) -> Exception:
        """The error of a failed connection, sorted into fatal and transient."""
        server = self.server
        if isinstance(err, smtplib.SMTPAuthenticationError):
            return DeliveryError(
                f"{server.name} refused the login of SMTP_USERNAME={server.username} "
                f"({err.smtp_code} {server.scrub(_reply_text(err.smtp_error))}); "
                "check SMTP_USERNAME and SMTP_PASSWORD"
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
            reply = server.scrub(_reply_text(err.smtp_error))
            if 400 <= err.smtp_code < 500:
                return Transient(err.smtp_code, reply, slow_down=err.smtp_code == 421)
            return DeliveryError(f"{server.name} refused the connection ({err.smtp_code} {reply})")
        if isinstance(err, ConnectionRefusedError):
            return Transient(None, f"{server.name} refused the connection")
        if isinstance(err, TimeoutError):
            return Transient(None, f"{server.name} did not answer within {server.timeout:g} s")
        if isinstance(err, smtplib.SMTPServerDisconnected | OSError):
            return Transient(None, f"lost the connection to {server.name} ({err})")
        return err  # a bug: keep its traceback

    def close(self) -> None:
        if self._smtp is None:
            return
        smtp, self._smtp = self._smtp, None
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def send(self, letter: Letter, begin: Callable[[], None]) -> Delivered:
        """Hand one letter to the server.

        ``begin`` runs once the server has accepted the sender: the send
        log's ``sending`` row is written there, and is on the disk before
        any of the letter goes out.
        """
        if self._smtp is None:
            self.open()
        smtp = self._smtp
        assert smtp is not None
        phase: list[bool] = []
        try:
            return self._transaction(smtp, letter, begin, phase)
        except (Transient, Ambiguous):
            self.close()
            raise
        except Permanent:
            self._reset()
            raise
        except smtplib.SMTPServerDisconnected as err:
            self.close()
            if phase:
                raise Ambiguous(
                    f"the connection was lost after the data was sent ({err})"
                ) from None
            raise Transient(None, f"the connection was lost ({err or 'closed'})") from None
        except (TimeoutError, OSError) as err:
            self.close()
            if phase:
                raise Ambiguous(f"no answer after the data was sent ({err or 'timeout'})") from None
            raise Transient(None, f"connection error ({err or 'timeout'})") from None

    def _reset(self) -> None:
        try:
            assert self._smtp is not None
            self._smtp.rset()
        except (smtplib.SMTPException, OSError, AssertionError):
            self.close()

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        letter: Letter,
        begin: Callable[[], None],
        phase: list[bool],
    ) -> Delivered:
        scrub = self.server.scrub
        code, reply = smtp.mail(letter.sender)
        if code != 250:
            self._refusal(code, scrub(_reply_text(reply)), sender=letter.sender)
        _unless_failing(smtp, begin)
        refused: dict[str, tuple[int, str]] = {}
        for recipient in letter.recipients:
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, scrub(_reply_text(reply)))
        if len(refused) == len(letter.recipients):
            # No one to send to. Worth another try if any refusal was temporary.
            self._reset()
            temporary = [r for r in refused.values() if r[0] < 500]
            code, text = (temporary or list(refused.values()))[0]
            raise _classify(code, text)
        try:
            code, reply = _send_data(smtp, letter.data, phase)
        except smtplib.SMTPDataError as err:
            raise _classify(err.smtp_code, scrub(_reply_text(err.smtp_error))) from None
        return Delivered(code=code, reply=scrub(_reply_text(reply)), refused=refused)

    def _refusal(self, code: int, reply: str, *, sender: str) -> None:
        if code == 530 or code == 535:
            raise DeliveryError(
                f"{self.server.name} requires a login ({code} {reply}); "
                "set SMTP_USERNAME and SMTP_PASSWORD"
            )
        if code >= 500:
            raise DeliveryError(
                f"{self.server.name} refused the sender MAIL_FROM={sender} ({code} {reply})"
            )
        self._reset()
        raise _classify(code, reply)


def _classify(code: int, reply: str) -> Transient | Permanent:
    if 400 <= code < 500:
        return Transient(code, reply, slow_down=code == 421 or reply.startswith("4.7."))
    return Permanent(code, reply)
