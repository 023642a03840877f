"""Settings, read from the environment and from a ``.env`` file.

Campaign staff copy settings out of e-mails and provider pages, so every value
is checked here, once, and a bad one is reported by the name of the setting
rather than discovered half-way through a send.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from outreach.addresses import AddressError, is_loopback, validate_address
from outreach.errors import SettingsError
from outreach.headers import unsafe_header_reason

SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
PLACEHOLDER_SENDER = "mail-from-not-set@sender.invalid"
PLACEHOLDER_SENDER_NAME = "MAIL_FROM is not set"

#: Every setting outreach reads, with its default ("" = unset).
KNOWN_SETTINGS: dict[str, str] = {
    "SMTP_HOST": "",
    "SMTP_PORT": "",
    "SMTP_SECURITY": "starttls",
    "SMTP_USERNAME": "",
    "SMTP_PASSWORD": "",
    "SMTP_TIMEOUT": "60",
    "SMTP_CA_FILE": "",
    "MAIL_FROM": "",
    "MAIL_FROM_NAME": "",
    "MAIL_REPLY_TO": "",
    "CAMPAIGN": "default",
    "CONTACTS_FILE": "contacts.csv",
    "TEMPLATES_DIR": "templates",
    "PREVIEW_DIR": "out/preview",
    "LOG_DIR": "logs",
    "LETTER_DATE": "31 August 2015",
    "SEND_CONNECTIONS": "1",
    "SEND_RETRY_WAIT_SECONDS": "2",
    "SEND_RETRY_MAX_WAIT_SECONDS": "120",
    "SEND_MAX_ATTEMPTS": "5",
    "SEND_RATE_PER_MINUTE": "30",
    "SEND_DAILY_LIMIT": "0",
}

_OUR_PREFIXES = ("SMTP_", "MAIL_", "SEND_")


class Secret:
    """A password that never shows itself in output, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for the one place that must hand it to the server."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


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
    mail_from: str = ""
    mail_from_name: str = ""
    mail_reply_to: str = ""
    campaign: str = "default"
    contacts_file: Path = Path("contacts.csv")
    templates_dir: Path = Path("templates")
    preview_dir: Path = Path("out/preview")
    log_dir: Path = Path("logs")
    letter_date: str = "31 August 2015"
    send_connections: int = 1
    send_retry_wait_seconds: float = 2.0
    send_retry_max_wait_seconds: float = 120.0
    send_max_attempts: int = 5
    send_rate_per_minute: float = 30.0
    send_daily_limit: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def sender(self) -> str:
        """The From address, or a placeholder that cannot be delivered."""
        return self.mail_from or PLACEHOLDER_SENDER

    @property
    def sender_name(self) -> str:
        if not self.mail_from:
            return PLACEHOLDER_SENDER_NAME
        return self.mail_from_name

    @property
    def send_log(self) -> Path:
        return self.log_dir / "send-log.csv"


