"""Turning a rendered letter into the exact bytes that go on the wire.

The stdlib ``email`` package builds the MIME structure with its documented
API (``EmailMessage``, ``set_content``, ``add_alternative``); nothing here
assembles MIME by hand. What this module adds is the refusal of any header
value that could break out of its header line, before the stdlib sees it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from pathlib import Path

from outreach.attachments import Attachment
from outreach.contacts import Contact
from outreach.errors import MessageError
from outreach.headers import unsafe_header_reason
from outreach.render import Rendered
from outreach.sendlog import contact_key
from outreach.settings import Settings

#: CRLF line ends and header folding as SMTP wants them. Lines of 76
#: characters at most: the stdlib's quoted-printable encoder takes its line
#: length from the policy, and RFC 2045 allows no more than 76. A header set
#: as it is (``set_raw``, folded here) is written as it is.
WIRE = policy.SMTP.clone(max_line_length=76, refold_source="none")
CRLF = "\r\n"
#: The longest line SMTP carries, without its CRLF (RFC 5321, 4.5.3.1.6).
MAX_LINE = 998


@dataclass(frozen=True)
class Letter:
    """A message ready to send: its envelope and its serialised bytes.

    The same Message-ID goes out on every attempt, which lets a receiving
    server (and the mission) recognise a retry as the same letter.
    """

    contact_id: str
    sender: str
    recipients: tuple[str, ...]
    message_id: str
    subject: str
    data: bytes
    #: The files it carries: name, size in bytes, and where the file is.
    attachments: tuple[tuple[str, int, str], ...] = ()
    #: Its address headers as a mail program shows them, read back when it was built.
    shown: tuple[tuple[str, str], ...] = ()


#: The letter's Date line: it is written on one line (RFC 5322 dates are short).
_DATE_LINE = re.compile(rb"^Date: [^\r\n]*\r\n", re.MULTILINE)


def dated(letter: Letter, now: datetime) -> Letter:
    """The same letter with ``now`` as its Date: composed for the check, dated as it goes.

    Only the header block is searched, so a line of the letter's text that
    happens to begin with "Date: " stays as it is.
    """
    head, blank, body = letter.data.partition(b"\r\n\r\n")
    line = b"Date: " + format_datetime(now).encode("ascii") + b"\r\n"
    head, found = _DATE_LINE.subn(lambda _: line, head + b"\r\n", count=1)
    if not found:
        raise MessageError(f"contact {letter.contact_id}: the letter has no Date line to set")
    return replace(letter, data=head[:-2] + blank + body)


def message_id_for(campaign: str, contact_id: str, domain: str) -> str:
    """A Message-ID that is the same for a contact on every run of a campaign.

    Should a letter ever go out twice (a resend after an ambiguous failure),
    the receiving side can then tell that it is the same letter. Ids are
    compared without regard to case, as everywhere: ``chl`` is ``CHL``.

    The digest is keyed with this installation's own secret (``id_key``):
    no one who knows a campaign's name and a contact's id can compute the
    id, and so no one can forge an answer or a bounce that names it. A
    retry does not compute it again: it reuses the id the send log holds,
    which is also why logs written before the key existed keep matching.
    """
    message = f"{campaign}\0{contact_key(contact_id)}".encode()
    digest = hmac.new(id_key(), message, hashlib.sha256).hexdigest()[:32]
    return f"<{digest}.outreach@{domain}>"


#: Bytes of the key behind every Message-ID.
KEY_BYTES = 32
_keys: dict[Path, bytes] = {}


def id_key_path() -> Path:
    """``$XDG_STATE_HOME/outreach/message-id.key``, ``~/.local/state/outreach/`` by default.

    As the XDG specification asks, a relative XDG_STATE_HOME counts as unset.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "outreach" / "message-id.key"


