"""The send log: one CSV row per event, appended, never rewritten.

It is what makes a send exactly-once. A ``sending`` row is flushed and
fsynced before the end of the message goes on the wire, so after any crash
the log tells which contacts may have their letter (``sending`` with nothing
after it counts as ``ambiguous``) and which certainly do not. A rerun reads
it and sends only what is still owed. Staff read the same file in a
spreadsheet.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import errno
import fcntl
import io
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from outreach.errors import SendLogError

COLUMNS = (
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
STATUSES = ("sending", "sent", "retry", "deferred", "failed", "ambiguous", "refused", "test")
#: Latest statuses after which a contact is not sent again (unless asked).
DONE = ("sent", "failed", "ambiguous")
#: Cells beginning with these are formulas to a spreadsheet.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralise_cell(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula.

    The leading apostrophe is what spreadsheets themselves use to mark text;
    values that already start with one get another, so the change is undone
    exactly by ``restore_cell``.
    """
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def restore_cell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


@dataclass(frozen=True)
class LogRow:
    """One event of the send log."""

    time: datetime
    campaign: str
    contact_id: str
    email: str
    status: str
    attempt: int = 0
    smtp_code: int | None = None
    smtp_reply: str = ""
    message_id: str = ""
    line: int = 0

    def cells(self) -> list[str]:
        values = [
            self.time.isoformat(timespec="milliseconds"),
            self.campaign,
            self.contact_id,
            self.email,
            self.status,
            str(self.attempt),
            "" if self.smtp_code is None else str(self.smtp_code),
            " ".join(self.smtp_reply.split()),
            self.message_id,
        ]
        return [neutralise_cell(v) for v in values]


def _parse_row(path: Path, line: int, cells: list[str]) -> LogRow:
    where = f"{path}, line {line}"
    if len(cells) != len(COLUMNS):
        raise SendLogError(
            f"{where}: {len(cells)} fields where the log has {len(COLUMNS)}; "
            "the send log must not be edited by hand (restore it from a backup)"
        )
    values = dict(zip(COLUMNS, (restore_cell(c) for c in cells), strict=True))

    def bad(column: str, expected: str) -> SendLogError:
        number = COLUMNS.index(column) + 1
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
    try:
        code = int(values["smtp_code"]) if values["smtp_code"] else None
    except ValueError:
        raise bad("smtp_code", "an SMTP reply code") from None
    return LogRow(
        time=time,
        campaign=values["campaign"],
        contact_id=values["contact_id"],
        email=values["email"],
        status=values["status"],
        attempt=attempt,
        smtp_code=code,
        smtp_reply=values["smtp_reply"],
        message_id=values["message_id"],
        line=line,
    )


