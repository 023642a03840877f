"""Composing letters in worker processes, on every core, in order.

Rendering a letter and building its message is CPU work in pure Python
(about 4 ms a letter), and every letter of a preview, a check or a send is
composed. One process leaves the other cores idle, so the letters are
composed in a small pool of worker processes and handed back **in the order
asked for**, through a bounded window: never more than about a hundred
letters are composed ahead of the one being used, however long the list, so
memory stays flat.

Each worker composes with the same code (``Campaign.compose``) from the
same templates and data files, so a letter composed in a worker is byte for
byte the letter composed in the main process. The time in the ``Date``
header is taken in the main process when the letter is asked for. A letter
that cannot be composed comes back as its ``OutreachError`` (which keeps all
its problems across the process boundary) and is reported exactly as
before; any other exception is a bug and is raised in the main process.

The commands start the workers before they read the contacts
(``Composer.start``), so that reading them and readying the workers overlap.
A few letters (a test send, ``--only``) are composed in the main process:
starting workers would cost more than composing them.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

from outreach.checks import letter_findings
from outreach.compose import Campaign, Clock, Composed, utc_now
from outreach.contacts import Contact, ContactList
from outreach.errors import OutreachError
from outreach.message import Letter
from outreach.render import Rendered, Renderer
from outreach.settings import Secret, Settings

#: What a worker sends back: only the letter for a send, the letter with its
#: rendered parts and warnings for a preview, nothing but errors for a check.
Mode = Literal["letter", "preview", "check"]

#: At most this many worker processes: past that, the main process (and the
#: SMTP server's answers) cannot keep up anyway.
MAX_PROCESSES = 4
#: Fewer letters than this are composed in the main process: starting the
#: workers (a fresh interpreter importing outreach) costs about as much as
#: composing a few hundred letters here (measured with ``make bench``).
SMALL_RUN = 400
#: The same, when workers can be forked from a process with no other thread
#: (``outreach preview`` and ``check``): starting them then takes milliseconds.
SMALL_FORKED_RUN = 100
#: Letters per task, at first and at the end of a run: few, so that the first
#: letters come back at once and the workers finish together.
MIN_CHUNK = 4
#: Letters per task in the middle of a long run. Each task costs the main
#: process about a millisecond of CPU of its own (the pool's threads and
#: pipes), taken from the workers on a machine with few cores: checking
#: 2,000 letters on two cores cost it 0.8 s in tasks of four, 0.35 s in
#: tasks of up to sixteen.
MAX_CHUNK = 16
#: Tasks in flight per worker: keeps every worker busy while the main
#: process waits on one, and bounds how far composing runs ahead of sending.
TASKS_PER_PROCESS = 3


@dataclass(frozen=True)
class Previewed(Composed):
    """A composed letter with the warnings and links ``letter_findings`` gives it."""

    warnings: tuple[str, ...] = ()
    links: tuple[str, ...] = ()


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_processes(count: int) -> int:
    """How many workers for ``count`` letters: none for a small run."""
    if count < (SMALL_FORKED_RUN if _can_fork() else SMALL_RUN):
        return 0
    return max(1, min(MAX_PROCESSES, usable_cpus()))


def _can_fork() -> bool:
    """True when workers can be forked from this process as it is.

    A forked worker starts at once, with everything already imported, but it
    inherits every lock in the state it was in: that is safe only while this
    process runs no other thread.
    """
    return threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()


# -- the worker side ---------------------------------------------------------

_campaign: Campaign | None = None


def _settle(folder: str) -> None:
    # Ctrl-C goes to the whole process group: the main process decides what
    # happens (the letters being sent finish); a worker just stops being asked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The fork server may have started in another folder: work in the main
    # process's, so relative paths (and the messages naming them) are the same.
    os.chdir(folder)
    # Composing fills the CPU time that sending leaves: when the cores are
    # busy, the SMTP connections (which keep the server waiting) go first.
    os.nice(5)


def _start_worker(
    folder: str,
    settings: Settings,
    templates_dir: Path,
    letter_date: str,
    data: dict[str, list[dict[str, str]]],
) -> None:
    _settle(folder)
    global _campaign
    renderer = Renderer(templates_dir, letter_date)
    renderer.data = data
    renderer.warm()
    _campaign = Campaign(
        settings=settings,
        contacts=ContactList(path=settings.contacts_file, contacts=()),
        renderer=renderer,
    )


def _adopt_campaign(folder: str, campaign: Campaign) -> None:
    """A forked worker's start: the campaign is already in its memory."""
    _settle(folder)
    global _campaign
    _campaign = campaign
    campaign.renderer.warm()


