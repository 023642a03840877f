"""Signing in: the user name, and the password or access token, for SMTP and IMAP.

A secret comes from a setting (SMTP_PASSWORD), from a command that prints it
(SMTP_PASSWORD_COMMAND, SMTP_TOKEN_COMMAND: ``pass``, ``secret-tool``,
``op read``, ``oauth2ms``, ``gcloud auth print-access-token``), from the
token cache of ``outreach login``, or from a prompt. Whatever its source it
is a ``Secret``: never printed, logged, or left in an error message. A
command is run without a shell, with a time limit; what it prints is never
shown, since it may be the secret itself.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from outreach.errors import SettingsError
from outreach.settings import Secret, Settings

#: Asks the person at the terminal for the password, when nothing else gives it:
#: called at sign-in, once the server is reached and its certificate checked.
PasswordPrompt = Callable[[], str]

#: Seconds a password or token command may take (a password manager may ask
#: its own passphrase first).
COMMAND_SECONDS = 60


def run_secret_command(setting: str, command: str) -> Secret:
    """The first line a command prints, as a Secret; one clear line when it fails.

    The error names the setting, the program and the exit status, never
    anything the command printed: that may be the secret.
    """
    argv = shlex.split(command)
    program = argv[0] if argv else command
    try:
        done = subprocess.run(argv, capture_output=True, timeout=COMMAND_SECONDS, check=False)
    except FileNotFoundError:
        raise SettingsError(f"{setting}: cannot run {program!r} (no such program)") from None
    except PermissionError:
        raise SettingsError(f"{setting}: cannot run {program!r} (not executable)") from None
    except subprocess.TimeoutExpired:
        raise SettingsError(
            f"{setting}: {program!r} did not finish within {COMMAND_SECONDS} s"
        ) from None
    except OSError as err:
        raise SettingsError(f"{setting}: cannot run {program!r} ({err.strerror})") from None
    if done.returncode != 0:
        raise SettingsError(
            f"{setting}: {program!r} exited with status {done.returncode} "
            "(run it yourself to see why; its output is not shown, it may hold the secret)"
        )
    first = (done.stdout.decode("utf-8", "replace").splitlines() or [""])[0].strip()
    if not first:
        raise SettingsError(f"{setting}: {program!r} printed nothing")
    return Secret(first)


@dataclass
class Credentials:
    """How to sign in to one server, and where its secret comes from.

    ``mechanism`` is ``password``, ``xoauth2``, ``oauthbearer`` or "" (no
    login). A token is fetched anew for each connection (``secret``), and
    once more when the server refuses it (``secret(fresh=True)``). A
    password typed at a prompt is asked for (``ask``) only when ``secret``
    is first called: at sign-in, after the server's certificate was
    checked, never for a run that sends nothing.
    """

    mechanism: str
    username: str
    password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    password_command: str = field(default="", repr=False)
    token_command: str = field(default="", repr=False)
    #: Where a token comes from when there is no command: ``outreach login``.
    cached_token: Callable[[bool], Secret] | None = field(default=None, repr=False)
    #: Names for error messages: the settings that hold each part.
    prefix: str = "SMTP"
    #: Where the password comes from when no setting and no command gives it:
    #: asked only when the server asks for it, then kept for the reconnections.
    ask: PasswordPrompt | None = field(default=None, repr=False)
    #: Every secret handed out so far, to be blotted out of server replies.
    seen: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def uses_token(self) -> bool:
        return self.mechanism in ("xoauth2", "oauthbearer")

    def secret(self, *, fresh: bool = False) -> Secret:
        """The password, or an access token (a new one when ``fresh``)."""
        with self._lock:
            secret = self._fetch(fresh)
            if secret.reveal() not in self.seen:
                self.seen.append(secret.reveal())
            return secret

    def _fetch(self, fresh: bool) -> Secret:
        if self.uses_token:
            if self.token_command:
                return run_secret_command(f"{self.prefix}_TOKEN_COMMAND", self.token_command)
            if self.cached_token is not None:
                return self.cached_token(fresh)
            raise SettingsError(
                f"SMTP_AUTH={self.mechanism} needs an access token: set "
                f"{self.prefix}_TOKEN_COMMAND, or set OAUTH_CLIENT_ID and run `outreach login`"
            )
        if self.password_command:
            return run_secret_command(f"{self.prefix}_PASSWORD_COMMAND", self.password_command)
        if self.password:
            return self.password
        if self.ask is not None:
            # Asked once, at the first sign-in: a reconnection mid-run signs in with it again.
            self.password = Secret(self.ask())
            return self.password
        raise SettingsError(
            f"{self.prefix}_USERNAME is set but no password is: set {self.prefix}_PASSWORD "
            f"or {self.prefix}_PASSWORD_COMMAND, or run outreach at a terminal to be asked"
        )

    def needs_prompt(self) -> bool:
        """Whether only a prompt can give the password."""
        return self.mechanism == "password" and not self.password and not self.password_command

    def scrub(self, text: str) -> str:
        """``text`` with every secret handed out, plain or as SASL sends it, blotted out.

        A server that echoes what it was sent must not put a password or a
        token into an error message or the send log: not as sent, not with
        its spaces and tabs folded into one space (as a reply is shown), and
        not as IMAP quotes it (``\\`` and ``\"`` escaped), not as a Python
        ``bytes`` shows it.
        """
        forms: set[str] = set()
        for secret in self.seen:
            forms.add(secret)
            forms.add(secret.replace("\\", "\\\\").replace('"', '\\"'))
            forms.add(sasl_b64(secret))
            for user in ("", self.username):
                forms.add(sasl_b64(f"{user}\0{user}\0{secret}"))
                forms.add(sasl_b64(f"\0{user}\0{secret}"))
                forms.add(sasl_b64(xoauth2(user, secret)))
                forms.add(sasl_b64(oauthbearer(user, secret)))
        # An error that carries the server's reply as bytes shows it as Python
        # writes bytes: a tab as \\t, a quote or backslash escaped once more.
        forms |= {repr(form.encode("utf-8"))[2:-1] for form in forms}
        for form in sorted((f for f in forms if f.strip()), key=len, reverse=True):
            # Any run of whitespace in the secret matches any run in the text.
            pattern = r"\s+".join(re.escape(part) for part in form.split())
            text = re.sub(pattern, "********", text)
        return text


def sasl_b64(text: str) -> str:
    """UTF-8, then base64: how SASL carries a name, a password or a token (RFC 4616)."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def xoauth2(user: str, token: str) -> str:
    """The XOAUTH2 initial response (Google's and Microsoft's documented form)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer(user: str, token: str) -> str:
    """The OAUTHBEARER initial response (RFC 7628): a GS2 header, then the token."""
    return f"n,a={user},\x01auth=Bearer {token}\x01\x01"


def credentials_for(
    settings: Settings, prefix: str, ask: PasswordPrompt | None = None
) -> Credentials:
    """The login for ``prefix`` ("SMTP" or "IMAP"); ``ask`` gives the password when no
    setting does. IMAP_USERNAME and the rest default to the SMTP ones (settings.py)."""
    smtp = prefix == "SMTP"
    username = settings.smtp_username if smtp else settings.imap_username

    def signed_in(fresh: bool) -> Secret:
        """A token of ``outreach login``, when an app is set (OAUTH_CLIENT_ID)."""
        from outreach import oauth  # msal is imported only when it is used

        scope = oauth.SMTP_SCOPE if smtp else oauth.IMAP_SCOPE
        return Secret(oauth.access_token(settings, (scope,), fresh=fresh))

    return Credentials(
        # A mailbox read with a name of its own and no SMTP login signs in with a password.
        mechanism=settings.smtp_auth or ("password" if username else ""),
        username=username,
        password=settings.smtp_password if smtp else settings.imap_password,
        password_command=settings.smtp_password_command if smtp else settings.imap_password_command,
        token_command=settings.smtp_token_command if smtp else settings.imap_token_command,
        cached_token=signed_in if settings.oauth_client_id else None,
        prefix=prefix,
        ask=ask,
    )
