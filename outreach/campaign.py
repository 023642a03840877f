"""A campaign, from settings to send log: the library behind every command.

The path of a letter, in the order a run takes it::

    Campaign.open(settings)      the settings, the templates and the contacts, each checked
    campaign.check(contacts)     every letter composed and checked; a spam score
    campaign.preview(folder)     every letter written to files to look at; nothing sent
    campaign.plan(log)           who is owed a letter, from the send log
    campaign.send(plan, log)     each owed letter, as checked, dated and sent; each attempt logged
    read_inbox(settings)         bounces and answers from the mailbox, into the send log
    report(settings)             what became of every contact, from the send log

``cli.py`` parses options, calls these, and prints; a script can do the same.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pickle
import resource
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from outreach.addresses import (
    AddressError,
    is_loopback,
    is_placeholder,
    split_list,
    validate_address,
)
from outreach.attachments import Attachment, AttachmentProblem
from outreach.attachments import load as load_attachment
from outreach.checks import CheckResult, SpamChecker, check_campaign
from outreach.clock import Clock, SystemClock
from outreach.contacts import Contact, ContactList, load_contacts
from outreach.credentials import PasswordPrompt
from outreach.donotcontact import DoNotContact, load_do_not_contact
from outreach.errors import (
    DeliveryError,
    MessageError,
    OutreachError,
    RepeatError,
    SettingsError,
    TemplateError,
    TemplateTooLarge,
)
from outreach.ledger import Ledger, Original
from outreach.message import Letter, build_letter, dated
from outreach.preview import PreviewResult, write_previews
from outreach.render import Rendered, Renderer, long_date
from outreach.report import Report, build_report
from outreach.sending import (
    Delivery,
    Outcome,
    Plan,
    Sender,
    Unbuilt,
    make_plan,
    refuse_placeholders,
    repeat_problem,
)
from outreach.sendlog import LogRow, SendLog, read_log
from outreach.settings import Secret, Settings, require_for_sending
from outreach.transport import Connection, Server

#: ``progress(stage, done, total)``: how far a long step has got, for a progress bar;
#: while sending, the stage is what became of the letter (sent, deferred, …).
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    """Progress nobody watches."""


@dataclass(frozen=True)
class Composed:
    """One contact's letter as rendered and built, or why it could not be."""

    contact: Contact
    rendered: Rendered | None
    letter: Letter | None
    error: OutreachError | None
    #: When it was composed: the day its text is dated (with no LETTER_DATE).
    at: datetime | None = None


class KeptLetters(AbstractContextManager["KeptLetters"]):
    """The letters a send checked, kept until each goes: every letter is composed once.

    They wait in a temporary file with no name, in memory up to 16 MB (a few
    hundred letters), then on disk in LOG_DIR (not a shared ``/tmp``), so
    20,000 letters take no more memory than 195. Keeping is a saving, never a
    condition of sending: past ``limit`` bytes (large attachments to many
    missions), or when the disk is full, the other letters are composed again
    as they go, as is a letter dated in its text whose turn comes after
    midnight, so that it never goes out dated the day before.
    """

    def __init__(self, folder: Path, limit: int = 1024**3) -> None:
        # Closed by __exit__: the letters stay while the run sends them.
        self._file = tempfile.SpooledTemporaryFile(16 * 1024 * 1024, dir=str(folder))  # noqa: SIM115
        self._room = limit
        self._at: dict[str, tuple[int, date]] = {}

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def keep(self, composed: Iterable[Composed]) -> Iterator[Composed]:
        """Each of ``composed``, kept on its way past while there is room."""
        for item in composed:
            if item.letter is not None and item.at is not None:
                self._room -= len(item.letter.data)
                try:
                    if self._room >= 0:
                        at = self._file.tell()
                        pickle.dump(item.letter, self._file)
                        self._at[item.contact.id] = (at, item.at.date())
                except OSError:
                    self._forget()
            yield item

    def take(self, contact_id: str, today: date | None) -> Letter | None:
        """The letter kept for ``contact_id``; None when there is none, or it is of another day.

        ``today`` None: the letter's text carries no date of its own (LETTER_DATE is set).
        """
        kept = self._at.pop(contact_id, None)
        if kept is None or (today is not None and kept[1] != today):
            return None
        try:
            self._file.seek(kept[0])
            letter: Letter = pickle.load(self._file)  # noqa: S301 (this run's own file, unnamed)
            self._file.seek(0, os.SEEK_END)
        except (OSError, EOFError, pickle.UnpicklingError):
            self._forget()
            return None
        return letter

    def _forget(self) -> None:
        """A file that could not be written (a full disk) is read no more."""
        self._room = -1
        self._at.clear()