def id_key() -> bytes:
    """This installation's Message-ID key: made once, at random, readable by its owner only.

    Made in a file of its own, then linked into place, so that two runs
    starting at once agree on one key and neither reads half of one.
    """
    path = id_key_path()
    if path in _keys:
        return _keys[path]
    try:
        key = _read_key(path)
        if key is None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                    handle.write(secrets.token_hex(KEY_BYTES) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                with contextlib.suppress(FileExistsError):  # another run made it first
                    os.link(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
            key = _read_key(path)
    except OSError as err:
        raise MessageError(
            f"{path}: the key of the letters' Message-IDs cannot be kept there "
            f"({err.strerror or err}); set XDG_STATE_HOME to a folder outreach may write"
        ) from err
    if not key:
        raise MessageError(
            f"{path}: not a key outreach wrote (64 hexadecimal digits expected); "
            "remove the file and a new key is made (letters already sent keep their ids)"
        )
    _keys[path] = key
    return key


def _read_key(path: Path) -> bytes | None:
    """The key in ``path``: None when there is no file, ``b""`` when the file holds no key."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        return b""
    return key if len(key) == KEY_BYTES else b""


def _checked(value: str, what: str) -> str:
    reason = unsafe_header_reason(value)
    if reason:
        raise MessageError(f"{what} cannot go into a mail header: it {reason}")
    return value


def _source(contact: Contact, rendered: Rendered) -> str:
    """Which column put an unsafe character into the subject, as ' (from …)'.

    The subject template may use any column; the person fixing the
    spreadsheet needs to know which cell to look at, not only the contact.
    """
    columns = [
        name
        for name, value in contact.fields.items()
        if value and value in rendered.subject and unsafe_header_reason(value)
    ]
    return f" (from the column {', '.join(columns)})" if columns else ""


@dataclass(frozen=True)
class _AddressHeader:
    """A header's mailboxes, (display name, address) pairs, and what names them to the user."""

    name: str
    mailboxes: list[tuple[str, str]]
    what: str


def _encoded(header: _AddressHeader) -> str:
    """The header's value with each display name as RFC 2047 encoded words, folded.

    Python 3.11 folds a long quoted display name holding a comma without its
    quotes, so that it reads back as two mailboxes (one of them whatever the
    name held in angle brackets). Encoded words carry no comma, quote or
    angle bracket as such, and fold between words: they read back whole.
    """
    parts = []
    for display_name, address in header.mailboxes:
        if display_name:
            words = Header(display_name, "utf-8", maxlinelen=76, header_name=header.name)
            parts.append(f"{words.encode(linesep=CRLF)} <{address}>")
        else:
            parts.append(address)
    return f",{CRLF} ".join(parts)


def _read_back(
    data: bytes, headers: Sequence[_AddressHeader]
) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """What is wrong with the letter's address headers as a mail reader would parse them.

    Each header must give back exactly its mailboxes, and no line of the
    head may pass the 998 characters SMTP allows (RFC 5322, 2.1.1). Also
    each header as read back, which the preview shows.
    """
    head = data.partition(CRLF.encode() * 2)[0]
    problems, shown = [], []
    name = ""
    for line in head.split(CRLF.encode()):
        if not line[:1].isspace():
            name = line.partition(b":")[0].decode("ascii", "replace")
        if len(line) > MAX_LINE:
            problems.append(
                f"the {name} header has a line of {len(line)} characters, longer than the "
                f"{MAX_LINE} mail allows"
            )
            break
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(head + CRLF.encode() * 2)
    for header in headers:
        found = parsed.get_all(header.name, [])
        shown.append((header.name, ", ".join(map(str, found))))
        # Names are compared without their spaces: the stdlib's parser adds one
        # between adjacent encoded words, which mail programs (rightly) do not.
        got = [
            ("".join(mailbox.display_name.split()), mailbox.addr_spec.lower())
            for value in found
            for mailbox in getattr(value, "addresses", ())
        ]
        wanted = [("".join(name.split()), address.lower()) for name, address in header.mailboxes]
        if got != wanted:
            problems.append(
                f"the {header.name} header reads back as {len(got)} mailbox(es) "
                f"{[a for _, a in got]} instead of {[a for _, a in wanted]}"
            )
    return problems, tuple(shown)


def build_message(
    contact: Contact,
    rendered: Rendered,
    settings: Settings,
    *,
    now: datetime,
    to: Sequence[str] | None = None,
    subject_prefix: str = "",
    message_id: str | None = None,
    encode_names: bool = False,
    attachments: Sequence[Attachment] = (),
    in_reply_to: str = "",
) -> tuple[EmailMessage, list[_AddressHeader]]:
    """The multipart/alternative message for one contact (text, then HTML), and its address headers.

    ``to`` replaces the contact's own recipients (a test send goes to one
    address only, and no Cc). ``encode_names`` writes every display name as
    encoded words (see ``_encoded``).
    """
    where = f"{contact.id} (line {contact.line})"
    domain = settings.sender.rpartition("@")[2]
    column = "mission" if contact.fields.get("mission") else "country"
    name = contact.fields.get("mission") or contact.country
    headers = [
        _AddressHeader(
            "From", [(settings.sender_name, settings.sender)], "MAIL_FROM_NAME/MAIL_FROM"
        )
    ]
    if to is None:
        headers.append(
            _AddressHeader("To", [(name, a) for a in contact.to], f"contact {where}, {column}")
        )
        if contact.cc:
            headers.append(
                _AddressHeader("Cc", [("", a) for a in contact.cc], f"contact {where}, cc")
            )
    else:
        headers.append(_AddressHeader("To", [("", a) for a in to], "the test address"))
    if settings.mail_reply_to:
        headers.append(_AddressHeader("Reply-To", [("", settings.mail_reply_to)], "MAIL_REPLY_TO"))
    message = EmailMessage(policy=WIRE)
    for header in headers:
        for display_name, address in header.mailboxes:
            _checked(display_name, header.what)
            _checked(address, header.what)
        if encode_names and any(display_name for display_name, _ in header.mailboxes):
            message.set_raw(header.name, _encoded(header))
        else:
            try:
                message[header.name] = [Address(n, addr_spec=a) for n, a in header.mailboxes]
            except (ValueError, IndexError) as err:
                raise MessageError(f"{header.what}: not a usable address ({err})") from err
    message["Subject"] = _checked(
        subject_prefix + rendered.subject, f"the subject for {where}{_source(contact, rendered)}"
    )
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id or message_id_for(settings.campaign, contact.id, domain)
    if in_reply_to:
        # A follow-up: the same conversation as the first letter, in Outlook and Gmail.
        message["In-Reply-To"] = _checked(in_reply_to, "the first letter's Message-ID")
        message["References"] = in_reply_to
    message.set_content(rendered.text, subtype="plain", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    for attachment in attachments:
        # The letter becomes multipart/mixed: its two versions, then each file
        # (a name that is not ASCII is encoded as RFC 2231 says).
        message.add_attachment(
            attachment.data,
            maintype=attachment.maintype,
            subtype=attachment.subtype,
            filename=attachment.name,
        )
    return message, headers


def _wire_bytes(
    build: Callable[[bool], tuple[EmailMessage, list[_AddressHeader]]],
) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The letter's bytes, whose address headers read back as built; and the headers read back.

    Built the usual way first; when a header does not read back whole (or a
    line is too long), again with the display names as encoded words; when
    even that fails, the letter is refused, naming the header's source.
    """
    problems: list[str] = []
    for encode_names in (False, True):
        message, headers = build(encode_names)
        data = message.as_bytes(policy=WIRE)
        problems, shown = _read_back(data, headers)
        if not problems:
            return data, shown
    named = [h.what for h in headers if f"the {h.name} header" in problems[0]]
    where = named[0] if named else "the letter"
    raise MessageError(f"{where}: cannot be put into a mail safely: {problems[0]}")


def build_letter(
    contact: Contact,
    rendered: Rendered,
    settings: Settings,
    *,
    now: datetime,
    test_to: str | None = None,
    message_id: str = "",
    attachments: Sequence[Attachment] = (),
    max_bytes: int | None = None,
    in_reply_to: str = "",
) -> Letter:
    """The Letter for a contact; with ``test_to``, a marked test copy for one address.

    ``message_id`` keeps the one of the letter's earlier attempts, should the
    way it is made have changed since.
    """
    domain = settings.sender.rpartition("@")[2]
    if test_to is None:
        recipients, prefix = contact.recipients, ""
        kept_id = message_id or message_id_for(settings.campaign, contact.id, domain)
    else:
        recipients, prefix = (test_to,), "[TEST] "
        kept_id = make_msgid("test", domain=domain)
    data, shown = _wire_bytes(
        lambda encode: build_message(
            contact,
            rendered,
            settings,
            now=now,
            to=None if test_to is None else recipients,
            subject_prefix=prefix,
            message_id=kept_id,
            encode_names=encode,
            attachments=attachments,
            in_reply_to=in_reply_to,
        )
    )
    if max_bytes is not None and len(data) > max_bytes:
        raise MessageError(
            f"contact {contact.id} (line {contact.line}): with its attachments the letter is "
            f"{len(data) / 1024 / 1024:.1f} MB, more than MAX_MESSAGE_MB="
            f"{max_bytes / 1024 / 1024:g} (providers refuse larger messages)"
        )
    return Letter(
        contact_id=contact.id,
        sender=settings.sender,
        recipients=recipients,
        message_id=kept_id,
        subject=prefix + rendered.subject,
        data=data,
        attachments=tuple((a.name, a.size, str(a.source)) for a in attachments),
        shown=shown,
    )
