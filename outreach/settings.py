"""Settings, read from the environment and from a ``.env`` file.

Campaign staff copy settings out of e-mails and provider pages, so every value
is checked here, once, and a bad one is reported by the name of the setting
rather than discovered half-way through a send.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from outreach.addresses import (
    AddressError,
    is_loopback,
    is_placeholder,
    is_reserved_domain,
    split_list,
    validate_address,
)
from outreach.errors import SettingsError
from outreach.headers import unsafe_header_reason

SECURITY_MODES = ("starttls", "ssl", "none")
#: How outreach signs in to the SMTP (and IMAP) server.
AUTH_MODES = ("password", "xoauth2", "oauthbearer")
#: What each provider preset fills in, when the setting is not given.
PRESETS: dict[str, dict[str, str]] = {
    "microsoft365": {
        "SMTP_HOST": "smtp.office365.com",
        "SMTP_PORT": "587",
        "SMTP_SECURITY": "starttls",
        "SMTP_AUTH": "xoauth2",
        "SEND_RATE_PER_MINUTE": "30",
        "SEND_DAILY_LIMIT": "10000",
        "IMAP_HOST": "outlook.office365.com",
        "IMAP_PORT": "993",
        "IMAP_SECURITY": "ssl",
    },
    "google": {
        "SMTP_HOST": "smtp.gmail.com",
        "SMTP_PORT": "587",
        "SMTP_SECURITY": "starttls",
        "SEND_DAILY_LIMIT": "2000",
        "IMAP_HOST": "imap.gmail.com",
        "IMAP_PORT": "993",
        "IMAP_SECURITY": "ssl",
    },
}
IMAP_DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
PLACEHOLDER_SENDER = "mail-from-not-set@sender.invalid"
PLACEHOLDER_SENDER_NAME = "MAIL_FROM is not set"

#: Every number a setting holds: its bounds, and why the upper bound.
BOUNDS: dict[str, tuple[float, float, str]] = {
    "SMTP_TIMEOUT": (1, 600, "a server silent for ten minutes is down"),
    "IMAP_DEADLINE": (0.1, 3600, "an hour reads any mailbox that can be read"),
    "MAX_MESSAGE_MB": (1, 100, "Gmail refuses more than 25 MB, Microsoft 365 more than 35 MB"),
    "SEND_RETRY_WAIT_SECONDS": (0, 3600, "at most an hour"),
    "SEND_RETRY_MAX_WAIT_SECONDS": (0, 3600, "at most an hour; for longer, run again later"),
    "SEND_MAX_ATTEMPTS": (1, 20, "a letter refused 20 times will not go by trying more"),
    "SEND_RATE_PER_MINUTE": (0, 6000, "0 for no limit; no provider takes more than 100 a second"),
    "SEND_DAILY_LIMIT": (0, 1_000_000, "0 for no limit"),
    "DNS_TIMEOUT": (0.1, 30, "a check before sending must never hold the send up for long"),
}

#: Every setting outreach reads, with its default ("" = unset).
KNOWN_SETTINGS: dict[str, str] = {
    "SMTP_HOST": "",
    "SMTP_PORT": "",
    "SMTP_SECURITY": "starttls",
    "SMTP_USERNAME": "",
    "SMTP_PASSWORD": "",
    "SMTP_AUTH": "",
    "SMTP_TOKEN_COMMAND": "",
    "SMTP_PASSWORD_COMMAND": "",
    "SMTP_PROVIDER": "",
    "SMTP_TIMEOUT": "60",
    "SMTP_CA_FILE": "",
    "OAUTH_CLIENT_ID": "",
    "OAUTH_TENANT": "organizations",
    "OAUTH_AUTHORITY": "https://login.microsoftonline.com",
    "IMAP_HOST": "",
    "IMAP_PORT": "",
    "IMAP_SECURITY": "ssl",
    "IMAP_CA_FILE": "",
    "IMAP_USERNAME": "",
    "IMAP_PASSWORD": "",
    "IMAP_TOKEN_COMMAND": "",
    "IMAP_PASSWORD_COMMAND": "",
    "IMAP_FOLDERS": "INBOX",
    "IMAP_DEADLINE": "300",
    "MAIL_FROM": "",
    "MAIL_FROM_NAME": "",
    "MAIL_REPLY_TO": "",
    "CAMPAIGN": "default",
    "FOLLOW_UP_OF": "",
    "CONTACTS_FILE": "contacts.csv",
    "TEMPLATES_DIR": "templates",
    "PREVIEW_DIR": "out/preview",
    "LOG_DIR": "logs",
    "LETTER_DATE": "31 August 2015",
    "ATTACHMENTS": "",
    "MAX_MESSAGE_MB": "20",
    "DO_NOT_CONTACT_FILE": "",
    "SEND_RETRY_WAIT_SECONDS": "2",
    "SEND_RETRY_MAX_WAIT_SECONDS": "120",
    "SEND_MAX_ATTEMPTS": "5",
    "SEND_RATE_PER_MINUTE": "30",
    "SEND_DAILY_LIMIT": "0",
    "DNS_SERVER": "",
    "DNS_TIMEOUT": "3",
    "DKIM_SELECTOR": "",
}

_OUR_PREFIXES = ("SMTP_", "MAIL_", "SEND_", "IMAP_", "OAUTH_", "DNS_", "DKIM_")
#: Settings earlier versions read and this one does not: a notice, never an error.
RETIRED = {
    "SEND_CONNECTIONS": (
        "letters now go over one connection, which every provider's rate keeps busy; "
        "remove the line"
    ),
}


def _near(key: str) -> list[str]:
    """The known settings a mistyped name in ``.env`` is most likely meant to be."""
    return difflib.get_close_matches(key.upper(), KNOWN_SETTINGS, n=1, cutoff=0.8)


def _guess(key: str) -> str:
    near = _near(key)
    return f"did you mean {near[0]}?" if near else "a typo?"


@dataclass(frozen=True, slots=True)
class Secret:
    """A password that never shows itself in output, logs or tracebacks."""

    _value: str

    def reveal(self) -> str:
        """The real value, for the one place that must hand it to the server."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, validated."""

    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str = ""
    smtp_password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    smtp_timeout: float = 60.0
    smtp_ca_file: Path | None = None
    #: ``password``, ``xoauth2``, ``oauthbearer``, or "" (no login).
    smtp_auth: str = ""
    smtp_token_command: str = field(default="", repr=False)
    smtp_password_command: str = field(default="", repr=False)
    smtp_provider: str = ""
    oauth_client_id: str = ""
    oauth_tenant: str = "organizations"
    oauth_authority: str = "https://login.microsoftonline.com"
    imap_host: str = ""
    imap_port: int = 993
    imap_security: str = "ssl"
    imap_ca_file: Path | None = None
    imap_username: str = ""
    imap_password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    imap_token_command: str = field(default="", repr=False)
    imap_password_command: str = field(default="", repr=False)
    imap_folders: tuple[str, ...] = ("INBOX",)
    #: Seconds ``outreach inbox`` may spend with the IMAP server in all.
    imap_deadline: float = 300.0
    #: The settings a provider preset filled in, as ``NAME=value`` (for ``check``).
    preset: tuple[str, ...] = ()
    mail_from: str = ""
    mail_from_name: str = ""
    mail_reply_to: str = ""
    campaign: str = "default"
    #: The campaign this one follows up ("" when it is a first letter).
    follow_up_of: str = ""
    contacts_file: Path = Path("contacts.csv")
    templates_dir: Path = Path("templates")
    preview_dir: Path = Path("out/preview")
    log_dir: Path = Path("logs")
    letter_date: str = "31 August 2015"
    #: Files every letter carries, relative to the working folder.
    attachments: tuple[str, ...] = ()
    max_message_mb: float = 20.0
    do_not_contact_file: Path = Path("do-not-contact.csv")
    #: True when DO_NOT_CONTACT_FILE was set: then the file must exist.
    do_not_contact_required: bool = False
    send_retry_wait_seconds: float = 2.0
    send_retry_max_wait_seconds: float = 120.0
    send_max_attempts: int = 5
    send_rate_per_minute: float = 30.0
    send_daily_limit: int = 0
    #: The DNS servers the sender domain is checked with, as (address, port); () = the system's.
    dns_servers: tuple[tuple[str, int], ...] = ()
    dns_timeout: float = 3.0
    #: The DKIM selectors of MAIL_FROM's domain, when SMTP_PROVIDER does not tell them.
    dkim_selectors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def sender(self) -> str:
        """The From address, or a placeholder that cannot be delivered."""
        return self.mail_from or PLACEHOLDER_SENDER

    @property
    def sender_name(self) -> str:
        return self.mail_from_name if self.mail_from else PLACEHOLDER_SENDER_NAME

    @property
    def send_log(self) -> Path:
        return self.log_dir / "send-log.csv"

    def stale_letter_date(self, today: date) -> str | None:
        """A warning when LETTER_DATE is a date long past: the letters would be dated then.

        The shipped LETTER_DATE is the first campaign's, years ago; a letter
        dated years before it arrives reads as a mistake, or as an old letter.
        """
        written = _date_of(self.letter_date)
        days = (today - written).days if written else 0
        if days <= STALE_LETTER_DAYS:
            return None
        age = f"{days // 365} year{'s' if days >= 730 else ''}" if days >= 365 else f"{days} days"
        return (
            f"LETTER_DATE={self.letter_date!r} is {age} ago: every letter is dated then; set "
            "LETTER_DATE to the date the letters go out, or leave it empty (LETTER_DATE=) to "
            "date each letter the day it goes"
        )

    def placeholders(self) -> list[str]:
        """Settings still holding an example value (config.example.env's), one line each.

        No server delivers mail from a reserved domain such as ``.example``,
        and replies to one reach nobody: ``check`` lists these, and a send
        to a server off this machine refuses them.
        """
        found = []
        if self.smtp_host and is_reserved_domain(self.smtp_host):
            found.append(
                f"SMTP_HOST={self.smtp_host} is an example name, not a server: "
                "set your provider's SMTP server"
            )
        if self.oauth_client_id and not self.oauth_client_id.strip("0-"):
            found.append(
                f"OAUTH_CLIENT_ID={self.oauth_client_id} is README's example, not an app "
                "registration: set the Application (client) ID of your organisation's"
            )
        for name, address in (("MAIL_FROM", self.mail_from), ("MAIL_REPLY_TO", self.mail_reply_to)):
            if address and is_placeholder(address):
                found.append(
                    f"{name}={address} is on a reserved domain, which no server sends from "
                    "and no reply reaches: set your organisation's real address"
                )
        return found