@dataclass(frozen=True)
class Campaign:
    """The settings, templates and contacts of one run, each already checked."""

    settings: Settings
    contacts: ContactList
    renderer: Renderer
    do_not_contact: DoNotContact = field(default_factory=DoNotContact)
    #: The files every letter carries (ATTACHMENTS).
    attachments: tuple[Attachment, ...] = ()
    #: For a follow-up: the send log as it was at open, for each contact's first letter.
    ledger: Ledger = field(default_factory=lambda: Ledger(()))
    #: Gives the password at sign-in, when no setting does (a prompt).
    ask_password: PasswordPrompt | None = None

    @classmethod
    def open(cls, settings: Settings) -> Campaign:
        """Read the templates, the contacts, the do-not-contact list and the attachments."""
        empty = cls.without_contacts(settings)
        contacts = load_contacts(settings.contacts_file)
        if unknown := empty.do_not_contact.unknown_ids(contacts, settings.contacts_file):
            raise SettingsError(*unknown)
        return dataclasses.replace(empty, contacts=contacts)

    @classmethod
    def without_contacts(cls, settings: Settings) -> Campaign:
        """Everything but the contacts: what composing a letter for a given contact needs."""
        renderer = Renderer(
            settings.templates_dir, settings.letter_date, follow_up=bool(settings.follow_up_of)
        )
        ledger = _send_log_of_follow_up(settings)
        do_not_contact = load_do_not_contact(
            settings.do_not_contact_file, required=settings.do_not_contact_required
        )
        files = _attachments(
            "ATTACHMENTS", SettingsError, settings.attachments, Path("."), settings
        )
        contacts = ContactList(settings.contacts_file, ())
        return cls(settings, contacts, renderer, do_not_contact, files, ledger)

    def with_password(self, password: str) -> Campaign:
        """The same campaign, logging in with ``password``, given up front."""
        settings = dataclasses.replace(self.settings, smtp_password=Secret(password))
        return dataclasses.replace(self, settings=settings)

    def asking_password(self, ask: PasswordPrompt) -> Campaign:
        """The same campaign, ``ask`` giving the password at sign-in when no setting does.

        It is called once the server's certificate is checked, and only for
        a run that connects: never for one that sends nothing.
        """
        return dataclasses.replace(self, ask_password=ask)

    def select(
        self, only: Sequence[str] = (), limit: int | None = None, *, keep_held: bool = False
    ) -> list[Contact]:
        """The contacts named by ``only`` (all when empty), at most ``limit``.

        For a follow-up, only those whose first letter calls for one (see
        ``Ledger.original``): the others would get no letter. Those on the
        do-not-contact list are left out (``held_back`` names them), so that
        ``preview`` and ``check`` show only the letters a send would send;
        ``keep_held`` keeps them, for a test send to yourself.
        """
        chosen = self.contacts.select(only)
        if self.settings.follow_up_of:
            chosen = [c for c in chosen if self._original(c) is not None]
        if not keep_held:
            chosen = [c for c in chosen if self.do_not_contact.holds(c) is None]
        return chosen[:limit]

    def held_back(self, only: Sequence[str] = ()) -> list[Contact]:
        """The contacts named by ``only`` (all when empty) the do-not-contact list holds back."""
        return [
            c for c in self.select(only, keep_held=True) if self.do_not_contact.holds(c) is not None
        ]

    def _original(self, contact: Contact) -> Original | None:
        if not self.settings.follow_up_of:
            return None
        original = self.ledger.original(self.settings.follow_up_of, contact.id, contact.recipients)
        return original if original is not None and original.followed_up else None

    # -- composing ---------------------------------------------------------------------

    def compose(
        self,
        contact: Contact,
        *,
        now: datetime | None = None,
        test_to: str | None = None,
        message_id: str = "",
        original: Original | None = None,
        subject: str = "",
    ) -> tuple[Rendered, Letter]:
        """One contact's rendered letter and the message built from it.

        ``message_id`` keeps the Message-ID of the letter's earlier attempts;
        a follow-up answers the contact's ``original`` letter (by default, the
        one the send log had when the campaign was opened); ``subject`` is
        the one the plan rendered, if it did.
        """
        now = now or SystemClock().now()
        contact, original, extra = self._as_written(contact, original, now)
        rendered = self.renderer.render(contact, extra, subject=subject)
        letter = build_letter(
            contact,
            rendered,
            self.settings,
            now=now,
            test_to=test_to,
            message_id=message_id,
            attachments=self.attachments + self._attachments_of(contact),
            max_bytes=_max_bytes(self.settings),
            in_reply_to=original.message_id if original else "",
        )
        return rendered, letter

    def _as_written(
        self, contact: Contact, original: Original | None, now: datetime
    ) -> tuple[Contact, Original | None, dict[str, str]]:
        """The contact as its letter has it (no Cc the do-not-contact list holds), the
        letter it answers, and what the templates get besides the contact's columns."""
        contact = dataclasses.replace(contact, cc=self.do_not_contact.without(contact.cc))
        original = original or self._original(contact)
        language = self.renderer.language_for(contact)
        extra = original.template_values(language) if original else {}
        if not self.settings.letter_date:
            # No LETTER_DATE: the letter is dated the day it goes, as its language writes it.
            extra = {**extra, "letter_date": long_date(now.date(), language)}
        return contact, original, extra

    def _attachments_of(self, contact: Contact) -> tuple[Attachment, ...]:
        """The files named in the contact's ``attachments`` cell (relative to the contacts file)."""
        where = f"contact {contact.id} (line {contact.line}), attachments"
        cell = self.renderer.render_cell(contact, contact.fields.get("attachments", ""), where)
        base = self.settings.contacts_file.parent
        return _attachments(where, MessageError, split_list(cell), base, self.settings)

    def compose_each(
        self, contacts: Sequence[Contact] | Sequence[Delivery], *, clock: Clock | None = None
    ) -> Iterator[Composed]:
        """Every contact's letter (or each delivery's), in order, carrying on past a bad one.

        A run reports every contact whose letter cannot be built, not only
        the first. Rendering and inlining is CPU work (about 6 ms a letter),
        so a long list is composed on every core; the letters come back one
        at a time, in order, so memory stays flat however long the list.
        The letters are dated when composing began, by ``clock``, in the
        workers too (a send dates each letter again as it goes).
        """
        now = (clock or SystemClock()).now()
        workers = min(os.cpu_count() or 1, len(contacts) // LETTERS_PER_WORKER)
        if workers < 2:
            return (self._composed(contact, now) for contact in contacts)
        return self._composed_in_workers(contacts, workers, now)

    def _compose_for(self, item: Contact | Delivery, now: datetime) -> tuple[Rendered, Letter]:
        """A contact's letter; a delivery's with its Message-ID and the letter it answers."""
        if isinstance(item, Delivery):
            return self.compose(
                item.contact,
                now=now,
                message_id=item.message_id,
                original=item.original,
                subject=item.subject,
            )
        return self.compose(item, now=now)

    def _composed(self, item: Contact | Delivery, now: datetime) -> Composed:
        contact = item.contact if isinstance(item, Delivery) else item
        try:
            rendered, letter = self._compose_for(item, now)
        except TemplateTooLarge:
            raise
        except OutreachError as err:
            return Composed(contact, None, None, err)
        return Composed(contact, rendered, letter, None, now)

    def _composed_in_workers(
        self, contacts: Sequence[Contact] | Sequence[Delivery], workers: int, now: datetime
    ) -> Iterator[Composed]:
        # A worker never talks to the SMTP server: it does not get the password.
        settings = dataclasses.replace(self.settings, smtp_password=Secret(""))
        pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(settings,))
        try:
            yield from pool.map(
                _compose_in_worker, contacts, itertools.repeat(now), chunksize=CHUNK_SIZE
            )
        except BrokenProcessPool as err:
            raise TemplateError(
                "a process composing the letters ended abruptly (out of memory?); "
                f"check the templates in {self.settings.templates_dir}"
            ) from err
        finally:
            pool.shutdown(cancel_futures=True)

    # -- looking before sending ----------------------------------------------------------

    def check(
        self,
        contacts: Sequence[Contact] | Sequence[Delivery] | None = None,
        *,
        spam_all: bool = False,
        spam: SpamChecker | Literal["installed"] | None = "installed",
        progress: Progress = _no_progress,
        clock: Clock | None = None,
        keep: KeptLetters | None = None,
    ) -> CheckResult:
        """Compose and check every letter (all contacts by default); score a sample for spam.

        Raises OutreachError listing every letter that cannot be built.
        ``spam`` is the installed SpamAssassin unless given (None: no score).
        A send checks its plan's deliveries and ``keep``s their letters, to
        send them as they were checked.
        """
        chosen: Sequence[Contact] | Sequence[Delivery] = (
            self.select() if contacts is None else contacts
        )
        composed = self.compose_each(chosen, clock=clock)
        return check_campaign(
            composed if keep is None else keep.keep(composed),
            len(chosen),
            spam=SpamChecker.find() if spam == "installed" else spam,
            spam_all=spam_all,
            progress=progress,
        )

    def preview(
        self,
        folder: Path | None = None,
        contacts: Sequence[Contact] | None = None,
        *,
        progress: Progress = _no_progress,
    ) -> PreviewResult:
        """Write every letter (all contacts by default) to ``folder`` (PREVIEW_DIR).

        Nothing is sent and no network connection is opened.
        """
        chosen = self.select() if contacts is None else list(contacts)
        return write_previews(
            self.compose_each(chosen),
            folder or self.settings.preview_dir,
            self.settings.campaign,
            log_dir=self.settings.log_dir,
            progress=lambda done: progress("Previewing", done, len(chosen)),
        )

    # -- sending -------------------------------------------------------------------------

    def open_log(self) -> SendLog:
        """The send log, to be opened (and locked) with ``with``: one run at a time.

        It is opened only to send, so the settings a send needs are checked
        here, once: a run with MAIL_FROM unset stops before anything else.
        """
        require_for_sending(self.settings)
        return SendLog(self.settings.send_log)

    def plan(
        self,
        log: SendLog,
        contacts: Sequence[Contact] | None = None,
        *,
        limit: int | None = None,
        retry_failed: bool = False,
        resend_ambiguous: bool = False,
        allow_repeat: bool = False,
        retry_bounced: bool = False,
        now: datetime | None = None,
    ) -> Plan:
        """Which contacts (all by default) are owed their letter, and at which addresses.

        Refuses, before anything is sent, placeholder addresses bound for a
        server off this machine (``open_log`` has checked the settings). The plan
        lists the addresses that already got a letter with the same subject,
        in any campaign of the log (``plan.repeats``): ``send`` refuses them
        unless ``allow_repeat``. A letter that bounced goes again only with
        ``retry_bounced``, and only to an address that changed. A send log
        that is new while the server is not on this machine is flagged
        (``plan.send_log_is_new``): the letters may have gone from another
        computer, whose send log this one lacks.
        """
        chosen = list(self.contacts) if contacts is None else list(contacts)
        rows = log.rows()
        now = now or SystemClock().now()
        plan = make_plan(
            chosen,
            Ledger(rows),
            self.settings,
            now=now,
            subject_of=lambda delivery: self._subject_of(delivery, now),
            limit=limit,
            retry_failed=retry_failed,
            resend_ambiguous=resend_ambiguous,
            allow_repeat=allow_repeat,
            retry_bounced=retry_bounced,
            do_not_contact=self.do_not_contact,
        )
        server = Server.from_settings(self.settings)
        refuse_placeholders(plan.to_send, server)
        if not rows and not is_loopback(server.host):
            # A fresh clone on a second computer knows nothing of what the first sent.
            plan = dataclasses.replace(plan, send_log_is_new=True)
        if self.settings.follow_up_of:
            from outreach.inbox import last_read

            plan = dataclasses.replace(plan, inbox_read_at=last_read(self.settings))
        return plan

    def _subject_of(self, delivery: Delivery, now: datetime) -> str:
        contact, _, extra = self._as_written(delivery.contact, delivery.original, now)
        return self.renderer.subject(contact, extra)

    def send(
        self,
        plan: Plan,
        log: SendLog,
        *,
        clock: Clock | None = None,
        progress: Progress = _no_progress,
        kept: KeptLetters | None = None,
    ) -> Outcome:
        """Send the letters the plan owes: those the check ``kept``, else each composed as it goes.

        Each letter is dated as it goes. The first connection opens before
        any letter is taken, so a wrong server, password or certificate stops
        the run with nothing sent.
        """
        if plan.repeats and not plan.allow_repeat:
            raise RepeatError(repeat_problem(plan))
        clock = clock or SystemClock()
        sender = Sender(
            self.settings, plan, log, clock, progress=progress, ask_password=self.ask_password
        )
        return sender.run(self._letters(plan.to_send, clock, kept))

    def _letters(
        self, deliveries: Iterable[Delivery], clock: Clock, kept: KeptLetters | None
    ) -> Iterator[tuple[Delivery, Letter | Unbuilt]]:
        """Each delivery's letter as it is about to go, dated then.

        The letter the check kept, if it has one of today; else composed now.
        One that can no longer be built (a contact's file replaced by one too
        large, or deleted, since the check) comes as ``Unbuilt``: letters have
        gone already, so stopping the run would leave the rest unsent for one file.
        """
        for delivery in deliveries:
            now = clock.now()
            today = None if self.settings.letter_date else now.date()
            letter = kept.take(delivery.contact.id, today) if kept is not None else None
            if letter is not None:
                yield delivery, dated(letter, now)
                continue
            if today is not None:  # a subject dated by the plan may be of the day before
                delivery = dataclasses.replace(delivery, subject="")
            try:
                _, letter = self._compose_for(delivery, now)
            except OutreachError as err:
                yield delivery, Unbuilt("; ".join(err.problems))
                continue
            yield delivery, letter

    def test_send(
        self, to: str, contact: Contact, log: SendLog, *, clock: Clock | None = None
    ) -> LogRow:
        """One contact's letter, marked [TEST], to the address ``to`` only; logged as ``test``.

        No retries: the person running it is watching and can run it again.
        """
        try:
            address = validate_address(to)
        except AddressError as err:
            raise OutreachError(f"--to {to!r} is not a valid address: {err}") from err
        if is_placeholder(address) and not is_loopback(self.settings.smtp_host):
            raise OutreachError(f"--to {address}: a reserved domain, which no server can deliver")
        clock = clock or SystemClock()
        _, letter = self.compose(contact, now=clock.now(), test_to=address)
        connection = Connection(Server.from_settings(self.settings, self.ask_password))
        try:
            attempt = connection.send(letter, letter.recipients, lambda: None)
        finally:
            connection.close()
        if attempt.status != "sent":
            reply = next(iter(attempt.refused.values()), attempt.reply)
            raise DeliveryError(f"the test letter to {address} was not sent: {reply}")
        row = LogRow(
            time=clock.now(),
            campaign=self.settings.campaign,
            contact_id=contact.id,
            email=address,
            status="test",
            attempt=1,
            smtp_code=attempt.reply.code,
            smtp_reply=attempt.reply.text,
            message_id=letter.message_id,
            subject=letter.subject,
        )
        log.append(row, durable=True)
        return row