def read_log(path: Path) -> list[LogRow]:
    """Every complete row of the log; no log yet is an empty list.

    A last line cut short is what a process killed in the middle of a write
    leaves: it is ignored (the row before it still stands); a whole row that
    only lacks its line end is kept. Any other line that does not parse is an
    error naming it: a log that cannot be trusted must stop the run, never
    cause letters to be sent again.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise SendLogError(f"{path}: cannot be read ({err.strerror})") from err
    if not data:
        return []
    whole = data.rfind(b"\n") + 1
    keep_last = _unterminated_last_line(path, data) == "row"
    complete = data if keep_last else data[:whole]
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
        if ",".join(COLUMNS).startswith(text):
            return "cut"
    else:
        try:
            cells = next(csv.reader([text], strict=True), [])
            _parse_row(path, line, cells)
        except (csv.Error, SendLogError):
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
        if tuple(header) != COLUMNS:
            raise SendLogError(
                f"{path}, line 1: the header is not that of a send log "
                f"(expected {','.join(COLUMNS)})"
            )
        start = 2
        for cells in reader:
            if cells:
                yield _parse_row(path, start, cells)
            start = reader.line_num + 1
    except csv.Error as err:
        raise SendLogError(f"{path}, line {reader.line_num}: {err}") from err


def latest_rows(rows: Iterable[LogRow], campaign: str) -> dict[str, LogRow]:
    """The last message-level row of each contact in ``campaign``.

    ``refused`` rows speak of one address and ``test`` rows of a test copy:
    neither says anything about the contact's letter. A ``sending`` row with
    nothing after it means the process died with the data possibly on the
    wire: it is reported as ``ambiguous``.
    """
    latest: dict[str, LogRow] = {}
    for row in rows:
        if row.campaign == campaign and row.status not in ("refused", "test"):
            latest[row.contact_id] = row
    for contact_id, row in latest.items():
        if row.status == "sending":
            latest[contact_id] = dataclasses.replace(
                row,
                status="ambiguous",
                smtp_code=None,
                smtp_reply="the run stopped while this letter was being sent",
            )
    return latest


def _handed_over(rows: Iterable[LogRow], since: datetime) -> list[datetime]:
    """When each message went to the server after ``since``, in any campaign.

    Counted from ``sending`` and ``test`` rows: what the provider counts
    against a daily quota is what went on the wire, delivered or not.
    """
    return [row.time for row in rows if row.status in ("sending", "test") and row.time > since]


def sent_since(rows: Iterable[LogRow], since: datetime) -> int:
    """Messages handed to the server since ``since``, in any campaign."""
    return len(_handed_over(rows, since))


def next_free_time(rows: Iterable[LogRow], now: datetime, limit: int) -> datetime:
    """When the 24-hour window will have room again for one more message."""
    window = sorted(_handed_over(rows, now - timedelta(days=1)))
    if len(window) < limit:
        return now
    return window[len(window) - limit] + timedelta(days=1)


class SendLog:
    """The open, locked send log of one run.

    Only one run may write a log at a time: two would each see the other's
    contacts as unsent. The lock is an advisory ``flock`` on a file beside
    the log, released by the kernel even when the process is killed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[str] | None = None
        self._file: IO[str] | None = None
        self._writer: csv.Writer | None = None  # type: ignore[name-defined]
        self.repaired = False
        self._write_lock = threading.Lock()

    def __enter__(self) -> SendLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = (self.path.parent / (self.path.name + ".lock")).open("a+", encoding="utf-8")
        except OSError as err:
            raise SendLogError(f"{self.path}: cannot be opened ({err.strerror})") from err
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise SendLogError(
                    f"{self.path} is in use by another outreach send ({holder}); "
                    "wait for it to finish, or stop it, then run again"
                ) from err
            raise SendLogError(f"{self.path}: cannot be locked ({err.strerror})") from err
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        self._lock = lock
        try:
            self.repaired = self._drop_partial_last_line()
        except BaseException:
            self.close()
            raise

    def _open_for_appending(self) -> None:
        """Open the log file at its first row, so a run that sends nothing leaves no file."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        if new:
            self._writer.writerow(COLUMNS)
            self._sync()

    def _drop_partial_last_line(self) -> bool:
        """Cut a half-written last line, so the next row starts on a line of its own.

        Only a process killed in the middle of a write leaves one; the row it
        was writing was never complete, so nothing that was written is lost.
        """
        try:
            with self.path.open("rb+") as handle:
                data = handle.read()
                kind = _unterminated_last_line(self.path, data)
                if kind == "row":
                    handle.write(b"\n")  # a whole row: only its line end was missing
                if kind != "cut":
                    return False
                handle.truncate(data.rfind(b"\n") + 1)
                return True
        except FileNotFoundError:
            return False

    def rows(self) -> list[LogRow]:
        return read_log(self.path)

    def append(self, row: LogRow, *, durable: bool = False) -> None:
        """Write one row; ``durable`` also waits until it is on the disk.

        Every row is flushed to the operating system at once, so a killed
        process loses none; ``sending`` rows are also fsynced, so that not
        even a power cut can hide a letter that went out.
        """
        with self._write_lock:
            self._write(row)
            if durable:
                self._sync()

    def _write(self, row: LogRow) -> None:
        assert self._lock is not None, "the log is not open"
        if self._file is None:
            self._open_for_appending()
        assert self._file is not None
        assert self._writer is not None
        self._writer.writerow(row.cells())
        self._file.flush()

    def _sync(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._sync()
            self._file.close()
            self._file = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