def read_env_file(path: Path) -> dict[str, str]:
    """The settings in a ``.env`` file; a line that does not parse is an error.

    python-dotenv only warns about such a line and goes on without it, which
    would silently drop (say) the password the user meant to set. ``NAME=``
    sets an empty value; ``NAME`` alone is refused.
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
        f"{path}, line {binding.original.line}: cannot read "
        f"{binding.original.string.strip()[:40]!r} (write it as NAME=value)"
        for binding in parse_stream(io.StringIO(text))
        # A name alone on its line (python-dotenv reads it as a name with no
        # value) is as much a mistake: a password meant to follow, a stray word.
        if binding.error or (binding.key is not None and binding.value is None)
    ]
    if problems:
        raise SettingsError(*problems)
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {key: value or "" for key, value in values.items()}


T = TypeVar("T")


class _Reader:
    """Reads one setting at a time and gathers every problem before failing."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def text(self, name: str) -> str:
        return self.values.get(name, KNOWN_SETTINGS[name]).strip()

    def parsed(self, name: str, parse: Callable[[str], T], what: str, fallback: T) -> T:
        raw = self.text(name)
        try:
            return parse(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not valid: {what}")
            return fallback

    def number(self, name: str, *, minimum: float, integer: bool = False) -> float:
        def parse(raw: str) -> float:
            value = float(int(raw)) if integer else float(raw)
            if value < minimum or value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
            return value

        kind = "a whole number" if integer else "a number"
        return self.parsed(name, parse, f"expected {kind} of at least {minimum:g}", minimum)


def _port(raw: str) -> int:
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(raw)
    return port


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Settings from ``env_file`` overlaid by the real environment, validated."""
    file_values = read_env_file(env_file) if env_file is not None else {}
    env = os.environ if environ is None else environ
    values = {**file_values, **{k: v for k, v in env.items() if k in KNOWN_SETTINGS}}
    read = _Reader(values)

    warnings = tuple(
        f"{env_file}: {key} is not a setting outreach knows (a typo?)"
        for key in file_values
        if key.startswith(_OUR_PREFIXES) and key not in KNOWN_SETTINGS
    )

    security = read.text("SMTP_SECURITY").lower()
    if security not in SECURITY_MODES:
        read.problems.append(
            f"SMTP_SECURITY={security!r} is not valid: expected one of {', '.join(SECURITY_MODES)}"
        )
        security = "starttls"
    port = DEFAULT_PORTS[security]
    if read.text("SMTP_PORT"):
        port = read.parsed("SMTP_PORT", _port, "expected a port number from 1 to 65535", port)

    addresses: dict[str, str] = {}
    for name in ("MAIL_FROM", "MAIL_REPLY_TO"):
        raw = read.text(name)
        if raw:
            try:
                addresses[name] = validate_address(raw)
            except AddressError as err:
                read.problems.append(f"{name}={raw!r} is not a valid address: {err}")
    from_name = read.text("MAIL_FROM_NAME")
    for name in ("MAIL_FROM_NAME", "CAMPAIGN", "LETTER_DATE"):
        reason = unsafe_header_reason(read.text(name))
        if reason:
            read.problems.append(f"{name} is not valid: it {reason}")

    ca_file: Path | None = None
    if read.text("SMTP_CA_FILE"):
        ca_file = Path(read.text("SMTP_CA_FILE"))
        if not ca_file.is_file():
            read.problems.append(f"SMTP_CA_FILE={str(ca_file)!r}: no such file")

    settings = Settings(
        smtp_host=read.text("SMTP_HOST"),
        smtp_port=port,
        smtp_security=security,
        smtp_username=read.text("SMTP_USERNAME"),
        smtp_password=Secret(values.get("SMTP_PASSWORD", "")),
        smtp_timeout=read.number("SMTP_TIMEOUT", minimum=0.1),
        smtp_ca_file=ca_file,
        mail_from=addresses.get("MAIL_FROM", ""),
        mail_from_name=from_name,
        mail_reply_to=addresses.get("MAIL_REPLY_TO", ""),
        campaign=read.text("CAMPAIGN") or "default",
        contacts_file=Path(read.text("CONTACTS_FILE") or "contacts.csv"),
        templates_dir=Path(read.text("TEMPLATES_DIR") or "templates"),
        preview_dir=Path(read.text("PREVIEW_DIR") or "out/preview"),
        log_dir=Path(read.text("LOG_DIR") or "logs"),
        letter_date=read.text("LETTER_DATE"),
        send_connections=int(read.number("SEND_CONNECTIONS", minimum=1, integer=True)),
        send_retry_wait_seconds=read.number("SEND_RETRY_WAIT_SECONDS", minimum=0),
        send_retry_max_wait_seconds=read.number("SEND_RETRY_MAX_WAIT_SECONDS", minimum=0),
        send_max_attempts=int(read.number("SEND_MAX_ATTEMPTS", minimum=1, integer=True)),
        send_rate_per_minute=read.number("SEND_RATE_PER_MINUTE", minimum=0),
        send_daily_limit=int(read.number("SEND_DAILY_LIMIT", minimum=0, integer=True)),
        warnings=warnings,
    )
    if read.problems:
        raise SettingsError(*read.problems)
    return settings


def require_for_sending(settings: Settings) -> None:
    """Settings that previews can do without but a real send cannot."""
    problems = []
    if not settings.smtp_host:
        problems.append("SMTP_HOST is not set: name the SMTP server to send through")
    if not settings.mail_from:
        problems.append("MAIL_FROM is not set: give the address the letters come from")
    if (
        settings.smtp_username
        and settings.smtp_security == "none"
        and not is_loopback(settings.smtp_host)
    ):
        problems.append(
            f"SMTP_SECURITY=none would send the password for {settings.smtp_username} to "
            f"{settings.smtp_host} unencrypted; use starttls or ssl"
        )
    if problems:
        raise SettingsError(*problems)