#: Below this many letters per core, composing them here is quicker than
#: starting worker processes (measured: 195 letters on 2 cores, 1.2 s here,
#: 0.7 s in two workers).
LETTERS_PER_WORKER = 50
#: Letters handed to a worker at a time.
CHUNK_SIZE = 16
#: The address space a worker may take: a worker composing letters needs a
#: few hundred MB.
WORKER_MEMORY = 4 * 1024**3
_worker_campaign: Campaign | None = None


def _start_worker(settings: Settings) -> None:
    """A worker process's start: the templates, read and compiled once."""
    global _worker_campaign
    # Ctrl-C goes to the whole process group: the main process decides what
    # happens; a worker just stops being asked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A template that would take all the memory fails in its worker (as an
    # error naming the template) instead of bringing the machine down.
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = WORKER_MEMORY if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    _worker_campaign = Campaign.without_contacts(settings)


def _compose_in_worker(item: Contact | Delivery, now: datetime) -> Composed:
    assert _worker_campaign is not None, "worker not started"
    return _worker_campaign._composed(item, now)


def _max_bytes(settings: Settings) -> int:
    return int(settings.max_message_mb * 1024 * 1024)


def _attachments(
    where: str, error: type[OutreachError], paths: Iterable[str], base: Path, settings: Settings
) -> tuple[Attachment, ...]:
    """The files at ``paths`` (relative to ``base``), or ``error`` naming each that cannot be."""
    files, problems = [], []
    for path in paths:
        try:
            files.append(load_attachment(path, base, _max_bytes(settings)))
        except AttachmentProblem as problem:
            problems.append(f"{where}: {path!r} {problem}")
    if problems:
        raise error(*problems)
    return tuple(files)


