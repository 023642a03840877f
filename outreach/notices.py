"""What comes back to the sender's mailbox, read one message at a time.

A message is one of three things here, decided from its structure and its
headers only:

- a **delivery status notification** (RFC 3464: ``multipart/report;
  report-type=delivery-status`` with a ``message/delivery-status`` part):
  one ``bounced`` (``Action: failed``) or ``delayed`` (``Action: delayed``)
  event per recipient block, naming the recipient by its
  ``Original-Recipient`` and ``Final-Recipient`` fields, with its
  ``Status`` (``5.1.1``) and ``Diagnostic-Code``. Postfix, Exchange Online
  and Gmail all send this form; read here too are what the last two add to
  it: a three-digit detail (Exchange's ``5.1.10``), the original's headers
  alone as ``text/rfc822-headers``, Gmail's ``X-Original-Message-ID``
  field, and a human-readable part nested in ``multipart/alternative`` or
  ``multipart/related``. A notice without a delivery-status part but with
  an ``X-Failed-Recipients`` header (what Gmail sent before it used RFC
  3464, and Exim still sends) is a bounce of the addresses that header
  names, with the generic status ``5.0.0``.
- an **answer** to a letter: it names a Message-ID in ``In-Reply-To`` or
  ``References``. It is ``auto-replied`` when a header marks it automatic
  (see ``automatic``), otherwise ``replied``. A delivery status notice is
  never an answer, though Postfix marks its own ``Auto-Submitted``.
- anything else, which says nothing about a letter.

The letter a notice is about is named only by Message-IDs in fixed places:
the returned original's ``Message-ID``, ``X-Original-Message-ID``, the
notice's own ``In-Reply-To`` and ``References``; and the recipient only by
the fields above. Nothing is guessed from the text meant for people, and
the body of an answer is never read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser

from outreach.sendlog import AUTO_REPLIED, BOUNCED, DELAYED, ENHANCED_STATUS, REPLIED

#: A Message-ID as it appears in a header: ``<left@right>``.
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_DELIVERY_STATUS = ("message/delivery-status", "message/global-delivery-status")
#: Where a notice returns the original: whole, or its headers only.
_ORIGINAL = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/global-headers",
)
#: Headers of a mailing list (RFC 2369, RFC 2919): a list's copy of an answer
#: carries ``Precedence: list`` or ``bulk`` and is no automatic reply.
_LIST_HEADERS = ("List-Id", "List-Post", "List-Unsubscribe")
#: Longest text kept from a notice in the send log (a subject, a diagnostic).
MAX_TEXT = 300


@dataclass(frozen=True)
class Event:
    """One thing a notice says about a letter.

    ``recipients`` are the addresses a bounce or delay names, the original
    recipient first (empty for an answer, which is about the whole letter).
    ``status`` is the enhanced status code; ``text`` is the diagnostic, or
    for an answer its date, sender and subject.
    """

    kind: str
    recipients: tuple[str, ...] = ()
    status: str = ""
    text: str = ""


@dataclass(frozen=True)
class Notice:
    """What one message says about letters.

    ``notice_id`` is the message's own Message-ID (or, for one without, a
    digest of its bytes): reading it again records nothing twice.
    ``refers_to`` are the Message-IDs it names, the most telling first.
    ``kind`` is ``report`` (a delivery status notification), ``answer``, or
    ``other``; ``problem`` says why a report gave no event.
    """

    notice_id: str
    kind: str
    refers_to: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    sender: str = ""
    subject: str = ""
    date: datetime | None = None
    problem: str = ""


def parse(data: bytes) -> EmailMessage:
    """One message from its bytes, as the documented ``email`` API reads it."""
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def read_notice(message: EmailMessage, data: bytes = b"") -> Notice:
    """What ``message`` says about letters (``data``: its bytes, for an id when it has none)."""
    own = message_ids(_text(message, "Message-ID"))
    if own:
        notice_id = own[0]
    else:
        digest = hashlib.sha256(data or _bytes_of(message)).hexdigest()[:32]
        notice_id = f"<{digest}.no-message-id@notice.invalid>"
    sender = _sender(message)
    subject = _clean(_text(message, "Subject"))
    date = _date(message)
    threaded = _threaded(message)
    base = Notice(notice_id, "other", sender=sender, subject=subject, date=date)
    report = _find_report(message)
    if report is not None:
        return _read_report(report, threaded, base)
    failed = _addresses(_text(message, "X-Failed-Recipients"))
    if failed:
        originals = [p for p in _parts(message) if p.get_content_type() in _ORIGINAL]
        refers = _unique([*(i for p in originals for i in _original_ids(p)), *threaded])
        text = f"no delivery status given; the notice says: {subject}"
        events = tuple(Event(BOUNCED, (a,), "5.0.0", _clean(text)) for a in failed)
        return replace(base, kind="report", refers_to=refers, events=events)
    if "X-MS-Exchange-Message-Is-Ndr" in message:
        return replace(
            base,
            kind="report",
            refers_to=threaded,
            problem="a non-delivery report without a delivery-status part naming the recipient",
        )
    if threaded:
        kind = AUTO_REPLIED if automatic(message) else REPLIED
        when = date.strftime("%Y-%m-%d %H:%M UTC") if date is not None else "undated"
        text = _clean(f"{when}, from {sender or 'an unnamed sender'}, subject: {subject}")
        return replace(base, kind="answer", refers_to=threaded, events=(Event(kind, text=text),))
    return base


def automatic(message: Message) -> str:
    """Why ``message`` is an automatic reply, or "" when no header says it is.

    Read: ``Auto-Submitted`` other than ``no`` (RFC 3834: ``auto-replied``
    for a vacation or out-of-office answer, ``auto-generated``, which
    Exchange's out-of-office answers carry); ``X-Autoreply`` and
    ``X-Autorespond`` (vacation programs); ``X-Autogenerated: Reply``;
    ``Precedence: auto_reply``; ``Precedence: bulk`` or ``junk`` only when
    the message is not a mailing list's (no ``List-Id``, ``List-Post`` or
    ``List-Unsubscribe``), as the classic vacation program writes it; and
    ``X-MS-Exchange-Inbox-Rules-Loop``, which Exchange puts on what an inbox
    rule sends. Not read: ``X-Auto-Response-Suppress``, which Outlook puts
    on ordinary mail to ask others not to answer automatically.
    """
    submitted = _text(message, "Auto-Submitted").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted}"
    for name in ("X-Autoreply", "X-Autorespond"):
        value = _text(message, name).lower()
        if value and value not in ("no", "false", "0"):
            return f"{name}: {value}"
    if _text(message, "X-Autogenerated").lower() == "reply":
        return "X-Autogenerated: Reply"
    precedence = (_text(message, "Precedence") or _text(message, "X-Precedence")).lower()
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    if precedence in ("bulk", "junk") and not any(_text(message, h) for h in _LIST_HEADERS):
        return f"Precedence: {precedence}"
    if "X-MS-Exchange-Inbox-Rules-Loop" in message:
        return "X-MS-Exchange-Inbox-Rules-Loop"
    return ""


def message_ids(value: str) -> list[str]:
    """The Message-IDs in a header's value, each ``<…>``, in lower case."""
    found = _MESSAGE_ID.findall(value)
    if not found:
        # Some senders leave out the angle brackets of a single id.
        found = [f"<{word}>" for word in value.split() if "@" in word and "<" not in word]
    return [identifier.lower() for identifier in found]


