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
- a **bounce in another shape** (Exim, qmail, Sendmail's text, Yahoo,
  Exchange 2003, Gmail's old format, "simple" text bounces), known by its
  shape, never by its subject's "Re:": from a mailer (MAILER-DAEMON,
  postmaster), with ``X-Failed-Recipients`` or Exchange's NDR header, or a
  subject that non-delivery notices carry. The failed addresses come from
  ``X-Failed-Recipients`` or Mailman's maintained detectors (flufl.bounce);
  the status from an enhanced code in the text, else 5.0.0 or 4.0.0 as the
  detector says the failure is permanent or temporary.
- a **mailing list's own notice** (a rejection, a moderation): ``list``,
  which is never an answer.
- an **answer** from anyone else: ``auto-replied`` when a header marks it
  automatic (see ``automatic``), otherwise ``replied``. It names the letter
  by ``In-Reply-To`` or ``References``, or names none (a mission writing
  anew): ``inbox.match_notice`` then matches it by its sender's address.
- anything else (a mailing list's post), which says nothing about a letter.

The letter a notice is about is named only by Message-IDs: the returned
original's ``Message-ID`` (whole, its headers, or pasted into the notice's
text), ``X-Original-Message-ID``, the notice's own ``In-Reply-To`` and
``References``. The body of an answer is never read.

Every message is read within bounds (``parse``): one above
MAX_NOTICE_BYTES or with more than MAX_CONTAINERS nested parts is
Unreadable, and a date out of range is no date.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser

