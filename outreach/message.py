"""Turning a rendered letter into the exact bytes that go on the wire.

The stdlib ``email`` package builds the MIME structure; nothing here
assembles MIME by hand. What this module adds is the refusal of any header
value that could break out of its header line, before the stdlib sees it.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.generator import BytesGenerator
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, make_msgid
from typing import Any

from outreach.contacts import Contact
from outreach.errors import MessageError
from outreach.headers import unsafe_header_reason
from outreach.render import Rendered
from outreach.settings import Settings


class _FoldedOnce:
    """A header that folds itself once and keeps the result.

    Folding re-parses the header's value every time a message is written.
    A header object never changes once made, and ``_Headers`` makes one
    object per distinct value, so a header that is the same in every letter
    (From, Reply-To, each part's Content-Type) is folded once per campaign.
    """

    _folded: tuple[Policy, str] | None = None

    def fold(self, *, policy: Policy) -> str:
        if self._folded is None or self._folded[0] is not policy:
            self._folded = (policy, super().fold(policy=policy))  # type: ignore[misc]
        return self._folded[1]


class _Headers(HeaderRegistry):
    """The stdlib's header registry, making one header object per distinct value.

    ``HeaderRegistry`` creates a new class for every header of every message
    and parses every value anew, though the classes it makes for one header
    name are all alike and most values recur in every letter. Header
    objects never change once made, so the one made for a value serves
    every letter that has it; ``tests/test_message.py`` checks that every
    letter comes out byte for byte as with the stdlib's own registry.
    """

    @functools.cache  # noqa: B019 - one registry lives as long as the process
    def __getitem__(self, name: str) -> type[BaseHeader]:
        plain = self.registry.get(name.lower(), self.default_class)
        return type("_" + plain.__name__, (_FoldedOnce, plain, self.base_class), {})

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if isinstance(value, str):
            return _header(self, name, value)
        return self[name](name, value)


@functools.lru_cache(maxsize=512)
def _header(registry: _Headers, name: str, value: str) -> BaseHeader:
    return registry[name](name, value)


#: CRLF line ends and header folding as SMTP wants them.
WIRE = policy.SMTP.clone(header_factory=_Headers())


class _WireGenerator(BytesGenerator):
    """The stdlib's generator, ending the lines of a body in one pass.

    The stdlib splits every body into lines and writes each line and each
    line end on its own (some 500 writes a letter, a tenth of the time of
    composing one). A quoted-printable body made here ends its lines with
    LF alone, so putting the policy's line end in their place is one
    ``str.replace``, with the very same result; a body holding any CR takes
    the stdlib's own path. ``tests/test_message.py`` checks every letter
    against the stdlib's generator.
    """

    def _write_lines(self, lines: str) -> None:
        if "\r" in lines:
            super()._write_lines(lines)  # type: ignore[misc]
        elif lines:
            self.write(lines.replace("\n", self._NL))  # type: ignore[attr-defined]


def wire_bytes(message: EmailMessage) -> bytes:
    """``message.as_bytes(policy=WIRE)``, written by ``_WireGenerator``."""
    out = io.BytesIO()
    _WireGenerator(out, mangle_from_=False, policy=WIRE).flatten(message)
    return out.getvalue()


@dataclass(frozen=True)
class Letter:
    """A message ready to send: its envelope and its serialised bytes.

    The same bytes (so the same Message-ID and Date) go out on every attempt,
    which lets a receiving server recognise a retry as the same message.
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


def boundary_for(campaign: str) -> str:
    """The MIME boundary of a campaign's letters: the stdlib's form, derived from its name.

    The stdlib otherwise makes a random one for every letter and compiles a
    regular expression to search every body for it; one boundary for the
    whole campaign also makes the ``Content-Type`` header the same in every
    letter, parsed and folded once (``_Headers``). Both bodies are
    quoted-printable, in which ``=`` only ever starts an escape (``=3D``) or
    ends a line, so ``==`` never occurs in them: a boundary holding ``==``
    cannot collide with a body, whatever the campaign.
    """
    digest = hashlib.sha256(campaign.encode()).digest()
    return "=" * 15 + f"{int.from_bytes(digest[:8], 'big'):019d}=="


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

    ``to`` replaces the contact's own recipients (a test send goes to the
    sender's own address only, and no Cc).
    """
    where = f"{contact.id} (line {contact.line})"
    domain = settings.sender.rpartition("@")[2]
    message = EmailMessage(policy=WIRE)
    # As text, the same in every letter: one header object, parsed and folded once.
    message["From"] = str(
        _address(settings.sender_name, settings.sender, "MAIL_FROM_NAME/MAIL_FROM")
    )
    column = "mission" if contact.fields.get("mission") else "country"
    name = contact.fields.get("mission") or contact.country
    if to is None:
        message["To"] = [_address(name, a, f"contact {where}, {column}") for a in contact.to]
        if contact.cc:
            message["Cc"] = [_address("", a, f"contact {where}, cc") for a in contact.cc]
    else:
        message["To"] = [_address("", a, "the test address") for a in to]
    if settings.mail_reply_to:
        message["Reply-To"] = str(_address("", settings.mail_reply_to, "MAIL_REPLY_TO"))
    message["Subject"] = _checked(
        subject_prefix + rendered.subject, f"the subject for {where}{_source(contact, rendered)}"
    )
    message["Date"] = format_datetime(now)
    message_id = message_id or message_id_for(settings.campaign, contact.id, domain)
    message["Message-ID"] = message_id
    message["MIME-Version"] = "1.0"
    boundary = boundary_for(settings.campaign)
    message["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
    message.attach(_text_part(rendered.text, "plain"))
    message.attach(_text_part(rendered.html, "html"))
    return message


def _text_part(text: str, subtype: str) -> EmailMessage:
    """One version of the letter: UTF-8, quoted-printable, lines ending as on the wire.

    The headers are set as ``set_content`` would set them, and shared by
    every letter (``_Headers``); the body is encoded by ``binascii`` rather
    than ``set_content``'s pure-Python encoder, which cost a third of the
    time of building a letter. Its lines keep to the 76 characters RFC 2045
    asks of quoted-printable, and a line holding a lone dot is encoded.
    """
    part = EmailMessage(policy=WIRE)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    # Line ends as set_content makes them: each of LF, CR and CRLF ends a line.
    body = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    part.set_payload(binascii.b2a_qp(body, istext=True).decode("ascii"))
    return part


def build_letter(
    contact: Contact,
    rendered: Rendered,
    settings: Settings,
    *,
    now: datetime,
    test_to: str | None = None,
) -> Letter:
    """The Letter for a contact; with ``test_to``, a marked test copy for one address."""
    if test_to is None:
        message = build_message(contact, rendered, settings, now=now)
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
        data=wire_bytes(message),
    )