def _started() -> None:
    """A task that does nothing: submitting it makes the pool start its workers."""


_Result = Letter | tuple[Rendered, Letter, tuple[str, ...], tuple[str, ...]] | None | OutreachError


def _compose_chunk(jobs: list[tuple[Contact, datetime]], mode: Mode) -> list[_Result]:
    campaign = _campaign
    assert campaign is not None, "worker not started"
    return [_compose_one(campaign, contact, when, mode) for contact, when in jobs]


def _compose_one(campaign: Campaign, contact: Contact, when: datetime, mode: Mode) -> _Result:
    try:
        rendered, letter = campaign.compose(contact, now=lambda: when)
    except OutreachError as err:
        return err
    if mode == "letter":
        return letter
    if mode == "check":
        return None
    warnings, links = letter_findings(rendered, letter, contact)
    return rendered, letter, tuple(warnings), tuple(links)


def _composed(contact: Contact, result: _Result) -> Composed:
    if isinstance(result, OutreachError):
        return Composed(contact, None, None, result)
    if isinstance(result, Letter):
        return Composed(contact, None, result, None)
    if result is None:
        return Composed(contact, None, None, None)
    rendered, letter, warnings, links = result
    return Previewed(contact, rendered, letter, None, warnings, links)


# -- the main side -----------------------------------------------------------


def chunks(count: int, workers: int) -> Iterator[tuple[int, int]]:
    """Where each task of a run of ``count`` letters starts and ends.

    Tasks start at ``MIN_CHUNK`` letters and double up to ``MAX_CHUNK``; near
    the end they shrink again, to what is left shared among the workers,
    so that no worker is left with a long task while the others idle.
    """
    start, size = 0, MIN_CHUNK
    while start < count:
        share = (count - start) // (2 * workers)
        end = min(count, start + max(MIN_CHUNK, min(size, share)))
        yield start, end
        start, size = end, min(2 * size, MAX_CHUNK)


def _context() -> multiprocessing.context.BaseContext:
    """A fork while this process has no other thread, else a fresh interpreter's.

    A plain fork only then: the main process may be running threads (the
    SMTP connections, a progress bar, a test's SMTP server), and a forked
    child would inherit their locks in whatever state they were.
    """
    if _can_fork():
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["outreach.pipeline"])
        return context
    return multiprocessing.get_context("spawn")