from flufl.bounce import all_failures

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
#: The largest message read: a bounce returning a letter with its attachments
#: is well below; anything larger is skipped and named, never parsed.
MAX_NOTICE_BYTES = 32 * 1024 * 1024
#: The most bytes a message's headers may take. The standard library reads a
#: header's words in time that grows with their square: a bounce whose
#: X-Failed-Recipients ran to megabytes would hold ``inbox`` for hours.
MAX_HEADER_BYTES = 1024 * 1024
#: The most MIME containers (multipart and message parts) a message may hold.
#: Real notices hold fewer than ten; the parser recurses once per level, so a
#: message thousands of levels deep would otherwise exhaust Python's stack.
MAX_CONTAINERS = 100
_CONTAINER = re.compile(rb"(?im)^content-type:[ \t]*(?:\r?\n[ \t]+)?(?:multipart|message)/")
#: Who sends non-delivery notices (the local part of From, or its name).
_MAILER = re.compile(
    r"(?i)^(mailer[-_]?daemon|post[-_]?master|mail[-_]daemon|mail delivery (subsystem|system)"
    r"|microsoft outlook|mail administrator|mdaemon|nobody|root)$"
)
#: Subjects of non-delivery notices, as the common mail systems write them.
_NDR_SUBJECT = re.compile(
    r"(?i)(undeliver|undelivered mail|returned mail|mail delivery failed|delivery status notif"
    r"|delivery failure|delivery notification|delivery has failed|failure notice"
    r"|non[- ]?deliver|nondeliver|mail system error|message not delivered|could not send"
    r"|delayed mail|delivery delayed|delivery warning|message delayed|mail could not be delivered"
    r"|returned to sender|unzustellbar|non remis|no se puede entregar|delivery problem"
    r"|delivery error|error during delivery|email delivery failure|message delivery failure"
    r"|permanent delivery failure|delivery report)"
)
_REPLY_PREFIX = re.compile(r"(?i)^\s*(re|aw|sv|antw|r|ref|rif|res|odp)\s*:")
#: Who sends a mailing list's notices (Mailman, Sympa, LISTSERV, Google Groups).
_LIST_SENDER = re.compile(
    r"(?i)(-owner|-request|-bounces?|-admin)(\+[^@]*)?@|^(owner-|listserv@|sympa@|mailman@)"
)
#: Subjects of automatic replies that carry no RFC 3834 header.
_AUTO_SUBJECT = re.compile(
    r"(?i)^\s*(automatic reply|auto(matic)?[- ]?(reply|response|antwort)|autoreply|auto:"
    r"|out of (the )?office|on vacation|vacation reply|away from (the )?office"
    r"|abwesenheitsnotiz|abwesend|r[ée]ponse automatique|absence"
    r"|respuesta autom[áa]tica|risposta automatica|automatisch antwoord|resposta autom[áa]tica)"
)
#: The most of a notice flufl.bounce's detectors read.
DETECTORS_READ = 1024 * 1024
#: The most failed addresses read from one notice: a letter has a few (To
#: and Cc), and each is looked for in every line of the notice's text.
MAX_FAILED = 100
#: The most addresses the text of a notice in an unknown shape may name for
#: one of them to be taken as the failed one.
MAX_GUESSED = 20
#: What separates the words of a notice's text, for the addresses in it.
_WORD_BREAK = re.compile(r"[\s<>()\[\]\",;:]+")
#: One word of a notice's text that is an address.
_TEXT_ADDRESS = re.compile(r"[A-Za-z0-9][\w.+'%-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
#: Subjects of notices that say a letter is only delayed.
_DELAY_WORDS = re.compile(r"(?i)delay|warning|will retry|not yet been delivered|temporar")
#: The subject of Lotus Domino's out-of-office answers, which carry no header that says so.
_DOMINO_AUTO = re.compile(r"(?i)^\s*AUTO:\s.*\bout of (the )?office")
#: The status of a failure that gives no code of its own.
_GENERIC_STATUS = {BOUNCED: "5.0.0", DELAYED: "4.0.0"}
_NO_FAILURE = "a delivery report that says no letter failed or was delayed"
#: A Message-ID in a returned original pasted as text, quoted or not.
_PASTED_ID = re.compile(r"(?im)^[ \t>]*(?:x-original-)?message-id:[ \t]*(<[^<>\s]+>)")
#: Text read of a notice's own parts, for pasted ids and status codes.
_MAX_TEXT_READ = 256 * 1024
#: What reading a malformed header through the ``email`` API can raise.
_BAD_HEADER = (ValueError, IndexError, TypeError, AttributeError, HeaderParseError)

# flufl.bounce logs a detector's exception with its traceback; what it cannot
# read is read here as "no address found" instead.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False


class Unreadable(Exception):
    """A message that is not read at all (too large, too deep): skipped and named."""


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
    #: The sender's bare address, in lower case ("" when it has none).
    address: str = ""
    #: The events are guesses: a non-delivery notice in a shape no reader
    #: knows, with an event for each address its own text names. Only one
    #: of them that some letter was accepted for is recorded (see inbox).
    guessed: bool = False


def too_large(size: int) -> str:
    """Why a message of ``size`` bytes is not read."""
    cap = MAX_NOTICE_BYTES // (1024 * 1024)
    return f"larger than {cap} MB ({size / 1024 / 1024:.0f} MB): not read"


def parse(data: bytes) -> EmailMessage:
    """One message from its bytes, as the documented ``email`` API reads it.

    Raises Unreadable for a message above MAX_NOTICE_BYTES, with headers
    above MAX_HEADER_BYTES or with more than MAX_CONTAINERS nested parts,
    before parsing it.
    """
    if len(data) > MAX_NOTICE_BYTES:
        raise Unreadable(too_large(len(data)))
    # Where the headers end (their first empty line), looked for in the first MB only.
    window = data[: MAX_HEADER_BYTES + 4]
    ends = [i for i in (window.find(b"\n\n"), window.find(b"\n\r\n")) if i >= 0]
    if (min(ends) if ends else len(data)) > MAX_HEADER_BYTES:
        raise Unreadable(f"headers longer than {MAX_HEADER_BYTES // 1024 // 1024} MB: not read")
    if len(_CONTAINER.findall(data)) > MAX_CONTAINERS:
        raise Unreadable(f"more than {MAX_CONTAINERS} nested MIME parts: not read")
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
    except RecursionError as err:  # a nesting the count above did not see
        raise Unreadable("MIME parts nested too deeply: not read") from err
    assert isinstance(message, EmailMessage)
    return message


def read_bytes(data: bytes) -> Notice:
    """What the message in ``data`` says (raises Unreadable, as ``parse`` does)."""
    return read_notice(parse(data), data)


def read_notice(message: EmailMessage, data: bytes = b"") -> Notice:
    """What ``message`` says about letters (``data``: its bytes, for an id when it has none)."""
    own = message_ids(_text(message, "Message-ID"))
    if own:
        notice_id = own[0]
    else:
        digest = hashlib.sha256(data or _bytes_of(message)).hexdigest()[:32]
        notice_id = f"<{digest}.no-message-id@notice.invalid>"
    sender, address = _from(message)
    subject = clean(_text(message, "Subject"))
    base = Notice(
        notice_id, "other", sender=sender, subject=subject, date=_date(message), address=address
    )
    notice = _read(message, _threaded(message), base, data)
    # A notice forwarded whole (a bounce wrapped in a message of its own)
    # returns itself: its own id names no letter.
    return replace(notice, refers_to=tuple(i for i in notice.refers_to if i != notice_id))


def _read(message: EmailMessage, threaded: tuple[str, ...], base: Notice, data: bytes) -> Notice:
    report = _find_report(message)
    if report is not None:
        notice = _read_report(report, threaded, base)
        return notice if notice.events else _read_by_detectors(message, threaded, notice, data)
    if _bounce_shaped(message, base):
        return _read_by_detectors(message, threaded, base, data)
    if _LIST_SENDER.search(base.address):
        why = "a mailing list's own notice (a rejection, a moderation), no mission's answer"
        return replace(base, kind="list", refers_to=threaded, problem=why)
    if not threaded and any(_text(message, h) for h in _LIST_HEADERS):
        return base  # a mailing list's message, about no letter
    kind = AUTO_REPLIED if automatic(message) else REPLIED
    when = base.date.strftime("%Y-%m-%d %H:%M UTC") if base.date is not None else "undated"
    text = clean(f"{when}, from {base.sender or 'an unnamed sender'}, subject: {base.subject}")
    return replace(base, kind="answer", refers_to=threaded, events=(Event(kind, text=text),))


def _bounce_shaped(message: EmailMessage, base: Notice) -> bool:
    """Whether ``message`` has the shape of a non-delivery notice, whatever its subject's "Re:".

    Its sender is a mailer (MAILER-DAEMON, postmaster, "Mail Delivery
    Subsystem"), or it names failed recipients (``X-Failed-Recipients``),
    or Exchange marks it an NDR, or its subject is one that non-delivery
    notices carry ("Undeliverable", "failure notice", "non remis", …), even
    after a "Re:". Such a message is never an answer: when no failed
    address can be read in it, it is listed, not recorded.
    """
    if _text(message, "X-Failed-Recipients") or "X-MS-Exchange-Message-Is-Ndr" in message:
        return True
    name = base.sender.partition("<")[0].strip().strip('"')
    addresses = [base.address, *_addresses(_text(message, "Return-Path"))[:1]]
    if _MAILER.match(name) or any(_MAILER.match(a.partition("@")[0]) for a in addresses):
        return True
    if _threaded(message) and _REPLY_PREFIX.match(base.subject):
        # A mission's answer to a letter whose subject has such words in it.
        return False
    return bool(_NDR_SUBJECT.search(base.subject))


def _read_by_detectors(
    message: EmailMessage, threaded: tuple[str, ...], base: Notice, data: bytes
) -> Notice:
    """A notice in a shape other than RFC 3464, read by flufl.bounce's detectors.

    The address comes from ``X-Failed-Recipients`` or the detectors (Exim,
    qmail, Yahoo, Exchange, Gmail's old format, "simple" text bounces); the
    status from an enhanced code in the notice's text, else 5.0.0 for a
    permanent failure and 4.0.0 for a temporary one.
    """
    text = _own_text(message)
    pasted = (i.lower() for i in _PASTED_ID.findall(text))
    refers = _unique(base.refers_to, _original_ids(message), pasted, threaded)
    base = replace(base, kind="report", refers_to=refers)
    permanent = list(_unique(_addresses(_text(message, "X-Failed-Recipients"))))
    temporary: list[str] = []
    if not permanent:
        try:
            found_temporary, found_permanent = all_failures(_for_detectors(message, data))
        except Exception:  # a detector that fails on hostile mail finds nothing
            found_temporary, found_permanent = frozenset(), frozenset()
        permanent = sorted({a for a in map(_detected, found_permanent) if a})
        temporary = sorted({a for a in map(_detected, found_temporary) if a} - set(permanent))
    codes = ENHANCED_STATUS.findall(text)
    said = f"the notice says: {base.subject}"
    events = [_failure(BOUNCED, a, text, codes, said) for a in permanent[:MAX_FAILED]]
    events += [_failure(DELAYED, a, text, codes, said) for a in temporary[:MAX_FAILED]]
    if events:
        return replace(base, events=tuple(events), problem="")
    problem = base.problem or "a non-delivery notice in which no failed address can be read"
    # What the text names but its own sender or a mailer (postmaster@…).
    named = [
        a
        for a in _unique(_text_addresses(text))
        if a != base.address and not _MAILER.match(a.partition("@")[0])
    ]
    # A report read whole has nothing to guess; a list of addresses is no bounce of one letter.
    if problem == _NO_FAILURE or len(named) > MAX_GUESSED:
        return replace(base, problem=problem)
    kind = DELAYED if _DELAY_WORDS.search(base.subject) else BOUNCED
    unread = f"named in the text of a notice in a shape not known here: {base.subject}"
    guesses = tuple(_failure(kind, a, text, codes, unread) for a in named)
    return replace(base, events=guesses, problem=problem, guessed=True)


def _failure(kind: str, address: str, text: str, codes: list[str], otherwise: str) -> Event:
    """A bounce or delay of ``address``: the line of ``text`` that names it, and its status.

    The status is the code written beside the address, when the notice
    gives each address its own; else the first of its kind in the text
    (``codes``); else 5.0.0 or 4.0.0. ``otherwise`` stands for a missing line.
    """
    fallback = _GENERIC_STATUS[kind]
    status = next((c for c in codes if c[0] == fallback[0]), fallback)
    diagnostic = _diagnostic(text, address)
    own = next((c for c in ENHANCED_STATUS.findall(diagnostic) if c[0] == status[0]), "")
    return Event(kind, (address,), own or status, clean(diagnostic or otherwise))


def _text_addresses(text: str) -> list[str]:
    """The addresses a notice's text names, word by word.

    Word by word, in time linear in the text: a pattern searched through
    the whole text would try every position of a long run of letters, and
    a hostile notice of 256 KB would then hold ``inbox`` for minutes.
    """
    words = (w.strip(".") for w in _WORD_BREAK.split(text) if "@" in w)
    return [w.lower() for w in words if _TEXT_ADDRESS.fullmatch(w)]


def _for_detectors(message: EmailMessage, data: bytes) -> EmailMessage:
    """The notice as flufl.bounce's detectors read it: its first megabyte.

    They match every line against dozens of patterns, so a notice of 32 MB
    of short lines would take minutes; what a bounce says comes first, and
    a returned letter's attachments after it.
    """
    return message if len(data) <= DETECTORS_READ else parse(data[:DETECTORS_READ])


def _detected(value: object) -> str:
    """An address flufl.bounce found (bytes or text), bare and in lower case; "" for no address."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return next(iter(_addresses(text)), "")


def _own_text(message: EmailMessage) -> str:
    """The text of the notice's own text parts (not of a returned message), for people."""
    pieces: list[str] = []
    for part in _parts(message):
        unsplit = part.get_content_maintype() == "multipart" and part.get_payload()
        if isinstance(unsplit, str):
            # A multipart whose boundary the parser cannot find: its body, as it came.
            raw: object = unsplit.encode("utf-8", "surrogateescape")
        elif part.get_content_maintype() != "text" or part.get_content_type() in _ORIGINAL:
            continue
        else:
            try:
                raw = part.get_payload(decode=True)
            except (ValueError, LookupError, AssertionError):
                continue
        if not isinstance(raw, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            piece = raw[:_MAX_TEXT_READ].decode(charset, "replace")
        except LookupError:
            piece = raw[:_MAX_TEXT_READ].decode("utf-8", "replace")
        pieces.append(piece)
        if sum(map(len, pieces)) > _MAX_TEXT_READ:
            break
    return "\n".join(pieces)[:_MAX_TEXT_READ]


def _diagnostic(text: str, address: str) -> str:
    """The line of the notice's text that names ``address`` with a reason, when there is one."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if address in line.lower():
            around = " ".join(x.strip() for x in lines[number : number + 3] if x.strip())
            if re.search(r"\d{3}|[245]\.\d", around):
                return around
    return ""


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
    rule sends; ``X-Apple-Action`` (Apple Mail's vacation rule);
    ``X-Autoresponder`` and ``X-Vacation``; Lotus Domino's subject "AUTO: …
    is out of the office". ``X-Auto-Response-Suppress``
    alone marks nothing (Outlook puts it on ordinary mail to ask others not
    to answer automatically): only beside an automatic reply's subject
    ("Automatic reply:", "Out of Office", "Abwesenheitsnotiz", …), which is
    how Exchange's out-of-office answers come when they carry nothing else.
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
    if precedence == "auto_reply" or (
        precedence in ("bulk", "junk") and not any(_text(message, h) for h in _LIST_HEADERS)
    ):
        return f"Precedence: {precedence}"
    if "X-MS-Exchange-Inbox-Rules-Loop" in message:
        return "X-MS-Exchange-Inbox-Rules-Loop"
    if apple := _text(message, "X-Apple-Action").lower():
        return f"X-Apple-Action: {apple}"
    for name in ("X-Autoresponder", "X-Vacation", "X-Autoreply-From", "X-Mail-Autoreply"):
        if _text(message, name):
            return name
    subject = _text(message, "Subject")
    if _AUTO_SUBJECT.match(subject) and (
        "X-Auto-Response-Suppress" in message
        or "Thread-Topic" in message
        or "X-MS-Has-Attach" in message
        or "X-Google-Original-From" in message
        or "X-Autogenerated" in message
    ):
        return f"an automatic reply's subject ({clean(subject)[:40]}) from Outlook or Exchange"
    if _DOMINO_AUTO.match(subject):
        return f"Lotus Domino's out-of-office subject ({clean(subject)[:40]})"
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
    kinds = ("delivery-status", "global-delivery-status")
    for part in _parts(message):
        if part.get_content_type() == "multipart/report" and (
            str(part.get_param("report-type", "") or "").lower() in kinds
            or any(c.get_content_type() in _DELIVERY_STATUS for c in _parts(part))
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
    blocks = _status_blocks(status_part) if status_part is not None else []
    per_message = blocks[0] if blocks else {}
    original = message_ids(per_message.get("x-original-message-id", ""))
    refers = _unique(_original_ids(report), original, threaded)
    events = []
    for block in blocks:
        action = block.get("action", "").strip().lower()
        if not action.startswith(("failed", "delayed")):
            continue  # delivered, relayed, expanded: nothing to do
        kind = BOUNCED if action.startswith("failed") else DELAYED
        # Each field is "address-type; address" (RFC 3464), as "rfc822; a@b".
        recipients = _unique(
            a
            for name in ("original-recipient", "final-recipient")
            for a in _addresses(block.get(name, "").split(";", 1)[-1])
        )
        found = ENHANCED_STATUS.search(block.get("status", ""))
        status = found.group(0) if found else _GENERIC_STATUS[kind]
        diagnostic = block.get("diagnostic-code", "") or f"Status: {block.get('status', '')}"
        events.append(Event(kind, recipients, status, clean(diagnostic)))
    unread = "a delivery report whose delivery-status part cannot be read"
    problem = "" if events else _NO_FAILURE if blocks else unread
    return replace(base, kind="report", refers_to=refers, events=tuple(events), problem=problem)


def _status_blocks(part: EmailMessage) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, each as lower-case name: value."""
    payload = part.get_payload()
    if isinstance(payload, list):
        texts = [
            "\n".join(f"{k}: {v}" for k, v in b.raw_items())
            for b in payload
            if isinstance(b, Message)
        ]
    else:
        texts = re.split(r"\r?\n[ \t]*\r?\n", _body(part).strip())
    blocks = []
    for text in texts:
        fields = HeaderParser(policy=policy.compat32).parsestr(
            text.strip() + "\n\n", headersonly=True
        )
        # The first of a repeated field counts.
        block = {n.lower(): " ".join(str(v).split()) for n, v in reversed(fields.items())}
        if block:
            blocks.append(block)
    return blocks


def _original_ids(message: EmailMessage) -> list[str]:
    """The Message-IDs of the originals that ``message`` returns, whole or their headers only."""
    found = []
    for part in (p for p in _parts(message) if p.get_content_type() in _ORIGINAL):
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            payload = payload[0]
        else:
            payload = HeaderParser(policy=policy.compat32).parsestr(_body(part).lstrip(), True)
        found += message_ids(_text(payload, "Message-ID"))
    return found


def _body(part: EmailMessage) -> str:
    """A part's body as text (UTF-8), decoded from its transfer encoding."""
    raw = part.get_payload(decode=True)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(part.get_payload())


def _addresses(value: str) -> list[str]:
    """The bare addresses in a list such as ``<a@b>, c@d``, in lower case."""
    pieces = (piece.strip("<>").lower() for piece in re.split(r"[,\s]+", value))
    return [a for a in pieces if a.rpartition("@")[0] and a.rpartition("@")[2]]


# -- headers -------------------------------------------------------------------------------


def _text(message: Message, name: str) -> str:
    """A header's value on one line ("" when absent), even a malformed one."""
    try:
        value = message.get(name)
    except _BAD_HEADER:
        raw = next((v for k, v in message.raw_items() if k.lower() == name.lower()), "")
        return " ".join(str(raw).split())
    return "" if value is None else " ".join(str(value).split())


def _threaded(message: Message) -> tuple[str, ...]:
    """What ``In-Reply-To`` and ``References`` name, the nearest first."""
    replying = message_ids(_text(message, "In-Reply-To"))
    references = message_ids(_text(message, "References"))
    return _unique(replying, reversed(references))


def _from(message: EmailMessage) -> tuple[str, str]:
    """The sender as shown (name and address), and its bare address in lower case ("" if none)."""
    try:
        first = next(iter(getattr(message.get("From"), "addresses", ())), None)
    except _BAD_HEADER:
        first = None
    header = _text(message, "From")
    name, address = (first.display_name, first.addr_spec) if first is not None else ("", header)
    sender = clean(f"{name} <{address}>" if name else address)
    if first is not None and "@" in address:
        return sender, clean(address.lower())
    return sender, next(iter(_addresses(header)), "")


def _date(message: EmailMessage) -> datetime | None:
    try:
        value = getattr(message.get("Date"), "datetime", None)
        if not isinstance(value, datetime):
            return None
        moment = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except (*_BAD_HEADER, OverflowError):  # OverflowError: a date at the edge of what Python holds
        return None
    return moment if 1990 <= moment.year < 9000 else None


def _bytes_of(message: EmailMessage) -> bytes:
    """The message's bytes, for a digest; a message too broken to write out gives its headers."""
    try:
        return message.as_bytes(policy=policy.SMTP)
    except (ValueError, TypeError, LookupError, HeaderParseError):
        return repr(list(message.raw_items())).encode("utf-8", "replace")


def clean(text: str, longest: int = MAX_TEXT) -> str:
    """Mail's text as it may be shown, or kept in the send log: printable, one line, not too long.

    Control characters (an escape sequence that retitles a terminal, a line
    break that starts a new row) become spaces.
    """
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= longest else flat[: longest - 1] + "…"


def _unique(*groups: Iterable[str]) -> tuple[str, ...]:
    """The values of ``groups``, in order, each once, none empty."""
    return tuple(dict.fromkeys(v for values in groups for v in values if v))
