"""Sending a campaign: each letter once to each recipient, with retries, at the allowed rate.

The send log decides what is owed, address by address (``plan``): an
address that has the letter, refused it for good, or may have it is not
sent to again unless the user asks. Each attempt writes ``sending`` once
the server has accepted the sender (on the disk before any of the letter
goes out) and then what became of each recipient, so that however the run
ends, the next one knows. A recipient refused for now is tried again on
its own, with the same Message-ID; the others are never sent the letter
twice.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from outreach.addresses import is_loopback, is_placeholder
from outreach.clock import Clock
from outreach.contacts import Contact
from outreach.credentials import PasswordPrompt
from outreach.donotcontact import DoNotContact
from outreach.errors import DeliveryError, OutreachError
from outreach.ledger import NEVER_GOT_IT, Ledger, Original
from outreach.message import Letter
from outreach.ratelimit import RateLimiter
from outreach.sendlog import (
    LogRow,
    SendLog,
    contact_key,
    next_free_time,
    rate_per_minute,
    sent_since,
)
from outreach.settings import Settings
from outreach.transport import (
    RECONNECT,
    THROTTLE,
    Attempt,
    Connection,
    Reply,
    Server,
    StopRun,
    Unreachable,
)

#: What a letter can come to in a run, worst last.
FINAL = ("sent", "failed", "deferred", "ambiguous")


@dataclass(frozen=True)
class Delivery:
    """One letter a run owes: to which of the contact's addresses, and its history."""

    contact: Contact
    recipients: tuple[str, ...]
    attempts: int = 0
    message_id: str = ""
    #: For a follow-up: the contact's first letter, which this one answers.
    original: Original | None = None
    #: Its subject, rendered once by the plan (for the repeat check) for the letter to carry.
    subject: str = ""


