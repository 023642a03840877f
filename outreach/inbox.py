"""After the first hop: bounces and answers from the mailbox, into the send log.

``outreach inbox`` reads the mailbox the letters were sent from, over IMAP,
without changing anything in it: each folder is opened with EXAMINE
(read-only) and each message fetched with ``BODY.PEEK[]``, so no flag is
set; nothing is ever stored, copied, moved or deleted. ``--from PATH``
reads exported mail instead: a folder of ``.eml`` files, a Maildir, or an
mbox file.

Each message is read by ``notices.read_notice``; what it says is matched to
a letter of the send log (any campaign) by the letter's Message-ID, and to
the address by the notice's recipient fields. What matches becomes a row of
the send log (``bounced``, ``delayed``, ``replied``, ``auto-replied``),
appended through ``SendLog`` like every other row, under its lock. A bounce
that matches no letter, or no address of its letter, is counted and listed,
never recorded against a contact.

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
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from outreach.clock import Clock, SystemClock
from outreach.credentials import imap_credentials
from outreach.errors import InboxError, SendLogError, SettingsError
from outreach.ledger import Ledger, Letter
from outreach.notices import Event, Notice, parse, read_notice
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
    """One message as read: where it was (for the user), and its bytes."""

    where: str
    data: bytes


@dataclass(frozen=True)
class Unmatched:
    """A bounce that matches no letter, or no address of its letter: never recorded."""

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
    warnings: list[str] = field(default_factory=list)
    #: Test letters (outreach test-send) read back, and the verdict kept as the latest.
    test_letters: list[Verdict] = field(default_factory=list)
    latest_test_letter: Verdict | None = None

    @property
    def counts(self) -> Counter[str]:
        return Counter(row.status for row in self.rows)


# -- matching notices to letters -----------------------------------------------------------


class Matcher:
    """Matches notices to the letters of a send log, and makes their rows.

    ``own`` are the sender's addresses: a message from one of them (a copy
    of a letter, a follow-up staff wrote) is no answer from a mission.
    """

    def __init__(self, rows: Sequence[LogRow], own: Sequence[str], clock: Clock) -> None:
        self.clock = clock
        self.own = {a.lower() for a in own if a}
        self.ledger = Ledger(rows)
        self.letters = self.ledger.by_message_id
        self.tests = self.ledger.tests
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
        """
        message = parse(fetched.data)
        notice = read_notice(message, fetched.data)
        if since is not None and notice.date is not None and notice.date.date() < since:
            return []
        result.read += 1
        if notice.notice_id in self.tests:  # a test letter back: the receiver's verdict
            result.test_letters.append(read_verdict(message, notice.notice_id))
        if notice.notice_id in self.letters or notice.notice_id in self.tests:
            result.other += 1  # a copy of a letter itself
            return []
        if notice.kind == "other" or (notice.kind == "answer" and self._from_us(notice)):
            result.other += 1
            return []
        # An answer in a thread (a reply to a follow-up) answers every letter of
        # it; a bounce is about the letter it returns, the first it names.
        letters = [self.letters[i] for i in dict.fromkeys(notice.refers_to) if i in self.letters]
        if not letters:
            if notice.kind == "answer":
                result.other += 1  # an answer to some other message
            else:
                result.unmatched.append(Unmatched(fetched.where, notice, self._why(notice)))
            return []
        if notice.problem:
            result.unmatched.append(Unmatched(fetched.where, notice, notice.problem))
            return []
        rows = []
        for event in notice.events:
            for letter in letters if event.kind not in (BOUNCED, DELAYED) else letters[:1]:
                row = self._row(fetched, notice, event, letter, result)
                if row is None:
                    continue
                if _key(row) in self.seen:
                    result.already += 1
                    continue
                self.seen.add(_key(row))
                self.ledger.add(row)  # the next notice of this run sees this one
                rows.append(row)
        return rows

    def _row(
        self,
        fetched: Fetched,
        notice: Notice,
        event: Event,
        letter: Letter,
        result: InboxResult,
    ) -> LogRow | None:
        """The row one event of a notice makes for one letter, or None when it names nobody.

        A notice attaches only to an address some server accepted the letter
        for (``ledger.py``): anything else is listed as unmatched, with why.
        """
        if event.kind in (BOUNCED, DELAYED):
            address = next((a for a in event.recipients if a in letter.accepted), None)
            if address is None:
                named = ", ".join(event.recipients) or "no recipient"
                tried = any(a in letter.addresses for a in event.recipients)
                why = (
                    f"it names {named}, where no server accepted the letter of "
                    f"{letter.contact_id} (campaign {letter.campaign!r})"
                    if tried
                    else f"it names {named}, to which the letter of {letter.contact_id} "
                    f"(campaign {letter.campaign!r}) was not sent"
                )
                result.unmatched.append(Unmatched(fetched.where, notice, why))
                return None
            addresses = [address]
        else:
            addresses = sorted(letter.accepted)
            if not addresses:
                why = (
                    f"it answers the letter of {letter.contact_id} (campaign "
                    f"{letter.campaign!r}), which no server accepted"
                )
                result.unmatched.append(Unmatched(fetched.where, notice, why))
                return None
        return LogRow(
            time=self.clock.now(),
            campaign=letter.campaign,
            contact_id=letter.contact_id,
            email=";".join(addresses),
            status=event.kind,
            attempt=letter.attempts,
            smtp_code=event.status or None,
            smtp_reply=with_notice(event.text, notice.notice_id),
            message_id=letter.message_id,
            subject=letter.subject,
            follows=letter.follows,
        )

    def _from_us(self, notice: Notice) -> bool:
        address = notice.sender.rpartition("<")[2].rstrip(">").strip().lower()
        return address in self.own

    def _why(self, notice: Notice) -> str:
        if any(i in self.tests for i in notice.refers_to):
            return "a bounce of a test letter (outreach test-send), which is no contact's letter"
        if notice.refers_to:
            return f"a bounce of {notice.refers_to[0]}, which is no letter of the send log"
        return "a bounce that names no message (no returned original, In-Reply-To or References)"


