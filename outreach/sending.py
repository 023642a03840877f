"""Sending a campaign: each letter once, with retries, at the allowed rate.

The send log decides what is owed: a contact whose latest row is ``sent``,
``failed`` or ``ambiguous`` is not sent again unless the user asks. Each
attempt writes ``sending`` once the server has accepted the sender (on the
disk before the end of the letter goes out) and then what became of it, so
that however the run ends, the next one knows.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
from outreach.errors import DeliveryError, SendLogError
from outreach.message import Letter
from outreach.ratelimit import RateLimiter
from outreach.sendlog import DONE, LogRow, SendLog, latest_rows, next_free_time, sent_since
from outreach.settings import Settings
from outreach.transport import Ambiguous, Connection, Delivered, Permanent, Server, Transient

#: The statuses a letter can end a run with.
FINAL = ("sent", "failed", "deferred", "ambiguous")


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out from the contacts and the send log."""

    campaign: str
    to_send: list[Contact]
    sent: list[str]
    failed: list[str]
    ambiguous: list[str]
    deferred: list[str]
    held_back: int = 0
    previous_attempts: dict[str, int] = field(default_factory=dict)
    daily_room: int | None = None
    resume_at: datetime | None = None


def make_plan(
    contacts: Sequence[Contact],
    rows: Sequence[LogRow],
    settings: Settings,
    *,
    now: datetime,
    limit: int | None = None,
    retry_failed: bool = False,
    resend_ambiguous: bool = False,
) -> Plan:
    """Which of ``contacts`` are owed their letter, and how many may go today."""
    latest = latest_rows(rows, settings.campaign)
    attempts: dict[str, int] = {}
    for row in rows:
        if row.campaign == settings.campaign and row.status != "test":
            attempts[row.contact_id] = max(attempts.get(row.contact_id, 0), row.attempt)
    by_status: dict[str, list[str]] = {"sent": [], "failed": [], "ambiguous": [], "deferred": []}
    to_send: list[Contact] = []
    for contact in contacts:
        status = latest[contact.id].status if contact.id in latest else None
        if status in by_status:
            by_status[status].append(contact.id)
        again = (status == "failed" and retry_failed) or (
            status == "ambiguous" and resend_ambiguous
        )
        if status not in DONE or again:
            to_send.append(contact)
    held_back = 0
    if limit is not None and len(to_send) > limit:
        held_back, to_send = len(to_send) - limit, to_send[:limit]
    room: int | None = None
    resume_at: datetime | None = None
    if settings.send_daily_limit:
        room = max(0, settings.send_daily_limit - sent_since(rows, now - timedelta(days=1)))
        if room < len(to_send):
            resume_at = next_free_time(rows, now, settings.send_daily_limit)
    return Plan(
        campaign=settings.campaign,
        to_send=to_send,
        sent=by_status["sent"],
        failed=by_status["failed"],
        ambiguous=by_status["ambiguous"],
        deferred=by_status["deferred"],
        held_back=held_back,
        previous_attempts=attempts,
        daily_room=room,
        resume_at=resume_at,
    )


def refuse_placeholders(contacts: Iterable[Contact], server: Server) -> None:
    """No letter to a reserved domain leaves this machine.

    The shipped contacts are placeholders on ``.example``; sending them to a
    real server would at best bounce 195 times from a real account.
    """
    if is_loopback(server.host):
        return
    bad = [f"{c.id} ({a})" for c in contacts for a in c.recipients if is_placeholder(a)]
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DeliveryError(
            f"{len(bad)} address{'es are' if len(bad) > 1 else ' is a'} placeholder"
            f"{'s' if len(bad) > 1 else ''} on a reserved domain, which no server can deliver: "
            f"{shown}. Put the real addresses in the contacts file (or send to a server on "
            "this machine, SMTP_HOST=127.0.0.1, to try it out)"
        )