@dataclass(frozen=True)
class Repeat:
    """An address about to be sent a letter it already got, in this or another campaign."""

    contact_id: str
    address: str
    campaign: str
    time: datetime
    subject: str
    #: What became of it there: ``got``, ``may have`` (ambiguous) or ``refused``.
    kind: str = "got"


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out from the contacts and the send log."""

    campaign: str
    to_send: list[Delivery]
    sent: list[str]
    failed: list[str]
    ambiguous: list[str]
    deferred: list[str]
    held_back: int = 0
    #: Contacts whose letter bounced and that get no letter this run: without
    #: --retry-bounced all of them; with it, those whose address is unchanged.
    bounced: list[str] = field(default_factory=list)
    retry_bounced: bool = False
    retry_failed: bool = False
    resend_ambiguous: bool = False
    daily_room: int | None = None
    resume_at: datetime | None = None
    repeats: list[Repeat] = field(default_factory=list)
    #: Addresses that refused a letter with this subject before: shown, never in the way.
    refused_before: list[Repeat] = field(default_factory=list)
    allow_repeat: bool = False
    #: Contacts on the do-not-contact list: (id, why).
    do_not_contact: list[tuple[str, str]] = field(default_factory=list)
    #: For a follow-up: the campaign it follows, and the contacts it leaves
    #: out by the state of their first letter (replied, bounced, …).
    follow_up_of: str = ""
    not_followed_up: dict[str, list[str]] = field(default_factory=dict)
    #: For a follow-up: when ``outreach inbox`` last read the replies and bounces.
    inbox_read_at: datetime | None = None
    #: The send log is new (no file, or empty) and the server is a real one:
    #: on a second computer, every letter already sent from the first would
    #: be planned again.
    send_log_is_new: bool = False

    def allowing_repeats(self) -> Plan:
        """The same plan, with the repeats confirmed by the user."""
        return replace(self, allow_repeat=True)


def _same_subject(one: str, other: str) -> bool:
    return " ".join(one.split()).casefold() == " ".join(other.split()).casefold()


def make_plan(
    contacts: Sequence[Contact],
    ledger: Ledger,
    settings: Settings,
    *,
    now: datetime,
    subject_of: Callable[[Delivery], str],
    limit: int | None = None,
    retry_failed: bool = False,
    resend_ambiguous: bool = False,
    allow_repeat: bool = False,
    retry_bounced: bool = False,
    do_not_contact: DoNotContact | None = None,
) -> Plan:
    """Which of ``contacts`` are owed their letter, at which addresses; how many may go today.

    What each mission is owed is the ledger's (``Letter.owed``); the plan
    only adds what this run may do: the do-not-contact list (a contact whose
    id or To address is listed gets nothing, a listed Cc is left out), the
    reminders' selection, --limit and the daily limit.
    """
    listed = do_not_contact or DoNotContact()
    held: list[tuple[str, str]] = []
    not_followed_up: dict[str, list[str]] = defaultdict(list)
    by_status: dict[str, list[str]] = defaultdict(list)
    to_send: list[Delivery] = []
    for contact in contacts:
        letter = ledger.letter(settings.campaign, contact.id)
        original = None
        recipients = contact.recipients
        if settings.follow_up_of:
            # Never a reminder to a mission that replied, or whose letter bounced
            # or never went: not even one owed from an earlier run.
            original = ledger.original(settings.follow_up_of, contact.id, contact.recipients)
            if original is None or not original.followed_up:
                why = original.left_out_as if original else NEVER_GOT_IT
                not_followed_up[why].append(contact.id)
                continue
            recipients = original.recipients
        if letter is None:
            owed = recipients
        else:
            status = letter.status(contact.recipients)
            by_status["sent" if letter.has_letter else status].append(contact.id)
            owed = letter.owed(
                recipients,
                retry_failed=retry_failed,
                resend_ambiguous=resend_ambiguous,
                retry_bounced=retry_bounced,
            )
            if status == "bounced" and retry_bounced and not owed:
                by_status["still bounced"].append(contact.id)
        hold = listed.holds(contact)
        if hold is not None:
            if owed:
                held.append((contact.id, hold))
            continue
        owed = listed.without(owed)
        if owed:
            attempts, message_id = (letter.attempts, letter.message_id) if letter else (0, "")
            to_send.append(Delivery(contact, owed, attempts, message_id, original))
    held_back = 0 if limit is None else max(0, len(to_send) - limit)
    to_send = to_send[:limit]
    room: int | None = None
    resume_at: datetime | None = None
    if settings.send_daily_limit:
        room = max(0, settings.send_daily_limit - sent_since(ledger.rows, now - timedelta(days=1)))
        if room < len(to_send):
            resume_at = next_free_time(
                ledger.rows, now, settings.send_daily_limit, about_to_send=room
            )
    to_send = [replace(delivery, subject=subject_of(delivery)) for delivery in to_send]
    repeats = find_repeats(to_send, ledger, settings.campaign, follows=settings.follow_up_of)
    return Plan(
        campaign=settings.campaign,
        to_send=to_send,
        sent=by_status["sent"],
        failed=by_status["failed"],
        ambiguous=by_status["ambiguous"],
        deferred=by_status["retry"] + by_status["deferred"],
        held_back=held_back,
        bounced=by_status["still bounced"] if retry_bounced else by_status["bounced"],
        retry_bounced=retry_bounced,
        retry_failed=retry_failed,
        resend_ambiguous=resend_ambiguous,
        daily_room=room,
        resume_at=resume_at,
        repeats=[r for r in repeats if r.kind != "refused"],
        refused_before=[r for r in repeats if r.kind == "refused"],
        allow_repeat=allow_repeat,
        do_not_contact=held,
        follow_up_of=settings.follow_up_of,
        not_followed_up=dict(not_followed_up),
    )


def find_repeats(
    deliveries: Iterable[Delivery],
    ledger: Ledger,
    campaign: str,
    *,
    follows: str = "",
) -> list[Repeat]:
    """Addresses about to get a letter whose subject they already got, in any campaign.

    A mistyped CAMPAIGN looks like a new campaign with nobody sent to yet;
    the subject and the addresses give it away. Only an address a server
    accepted a letter for counts (or may have: ambiguous); one that refused
    it is listed as ``refused``, which stops nothing. A row written before
    subjects were kept counts as the same subject: better one question too
    many than 195 letters twice. A reminder or next year's letter has
    another subject and is no repeat, nor is the letter it ``follows``; a
    second reminder with the first reminder's subject is one.
    """
    repeats = []
    for delivery in deliveries:
        key = contact_key(delivery.contact.id)
        subject = delivery.subject
        for address in delivery.recipients:
            for letter, kind in ledger.earlier(address):
                if letter.campaign == campaign and contact_key(letter.contact_id) == key:
                    continue  # this letter's own earlier attempts: the plan handles them
                if letter.campaign == follows:
                    continue  # the letter this one follows up: another subject, by design
                if not letter.subject or _same_subject(letter.subject, subject):
                    contact_id, when = delivery.contact.id, letter.rows[-1].time
                    repeats.append(
                        Repeat(contact_id, address, letter.campaign, when, letter.subject, kind)
                    )
                    break
    return repeats


def repeat_problem(plan: Plan) -> str:
    """The repeats of a plan, in words: which campaign, when, and what to do."""
    first = plan.repeats[0]
    campaigns = sorted({r.campaign for r in plan.repeats})
    when = first.time.astimezone().strftime("%Y-%m-%d")
    subject = "the same subject" if first.subject else "a letter whose subject was not recorded"
    more = f" (and in {len(campaigns) - 1} other campaigns)" if len(campaigns) > 1 else ""
    return (
        f"{len(plan.repeats)} of the letters to send would go again: {first.address} "
        f"({first.contact_id}) got one with {subject} in campaign {first.campaign!r} on "
        f"{when}{more}. Check CAMPAIGN; nothing was sent. To send them again on purpose, "
        "add --allow-repeat"
    )


def refuse_placeholders(deliveries: Iterable[Delivery], server: Server) -> None:
    """No letter to a reserved domain leaves this machine.

    The shipped contacts are placeholders on ``.example``; sending them to a
    real server would at best bounce 195 times from a real account.
    """
    if is_loopback(server.host):
        return
    bad = [f"{d.contact.id} ({a})" for d in deliveries for a in d.recipients if is_placeholder(a)]
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DeliveryError(
            f"{len(bad)} address{'es are' if len(bad) > 1 else ' is a'} placeholder"
            f"{'s' if len(bad) > 1 else ''} on a reserved domain, which no server can deliver: "
            f"{shown}. Put the real addresses in the contacts file (or send to a server on "
            "this machine, SMTP_HOST=127.0.0.1, to try it out)"
        )


class Interrupted(OutreachError):
    """The run was stopped (Ctrl-C, SIGTERM) after the letter on the wire was logged."""

    def __init__(self, outcome: Outcome, how: str, exit_code: int) -> None:
        super().__init__(f"stopped by {how}")
        self.outcome = outcome
        self.how = how
        self.exit_code = exit_code


@dataclass
class Outcome:
    """What became of the letters of one run."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[LogRow] = field(default_factory=list)
    stopped: str | None = None
    #: When each transaction began (its ``sending`` row).
    starts: list[datetime] = field(default_factory=list)
    #: Letters of the plan this run did not finish (stopped or interrupted).
    owed: int = 0
    #: Letters that could not be built when their turn came: (contact id, why).
    unbuilt: list[tuple[str, str]] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return sum(self.counts[s] for s in FINAL)

    @property
    def all_sent(self) -> bool:
        return self.attempted == self.counts["sent"] and self.stopped is None and not self.owed

    @property
    def rate_per_minute(self) -> float | None:
        return rate_per_minute(self.starts)