def _send_log_of_follow_up(settings: Settings) -> Ledger:
    """For a follow-up, the send log, which holds the letters of the campaign it follows.

    A name the send log does not hold (mistyped, or the log of another
    computer) is an error naming the campaigns it does hold: otherwise every
    mission would read as never having had the first letter.
    """
    if not settings.follow_up_of:
        return Ledger(())
    ledger = Ledger(read_log(settings.send_log))
    if not ledger.campaign(settings.follow_up_of):
        held = ledger.campaigns()
        raise SettingsError(
            f"FOLLOW_UP_OF={settings.follow_up_of!r}: the send log {settings.send_log} has no "
            f"letter of that campaign (it has: {', '.join(held) or 'none yet'}); check the name"
            + ("" if ledger.rows else ", and copy here the send log of the computer that sent it")
        )
    return ledger


def report(settings: Settings, campaign: str | None = None) -> Report:
    """What became of every contact of ``campaign`` (CAMPAIGN), from the send log.

    The contacts file, when it can be read, adds the contacts never attempted;
    a report never fails because of it.
    """
    try:
        contacts: ContactList | None = load_contacts(settings.contacts_file)
    except OutreachError:
        contacts = None
    listed = load_do_not_contact(
        settings.do_not_contact_file, required=settings.do_not_contact_required
    )
    made = build_report(
        read_log(settings.send_log),
        campaign or settings.campaign,
        settings.send_log,
        contacts,
        do_not_contact=listed,
    )
    # Here: they import authres and the IMAP library, which only the report and inbox need.
    from outreach.inbox import unmatched_mail
    from outreach.verdict import latest

    made.test_letter = latest(settings.log_dir)
    made.unmatched_mail = unmatched_mail(settings.log_dir)
    return made


if TYPE_CHECKING:
    from outreach.inbox import read_inbox as read_inbox
else:

    def read_inbox(*args: Any, **options: Any) -> Any:
        """``outreach.inbox.read_inbox``, imported when called: only the commands that read a
        mailbox import the IMAP library."""
        from outreach.inbox import read_inbox

        return read_inbox(*args, **options)
