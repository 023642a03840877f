"""Turning a rendered letter into the exact bytes that go on the wire.

The stdlib ``email`` package builds the MIME structure with its documented
API (``EmailMessage``, ``set_content``, ``add_alternative``); nothing here
assembles MIME by hand. What this module adds is the refusal of any header
value that could break out of its header line, before the stdlib sees it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from outreach.contacts import Contact
from outreach.errors import MessageError
from outreach.headers import unsafe_header_reason
from outreach.render import Rendered
from outreach.settings import Settings

#: CRLF line ends and header folding as SMTP wants them. Lines of 76
#: characters at most: the stdlib's quoted-printable encoder takes its line
#: length from the policy, and RFC 2045 allows no more than 76.
WIRE = policy.SMTP.clone(max_line_length=76)


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


def message_id_for(campaign: str, contact_id: str, domain: str) -> str:
    """A Message-ID that is the same for a contact on every run of a campaign.

    Should a letter ever go out twice (a resend after an ambiguous failure),
    the receiving side can then tell that it is the same letter.
    """
    digest = hashlib.sha256(f"{campaign}\0{contact_id}".encode()).hexdigest()[:32]
    return f"<{digest}.outreach@{domain}>"


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


def _address(display_name: str, address: str, what: str) -> Address:
    _checked(address, what)
    try:
        return Address(display_name=_checked(display_name, what), addr_spec=address)
    except (ValueError, IndexError) as err:
        raise MessageError(f"{what}: {address!r} is not a usable address ({err})") from err


def build_message(
    contact: Contact,
    rendered: Rendered,
    settings: Settings,
    *,
    now: datetime,
    to: Sequence[str] | None = None,
    subject_prefix: str = "",
    message_id: str | None = None,
) -> EmailMessage:
    """The multipart/alternative message for one contact: text, then HTML.

    ``to`` replaces the contact's own recipients (a test send goes to one
    address only, and no Cc).
    """
    where = f"{contact.id} (line {contact.line})"
    domain = settings.sender.rpartition("@")[2]
    message = EmailMessage(policy=WIRE)
    message["From"] = _address(settings.sender_name, settings.sender, "MAIL_FROM_NAME/MAIL_FROM")
    column = "mission" if contact.fields.get("mission") else "country"
    name = contact.fields.get("mission") or contact.country
    if to is None:
        message["To"] = [_address(name, a, f"contact {where}, {column}") for a in contact.to]
        if contact.cc:
            message["Cc"] = [_address("", a, f"contact {where}, cc") for a in contact.cc]
    else:
        message["To"] = [_address("", a, "the test address") for a in to]
    if settings.mail_reply_to:
        message["Reply-To"] = _address("", settings.mail_reply_to, "MAIL_REPLY_TO")
    message["Subject"] = _checked(
        subject_prefix + rendered.subject, f"the subject for {where}{_source(contact, rendered)}"
    )
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id or message_id_for(settings.campaign, contact.id, domain)
    message.set_content(rendered.text, subtype="plain", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return message


def build_letter(
    contact: Contact,
    rendered: Rendered,
    settings: Settings,
    *,
    now: datetime,
    test_to: str | None = None,
    message_id: str = "",
) -> Letter:
    """The Letter for a contact; with ``test_to``, a marked test copy for one address.

    ``message_id`` keeps the one of the letter's earlier attempts, should the
    way it is made have changed since.
    """
    if test_to is None:
        message = build_message(contact, rendered, settings, now=now, message_id=message_id)
        recipients = contact.recipients
    else:
        domain = settings.sender.rpartition("@")[2]
        message = build_message(
            contact,
            rendered,
            settings,
            now=now,
            to=[test_to],
            subject_prefix="[TEST] ",
            message_id=make_msgid("test", domain=domain),
        )
        recipients = (test_to,)
    return Letter(
        contact_id=contact.id,
        sender=settings.sender,
        recipients=recipients,
        message_id=str(message["Message-ID"]),
        subject=str(message["Subject"]),
        data=message.as_bytes(policy=WIRE),
    )