#: How old a LETTER_DATE may be before ``check`` says so.
STALE_LETTER_DAYS = 60


def _date_of(text: str) -> date | None:
    """The date a LETTER_DATE names, when it is written as a date ("31 August 2015")."""
    for form in ("%d %B %Y", "%B %d, %Y", "%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text.strip(), form).date()
        except ValueError:
            continue
    return None


def is_secret(name: str) -> bool:
    """Whether a setting holds a secret, whose value is never shown anywhere."""
    return any(word in name.upper() for word in ("PASSWORD", "TOKEN", "SECRET"))


_NAME = re.compile(r"\s*(?:export\s+)?([A-Z][A-Z0-9_]*)(?:\s*(=)|\s|$)")


def _is_setting_like(name: str) -> bool:
    """A name that is, or reads like, a setting: safe to show, where any other word
    at the start of a line might be the first word of a password."""
    return name in KNOWN_SETTINGS or name.startswith(_OUR_PREFIXES) or is_secret(name)


def _unreadable(path: Path, line: int, original: str) -> str:
    """The problem with a line of ``.env`` that does not parse, never showing a secret.

    A line whose name cannot be read may be a password pasted on its own, and
    the value of a PASSWORD, TOKEN or SECRET setting is one: neither is shown.
    """
    first = original.splitlines()[0] if original else ""
    name = _NAME.match(first)
    if name is None or not _is_setting_like(name.group(1)):
        return (
            f"{path}, line {line}: cannot read this line (write it as NAME=value); "
            "it is not shown here, in case it holds a password"
        )
    if not name.group(2):
        return (
            f"{path}, line {line}: {name.group(1)} has no '=' after it (write it as "
            f"{name.group(1)}=value, or {name.group(1)}= for an empty value)"
        )
    if is_secret(name.group(1)):
        return (
            f"{path}, line {line}: cannot read the value of {name.group(1)} (a quote that is "
            "never closed?); write it as NAME=value, the value in '…' if it holds spaces or #"
        )
    return f"{path}, line {line}: cannot read {first.strip()[:60]!r} (write it as NAME=value)"


def read_env_file(path: Path) -> dict[str, str]:
    """The settings in a ``.env`` file; a line that does not parse is an error.

    python-dotenv only warns about such a line and goes on without it, which
    would silently drop (say) the password the user meant to set. ``NAME=``
    sets an empty value; ``NAME`` alone is refused. Values are taken
    literally: ``${…}`` is never expanded (a password may hold one).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as err:
        raise SettingsError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise SettingsError(f"{path}: cannot be read ({err.strerror})") from err
    problems = [
        _unreadable(path, binding.original.line, binding.original.string)
        for binding in parse_stream(io.StringIO(text))
        # A name alone on its line (python-dotenv reads it as a name with no
        # value) is as much a mistake: a password meant to follow, a stray word.
        if binding.error or (binding.key is not None and binding.value is None)
    ]
    problems.extend(
        # A quote never closed on its own line takes the lines after it into
        # the value (a password among them): no setting runs over lines.
        f"{path}, line {binding.original.line}: the value of {binding.key} runs on over "
        f"{_lines(binding.original.string)} lines (a quote that is never closed?); write it "
        "on one line as NAME=value; the lines are not shown here, in case they hold a password"
        for binding in parse_stream(io.StringIO(text))
        if binding.key is not None and _lines(binding.original.string) > 1
    )
    if problems:
        raise SettingsError(*problems)
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {key: value or "" for key, value in values.items()}


def _lines(original: str) -> int:
    """How many lines of the file one setting was read from."""
    return original.rstrip("\r\n").count("\n") + 1


T = TypeVar("T")


class _Reader:
    """Reads one setting at a time and gathers every problem before failing."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def text(self, name: str, *, or_default: bool = False) -> str:
        """The value, stripped; with ``or_default``, an empty one is the default too."""
        value = self.values.get(name, KNOWN_SETTINGS[name]).strip()
        return (value or KNOWN_SETTINGS[name]) if or_default else value

    def parsed(self, name: str, parse: Callable[[str], T], what: str, fallback: T) -> T:
        raw = self.text(name)
        try:
            return parse(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not valid: {what}")
            return fallback

    def bounded(self, name: str, *, integer: bool = False) -> float:
        """A number (a whole one if ``integer``) within the bounds BOUNDS gives it, whose
        reason the error says."""
        minimum, maximum, why = BOUNDS[name]

        def parse(raw: str) -> float:
            value = float(int(raw)) if integer else float(raw)
            if not minimum <= value <= maximum:  # also false for nan
                raise ValueError(raw)
            return value

        kind = "a whole number" if integer else "a number"
        span = " to ".join(f"{v:,.0f}" if v == int(v) else f"{v:g}" for v in (minimum, maximum))
        what = f"expected {kind} from {span} ({why})"
        return self.parsed(name, parse, what, minimum)


def _port(raw: str) -> int:
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(raw)
    return port


def _with_preset(read: _Reader) -> tuple[str, ...]:
    """SMTP_PROVIDER's preset filled in wherever a setting is not given; what it filled in."""
    provider = read.text("SMTP_PROVIDER").lower()
    if provider and provider not in PRESETS:
        read.problems.append(
            f"SMTP_PROVIDER={provider!r} is not valid: expected one of {', '.join(PRESETS)}, "
            "or nothing"
        )
    filled = {
        k: v for k, v in PRESETS.get(provider, {}).items() if not read.values.get(k, "").strip()
    }
    read.values = {**read.values, **filled}
    return tuple(f"{k}={v}" for k, v in filled.items())


def _command(read: _Reader, name: str) -> str:
    """A command line: split as a shell would, but never run by one."""
    raw = read.text(name)
    if raw:
        try:
            if not shlex.split(raw):
                raise ValueError(raw)
        except ValueError:
            read.problems.append(f"{name} cannot be read as a command (an unclosed quote?)")
    return raw


def _security_and_port(
    read: _Reader, prefix: str, default_ports: Mapping[str, int]
) -> tuple[str, int]:
    """``{prefix}_SECURITY`` and ``{prefix}_PORT``, the port by default the security's own.

    A security that is not valid is reported and taken as the default, so
    that the port is still checked.
    """
    security = read.text(f"{prefix}_SECURITY").lower()
    if security not in SECURITY_MODES:
        read.problems.append(
            f"{prefix}_SECURITY={security!r} is not valid: expected one of "
            f"{', '.join(SECURITY_MODES)}"
        )
        security = KNOWN_SETTINGS[f"{prefix}_SECURITY"]
    port = default_ports[security]
    if read.text(f"{prefix}_PORT"):
        port = read.parsed(f"{prefix}_PORT", _port, "expected a port number from 1 to 65535", port)
    return security, port


def _ca_file(read: _Reader, name: str) -> Path | None:
    path = Path(read.text(name)) if read.text(name) else None
    if path is not None and not path.is_file():
        read.problems.append(f"{name}={str(path)!r}: no such file")
    return path


def _dns_server(raw: str) -> tuple[str, int]:
    """``address``, ``address:port`` or ``[IPv6 address]:port`` as (address, port)."""
    address, port = raw, 53
    if raw.startswith("["):
        address, _, rest = raw[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(raw)
            port = _port(rest[1:])
    elif raw.count(":") == 1:
        address, _, number = raw.partition(":")
        port = _port(number)
    return str(ipaddress.ip_address(address)), port


def _dns_servers(read: _Reader) -> tuple[tuple[str, int], ...]:
    """DNS_SERVER: addresses only, never names, since a name would need DNS to be found."""
    servers = []
    for raw in split_list(read.text("DNS_SERVER")):
        try:
            servers.append(_dns_server(raw))
        except ValueError:
            read.problems.append(
                f"DNS_SERVER={raw!r} is not valid: expected an IP address, with a port if not "
                "53 (127.0.0.1:5353, [::1]:5353); several separated by ';'"
            )
    return tuple(servers)


def _dkim_selectors(read: _Reader) -> tuple[str, ...]:
    selectors = split_list(read.text("DKIM_SELECTOR"))
    for selector in selectors:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})", selector):
            read.problems.append(
                f"DKIM_SELECTOR={selector!r} is not valid: expected a selector such as "
                "s1 or mail2024 (the s= of a DKIM-Signature), several separated by ';'"
            )
    return tuple(selectors)


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Settings from ``env_file`` overlaid by the real environment, validated."""
    file_values = read_env_file(env_file) if env_file is not None else {}
    env = os.environ if environ is None else environ
    read = _Reader({**file_values, **{k: v for k, v in env.items() if k in KNOWN_SETTINGS}})
    preset = _with_preset(read)

    warnings = tuple(
        f"{env_file}: {key} is not a setting outreach knows ({_guess(key)})"
        for key in file_values
        if key not in KNOWN_SETTINGS
        and key not in RETIRED
        and (key.startswith(_OUR_PREFIXES) or _near(key))
    ) + tuple(
        f"{key} is no longer used: {why}"
        for key, why in RETIRED.items()
        if key in file_values or key in env
    )

    security, port = _security_and_port(read, "SMTP", DEFAULT_PORTS)

    addresses: dict[str, str] = {}
    for name in ("MAIL_FROM", "MAIL_REPLY_TO"):
        raw = read.text(name)
        if raw:
            try:
                addresses[name] = validate_address(raw)
            except AddressError as err:
                read.problems.append(f"{name}={raw!r} is not a valid address: {err}")
    for name in ("MAIL_FROM_NAME", "CAMPAIGN", "LETTER_DATE", "FOLLOW_UP_OF"):
        reason = unsafe_header_reason(read.text(name))
        if reason:
            read.problems.append(f"{name} is not valid: it {reason}")

    username = read.text("SMTP_USERNAME")
    token_command = _command(read, "SMTP_TOKEN_COMMAND")
    password_command = _command(read, "SMTP_PASSWORD_COMMAND")
    auth = read.text("SMTP_AUTH").lower()
    if auth and auth not in AUTH_MODES:
        read.problems.append(
            f"SMTP_AUTH={auth!r} is not valid: expected one of {', '.join(AUTH_MODES)}"
        )
        auth = ""
    if not auth:
        auth = "xoauth2" if token_command else "password" if username else ""
    if auth and not username:
        read.problems.append(f"SMTP_AUTH={auth} needs SMTP_USERNAME: the mailbox to sign in as")

    imap_security, imap_port = _security_and_port(read, "IMAP", IMAP_DEFAULT_PORTS)

    settings = Settings(
        smtp_host=read.text("SMTP_HOST"),
        smtp_port=port,
        smtp_security=security,
        smtp_username=username,
        smtp_password=Secret(read.values.get("SMTP_PASSWORD", "")),
        smtp_timeout=read.bounded("SMTP_TIMEOUT"),
        smtp_ca_file=_ca_file(read, "SMTP_CA_FILE"),
        smtp_auth=auth,
        smtp_token_command=token_command,
        smtp_password_command=password_command,
        smtp_provider=read.text("SMTP_PROVIDER").lower(),
        oauth_client_id=read.text("OAUTH_CLIENT_ID"),
        oauth_tenant=read.text("OAUTH_TENANT", or_default=True),
        oauth_authority=read.text("OAUTH_AUTHORITY", or_default=True).rstrip("/"),
        imap_host=read.text("IMAP_HOST"),
        imap_port=imap_port,
        imap_security=imap_security,
        imap_ca_file=_ca_file(read, "IMAP_CA_FILE"),
        imap_username=read.text("IMAP_USERNAME") or username,
        imap_password=Secret(
            read.values.get("IMAP_PASSWORD", "") or read.values.get("SMTP_PASSWORD", "")
        ),
        imap_token_command=_command(read, "IMAP_TOKEN_COMMAND") or token_command,
        imap_password_command=_command(read, "IMAP_PASSWORD_COMMAND") or password_command,
        imap_folders=tuple(split_list(read.text("IMAP_FOLDERS"))) or ("INBOX",),
        imap_deadline=read.bounded("IMAP_DEADLINE"),
        preset=preset,
        mail_from=addresses.get("MAIL_FROM", ""),
        mail_from_name=read.text("MAIL_FROM_NAME"),
        mail_reply_to=addresses.get("MAIL_REPLY_TO", ""),
        campaign=read.text("CAMPAIGN", or_default=True),
        follow_up_of=read.text("FOLLOW_UP_OF"),
        contacts_file=Path(read.text("CONTACTS_FILE", or_default=True)),
        templates_dir=Path(read.text("TEMPLATES_DIR", or_default=True)),
        preview_dir=Path(read.text("PREVIEW_DIR", or_default=True)),
        log_dir=Path(read.text("LOG_DIR", or_default=True)),
        letter_date=read.text("LETTER_DATE"),
        attachments=tuple(split_list(read.text("ATTACHMENTS"))),
        max_message_mb=read.bounded("MAX_MESSAGE_MB"),
        do_not_contact_file=Path(read.text("DO_NOT_CONTACT_FILE") or "do-not-contact.csv"),
        do_not_contact_required=bool(read.text("DO_NOT_CONTACT_FILE")),
        send_retry_wait_seconds=read.bounded("SEND_RETRY_WAIT_SECONDS"),
        send_retry_max_wait_seconds=read.bounded("SEND_RETRY_MAX_WAIT_SECONDS"),
        send_max_attempts=int(read.bounded("SEND_MAX_ATTEMPTS", integer=True)),
        send_rate_per_minute=read.bounded("SEND_RATE_PER_MINUTE"),
        send_daily_limit=int(read.bounded("SEND_DAILY_LIMIT", integer=True)),
        dns_servers=_dns_servers(read),
        dns_timeout=read.bounded("DNS_TIMEOUT"),
        dkim_selectors=_dkim_selectors(read),
        warnings=warnings,
    )
    if settings.follow_up_of and settings.follow_up_of == settings.campaign:
        read.problems.append(
            f"FOLLOW_UP_OF={settings.follow_up_of!r} is CAMPAIGN itself: a follow-up is a "
            "campaign of its own (CAMPAIGN=code-of-conduct-2015-reminder-1, say)"
        )
    if read.problems:
        raise SettingsError(*read.problems)
    return settings


def require_for_sending(settings: Settings) -> None:
    """Settings that previews can do without but a real send cannot."""
    problems = [] if is_loopback(settings.smtp_host) else settings.placeholders()
    if not settings.smtp_host:
        problems.append("SMTP_HOST is not set: name the SMTP server to send through")
    if not settings.mail_from:
        problems.append("MAIL_FROM is not set: give the address the letters come from")
    if unencrypted := unencrypted_password(
        settings.smtp_username, settings.smtp_security, settings.smtp_host
    ):
        problems.append(unencrypted)
    if problems:
        raise SettingsError(*problems)


def unencrypted_password(username: str, security: str, host: str) -> str:
    """Why SMTP_SECURITY=none may not carry the password to ``host``, or "": checked before a
    send, and by each connection again (the library may be called without the former)."""
    if not username or security != "none" or is_loopback(host):
        return ""
    return (
        f"SMTP_SECURITY=none would send the password for {username} to {host} unencrypted; "
        "use starttls or ssl"
    )


def require_for_reading(settings: Settings) -> None:
    """Settings without which no mailbox can be read, or not safely."""
    host = settings.imap_host
    if not host:
        raise SettingsError(
            "IMAP_HOST is not set: name the IMAP server of the mailbox the letters were sent "
            "from (or read exported mail with --from PATH)"
        )
    if settings.imap_security == "none" and not is_loopback(host):
        raise SettingsError(
            "IMAP_SECURITY=none would send the password of "
            f"{settings.imap_username or 'the mailbox'} to {host} unencrypted; use ssl or "
            "starttls (none is only for a server on this machine)"
        )
