"""The send log: one CSV row per event, appended, never rewritten.

It is what makes a send exactly-once. A ``sending`` row is written and
fsynced before any of a letter goes on the wire, so after any crash the log
tells which contacts may have their letter (``sending`` with nothing after
it counts as ``ambiguous``) and which certainly do not. A rerun reads it and
sends only what is still owed. Staff read the same file in a spreadsheet.

Each row speaks of the addresses in its ``email`` column: a letter's rows
say, address by address, which recipients have it. This module is the
file and its lock only; what the rows mean for each mission is worked out
in one place, ``ledger.py``.

``outreach inbox`` appends what came back to the sender's mailbox after a
letter left: ``bounced`` and ``delayed`` (a delivery status notification
about one address), ``replied`` and ``auto-replied`` (an answer to the
letter). Such a row keeps the notice's own Message-ID at the end of its
``smtp_reply`` (`` [notice <id>]``), so that reading the same mailbox again
records nothing twice.
"""

from __future__ import annotations

import codecs
import csv
import errno
import fcntl
import io
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from outreach.errors import SendLogError
from outreach.files import writing

#: The columns of a send log written before letters' subjects were kept.
COLUMNS_WITHOUT_SUBJECT = (
    "time",
    "campaign",
    "contact_id",
    "email",
    "status",
    "attempt",
    "smtp_code",
    "smtp_reply",
    "message_id",
)
COLUMNS_WITHOUT_FOLLOWS = (*COLUMNS_WITHOUT_SUBJECT, "subject")
#: ``follows``: for a reminder, the campaign it follows up (its thread).
COLUMNS = (*COLUMNS_WITHOUT_FOLLOWS, "follows")
#: The headers of logs written by earlier versions, which are read and appended to as they are.
OLDER_COLUMNS = (COLUMNS_WITHOUT_SUBJECT, COLUMNS_WITHOUT_FOLLOWS)
#: What ``outreach inbox`` records: what came back to the mailbox after a letter left.
BOUNCED, DELAYED, REPLIED, AUTO_REPLIED = "bounced", "delayed", "replied", "auto-replied"
INBOX_STATUSES = (BOUNCED, DELAYED, REPLIED, AUTO_REPLIED)
STATUSES = (
    "sending",
    "sent",
    "retry",
    "deferred",
    "failed",
    "ambiguous",
    "refused",
    "test",
    *INBOX_STATUSES,
)
#: Cells beginning with these are formulas to a spreadsheet.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
#: An enhanced status code (RFC 3463), as a bounce's ``smtp_code``: ``5.1.1``, ``5.1.10``.
ENHANCED_STATUS = re.compile(r"(?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?!\.?\d)")
#: How an inbox row's ``smtp_reply`` ends: the Message-ID of the notice it came from.
_NOTICE = re.compile(r" \[notice (<[^<>\s]*>)\]$")