class Composer:
    """Composes letters for a campaign, in order, in worker processes or here.

    Use it as a context manager; the workers start at the first run that
    wants them and stop at the end of the ``with`` block.
    """

    def __init__(self, campaign: Campaign, *, processes: int | None = None) -> None:
        self.campaign = campaign
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0
        self._frozen = False

    def __enter__(self) -> Composer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)
        if self._frozen:
            self._frozen = False
            gc.unfreeze()

    def _workers(self, count: int, processes: int | None) -> int:
        chosen = processes if processes is not None else self.processes
        return default_processes(count) if chosen is None else chosen

    def _pool_of(self, size: int) -> ProcessPoolExecutor:
        if self._pool is not None and self._pool_size != size:
            self.close()
        if self._pool is None:
            settings = self.campaign.settings
            renderer = self.campaign.renderer
            # A worker never talks to the SMTP server: it does not get the password.
            settings = dataclasses.replace(settings, smtp_password=Secret(""))
            context = _context()
            if context.get_start_method() == "fork":
                # Nothing is pickled: the worker inherits the campaign, its
                # templates compiled and its styles inlined once already.
                campaign = dataclasses.replace(self.campaign, settings=settings)
                self._pool = ProcessPoolExecutor(
                    max_workers=size,
                    mp_context=context,
                    initializer=_adopt_campaign,
                    initargs=(os.getcwd(), campaign),
                )
            else:
                self._pool = ProcessPoolExecutor(
                    max_workers=size,
                    mp_context=context,
                    initializer=_start_worker,
                    initargs=(
                        os.getcwd(),
                        settings,
                        renderer.templates_dir,
                        renderer.letter_date,
                        renderer.data,
                    ),
                )
            self._pool_size = size
        return self._pool

    def start(self, count: int) -> None:
        """Start the workers now, for a run of about ``count`` letters.

        Called before the contacts are read: the workers, forked from this
        process while it is still small, compile the templates on the other
        cores while this one reads the contacts.
        Nothing is started for a small run, or when they could not be forked.
        """
        workers = self._workers(count, None)
        if workers > 0 and self._pool is None and _can_fork():
            # What exists now is shared with the workers; kept out of the
            # garbage collector's reach (until ``close``), its pages are never
            # copied for them.
            gc.freeze()
            self._frozen = True
            pool = self._pool_of(workers)
            for _ in range(workers):
                pool.submit(_started)

    def run(
        self,
        contacts: Sequence[Contact],
        mode: Mode,
        *,
        now: Clock = utc_now,
        processes: int | None = None,
    ) -> Iterator[Composed]:
        """Each contact's outcome, in order; with ``mode="preview"``, ``Previewed``."""
        if self._pool is not None and processes is None:
            # Started already (so no longer forkable: the pool runs threads here).
            if len(contacts) < SMALL_FORKED_RUN:
                return self._here(contacts, mode, now)
            return self._in_workers(self._pool, contacts, mode, now, self._pool_size)
        workers = self._workers(len(contacts), processes)
        if workers <= 0:
            return self._here(contacts, mode, now)
        if _can_fork() and self._pool is None:
            return self._first_here(contacts, mode, now, workers)
        return self._in_workers(self._pool_of(workers), contacts, mode, now, workers)

    def _first_here(
        self, contacts: Sequence[Contact], mode: Mode, now: Clock, workers: int
    ) -> Iterator[Composed]:
        """The first letter here, the rest in workers forked after it.

        Composing one letter first compiles the templates and inlines the
        styles of the letter's shape, which the forked workers then inherit.
        """
        yield from self._here(contacts[:1], mode, now)
        yield from self._in_workers(self._pool_of(workers), contacts[1:], mode, now, workers)

    def _here(self, contacts: Iterable[Contact], mode: Mode, now: Clock) -> Iterator[Composed]:
        for contact in contacts:
            yield _composed(contact, _compose_one(self.campaign, contact, now(), mode))

    def _in_workers(
        self,
        pool: ProcessPoolExecutor,
        contacts: Sequence[Contact],
        mode: Mode,
        now: Clock,
        workers: int,
    ) -> Iterator[Composed]:
        window = workers * TASKS_PER_PROCESS
        pending: deque[tuple[list[Contact], Future[list[_Result]]]] = deque()
        upcoming = chunks(len(contacts), workers)

        def submit() -> bool:
            task = next(upcoming, None)
            if task is None:
                return False
            start, end = task
            chunk = list(contacts[start:end])
            when = now()
            jobs = [(contact, when) for contact in chunk]
            pending.append((chunk, pool.submit(_compose_chunk, jobs, mode)))
            return True

        try:
            while len(pending) < window and submit():
                pass
            while pending:
                chunk, future = pending.popleft()
                results = future.result()
                submit()
                for contact, result in zip(chunk, results, strict=True):
                    yield _composed(contact, result)
        finally:
            for _, future in pending:
                future.cancel()

    def letters(
        self, contacts: Sequence[Contact], *, now: Clock = utc_now, processes: int | None = None
    ) -> Iterator[Letter]:
        """The letters to send, in order; the first that cannot be composed raises."""
        for composed in self.run(contacts, "letter", now=now, processes=processes):
            if composed.error is not None:
                raise composed.error
            assert composed.letter is not None
            yield composed.letter

    def errors(
        self, contacts: Sequence[Contact], *, processes: int | None = None
    ) -> Iterator[OutreachError | None]:
        """For each contact, why its letter cannot be composed, or None."""
        for composed in self.run(contacts, "check", processes=processes):
            yield composed.error