@dataclass
class Outcome:
    """What became of the letters of one run."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[LogRow] = field(default_factory=list)
    stopped: str | None = None
    first: datetime | None = None
    last: datetime | None = None

    @property
    def attempted(self) -> int:
        return sum(self.counts[s] for s in FINAL)

    @property
    def all_sent(self) -> bool:
        return self.attempted == self.counts["sent"] and self.stopped is None


class Sender:
    """Runs the letters of a plan through ``SEND_CONNECTIONS`` connections."""

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        log: SendLog,
        clock: Clock,
        *,
        progress: Callable[[str], None] = lambda status: None,
        connection: Callable[[Server], Connection] = Connection,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.log = log
        self.clock = clock
        self.server = Server.from_settings(settings)
        self.limiter = RateLimiter(settings.send_rate_per_minute, clock)
        self.progress = progress
        self.connection = connection
        self.outcome = Outcome()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._fatal: BaseException | None = None

    def run(self, letters: Iterable[Letter]) -> Outcome:
        """Send ``letters`` (in the plan's order); return what became of them.

        The first connection is opened before anything else, so that a wrong
        host, port, password or certificate stops the run with nothing sent.
        """
        first = self.connection(self.server)
        try:
            first.open()
        except Transient as err:
            raise DeliveryError(f"cannot connect to {self.server.name}: {err.reply}") from None
        room = self.plan.daily_room
        work: queue.Queue[Letter | None] = queue.Queue(maxsize=2 * self.settings.send_connections)
        workers = [
            threading.Thread(
                target=self._work,
                args=(work, first if n == 0 else self.connection(self.server)),
                name=f"smtp-{n}",
                daemon=True,
            )
            for n in range(self.settings.send_connections)
        ]
        for worker in workers:
            worker.start()
        try:
            for fed, letter in enumerate(letters):
                if room is not None and fed >= room:
                    # Stop feeding; the letters already queued are within the quota.
                    with self._lock:
                        self.outcome.stopped = self.outcome.stopped or self._daily_limit_reached()
                    break
                if self._stop.is_set():
                    break
                while not self._put(work, letter):
                    if self._stop.is_set():
                        break
        except BaseException:
            # Ctrl-C, or a letter that could not be composed: the letters being
            # sent finish and are logged; the queued ones are left for a rerun.
            self._stop.set()
            raise
        finally:
            for _ in workers:
                self._put(work, None, wait=True)
            for worker in workers:
                worker.join()
        if self._fatal is not None:
            raise self._fatal
        return self.outcome

    def _daily_limit_reached(self) -> str:
        resume = next_free_time(self.log.rows(), self.clock.now(), self.settings.send_daily_limit)
        return (
            f"SEND_DAILY_LIMIT={self.settings.send_daily_limit} reached; run again after "
            f"{resume.astimezone().strftime('%Y-%m-%d %H:%M %Z')} to send the rest"
        )

    def _put(
        self, work: queue.Queue[Letter | None], item: Letter | None, wait: bool = False
    ) -> bool:
        try:
            work.put(item, timeout=None if wait else 0.2)
        except queue.Full:
            return False
        return True

    def _halt(self, reason: str) -> None:
        with self._lock:
            if self.outcome.stopped is None:
                self.outcome.stopped = reason
        self._stop.set()

    def _work(self, work: queue.Queue[Letter | None], connection: Connection) -> None:
        try:
            while (letter := work.get()) is not None:
                if self._stop.is_set():
                    continue  # drain: the stop reason says why these were not sent
                try:
                    self._deliver(connection, letter)
                except DeliveryError as err:
                    self._fatal = self._fatal or err
                    self._stop.set()
                except BaseException as err:  # a bug: stop everything, keep its traceback
                    self._fatal = self._fatal or err
                    self._stop.set()
        finally:
            connection.close()

    def _record(self, row: LogRow) -> LogRow:
        """Write ``row`` (made by ``_row``) to the send log."""
        with self._writing_log():
            self.log.append(row)
        return row

    def _record_sending(self, letter: Letter, attempt: int) -> None:
        """The ``sending`` row, on the disk before any of the letter goes out."""
        with self._writing_log():
            self.log.append(self._row(letter, "sending", attempt), durable=True)

    def _row(
        self,
        letter: Letter,
        status: str,
        attempt: int,
        *,
        smtp_code: int | None = None,
        smtp_reply: str = "",
        email: str | None = None,
    ) -> LogRow:
        return LogRow(
            time=self.clock.now(),
            campaign=self.plan.campaign,
            contact_id=letter.contact_id,
            email=";".join(letter.recipients) if email is None else email,
            status=status,
            attempt=attempt,
            smtp_code=smtp_code,
            smtp_reply=smtp_reply,
            message_id=letter.message_id,
        )

    @contextlib.contextmanager
    def _writing_log(self) -> Iterator[None]:
        """A send log that cannot be written stops the run, saying so."""
        try:
            yield
        except OSError as err:
            raise SendLogError(
                f"{self.log.path}: cannot be written ({err.strerror}); stopped so that "
                "no letter goes out unrecorded"
            ) from err

    def _deliver(self, connection: Connection, letter: Letter) -> None:
        attempt = self.plan.previous_attempts.get(letter.contact_id, 0)

        def one_attempt() -> Delivered:
            nonlocal attempt
            attempt += 1
            self.limiter.acquire()
            if self._stop.is_set():
                raise _Stopped
            return connection.send(letter, lambda: self._record_sending(letter, attempt))

        def before_retry(state: RetryCallState) -> None:
            assert state.outcome is not None
            assert state.next_action is not None
            error = state.outcome.exception()
            assert isinstance(error, Transient)
            self._record(
                self._row(letter, "retry", attempt, smtp_code=error.code, smtp_reply=error.reply)
            )
            if error.slow_down:
                self.limiter.slow_down(state.next_action.sleep)

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.send_max_attempts),
            wait=wait_random_exponential(
                multiplier=self.settings.send_retry_wait_seconds,
                max=self.settings.send_retry_max_wait_seconds,
            ),
            retry=retry_if_exception_type(Transient),
            sleep=self.clock.sleep,
            before_sleep=before_retry,
            reraise=True,
        )
        try:
            delivered = retrying(one_attempt)
        except _Stopped:
            return
        except Transient as err:
            self._finish(letter, "deferred", attempt, err.code, err.reply)
            if err.code is None:
                self._halt(
                    f"lost {self.server.name} ({err.reply}); run again later to send the rest"
                )
        except Permanent as err:
            self._finish(letter, "failed", attempt, err.code, err.reply)
        except Ambiguous as err:
            self._finish(letter, "ambiguous", attempt, None, err.reply)
        else:
            for address, (code, reply) in delivered.refused.items():
                self._record(
                    self._row(
                        letter, "refused", attempt, email=address, smtp_code=code, smtp_reply=reply
                    )
                )
            self._finish(letter, "sent", attempt, delivered.code, delivered.reply)

    def _finish(
        self, letter: Letter, status: str, attempt: int, code: int | None, reply: str
    ) -> None:
        row = self._record(self._row(letter, status, attempt, smtp_code=code, smtp_reply=reply))
        with self._lock:
            self.outcome.counts[status] += 1
            if status != "sent":
                self.outcome.problems.append(row)
            self.outcome.first = self.outcome.first or row.time
            self.outcome.last = row.time
        self.progress(status)


class _Stopped(Exception):
    """The run was stopped while this letter waited for its turn."""