def _key(row: LogRow) -> tuple[str, str, str, str, str]:
    """What makes an inbox row the same as another: the notice, the letter, what, whom."""
    whom = row.addresses[0] if row.status in (BOUNCED, DELAYED) and row.addresses else ""
    return (row.notice_id, row.campaign, contact_key(row.contact_id), row.status, whom)


# -- reading exported mail -----------------------------------------------------------------


def read_files(path: Path) -> Iterator[Fetched]:
    """The messages in a folder of ``.eml`` files, a Maildir, or an mbox file (or one .eml).

    Read only: Python's ``mailbox`` opens a Maildir or an mbox without
    changing it (no message is moved from ``new/`` to ``cur/``, no flag set).
    """
    try:
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                maildir = mailbox.Maildir(path, factory=None, create=False)
                for key in sorted(maildir.keys()):
                    yield Fetched(f"{path}: {key}", maildir.get_bytes(key))
                return
            files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".eml" and p.is_file())
            for file in files:
                yield Fetched(str(file), file.read_bytes())
            return
        if not path.exists():
            raise InboxError(f"--from {path}: no such file or folder")
        with path.open("rb") as handle:
            start = handle.read(5)
        if start != b"From ":
            yield Fetched(str(path), path.read_bytes())
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
            if isinstance(loaded, dict) and isinstance(loaded.get("mailboxes"), dict):
                self.data = loaded["mailboxes"]
                with contextlib.suppress(TypeError, ValueError):
                    self.read_at = datetime.fromisoformat(loaded.get("read_at", ""))
            else:
                raise ValueError("not the shape outreach writes")
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
        text = json.dumps(state, indent=2, sort_keys=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("w", encoding="utf-8") as handle:
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            folder_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise SendLogError(f"{self.path}: cannot be written ({err.strerror})") from err


# -- reading the mailbox over IMAP ---------------------------------------------------------


def server_name(settings: Settings) -> str:
    return f"{settings.imap_host}:{settings.imap_port}"


def connect(settings: Settings) -> IMAPClient:
    """A connection to IMAP_HOST, encrypted as IMAP_SECURITY says, certificate verified."""
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


def _sign_in(client: IMAPClient, settings: Settings) -> None:
    """Sign in to the mailbox: the one place that does, whatever the way of signing in.

    As for SMTP (``credentials.py``): a password, from IMAP_PASSWORD (or
    SMTP_PASSWORD) or a command; or, with SMTP_AUTH=xoauth2 or oauthbearer,
    a token from a command or from ``outreach login --inbox``, asked for
    once more when the server refuses it.
    """
    name = server_name(settings)
    credentials = imap_credentials(settings)
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
            else:
                client.login(user, secret)
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
    return int(selected[b"UIDVALIDITY"])


def read_imap(
    settings: Settings,
    positions: Positions,
    since: date | None,
    first_letter: date | None,
    handle: Callable[[Fetched], None],
) -> None:
    """Read every folder of IMAP_FOLDERS, handing each new message to ``handle``.

    Each folder's position is remembered once all its messages were handled
    (their rows on the disk).
    """
    client = connect(settings)
    name = server_name(settings)
    account = f"{settings.imap_username}@{name}"
    try:
        _sign_in(client, settings)
        for folder in settings.imap_folders:
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
            uids = sorted(uid for uid in client.search(criteria) if uid > last)
            for offset in range(0, len(uids), BATCH):
                batch = uids[offset : offset + BATCH]
                fetched = client.fetch(batch, ["BODY.PEEK[]"])
                for uid in batch:
                    data = fetched.get(uid, {}).get(b"BODY[]")
                    if isinstance(data, bytes):
                        handle(Fetched(f"{folder}, UID {uid}", data))
            top = max([remembered, *uids])
            if top:
                positions.remember(account, folder, uidvalidity, top)
    except (IMAPClientError, OSError) as err:
        raise _connect_error(err, settings) from err
    finally:
        _close(client)


# -- the whole run -------------------------------------------------------------------------


def read_inbox(
    settings: Settings,
    *,
    source: Path | None = None,
    since: date | None = None,
    clock: Clock | None = None,
) -> InboxResult:
    """Read the mailbox (or ``source``), and append to the send log what matches a letter.

    Holds the send log's lock throughout, like a send: rows go in one at a
    time, each on the disk before the position that covers it.
    """
    clock = clock or SystemClock()
    log_path = settings.send_log
    if not log_path.exists():
        raise SendLogError(
            f"{log_path}: no send log yet, so no letter to match the mailbox against; "
            "run outreach inbox after outreach send"
        )
    where = str(source) if source is not None else _imap_source(settings)
    result = InboxResult(source=where, log=log_path)
    with SendLog(log_path) as log:
        matcher = Matcher(log.rows(), [settings.mail_from, settings.mail_reply_to], clock)

        def handle(fetched: Fetched, since: date | None = None) -> None:
            for row in matcher.match(fetched, result, since=since):
                log.append(row, durable=True)
                result.rows.append(row)

        positions = Positions(settings.log_dir / STATE_FILE)
        if source is not None:
            for fetched in read_files(source):
                handle(fetched, since)
        else:
            if positions.warning:
                result.warnings.append(positions.warning)
            read_imap(settings, positions, since, matcher.first_letter, handle)
        positions.save(read_at=clock.now())
        result.latest_test_letter = record_verdict(settings.log_dir, result.test_letters)
    return result


def last_read(settings: Settings) -> datetime | None:
    """When ``outreach inbox`` last read the mail of this send log, if it ever did."""
    return Positions(settings.log_dir / STATE_FILE).read_at


def _imap_source(settings: Settings) -> str:
    folders = ", ".join(settings.imap_folders)
    return f"{folders} of {settings.imap_username} at {server_name(settings)}"
