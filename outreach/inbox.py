"""After the first hop: bounces and answers from the mailbox, into the send log.

``outreach inbox`` reads the mailbox the letters were sent from, over IMAP,
without changing anything in it: each folder is opened with EXAMINE
(read-only) and each message fetched with ``BODY.PEEK[]``, so no flag is
set; nothing is ever stored, copied, moved or deleted. ``--from PATH``
reads exported mail instead: a folder of ``.eml`` files, a Maildir, or an
mbox file.

Each message is read by ``notices.read_bytes``; ``match_notice`` attaches
what it says to a letter some server accepted (``accepted_letters``, from
the log's rows): by the Message-ID it names, else, when it names none, by
the failed address or the answering mission's own address (the row then
says ``matched by address``). What matches becomes a row of the send log
(``bounced``, ``delayed``, ``replied``, ``auto-replied``), appended through
``SendLog`` like every other row, under its lock, with the notice's own
Date as its time when that date is a sane one (``notice_time``). What matches no accepted
letter is listed with why, never recorded, and kept for the report in
``LOG_DIR/inbox-unmatched.json``.

Reading twice records nothing twice. Every row keeps the notice's own
Message-ID (``LogRow.notice_id``), and a notice already in the log is
skipped: that alone makes a run safe to repeat. So that a run need not
fetch the whole mailbox again, it also remembers, per account, folder and
UIDVALIDITY, the last UID it read, in ``LOG_DIR/inbox-state.json``
(written atomically, after the rows). Losing that file only means reading
again; a new UIDVALIDITY (the server renumbered the folder) starts the
folder afresh. A first run reads mail from the day before the first letter
of the log on, as nothing older can be about a letter.
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import queue
import socket
import ssl
import stat
import threading
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from outreach.clock import Clock, SystemClock
from outreach.credentials import Credentials, PasswordPrompt, credentials_for
from outreach.errors import InboxError, SendLogError, SettingsError
from outreach.files import write_atomically, writing
from outreach.ledger import Ledger
from outreach.notices import (
    MAX_NOTICE_BYTES,
    Event,
    Notice,
    Unreadable,
    clean,
    parse,
    read_bytes,
    too_large,
)
from outreach.sendlog import (
    BOUNCED,
    DELAYED,
    LogRow,
    SendLog,
    contact_key,
    with_notice,
)
from outreach.settings import Settings, require_for_reading
from outreach.transport import tls_context
from outreach.verdict import Verdict, read_verdict, record_verdict

STATE_FILE = "inbox-state.json"
#: Messages fetched from the server at a time.
BATCH = 50


@dataclass(frozen=True)
class Fetched:
    """One message as read: where it was (for the user), and its bytes.

    ``problem`` says why a message was not read (too large, not a regular
    file): it is named, and the rest are read.
    """

    where: str
    data: bytes
    problem: str = ""


@dataclass(frozen=True)
class Unmatched:
    """A message that attaches to no accepted letter: never recorded, listed with why."""

    where: str
    notice: Notice
    why: str


@dataclass
class InboxResult:
    """What a run read and what it recorded."""

    source: str
    log: Path
    read: int = 0
    #: The rows appended to the send log.
    rows: list[LogRow] = field(default_factory=list)
    #: What an earlier run had recorded already.
    already: int = 0
    #: Messages about no letter: other mail, and copies of the letters themselves.
    other: int = 0
    unmatched: list[Unmatched] = field(default_factory=list)
    #: Messages not read at all: where, and why.
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Test letters (outreach test-send) read back.
    test_letters: list[Verdict] = field(default_factory=list)

    @property
    def per_mission(self) -> list[LogRow]:
        """The rows as staff read them: what one message says of one mission, once.

        An answer to a reminder names the reminder and the first letter
        (``References``): it is recorded against each, and said once.
        """
        said: dict[tuple[str, str, str, str], LogRow] = {}
        for row in self.rows:
            key = (row.notice_id, contact_key(row.contact_id), row.status, row.email.lower())
            said.setdefault(key, row)
        return list(said.values())

    @property
    def counts(self) -> Counter[str]:
        """What was recorded, counted per mission and message (``per_mission``)."""
        return Counter(row.status for row in self.per_mission)


# -- matching notices to letters -----------------------------------------------------------

#: What a notice's date may be ahead of the clock (time zones, a slow clock):
#: a date further ahead, or none, counts as the time the message was read.
_DATE_SLACK = timedelta(days=1)
MATCHED_BY_ADDRESS = "matched by address"


@dataclass(frozen=True)
class AcceptedLetter:
    """A letter some server accepted for one address: all a notice may attach to."""

    campaign: str
    contact_id: str
    address: str
    message_id: str
    accepted_at: datetime
    attempt: int = 0
    subject: str = ""
    follows: str = ""

    @property
    def letter(self) -> tuple[str, str, str]:
        """The letter itself, whatever address: campaign, contact, Message-ID."""
        return (self.campaign, contact_key(self.contact_id), self.message_id.lower())


def accepted_letters(ledger: Ledger) -> list[AcceptedLetter]:
    """The letters some server accepted, one per address, as the ledger has them.

    A notice attaches to these alone (``ledger.py``): a letter only deferred,
    refused or left ambiguous was never accepted, and no bounce or answer
    can be about it.
    """
    return [
        AcceptedLetter(
            letter.campaign,
            letter.contact_id,
            address,
            letter.message_id.lower(),
            min(r.time for r in letter.rows if r.status == "sent" and address in r.addresses),
            letter.attempts,
            letter.subject,
            letter.follows,
        )
        for letter in ledger.letters.values()
        for address in sorted(letter.accepted)
    ]


def unaccepted_letters(ledger: Ledger) -> dict[str, str]:
    """Message-IDs of the log's letters no server accepted, each with its status.

    A notice naming one of these changes nothing: it is listed, with why.
    """
    return {
        letter.message_id.lower(): (
            f"{letter.contact_id}, campaign {letter.campaign!r}: {letter.status()}"
        )
        for letter in ledger.letters.values()
        if letter.message_id and not letter.accepted
    }


@dataclass(frozen=True)
class Target:
    """One event of a notice, attached to one letter at the addresses it speaks for."""

    letter: AcceptedLetter
    addresses: tuple[str, ...]
    event: Event
    by_address: bool


@dataclass(frozen=True)
class Match:
    """What a notice attaches to; ``left`` says why any of its events attached to nothing."""

    targets: tuple[Target, ...]
    left: tuple[str, ...] = ()


def match_notice(
    notice: Notice,
    letters: Sequence[AcceptedLetter],
    *,
    now: datetime,
    unaccepted: dict[str, str],
) -> Match | Unmatched:
    """The letters ``notice`` is about, among the accepted ``letters`` alone.

    First by Message-ID: the returned original's (or the one an answer
    names in In-Reply-To or References); an id that is no accepted letter
    attaches to nothing, whatever the rest of the message says. Only a
    notice that names no Message-ID at all is matched by address: a
    bounce by its failed address, an answer by its sender's address, to
    the latest letter accepted for that address before the notice's date,
    in any campaign; nothing when no letter, or several equally, fit.
    """
    when = notice.date if notice.date is not None and notice.date <= now + _DATE_SLACK else now
    by_id: dict[str, list[AcceptedLetter]] = {}
    for letter in letters:
        by_id.setdefault(letter.message_id, []).append(letter)
    named = [i for i in notice.refers_to if i in by_id]
    if notice.problem and not notice.events:
        return Unmatched("", notice, notice.problem)
    if notice.refers_to and not named:
        return Unmatched("", notice, _unknown(notice, unaccepted))
    if notice.kind == "report":
        candidates = by_id[named[0]] if named else letters
        found = [_bounce_target(e, candidates, when, bool(named)) for e in notice.events]
        targets = [t for t in found if isinstance(t, Target)]
        left = [why for why in found if isinstance(why, str)]
        if notice.guessed:
            return _one_guess(notice, targets)
        if not targets:
            return Unmatched("", notice, "; ".join(left))
        return Match(tuple(targets), tuple(left))
    if notice.kind != "answer" or not notice.events:
        return Unmatched("", notice, "about no letter")
    event = notice.events[0]
    if named:
        return Match(tuple(_whole_letter(by_id[i], event, False) for i in named))
    near = _latest(letters, notice.address, when)
    if isinstance(near, str):
        return Unmatched("", notice, near if notice.address else "about no letter (no sender)")
    same = [x for x in letters if x.letter == near.letter]
    return Match((_whole_letter(same, event, True),))


def _one_guess(notice: Notice, targets: list[Target]) -> Match | Unmatched:
    """A notice read by its text alone counts only when its text names one address of a letter.

    Its text may quote the letter's To and Cc; when it names two addresses
    that letters went to, which of them failed cannot be told.
    """
    if len(targets) == 1:
        return Match((targets[0],))
    if not targets:
        return Unmatched("", notice, notice.problem)
    named = ", ".join(sorted({a for t in targets for a in t.addresses}))
    return Unmatched(
        "", notice, f"{notice.problem}; its text names several addresses of letters ({named})"
    )


def _bounce_target(
    event: Event, letters: Sequence[AcceptedLetter], when: datetime, by_id: bool
) -> Target | str:
    """The target of one bounce or delay: by the letter it names, or by its address.

    A report that names the letter by its id but gives no address a reader
    can use (a mailbox's file path, ``@host``) is about that letter's one
    address, when it went to one.
    """
    named = ", ".join(event.recipients) or "no recipient"
    if by_id:
        for address in event.recipients:
            for letter in letters:
                if letter.address == address:
                    return Target(letter, (address,), event, False)
        if not event.recipients and len({x.address for x in letters}) == 1:
            return Target(letters[0], (letters[0].address,), event, False)
        first = letters[0]
        return (
            f"it names {named}, to which the letter of {first.contact_id} "
            f"(campaign {first.campaign!r}) was not sent"
        )
    whys = []
    for address in event.recipients:
        near = _latest(letters, address, when)
        if isinstance(near, AcceptedLetter):
            return Target(near, (address,), event, True)
        whys.append(near)
    return whys[0] if whys else "a bounce that names no recipient and no message"


def _latest(
    letters: Sequence[AcceptedLetter], address: str, when: datetime
) -> AcceptedLetter | str:
    """The latest letter accepted for ``address`` before ``when``, or why there is none."""
    fits = [x for x in letters if x.address == address and x.accepted_at <= when]
    if not address or not fits:
        return f"no letter was accepted for {address or 'its sender'} before it came"
    latest = max(x.accepted_at for x in fits)
    top = {x.letter: x for x in fits if x.accepted_at == latest}
    if len(top) > 1:
        names = ", ".join(sorted(f"{x.contact_id} ({x.campaign})" for x in top.values()))
        return f"{address} had several letters accepted at the same time ({names})"
    return next(iter(top.values()))


def _whole_letter(letters: Sequence[AcceptedLetter], event: Event, by_address: bool) -> Target:
    """An answer's target: the letter at every address it was accepted for."""
    addresses = tuple(dict.fromkeys(x.address for x in letters))
    return Target(letters[0], addresses, event, by_address)


def _unknown(notice: Notice, unaccepted: dict[str, str]) -> str:
    identifier = next((i for i in notice.refers_to if i in unaccepted), "")
    if identifier:
        return (
            f"it names a letter no server accepted ({unaccepted[identifier]}), "
            "so it changes nothing"
        )
    what = "a bounce" if notice.kind == "report" else "an answer"
    return f"{what} of {notice.refers_to[0]}, which is no letter of the send log"


class Matcher:
    """Matches notices to the accepted letters of a send log, and makes their rows.

    ``own`` are the sender's addresses: a message from one of them (a copy
    of a letter, a follow-up staff wrote) is no answer from a mission.
    """

    def __init__(self, rows: Sequence[LogRow], own: Sequence[str], clock: Clock) -> None:
        self.clock = clock
        self.own = {a.lower() for a in own if a}
        ledger = Ledger(rows)
        self.letters = accepted_letters(ledger)
        self.unaccepted = unaccepted_letters(ledger)
        self.ids = {row.message_id.lower() for row in rows if row.message_id}
        self.tests = {row.message_id.lower() for row in rows if row.status == "test"}
        self.seen = {_key(row) for row in rows if row.notice_id}
        starts = [row.time for row in rows if row.status in ("sending", "test")]
        #: Nothing older than the first letter can be about one.
        self.first_letter: date | None = min(starts).date() if starts else None

    def match(
        self, fetched: Fetched, result: InboxResult, *, since: date | None = None
    ) -> list[LogRow]:
        """The new rows for one message; what cannot be matched goes into ``result``.

        With ``since`` (``--from`` with ``--since``), a message whose Date is
        older is passed over, as the IMAP server's SEARCH SINCE passes it over.
        A message that cannot be read at all is listed, and the next is read.
        """
        try:
            if fetched.problem:
                raise Unreadable(fetched.problem)
            notice = read_bytes(fetched.data)
        except Unreadable as err:
            result.unreadable.append((fetched.where, str(err)))
            return []
        if since is not None and notice.date is not None and notice.date.date() < since:
            return []
        result.read += 1
        if notice.notice_id in self.tests:  # a test letter back: the receiver's verdict
            result.test_letters.append(read_verdict(parse(fetched.data), notice.notice_id))
        if notice.notice_id in self.ids or notice.kind == "other" or notice.address in self.own:
            result.other += 1  # a copy of a letter, staff's own mail, a newsletter
            return []
        if any(i in self.tests for i in notice.refers_to):
            why = "about a test letter (outreach test-send), which is no contact's letter"
            result.unmatched.append(Unmatched(fetched.where, notice, why))
            return []
        found = match_notice(notice, self.letters, now=self.clock.now(), unaccepted=self.unaccepted)
        if isinstance(found, Unmatched):
            result.unmatched.append(replace(found, where=fetched.where))
            return []
        for why in found.left:
            result.unmatched.append(Unmatched(fetched.where, notice, why))
        rows = []
        for target in found.targets:
            row = self._row(notice, target)
            if _key(row) in self.seen:
                result.already += 1
                continue
            self.seen.add(_key(row))
            rows.append(row)
        return rows

    def _row(self, notice: Notice, target: Target) -> LogRow:
        letter, event = target.letter, target.event
        text = f"{MATCHED_BY_ADDRESS}; {event.text}" if target.by_address else event.text
        return LogRow(
            time=notice_time(notice, letter, self.clock.now()),
            campaign=letter.campaign,
            contact_id=letter.contact_id,
            email=";".join(target.addresses),
            status=event.kind,
            attempt=letter.attempt,
            smtp_code=event.status or None,
            smtp_reply=with_notice(text, notice.notice_id),
            message_id=letter.message_id,
            subject=letter.subject,
            follows=letter.follows,
        )


def notice_time(notice: Notice, letter: AcceptedLetter, now: datetime) -> datetime:
    """When a bounce or an answer came: its own Date, when that date is a sane one.

    The row's ``time`` is when the event happened, as for a run's rows: a
    bounce read a week late still says the day the address failed. A date
    the message does not give, or one that cannot be true (before the
    letter was accepted, or after the moment it is read: a wrong clock, a
    forged header), gives way to the time it was read.
    """
    when = notice.date
    return when if when is not None and letter.accepted_at <= when <= now else now


def _key(row: LogRow) -> tuple[str, str, str, str, str]:
    """What makes an inbox row the same as another: the notice, the letter, what, whom."""
    whom = row.addresses[0] if row.status in (BOUNCED, DELAYED) and row.addresses else ""
    return (row.notice_id, row.campaign, contact_key(row.contact_id), row.status, whom)


# -- reading exported mail -----------------------------------------------------------------


def read_files(path: Path) -> Generator[Fetched, None, None]:
    """The messages in a folder of ``.eml`` files, a Maildir, or an mbox file (or one .eml).

    Read only, and only regular files: inside a folder, a symbolic link,
    a FIFO or a device is named and passed over (a FIFO would wait for ever,
    a link to ``/dev/zero`` never end), as is a file above the size cap. No
    message of a Maildir is moved from ``new/`` to ``cur/``, no flag set.
    """
    try:
        if path.is_dir():
            maildir = (path / "cur").is_dir() and (path / "new").is_dir()
            for folder in [path / "new", path / "cur"] if maildir else [path]:
                for file in sorted(folder.iterdir()):
                    wanted = maildir or file.suffix.lower() == ".eml"
                    if wanted and not file.name.startswith("."):
                        yield _read_regular(file, f"{path}: {file.name}" if maildir else str(file))
            return
        if not path.exists():
            raise InboxError(f"--from {path}: no such file or folder")
        if not path.is_file():
            raise InboxError(
                f"--from {path}: not a regular file (a FIFO, a device?); give a folder of .eml "
                "files, a Maildir or an mbox file"
            )
        with path.open("rb") as handle:
            start = handle.read(5)
        if start != b"From ":
            yield _read_regular(path, str(path))
            return
        box = mailbox.mbox(path, factory=None, create=False)
        try:
            for number, key in enumerate(box.keys(), start=1):
                yield Fetched(f"{path}: message {number}", box.get_bytes(key))
        finally:
            box.close()
    except OSError as err:
        raise InboxError(f"--from {path}: cannot be read ({err.strerror or err})") from err
    except mailbox.Error as err:
        raise InboxError(f"--from {path}: cannot be read as a mailbox ({err})") from err


def _read_regular(file: Path, where: str) -> Fetched:
    """One message file's bytes, opened without following a link and without waiting on a FIFO."""
    try:
        descriptor = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        return Fetched(where, b"", f"not read: not a regular file ({err.strerror or err})")
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            return Fetched(where, b"", "not read: not a regular file (a FIFO, a device, a socket)")
        data = handle.read(MAX_NOTICE_BYTES + 1)
    if len(data) > MAX_NOTICE_BYTES:
        return Fetched(where, b"", f"larger than {MAX_NOTICE_BYTES // (1024 * 1024)} MB: not read")
    return Fetched(where, data)


# -- the IMAP position ---------------------------------------------------------------------


class Positions:
    """The last UID read, per account, folder and UIDVALIDITY: ``LOG_DIR/inbox-state.json``.

    Only a shortcut: a lost or damaged file means reading again, and the
    send log's notice ids keep anything from being recorded twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warning = ""
        self.data: dict[str, Any] = {}
        #: When ``outreach inbox`` last read mail (for a follow-up's plan).
        self.read_at: datetime | None = None
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict) or not isinstance(loaded.get("mailboxes"), dict):
                raise ValueError("not the shape outreach writes")
            # An account that is not a table of folders is read again from the start.
            self.data = {k: v for k, v in loaded["mailboxes"].items() if isinstance(v, dict)}
            with contextlib.suppress(TypeError, ValueError):
                read_at = datetime.fromisoformat(loaded.get("read_at", ""))
                self.read_at = read_at if read_at.tzinfo is not None else None
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:
            self.warning = (
                f"{path} could not be read ({err}); the mailbox is read from the start, "
                "and nothing is recorded twice"
            )

    def last_uid(self, account: str, folder: str, uidvalidity: int) -> int:
        entry = self.data.get(account, {}).get(folder, {})
        if not isinstance(entry, dict) or entry.get("uidvalidity") != uidvalidity:
            return 0
        last = entry.get("last_uid", 0)
        return last if isinstance(last, int) and last >= 0 else 0

    def remember(self, account: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        """Write the position, atomically: the old file or the new one, never half of one."""
        self.data.setdefault(account, {})[folder] = {
            "uidvalidity": uidvalidity,
            "last_uid": last_uid,
        }
        self.save()

    def save(self, read_at: datetime | None = None) -> None:
        """Write the positions (and when mail was last read), atomically."""
        self.read_at = read_at or self.read_at
        state: dict[str, Any] = {"version": 1, "mailboxes": self.data}
        if self.read_at is not None:
            state["read_at"] = self.read_at.isoformat(timespec="seconds")
        text = json.dumps(state, indent=2, sort_keys=True) + "\n"
        with writing(self.path, SendLogError):
            write_atomically(self.path, text.encode("utf-8"))


# -- what matched no letter ----------------------------------------------------------------

UNMATCHED_FILE = "inbox-unmatched.json"
#: The most messages the file keeps, the latest: enough for any campaign's
#: mailbox, and a flood of mail cannot grow it without end.
MAX_UNMATCHED = 500


def unmatched_mail(log_dir: Path) -> list[dict[str, str]]:
    """Every message ``outreach inbox`` read that attaches to no letter: date, sender, subject, why.

    From ``LOG_DIR/inbox-unmatched.json``; an absent or damaged file is no
    message (the next ``outreach inbox --since`` writes it again).
    """
    try:
        loaded = json.loads((log_dir / UNMATCHED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    messages = loaded.get("messages") if isinstance(loaded, dict) else None
    if not isinstance(messages, list):
        return []
    keys = ("date", "sender", "subject", "why", "where", "notice")
    return [{k: clean(str(m.get(k, ""))) for k in keys} for m in messages if isinstance(m, dict)]


def _keep_unmatched(log_dir: Path, result: InboxResult, now: datetime) -> None:
    """Add this run's unmatched and unreadable messages to the file, the latest kept."""
    unreadable = [
        Unmatched(where, Notice("", "", date=now), why) for where, why in result.unreadable
    ]
    if not (listed := [*result.unmatched, *unreadable]):
        return
    new = [
        {
            "date": (u.notice.date or now).isoformat(timespec="seconds"),
            "sender": clean(u.notice.sender),
            "subject": clean(u.notice.subject),
            "why": clean(u.why),
            "where": clean(u.where),
            "notice": clean(u.notice.notice_id),
        }
        for u in listed
    ]
    merged = {(m["notice"] or m["where"], m["why"]): m for m in [*unmatched_mail(log_dir), *new]}
    kept = list(merged.values())[-MAX_UNMATCHED:]
    text = json.dumps({"version": 1, "messages": kept}, indent=1, ensure_ascii=False) + "\n"
    with writing(log_dir / UNMATCHED_FILE, SendLogError):
        write_atomically(log_dir / UNMATCHED_FILE, text.encode("utf-8"))


# -- reading the mailbox over IMAP ---------------------------------------------------------


#: What imapclient raises, down to its parser, on an answer it cannot read.
_UNREADABLE = (ValueError, KeyError, IndexError, TypeError)


def server_name(settings: Settings) -> str:
    return f"{settings.imap_host}:{settings.imap_port}"


def connect(settings: Settings, deadline: float) -> IMAPClient:
    """A connection to IMAP_HOST, encrypted as IMAP_SECURITY says, certificate verified.

    The greeting and STARTTLS must be over by ``deadline`` (a
    ``time.monotonic`` moment): a server that trickles its greeting a
    byte at a time, never silent long enough for SMTP_TIMEOUT, is left
    behind on a thread of its own, which ends with the process.
    """
    outcome: queue.Queue[IMAPClient | BaseException] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            outcome.put(_connect(settings))
        except BaseException as err:  # handed to the caller, raised there
            outcome.put(err)

    threading.Thread(target=run, name="imap-connect", daemon=True).start()
    try:
        got = outcome.get(timeout=max(deadline - time.monotonic(), 0.0))
    except queue.Empty:
        raise _past_deadline(settings, "greeting") from None
    if isinstance(got, BaseException):
        raise got
    return got


def _past_deadline(settings: Settings, during: str) -> InboxError:
    return InboxError(
        f"{server_name(settings)} did not finish within IMAP_DEADLINE={settings.imap_deadline:g} s "
        f"(it was still sending its {during}); nothing after what was recorded was read, "
        "and the next run starts there"
    )


def _connect(settings: Settings) -> IMAPClient:
    require_for_reading(settings)
    host, security, name = settings.imap_host, settings.imap_security, server_name(settings)
    context = tls_context(settings.imap_ca_file)
    try:
        client = IMAPClient(
            host,
            port=settings.imap_port,
            ssl=security == "ssl",
            ssl_context=context,
            timeout=settings.smtp_timeout,
        )
    except BaseException as err:
        raise _connect_error(err, settings) from err
    try:
        if security == "starttls":
            if not client.has_capability("STARTTLS"):
                raise InboxError(
                    f"{name} does not offer STARTTLS, and IMAP_SECURITY=starttls never reads "
                    "without encryption (IMAP_SECURITY=ssl and port 993?)"
                )
            client.starttls(context)
    except InboxError:
        _close(client)
        raise
    except BaseException as err:
        _close(client)
        raise _connect_error(err, settings) from err
    return client


def _connect_error(err: BaseException, settings: Settings) -> BaseException:
    name = server_name(settings)
    if isinstance(err, ssl.SSLCertVerificationError):
        return InboxError(
            f"the TLS certificate of {name} does not verify ({err.verify_message}); check "
            "IMAP_HOST, or if the server uses a private certificate authority, set "
            "IMAP_CA_FILE to its certificate"
        )
    if isinstance(err, ssl.SSLError):
        return InboxError(
            f"TLS with {name} failed ({err.reason or err}); check IMAP_SECURITY and IMAP_PORT "
            "(993 for ssl, 143 for starttls)"
        )
    if isinstance(err, socket.gaierror):
        return InboxError(f"cannot find the IMAP server IMAP_HOST={settings.imap_host} ({err})")
    if isinstance(err, ConnectionRefusedError):
        return InboxError(
            f"cannot connect to {name}: it refused the connection; check IMAP_HOST and "
            "IMAP_PORT, or whether the server is up"
        )
    if isinstance(err, TimeoutError | socket.timeout):
        return InboxError(f"{name} did not answer within {settings.smtp_timeout:g} s")
    if isinstance(err, IMAPClientError | OSError):
        return InboxError(f"cannot read the mailbox at {name}: {err}")
    return err


def _sign_in(client: IMAPClient, settings: Settings, credentials: Credentials) -> None:
    """Sign in to the mailbox: the one place that does, whatever the way of signing in.

    As for SMTP (``credentials.py``): a password, from IMAP_PASSWORD (or
    SMTP_PASSWORD) or a command; or, with SMTP_AUTH=xoauth2 or oauthbearer,
    a token from a command or from ``outreach login --inbox``, asked for
    once more when the server refuses it.
    """
    name = server_name(settings)
    if not credentials.username:
        raise SettingsError(
            "IMAP_USERNAME is not set (nor SMTP_USERNAME): give the mailbox to read"
        )
    user = credentials.username
    tries = (False, True) if credentials.uses_token else (False,)
    for fresh in tries:
        secret = credentials.secret(fresh=fresh).reveal()
        try:
            if credentials.mechanism == "xoauth2":
                client.oauth2_login(user, secret)
            elif credentials.mechanism == "oauthbearer":
                client.oauthbearer_login(user, secret)
            elif (user + secret).isascii():
                client.login(user, secret)
            elif client.has_capability("AUTH=PLAIN"):
                # LOGIN carries ASCII only (imaplib encodes it so); PLAIN carries UTF-8.
                client.plain_login(user, secret)
            else:
                raise InboxError(
                    f"{name} offers no AUTHENTICATE PLAIN, the only way a user name or "
                    "password with characters beyond ASCII can be sent; it cannot sign in "
                    f"IMAP_USERNAME={user}"
                )
            return
        except LoginError as err:
            said = credentials.scrub(str(err))
            if fresh or not credentials.uses_token:
                what = "the token" if credentials.uses_token else "IMAP_PASSWORD"
                raise InboxError(
                    f"{name} refused the sign-in of IMAP_USERNAME={user} ({said}); "
                    f"check IMAP_USERNAME and {what}"
                ) from None


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError):
        with contextlib.suppress(IMAPClientError, OSError):
            client.shutdown()