# -- delivery status notifications ---------------------------------------------------------


def _find_report(message: EmailMessage) -> EmailMessage | None:
    """The delivery report in ``message``, never looking inside a returned message."""
    for part in _parts(message):
        if part.get_content_type() != "multipart/report":
            continue
        kind = str(part.get_param("report-type", "") or "").lower()
        children = _parts(part)
        if kind in ("delivery-status", "global-delivery-status") or any(
            c.get_content_type() in _DELIVERY_STATUS for c in children
        ):
            return part
    return None


def _parts(message: Message) -> list[EmailMessage]:
    """``message`` and every part inside it, not descending into ``message/*`` parts.

    A returned original is a message of its own: what it holds (a report it
    quoted, say) is not part of the notice.
    """
    found: list[EmailMessage] = []
    stack: list[Message] = [message]
    while stack:
        part = stack.pop(0)
        if isinstance(part, EmailMessage):
            found.append(part)
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
    return found


def _read_report(report: EmailMessage, threaded: tuple[str, ...], base: Notice) -> Notice:
    children = _parts(report)
    status_part = next((p for p in children if p.get_content_type() in _DELIVERY_STATUS), None)
    originals = [p for p in children if p.get_content_type() in _ORIGINAL]
    blocks = _status_blocks(status_part) if status_part is not None else []
    per_message = blocks[0] if blocks else {}
    refers = _unique(
        [
            *(i for p in originals for i in _original_ids(p)),
            *message_ids(per_message.get("x-original-message-id", "")),
            *threaded,
        ]
    )
    events = []
    for block in blocks:
        action = block.get("action", "").strip().lower()
        kind = (
            BOUNCED
            if action.startswith("failed")
            else DELAYED
            if action.startswith("delayed")
            else ""
        )
        if not kind:
            continue  # delivered, relayed, expanded: nothing to do
        recipients = _unique(
            [
                *_addresses(_after_type(block.get("original-recipient", ""))),
                *_addresses(_after_type(block.get("final-recipient", ""))),
            ]
        )
        found = ENHANCED_STATUS.search(block.get("status", ""))
        status = found.group(0) if found else ("5.0.0" if kind == BOUNCED else "4.0.0")
        diagnostic = block.get("diagnostic-code", "") or f"Status: {block.get('status', '')}"
        events.append(Event(kind, recipients, status, _clean(diagnostic)))
    problem = ""
    if not events:
        problem = (
            "a delivery report whose delivery-status part cannot be read"
            if status_part is None or not blocks
            else "a delivery report that says no letter failed or was delayed"
        )
    return replace(base, kind="report", refers_to=refers, events=tuple(events), problem=problem)


