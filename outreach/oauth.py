"""Signing in to Microsoft 365 for SMTP (and IMAP): the device-code flow, with msal.

``outreach login`` calls :func:`login` once: it shows a web address and a
code, the user opens the address on any device, types the code and signs in,
and msal keeps what it gets, a refresh token among it, in a file of this
user's only. From then on :func:`access_token` gives a fresh access token for
XOAUTH2 without asking anything, refreshing it when it has expired.
``outreach logout`` calls :func:`logout`, which deletes the file.

Whoever can read that file can send mail as the user for as long as the
refresh token lives, so it is created readable by this user only and
replaced whole, never rewritten in place; and no token ever goes into a
message, an exception or a repr. msal talks to OAUTH_AUTHORITY and to
nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal  # type: ignore[import-untyped]
from msal.exceptions import MsalServiceError  # type: ignore[import-untyped]

from outreach.errors import OutreachError, SettingsError
from outreach.files import write_atomically, writing
from outreach.settings import Settings

SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
#: Seconds to wait for each answer of the sign-in service.
TIMEOUT = 30
_LOGIN = "run `outreach login`"
#: What msal raises when the sign-in service cannot be reached, or answers
#: with a server error (5xx): requests' exceptions are OSErrors.
_UNREACHABLE = (OSError, MsalServiceError)
#: Hints for the Entra errors that campaign staff can act on.
_HINTS = {
    "AADSTS700016": "check OAUTH_CLIENT_ID and OAUTH_TENANT: the app is not registered there",
    "AADSTS50194": (
        "the app is registered for your organisation only: set OAUTH_TENANT to its "
        "Directory (tenant) ID, shown on the app's Overview page"
    ),
    "AADSTS7000218": (
        "the app registration must allow public client flows: in the Microsoft Entra "
        "admin center, App registrations › the app › Authentication › Advanced settings, "
        "set 'Allow public client flows' to Yes"
    ),
    "AADSTS65001": (
        "an administrator must grant consent: in the Microsoft Entra admin center, "
        "App registrations › the app › API permissions › Grant admin consent"
    ),
    "AADSTS53003": "your organisation's Conditional Access blocked it; ask your IT administrator",
}


class SignInError(OutreachError):
    """Signing in with Microsoft failed, or the saved sign-in can no longer be used."""


class AccessToken(str):
    """An access token: a plain string to whoever hands it to the server, and
    ``AccessToken('********')`` to tracebacks, logs and debuggers."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "AccessToken('********')"