def _examine(client: IMAPClient, folder: str, settings: Settings) -> int:
    """Open ``folder`` read-only (EXAMINE); its UIDVALIDITY."""
    try:
        selected = client.select_folder(folder, readonly=True)
    except IMAPClientError as err:
        try:
            names = ", ".join(str(f[2]) for f in client.list_folders())
        except (IMAPClientError, OSError):
            names = "?"
        raise InboxError(
            f"IMAP_FOLDERS: the folder {folder!r} cannot be opened at {server_name(settings)} "
            f"({err}); the mailbox has: {names}"
        ) from err
    except _UNREADABLE as err:
        raise InboxError(
            f"{server_name(settings)} opened {folder!r} with an answer outreach cannot read "
            f"({clean(str(err))[:80]}), such as a UIDVALIDITY that is no number; nothing was read"
        ) from err
    raw = selected.get(b"UIDVALIDITY") if isinstance(selected, dict) else None
    value = raw[0] if isinstance(raw, list) and raw else raw
    if isinstance(value, bytes | str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        shown = "none" if raw is None else clean(str(raw))[:40]
        raise InboxError(
            f"{server_name(settings)} opened {folder!r} without a valid UIDVALIDITY "
            f"(it gave {shown}); without it no position can be kept, so nothing was read"
        )
    return value


def read_imap(
    settings: Settings,
    positions: Positions,
    since: date | None,
    first_letter: date | None,
    warnings: list[str],
    ask_password: PasswordPrompt | None = None,
) -> Generator[Fetched, None, None]:
    """Every new message of the folders of IMAP_FOLDERS.

    Each folder's position is remembered once the caller took its messages
    (their rows on the disk), and never past a message the server did not
    give. A message larger than the cap is not fetched: it is named. All of
    it within IMAP_DEADLINE seconds: past that the connection is cut (and
    the run ends with one line), whatever the server does; a password typed
    at the prompt (``ask_password``), asked once the connection is secured,
    is not counted. Adds to ``warnings``.
    """
    deadline = time.monotonic() + settings.imap_deadline
    client = connect(settings, deadline)
    credentials = credentials_for(settings, "IMAP", ask_password)
    if credentials.username and credentials.ask is not None and credentials.needs_prompt():
        # Asked now, the server reached and its certificate checked; the time a
        # person takes to type it is not the server's, and IMAP_DEADLINE waits.
        asked_at = time.monotonic()
        try:
            credentials.secret()
        except BaseException:
            _close(client)
            raise
        deadline += time.monotonic() - asked_at
    name = server_name(settings)
    account = f"{settings.imap_username}@{name}"
    cut = threading.Event()

    def cut_off() -> None:
        cut.set()
        with contextlib.suppress(OSError):
            client.socket().shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), cut_off)
    watchdog.daemon = True
    watchdog.start()
    _refuse_large_literals(client, settings)
    during = "answer to the sign-in"
    try:
        _sign_in(client, settings, credentials)
        for folder in settings.imap_folders:
            during = f"answer about {folder!r}"
            uidvalidity = _examine(client, folder, settings)
            remembered = positions.last_uid(account, folder, uidvalidity)
            last = 0 if since is not None else remembered
            criteria: list[Any] = ["UID", f"{last + 1}:*"]
            start = since or (
                first_letter - timedelta(days=1) if first_letter and not last else None
            )
            if start is not None:
                criteria += ["SINCE", start]
            # "n:*" always holds the last message, even below n: keep only what is new.
            found = client.search(criteria)
            uids = sorted(uid for uid in found if isinstance(uid, int) and uid > last)
            top = remembered
            missing = False
            for offset in range(0, len(uids), BATCH):
                batch = uids[offset : offset + BATCH]
                during = f"messages of {folder!r}"
                sizes = client.fetch(batch, ["RFC822.SIZE"])
                small = []
                for uid in batch:
                    size = sizes.get(uid, {}).get(b"RFC822.SIZE")
                    if isinstance(size, int) and size > MAX_NOTICE_BYTES:
                        yield Fetched(f"{folder}, UID {uid}", b"", too_large(size))
                    else:
                        small.append(uid)
                fetched = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
                for uid in batch:
                    data = fetched.get(uid, {}).get(b"BODY[]") if uid in small else None
                    if isinstance(data, bytes):
                        yield Fetched(f"{folder}, UID {uid}", data)
                    elif uid in small and not missing:
                        missing = True
                        warnings.append(
                            f"{folder}, UID {uid}: the server did not give the message "
                            "(no BODY[] in its answer); it is read again next time"
                        )
                    # Never past a message the server did not give.
                    top = top if missing else max(top, uid)
            if top and top != remembered:
                positions.remember(account, folder, uidvalidity, top)
    except (InboxError, IMAPClientError, OSError, *_UNREADABLE) as err:
        if cut.is_set():
            raise _past_deadline(settings, during) from None
        if isinstance(err, InboxError):
            raise
        if isinstance(err, IMAPClientError | OSError):
            raise _connect_error(err, settings) from err
        raise InboxError(
            f"{name} answered in a way outreach cannot read ({type(err).__name__}: "
            f"{clean(str(err))[:120]}); nothing after what was recorded was read"
        ) from err
    finally:
        watchdog.cancel()
        _close(client)