def neutralise_cell(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula.

    The leading apostrophe is what spreadsheets themselves use to mark text;
    values that already start with one get another, so the change is undone
    exactly by ``restore_cell``.
    """
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def restore_cell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def with_notice(text: str, notice_id: str) -> str:
    """An inbox row's ``smtp_reply``: what the notice says, then its own Message-ID."""
    return f"{' '.join(text.split())} [notice {notice_id}]"


def split_notice(reply: str) -> tuple[str, str]:
    """``smtp_reply`` without the notice's Message-ID, and that Message-ID ("" for none)."""
    found = _NOTICE.search(reply)
    if found is None:
        return reply, ""
    return reply[: found.start()], found.group(1)


def contact_key(contact_id: str) -> str:
    """A contact id as the log compares it: without regard to case, like the contacts file."""
    return contact_id.upper()


@dataclass(frozen=True)
class LogRow:
    """One event of the send log."""

    time: datetime
    campaign: str
    contact_id: str
    email: str
    status: str
    attempt: int = 0
    #: The server's reply code (``550``), or for a bounce the status it gives (``5.1.1``).
    smtp_code: int | str | None = None
    smtp_reply: str = ""
    message_id: str = ""
    subject: str = ""
    follows: str = ""
    line: int = 0

    @property
    def addresses(self) -> list[str]:
        """The addresses this row speaks of, in lower case."""
        return [a.strip().lower() for a in self.email.split(";") if a.strip()]

    @property
    def reply_text(self) -> str:
        """``smtp_reply`` as staff read it: without the notice's Message-ID."""
        return split_notice(self.smtp_reply)[0]

    @property
    def notice_id(self) -> str:
        """For a row of ``outreach inbox``: the Message-ID of the notice it came from."""
        return split_notice(self.smtp_reply)[1]

    def cells(self, columns: tuple[str, ...] = COLUMNS) -> list[str]:
        """The row's cells under ``columns``, which are named as its fields."""
        shown = {
            "time": self.time.isoformat(timespec="milliseconds"),
            "smtp_code": "" if self.smtp_code is None else str(self.smtp_code),
            "smtp_reply": " ".join(self.smtp_reply.split()),
            "subject": " ".join(self.subject.split()),
        }
        return [neutralise_cell(shown.get(c, str(getattr(self, c)))) for c in columns]


def _header(path: Path, cells: list[str]) -> tuple[str, ...]:
    if tuple(cells) in (COLUMNS, *OLDER_COLUMNS):
        return tuple(cells)
    raise SendLogError(
        f"{path}, line 1: the header is not that of a send log (expected {','.join(COLUMNS)})"
    )


def _parse_row(path: Path, line: int, cells: list[str], columns: tuple[str, ...]) -> LogRow:
    where = f"{path}, line {line}"
    if len(cells) != len(columns):
        raise SendLogError(
            f"{where}: {len(cells)} fields where the log has {len(columns)}; "
            "the send log must not be edited by hand (restore it from a backup)"
        )
    values = dict(zip(columns, (restore_cell(c) for c in cells), strict=True))

    def bad(column: str, expected: str) -> SendLogError:
        number = columns.index(column) + 1
        return SendLogError(
            f"{where}, column {number} ({column}): {values[column]!r} is not {expected}; "
            "the send log must not be edited by hand (restore it from a backup)"
        )

    try:
        time = datetime.fromisoformat(values["time"])
    except ValueError:
        raise bad("time", "an ISO 8601 time") from None
    if time.tzinfo is None:
        raise bad("time", "a time with its UTC offset")
    if values["status"] not in STATUSES:
        raise bad("status", f"one of {', '.join(STATUSES)}")
    if not values["contact_id"]:
        raise bad("contact_id", "a contact id")
    try:
        attempt = int(values["attempt"])
    except ValueError:
        raise bad("attempt", "a whole number") from None
    code: int | str | None = None
    if ENHANCED_STATUS.fullmatch(values["smtp_code"]):
        code = values["smtp_code"]  # a bounce's status, such as 5.1.1
    elif values["smtp_code"]:
        try:
            code = int(values["smtp_code"])
        except ValueError:
            raise bad("smtp_code", "an SMTP reply code or status") from None
    # The columns are named as the fields; a log without ``subject`` or ``follows`` has "".
    text = {c: v for c, v in values.items() if c not in ("time", "attempt", "smtp_code")}
    return LogRow(**text, time=time, attempt=attempt, smtp_code=code, line=line)


def _refuse_other_than_a_file(path: Path) -> None:
    """The log must be a regular file, or not be yet (a device could be read forever)."""
    if path.is_dir():
        raise SendLogError(f"{path} is a folder, not the send log; move it, or set LOG_DIR")
    if path.exists() and not path.is_file():
        raise SendLogError(f"{path} is not a regular file; the send log must be one")


def _columns_of(path: Path, data: bytes) -> tuple[str, ...]:
    """The columns the header of the log's ``data`` names."""
    first = data[: data.find(b"\n")].decode("utf-8", "replace")
    return _header(path, next(csv.reader([first], strict=True)))


def read_log(path: Path) -> list[LogRow]:
    """Every complete row of the log; no log yet is an empty list.

    A last line cut short is what a process killed in the middle of a write
    leaves: it is ignored (the row before it still stands); a whole row that
    only lacks its line end is kept. Any other line that does not parse is an
    error naming it: a log that cannot be trusted must stop the run, never
    cause letters to be sent again.
    """
    try:
        _refuse_other_than_a_file(path)
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise SendLogError(f"{path}: cannot be read ({err.strerror})") from err
    if not data:
        return []
    keep_last = _unterminated_last_line(path, data) == "row"
    complete = data if keep_last else data[: data.rfind(b"\n") + 1]
    try:
        text = complete.decode("utf-8")
    except UnicodeDecodeError as err:
        line = complete[: err.start].count(b"\n") + 1
        raise SendLogError(f"{path}, line {line}: not UTF-8 text; the log was damaged") from err
    return list(_rows(path, text + "\n" if keep_last else text))


#: The characters of the time column: a row cut short starts with them.
_TIME_CHARACTERS = re.compile(r"[0-9T:.+\-]*")


def _unterminated_last_line(path: Path, data: bytes) -> str:
    """What the last line of ``data`` is when it has no line end.

    ``""`` when there is none; ``"row"`` for a whole, valid row that only
    lacks its line end (an editor may drop it; the row is kept, since
    dropping a ``sending`` row would send that letter again); ``"cut"`` for
    the start of a row or of the header, which a process killed in the
    middle of a write leaves (it is dropped). Anything else was written by
    hand and is an error naming the line: it is never silently cut off.
    """
    whole = data.rfind(b"\n") + 1
    tail = data[whole:]
    if not tail:
        return ""
    line = data[:whole].count(b"\n") + 1
    try:
        # A cut may split a multi-byte character: ignore an incomplete end.
        text = codecs.getincrementaldecoder("utf-8")().decode(tail, final=False)
    except UnicodeDecodeError as err:
        raise SendLogError(f"{path}, line {line}: not UTF-8 text; the log was damaged") from err
    if line == 1:
        if ",".join(COLUMNS).startswith(text):  # also the start of an older log's header
            return "cut"
    else:
        try:
            columns = _columns_of(path, data)
            cells = next(csv.reader([text], strict=True), [])
            _parse_row(path, line, cells, columns)
        except (csv.Error, SendLogError, UnicodeDecodeError):
            pass
        else:
            return "row"
        if _TIME_CHARACTERS.fullmatch(text.partition(",")[0]):
            return "cut"
    raise SendLogError(
        f"{path}, line {line}: {text[:40]!r} is neither a row of the send log nor one cut "
        "short by an interrupted run; the send log must not be edited by hand "
        "(restore it from a backup)"
    )


def _rows(path: Path, text: str) -> Iterator[LogRow]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = _header(path, header)
        start = 2
        for cells in reader:
            if cells:
                yield _parse_row(path, start, cells, columns)
            start = reader.line_num + 1
    except csv.Error as err:
        raise SendLogError(f"{path}, line {reader.line_num}: {err}") from err


def _handed_over(rows: Iterable[LogRow], since: datetime) -> list[datetime]:
    """When each message went to the server after ``since``, in any campaign.

    Counted from ``sending`` and ``test`` rows: what the provider counts
    against a daily quota is every transaction, delivered or not, retries
    included.
    """
    return [row.time for row in rows if row.status in ("sending", "test") and row.time > since]


def rate_per_minute(starts: Sequence[datetime]) -> float | None:
    """Transactions a minute: the intervals between their starts, not their count.

    N letters sent at exactly the limit span N-1 intervals.
    """
    if len(starts) < 2:
        return None
    span = (max(starts) - min(starts)).total_seconds()
    return (len(starts) - 1) / span * 60 if span > 0 else None


def sent_since(rows: Iterable[LogRow], since: datetime) -> int:
    """Messages handed to the server since ``since``, in any campaign."""
    return len(_handed_over(rows, since))


def next_free_time(
    rows: Iterable[LogRow], now: datetime, limit: int, *, about_to_send: int = 0
) -> datetime:
    """When the 24-hour window has room again for one more message.

    ``about_to_send`` messages are counted as handed over now: a plan that
    can send only part of its letters today says when the rest may go.
    """
    window = sorted(_handed_over(rows, now - timedelta(days=1))) + [now] * about_to_send
    if len(window) < limit:
        return now
    return window[len(window) - limit] + timedelta(days=1)


class SendLog:
    """The open, locked send log of one run.

    Only one run may write a log at a time: two would each see the other's
    contacts as unsent. The lock is an advisory ``flock`` on the log file
    itself, so that every path to it (a symbolic or a hard link) meets the
    same lock; the kernel releases it even when the process is killed.

    Each row goes to the file in one ``write`` of its own, never through a
    buffer: a row that could not be written (a full disk) is never written
    later by surprise, and a process killed mid-row leaves at most that row
    cut short, which the next run drops.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._columns: tuple[str, ...] = COLUMNS
        self._empty = False
        self.repaired = False
        self._write_lock = threading.Lock()

    def __enter__(self) -> SendLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _refuse_other_than_a_file(path)  # before it is opened
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise SendLogError(f"{path}: cannot be opened ({err.strerror})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise SendLogError(
                    f"{path} is in use by another outreach send or inbox; "
                    "wait for it to finish, or stop it, then run again"
                ) from err
            raise SendLogError(f"{path}: cannot be locked ({err.strerror})") from err
        self._fd = fd
        try:
            with writing(path, SendLogError):
                data = self._drop_partial_last_line()
                if data:
                    self._columns = _columns_of(path, data)
                self._empty = not data  # the header goes in with the first row
        except BaseException:
            self.close()
            raise

    def _drop_partial_last_line(self) -> bytes:
        """Cut a half-written last line, so the next row starts on a line of its own.

        Only a process killed in the middle of a write leaves one; the row it
        was writing was never complete, so nothing that was written is lost.
        Sets ``repaired`` when it cut one; returns the log as it now is.
        """
        with self.path.open("rb+") as handle:
            data = handle.read()
            kind = _unterminated_last_line(self.path, data)
            if kind == "row":
                handle.write(b"\n")  # a whole row: only its line end was missing
                return data + b"\n"
            if kind != "cut":
                return data
            whole = data.rfind(b"\n") + 1
            handle.truncate(whole)
            self.repaired = True
            return data[:whole]

    def rows(self) -> list[LogRow]:
        return read_log(self.path)

    def append(self, row: LogRow, *, durable: bool = False) -> None:
        """Write one row; ``durable`` also waits until it is on the disk.

        Every row goes to the operating system at once, so a killed process
        loses none; ``sending`` rows are also fsynced, so that not even a
        power cut can hide a letter that went out. A row that cannot be
        written (a full disk) stops the run with ``SendLogError``.
        """
        assert self._fd is not None, "the log is not open"
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        with self._write_lock:
            if self._empty:
                writer.writerow(self._columns)
            writer.writerow(row.cells(self._columns))
            data = out.getvalue().encode("utf-8")
            with writing(
                self.path, SendLogError, "; stopped so that no letter goes out unrecorded"
            ):
                while data:
                    data = data[os.write(self._fd, data) :]
                self._empty = False
                if durable:
                    os.fsync(self._fd)

    def close(self) -> None:
        """Put every row on the disk and let the next run have the log."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with writing(self.path, SendLogError):
                os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