def token_cache_path() -> Path:
    """``$XDG_STATE_HOME/outreach/msal-token-cache.json``, ``~/.local/state/outreach/`` by default.

    As the XDG specification asks, a relative XDG_STATE_HOME counts as unset.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "outreach" / "msal-token-cache.json"


def login(
    settings: Settings,
    show: Callable[[str], None],
    scopes: Sequence[str] = (SMTP_SCOPE,),
) -> str:
    """Sign in with a code typed on any device; keep the sign-in; return the account's name.

    ``show`` is given the text to print: the web address and the code.
    Raises SettingsError for settings that cannot work, SignInError when the
    sign-in is refused, declined or expires, or cannot be kept on disk.
    """
    _authority(settings)  # a missing OAUTH_CLIENT_ID is named before anything else
    path = token_cache_path()
    cache, _ = _load(path)  # a damaged file is simply replaced by this sign-in
    app = _application(settings, cache)
    with _asking(settings):
        flow = app.initiate_device_flow(scopes=_scopes(scopes))
    if "user_code" not in flow:
        raise _refused(settings, "refused to start a sign-in", flow)
    message = flow.get("message") or (
        f"Open {flow.get('verification_uri')} and enter the code {flow['user_code']}"
    )
    show(_printable(str(message)))
    with _asking(settings):
        result = app.acquire_token_by_device_flow(flow)
    if "error" in result:
        raise _device_flow_error(settings, result)
    claims = result.get("id_token_claims") or {}
    username = str(claims.get("preferred_username") or claims.get("upn") or "")
    if not username:
        raise SignInError(
            f"the sign-in service at {settings.oauth_authority} did not say which account "
            "signed in; nothing was kept"
        )
    _write(path, cache.serialize().encode("utf-8"))
    return username


def access_token(
    settings: Settings, scopes: Sequence[str] = (SMTP_SCOPE,), *, fresh: bool = False
) -> str:
    """A valid access token for SMTP_USERNAME (or the only account signed in), without asking.

    Refreshes it with the saved refresh token when it has expired, or when
    ``fresh`` (the server refused the one it had), and saves what changed.
    Raises SettingsError for settings that cannot work, and SignInError,
    telling to run ``outreach login``, when there is no usable sign-in.
    """
    _authority(settings)  # a missing OAUTH_CLIENT_ID is named before anything else
    path = token_cache_path()
    cache, found = _load(path)
    if found == "damaged":
        raise SignInError(f"{path}: the saved sign-in cannot be read; {_LOGIN} to sign in again")
    if found == "missing":
        raise SignInError(f"nobody has signed in with Microsoft on this computer: {_for(settings)}")
    app = _application(settings, cache)
    account = _account(settings, app)
    with _asking(settings):
        result = app.acquire_token_silent_with_error(
            _scopes(scopes), account=account, force_refresh=fresh
        )
    name = account["username"]
    if not result:  # msal found no refresh token for the account
        raise SignInError(f"the sign-in of {name} on this computer is incomplete: {_for(settings)}")
    if "error" in result:
        raise SignInError(
            f"the sign-in saved for {name} no longer works ({_describe(result)}): "
            f"{_LOGIN} to sign in again"
        )
    if cache.has_state_changed:
        _write(path, cache.serialize().encode("utf-8"))
    return AccessToken(result["access_token"])


def logout(settings: Settings) -> bool:
    """Delete the saved sign-in; True when there was one.

    The refresh token stays valid at Microsoft until it expires or an
    administrator revokes it, but no copy is left on this computer.
    """
    path = token_cache_path()
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise SignInError(f"{path}: cannot be deleted ({err.strerror or err})") from err
    return True


def _authority(settings: Settings) -> str:
    """The authority msal signs in with, once the settings it is made of are checked."""
    if not settings.oauth_client_id:
        raise SettingsError(
            "OAUTH_CLIENT_ID is not set: give the application (client) ID of your "
            "organisation's app registration in Microsoft Entra"
        )
    parts = urlsplit(settings.oauth_authority)
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/") or parts.query:
        raise SettingsError(
            f"OAUTH_AUTHORITY='{settings.oauth_authority}' is not valid: expected an https:// "
            "address with nothing after the host, such as https://login.microsoftonline.com "
            "(the tenant goes in OAUTH_TENANT)"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", settings.oauth_tenant):
        raise SettingsError(
            f"OAUTH_TENANT='{settings.oauth_tenant}' is not valid: expected your organisation's "
            "Microsoft 365 domain (coalition.org), its tenant ID, or 'organizations'"
        )
    return f"{settings.oauth_authority}/{settings.oauth_tenant}"


def _application(settings: Settings, cache: Any) -> Any:
    """msal's application for these settings; msal reads the tenant's configuration here."""
    authority = _authority(settings)
    with _asking(settings):
        try:
            return msal.PublicClientApplication(
                settings.oauth_client_id,
                authority=authority,
                token_cache=cache,
                timeout=TIMEOUT,
                # Before using an authority it does not know (a national cloud, a
                # test server), msal would ask login.microsoftonline.com whether it
                # is genuine ("instance discovery"). OAUTH_AUTHORITY is the user's
                # own choice, so the documented instance_discovery=False turns that
                # off: msal then talks to OAUTH_AUTHORITY and nowhere else.
                instance_discovery=False,
            )
        except ValueError as err:  # the tenant's configuration was refused (4xx) or unreadable
            raise SettingsError(
                f"the sign-in service at {settings.oauth_authority} has no sign-in for "
                f"OAUTH_TENANT={settings.oauth_tenant}: give your organisation's Microsoft 365 "
                "domain (coalition.org) or its tenant ID, and change OAUTH_AUTHORITY only for a "
                "national cloud"
            ) from err


def _account(settings: Settings, app: Any) -> Any:
    """The account to send as: SMTP_USERNAME's (in any case), or the only one signed in."""
    accounts = app.get_accounts()
    names = ", ".join(sorted(str(a["username"]) for a in accounts))
    wanted = settings.smtp_username
    if wanted:
        matching = app.get_accounts(username=wanted)
        if matching:
            return matching[0]
        signed_in = f" (signed in: {names})" if names else ""
        raise SignInError(
            f"SMTP_USERNAME={wanted} has not signed in with Microsoft on this computer"
            f"{signed_in}: {_LOGIN} and sign in as {wanted}"
        )
    if len(accounts) == 1:
        return accounts[0]
    if not accounts:
        raise SignInError(f"nobody has signed in with Microsoft on this computer: {_LOGIN}")
    raise SignInError(
        f"several accounts have signed in with Microsoft on this computer ({names}): "
        "set SMTP_USERNAME to the one the letters are sent as"
    )