def _refuse_large_literals(client: IMAPClient, settings: Settings) -> None:
    """Refuse, before reading a byte of it, a literal larger than any message read.

    imaplib reads a literal (``{3000000000}``) with ``IMAP4.read(size)``,
    which its documentation invites one to override; a server that announces
    gigabytes would otherwise have them buffered in memory.
    """
    imap = client._imap  # imapclient's imaplib.IMAP4, whose read() this guards
    read = imap.read
    limit = MAX_NOTICE_BYTES + 64 * 1024

    def guarded(size: int) -> bytes:
        if size > limit:
            # The rest of the answer is never read: the connection ends here.
            with contextlib.suppress(OSError):
                client.socket().shutdown(socket.SHUT_RDWR)
            raise InboxError(
                f"{server_name(settings)} announced {size} bytes in one answer, more than any "
                f"message read ({MAX_NOTICE_BYTES // (1024 * 1024)} MB); nothing of it was read"
            )
        data: bytes = read(size)
        return data

    imap.read = guarded


# -- the whole run -------------------------------------------------------------------------


def read_inbox(
    settings: Settings,
    *,
    source: Path | None = None,
    since: date | None = None,
    clock: Clock | None = None,
    ask_password: PasswordPrompt | None = None,
) -> InboxResult:
    """Read the mailbox (or ``source``), and append to the send log what matches a letter.

    ``since`` reads only mail from that day on; ``ask_password`` gives the
    mailbox's password when no setting does, called once the server's
    certificate is checked. Holds the send log's lock throughout, like a
    send: rows go in one at a time, each on the disk before the position
    that covers it.
    """
    clock = clock or SystemClock()
    log_path = settings.send_log
    if not log_path.exists():
        raise SendLogError(
            f"{log_path}: no send log yet, so no letter to match the mailbox against; "
            "run outreach inbox after outreach send"
        )
    folders = ", ".join(settings.imap_folders)
    where = f"{folders} of {settings.imap_username} at {server_name(settings)}"
    result = InboxResult(source=str(source) if source is not None else where, log=log_path)
    with SendLog(log_path) as log:
        matcher = Matcher(log.rows(), [settings.mail_from, settings.mail_reply_to], clock)
        positions = Positions(settings.log_dir / STATE_FILE)
        if source is not None:
            messages = read_files(source)
        else:
            if positions.warning:
                result.warnings.append(positions.warning)
            messages = read_imap(
                settings, positions, since, matcher.first_letter, result.warnings, ask_password
            )
        # Over IMAP, the server's SEARCH SINCE has passed over older mail already.
        older = since if source is not None else None
        with contextlib.closing(messages):  # on the way out, whatever is raised
            for fetched in messages:
                for row in matcher.match(fetched, result, since=older):
                    log.append(row, durable=True)
                    result.rows.append(row)
        _keep_unmatched(settings.log_dir, result, clock.now())
        positions.save(read_at=clock.now())
        record_verdict(settings.log_dir, result.test_letters)
    return result


def last_read(settings: Settings) -> datetime | None:
    """When ``outreach inbox`` last read the mail of this send log, if it ever did."""
    return Positions(settings.log_dir / STATE_FILE).read_at