@dataclass(frozen=True)
class Unbuilt:
    """A letter that could not be built when its turn came, and why.

    Everything is checked before the first letter goes; a file can still be
    replaced or deleted while the run goes on. That letter is not sent and
    no row is written for it, so it stays owed; the run goes on with the
    others, and the summary names it.
    """

    why: str


class Terminated(BaseException):
    """SIGTERM outside a send's loop: raised in the main thread within ``terminating``."""


class _Again(Exception):
    """Some recipients were refused for now: another attempt follows after a pause."""

    def __init__(self, replies: Mapping[str, Reply], attempt: Attempt) -> None:
        super().__init__(attempt.reply)
        self.replies = dict(replies)
        self.attempt = attempt


class _Stopped(Exception):
    """The run was stopped while this letter waited for its turn."""


#: The signals that stop a run, with how the summary names them and the exit status.
STOPPING = {signal.SIGINT: ("Ctrl-C", 130), signal.SIGTERM: ("SIGTERM", 143)}
#: A second signal this soon after the first is the first delivered twice (to the
#: process and to its group, as ``timeout`` sends it); later, it is the person insisting.
ECHO_SECONDS = 1.0


@contextmanager
def _handling(signums: Iterable[int], handle: Callable[[int, object], None]) -> Iterator[None]:
    """``handle`` answers ``signums`` within the block (only the main thread may set one).

    A signal within ``ECHO_SECONDS`` of the first is that one again, and
    is not answered: a stop asked once is not a stop asked twice.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first: list[float] = []

    def answer(signum: int, frame: object) -> None:
        now = time.monotonic()
        if not first:
            first.append(now)
        elif now - first[0] < ECHO_SECONDS:
            return
        handle(signum, frame)

    before = {signum: signal.signal(signum, answer) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def terminating() -> AbstractContextManager[None]:
    """SIGTERM stops a command as Ctrl-C does: the letters on the wire finish and are logged."""

    def terminated(signum: int, frame: object) -> None:
        raise Terminated

    return _handling((signal.SIGTERM,), terminated)


@contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM set ``stop`` instead of breaking off whatever runs.

    The letter on the wire is finished and logged; then the run stops. The
    list yielded holds the signals received. A second signal of either kind
    (a moment after the first: see ``_handling``) stops at once: the person
    means it (a letter on the wire then stays ``ambiguous`` in the log, as
    after a power cut).
    """
    received: list[int] = []

    def handle(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()
        if len(received) > 1:
            raise KeyboardInterrupt

    with _handling(STOPPING, handle):
        yield received


class Sender:
    """Sends the letters of a plan, one after another, over one SMTP connection.

    One connection is all any provider's rate lets anyone use: at Microsoft
    365's 30 a minute it is idle most of the time, and across a 50 ms round
    trip it carries 195 letters in about 43 seconds.
    """

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        log: SendLog,
        clock: Clock,
        *,
        progress: Callable[[str, int, int], None] = lambda status, done, total: None,
        ask_password: PasswordPrompt | None = None,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.log = log
        self.clock = clock
        self.server = Server.from_settings(settings, ask_password)
        self.limiter = RateLimiter(settings.send_rate_per_minute, clock)
        self.progress = progress
        self.outcome = Outcome()
        self._stop = threading.Event()
        self._room = plan.daily_room
        #: The wall clock's time at the monotonic clock's zero, for the rows' times.
        self._offset = datetime.min.replace(tzinfo=UTC)

    def run(self, letters: Iterable[tuple[Delivery, Letter | Unbuilt]]) -> Outcome:
        """Send ``letters`` (each with its delivery, in the plan's order); what became of them.

        A letter that could not be built (``Unbuilt``) is not sent and stays
        owed; the others go. Ctrl-C or SIGTERM stops the run once the letter
        on the wire is logged, and raises ``Interrupted`` with the outcome so far.
        """
        connection = Connection(self.server)
        # A wrong host, password or certificate stops the run here, with nothing
        # sent. Ctrl-C still stops at once: a password prompt may be waiting.
        try:
            connection.open()
        except Unreachable as err:
            raise DeliveryError(f"cannot connect to {self.server.name}: {err.reply}") from None
        with stopped_by_signals(self._stop) as received:
            try:
                for delivery, letter in letters:
                    if self._stop.is_set():
                        break
                    if isinstance(letter, Unbuilt):
                        self.outcome.unbuilt.append((delivery.contact.id, letter.why))
                        self._progressed("not sent")
                        continue
                    self._deliver(connection, delivery, letter)
            finally:
                self.outcome.owed = len(self.plan.to_send) - self.outcome.attempted
                connection.close()
        if received:
            raise Interrupted(self.outcome, *STOPPING[signal.Signals(received[0])])
        return self.outcome

    def _take_room(self) -> bool:
        """One more transaction within SEND_DAILY_LIMIT? Every attempt counts, retries too."""
        if self._room is None:
            return True
        if self._room <= 0:
            if self.outcome.stopped is None:
                limit = self.settings.send_daily_limit
                resume = next_free_time(self.log.rows(), self.clock.now(), limit)
                self.outcome.stopped = (
                    f"SEND_DAILY_LIMIT={limit} reached; run again after "
                    f"{resume.astimezone().strftime('%Y-%m-%d %H:%M %Z')} to send the rest"
                )
            self._stop.set()
            return False
        self._room -= 1
        return True

    def _wait(self, seconds: float) -> None:
        if self.clock.wait(self._stop, seconds):
            raise _Stopped

    def _deliver(self, connection: Connection, delivery: Delivery, letter: Letter) -> None:
        pending = list(delivery.recipients)
        attempt = delivery.attempts
        ended: dict[str, LogRow] = {}
        started = 0.0

        def record(
            status: str,
            addresses: Sequence[str],
            reply: Reply | None = None,
            at: datetime | None = None,
        ) -> LogRow:
            """Append a row of this attempt; a ``sending`` row is also put on the disk."""
            row = LogRow(
                time=at or self.clock.now(),
                campaign=self.plan.campaign,
                contact_id=delivery.contact.id,
                email=";".join(addresses),
                status=status,
                attempt=attempt,
                smtp_code=reply.code if reply is not None and reply.is_valid else None,
                smtp_reply=reply.text if reply is not None else "",
                message_id=letter.message_id,
                subject=letter.subject,
                follows=self.plan.follow_up_of,
            )
            self.log.append(row, durable=status == "sending")
            return row

        def record_each(status: str, replies: Mapping[str, Reply | None]) -> list[LogRow]:
            """One row per distinct reply, naming the addresses it was given for."""
            grouped: dict[Reply | None, list[str]] = defaultdict(list)
            for address, reply in replies.items():
                grouped[reply].append(address)
            return [record(status, addresses, reply) for reply, addresses in grouped.items()]

        def begin() -> None:
            # The row's time is when the attempt began, as the rate limiter let
            # it: the log shows the pace the limit set, not the server's replies.
            # The wall clock's offset is read once a run (again if it jumps), so
            # that two rows are as far apart as the limiter put them, to the
            # millisecond the log keeps: a run at the limit never reads above it.
            offset = self.clock.now() - timedelta(seconds=self.clock.monotonic())
            if abs(offset - self._offset) > timedelta(seconds=1):
                self._offset = offset
            began = self._offset + timedelta(seconds=started)
            self.outcome.starts.append(record("sending", pending, at=began).time)

        def one_attempt() -> None:
            nonlocal attempt, started
            if not self._take_room():
                raise _Stopped
            started = self.limiter.acquire(self._stop)
            if self._stop.is_set():
                raise _Stopped
            attempt += 1
            try:
                result = connection.send(letter, pending, begin)
            except StopRun as stop:
                # Refused for a reason every letter shares (a sender the account
                # may not send as): this letter stays owed, and the run stops.
                record_each("retry", dict.fromkeys(pending, stop.reply))
                raise
            again: dict[str, Reply] = {}
            for address, reply in result.refused.items():
                if reply.code >= 500:
                    ended[address] = record("failed", [address], reply)
                else:
                    again[address] = reply
            if result.status in ("sent", "failed", "ambiguous"):
                row = record(result.status, result.accepted, result.reply)
                ended.update(dict.fromkeys(result.accepted, row))
            elif result.status == "retry":
                for address in pending:
                    if address not in result.refused:
                        again[address] = result.reply
            pending[:] = [a for a in pending if a in again]
            if pending:
                raise _Again(again, result)

        def before_retry(state: RetryCallState) -> None:
            assert state.outcome is not None
            assert state.next_action is not None
            error = state.outcome.exception()
            assert isinstance(error, _Again)
            record_each("retry", error.replies)
            result = error.attempt
            if result.status == "retry" and result.kind == THROTTLE:
                self.limiter.throttle(state.next_action.sleep)

        backoff = wait_random_exponential(
            multiplier=self.settings.send_retry_wait_seconds,
            max=self.settings.send_retry_max_wait_seconds,
        )

        def pause(state: RetryCallState) -> float:
            # A refused token needs a fresh one, not time: reconnect at once.
            error = state.outcome.exception() if state.outcome is not None else None
            if isinstance(error, _Again) and error.attempt.kind == RECONNECT:
                return 0.0
            return backoff(state)

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.send_max_attempts),
            wait=pause,
            retry=retry_if_exception_type(_Again),
            sleep=self._wait,
            before_sleep=before_retry,
            reraise=True,
        )
        try:
            retrying(one_attempt)
        except _Stopped:
            if not ended:
                return  # never tried, or only refused for now: still owed
        except _Again as err:
            rows = record_each("deferred", err.replies)
            ended.update({a: row for row in rows for a in row.addresses})
        self._finish(ended, bool(pending))

    def _finish(self, ended: dict[str, LogRow], owed: bool) -> None:
        statuses = {row.status for row in ended.values()}
        status = next(
            (s for s in ("ambiguous", "deferred", "failed") if s in statuses),
            "deferred" if owed else "sent",
        )
        self.outcome.counts[status] += 1
        if status != "sent":
            self.outcome.problems.extend(
                dict.fromkeys(r for r in ended.values() if r.status != "sent")
            )
        self._progressed(status)

    def _progressed(self, status: str) -> None:
        """Progress as every step tells it: here the stage is what became of the letter."""
        done = self.outcome.attempted + len(self.outcome.unbuilt)
        self.progress(status, done, len(self.plan.to_send))