def _scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes as msal wants them: a list (one scope given as a string is one scope)."""
    return [scopes] if isinstance(scopes, str) else list(scopes)


def _for(settings: Settings) -> str:
    """What to do, naming the account when SMTP_USERNAME does."""
    if settings.smtp_username:
        return f"{_LOGIN} and sign in as {settings.smtp_username}"
    return _LOGIN


def _load(path: Path) -> tuple[Any, str]:
    """The saved cache, and whether it was ``read``, ``missing`` or ``damaged``.

    A file others could read is first replaced by one of this user's only.
    """
    cache = msal.SerializableTokenCache()
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return cache, "missing"
    except OSError as err:
        raise SignInError(
            f"{path}: the saved sign-in cannot be read ({err.strerror or err}): "
            f"delete it, then {_LOGIN}"
        ) from err
    if stat.S_IMODE(mode) & 0o077:
        _write(path, data)
    try:
        text = data.decode("utf-8")
        state = json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
        return cache, "damaged"
    # msal keeps {kind: {key: {field: value}}}; anything else would make it fail later.
    if not (
        isinstance(state, dict)
        and all(
            isinstance(entries, dict) and all(isinstance(e, dict) for e in entries.values())
            for entries in state.values()
        )
    ):
        return cache, "damaged"
    cache.deserialize(text)
    return cache, "read"


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` whole with ``data``, in a file that only this user could ever read.

    The new file is mode 0600 from its first moment (``files.write_atomically``);
    its folder is made 0700.
    """
    folder = path.parent
    then = (
        ": the sign-in is kept in this file; free some space or make its folder writable, "
        "then try again"
    )
    with writing(path, SignInError, then):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(folder.stat().st_mode) != 0o700:
            folder.chmod(0o700)
        write_atomically(path, data, mode=0o600)


def _device_flow_error(settings: Settings, result: dict[str, Any]) -> OutreachError:
    error = result.get("error")
    if error in ("authorization_pending", "expired_token", "code_expired"):
        # msal stops polling when the code expires, with the last answer: still pending.
        return SignInError(
            "the code was not entered in time: run `outreach login` again and enter the "
            "new code before it expires"
        )
    if error in ("authorization_declined", "access_denied"):
        return SignInError(
            "the sign-in was declined: run `outreach login` again and accept that "
            "outreach sends mail as you"
        )
    if error == "bad_verification_code":
        return SignInError(
            "the code was not recognised: run `outreach login` again and type the new code"
        )
    return _refused(settings, "refused the sign-in", result)


def _refused(settings: Settings, what: str, answer: dict[str, Any]) -> OutreachError:
    description = _describe(answer)
    code = description.split(":", 1)[0]
    hint = _HINTS.get(code, f"check OAUTH_CLIENT_ID and OAUTH_TENANT, then {_LOGIN} again")
    return SignInError(
        f"the sign-in service at {settings.oauth_authority} {what} ({description}): {hint}"
    )


def _describe(answer: dict[str, Any]) -> str:
    """An error answer in one line: its first sentence and its OAuth error code.

    Entra's descriptions run on over several lines with trace and correlation
    ids; the first sentence, with its AADSTS number, is what an administrator
    looks up.
    """
    error = str(answer.get("error") or "error")
    description = str(answer.get("error_description") or "")
    first = description.replace("\r", "\n").split("\n", 1)[0].strip()
    sentence = _printable(first.split(". ", 1)[0].rstrip("."))[:300]
    return f"{sentence}; {error}" if sentence and sentence != error else error


@contextlib.contextmanager
def _asking(settings: Settings) -> Iterator[None]:
    """A call to the sign-in service, whose failure is told in one line."""
    try:
        yield
    except _UNREACHABLE as err:
        raise SignInError(
            f"cannot reach the sign-in service at {settings.oauth_authority} (OAUTH_AUTHORITY): "
            f"{_why(err)}"
        ) from err
    except ValueError as err:  # an answer that is not JSON
        raise SignInError(
            f"the sign-in service at {settings.oauth_authority} (OAUTH_AUTHORITY) answered with "
            "something that is not a sign-in answer (a network login page?); try again later"
        ) from err


def _why(err: BaseException) -> str:
    """What went wrong, and what to do, found among the exceptions requests wraps it in."""
    if isinstance(err, MsalServiceError):
        return "it answered with a server error; try again in a few minutes"
    again = "check the connection to the internet and try again"
    pending: list[BaseException] = [err]
    seen: set[int] = set()
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"its certificate is not trusted ({cause.verify_message}); on a network that "
                "inspects encrypted connections, ask your IT administrator"
            )
        if isinstance(cause, socket.gaierror):
            return f"its name cannot be found; {again}"
        if isinstance(cause, ConnectionRefusedError):
            return f"it refused the connection; {again}"
        if isinstance(cause, TimeoutError):
            return f"no answer within {TIMEOUT} seconds; {again}"
        pending.extend(c for c in (cause.__cause__, cause.__context__) if c is not None)
        pending.extend(a for a in cause.args if isinstance(a, BaseException))
    return f"the connection failed; {again}"


def _printable(text: str) -> str:
    """Text from the network, without the control characters that could drive a terminal."""
    return "".join(c if c.isprintable() or c == "\n" else " " for c in text)