def _status_blocks(part: EmailMessage) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, each as lower-case name: value."""
    payload = part.get_payload()
    if isinstance(payload, list):
        texts = ["\n".join(f"{k}: {v}" for k, v in _items(block)) for block in payload]
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
        texts = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    blocks = []
    for text in texts:
        fields = HeaderParser(policy=policy.compat32).parsestr(
            text.strip() + "\n\n", headersonly=True
        )
        block: dict[str, str] = {}
        for name, value in fields.items():
            block.setdefault(name.lower(), " ".join(str(value).split()))
        if block:
            blocks.append(block)
    return blocks


def _items(block: object) -> Iterable[tuple[str, str]]:
    if not isinstance(block, Message):
        return []
    return [(name, str(value)) for name, value in block.raw_items()]


def _original_ids(part: EmailMessage) -> list[str]:
    """The Message-ID of the original that a notice returns, whole or its headers only."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return message_ids(_text(payload[0], "Message-ID"))
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    headers = HeaderParser(policy=policy.compat32).parsestr(text.lstrip(), headersonly=True)
    return message_ids(" ".join(str(headers.get("Message-ID", "")).split()))


def _after_type(value: str) -> str:
    """``rfc822; a@b`` (RFC 3464's address-type; address) as ``a@b``."""
    return value.partition(";")[2] if ";" in value else value


def _addresses(value: str) -> list[str]:
    """The bare addresses in a list such as ``<a@b>, c@d``, in lower case."""
    found = []
    for piece in re.split(r"[,\s]+", value):
        address = piece.strip().strip("<>").strip().lower()
        if "@" in address:
            found.append(address)
    return found


# -- headers -------------------------------------------------------------------------------


def _text(message: Message, name: str) -> str:
    """A header's value on one line ("" when absent), even a malformed one."""
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError, AttributeError, HeaderParseError):
        raw = next((v for k, v in message.raw_items() if k.lower() == name.lower()), "")
        return " ".join(str(raw).split())
    return "" if value is None else " ".join(str(value).split())


def _threaded(message: Message) -> tuple[str, ...]:
    """What ``In-Reply-To`` and ``References`` name, the nearest first."""
    replying = message_ids(_text(message, "In-Reply-To"))
    references = message_ids(_text(message, "References"))
    return _unique([*replying, *reversed(references)])


def _sender(message: EmailMessage) -> str:
    try:
        header = message.get("From")
        mailboxes = list(getattr(header, "addresses", ()))
    except (ValueError, IndexError, TypeError, AttributeError, HeaderParseError):
        mailboxes = []
    if mailboxes:
        first = mailboxes[0]
        name, address = first.display_name, first.addr_spec
        return _clean(f"{name} <{address}>" if name else address)
    return _clean(_text(message, "From"))


def _date(message: EmailMessage) -> datetime | None:
    try:
        header = message.get("Date")
        value = getattr(header, "datetime", None)
    except (ValueError, IndexError, TypeError, AttributeError, HeaderParseError):
        return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _bytes_of(message: EmailMessage) -> bytes:
    """The message's bytes, for a digest; a message too broken to write out gives its headers."""
    try:
        return message.as_bytes(policy=policy.SMTP)
    except (ValueError, TypeError, LookupError, HeaderParseError):
        return repr(list(message.raw_items())).encode("utf-8", "replace")


def _clean(text: str) -> str:
    """Text for one cell of the send log: printable, on one line, not too long."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    flat = " ".join(printable.split())
    return flat if len(flat) <= MAX_TEXT else flat[: MAX_TEXT - 1] + "…"


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))
