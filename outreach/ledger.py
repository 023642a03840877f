"""The ledger: each mission's truth, worked out once from the send log.

The send log (``sendlog.py``) is a list of events; the ledger folds them
into what staff and every command need to know: for each campaign, each
mission (contact) and each of its addresses, what the letter came to. The
plan (who is owed a letter), the repeat check, reminder selection, the
do-not-contact hold, the report and the inbox's matching all read it, and
none keeps a rule of its own.

An address of a letter is in one state; each row of the log that names it
moves it on, by this table (``·``: the row changes nothing)::

    row              from any state      from an accepted state (sent, delayed,
                                         bounced, auto-replied, replied)
    sending          sending             sending
    sent             sent                sent
    retry, deferred  owed                owed
    failed, refused  failed              failed
    bounced          ·                   bounced
    delayed          ·                   delayed (from sent only)
    auto-replied     ·                   auto-replied (never over replied)
    replied          ·                   replied

``sending`` with nothing after it is ``ambiguous``: the run stopped while
the letter was on the wire. What comes back to the mailbox (a bounce, a
delay, an answer) attaches only to a letter some server accepted: a notice
about an address whose letter was never accepted changes nothing and is
kept in ``Ledger.ignored``, with why. (* an automatic reply never hides an
answer: ``replied`` stays.) A delay notice read after the bounce that ended
the delay does not undo the bounce.

A mission's status in a campaign follows from its addresses' states, in
this order of precedence (To and Cc alike):

1. ``replied``: anyone at the mission answered (an answer beats an
   automatic reply from another address);
2. what a run still has to settle at an address the mission has now:
   ``ambiguous`` (it may have it), ``deferred``/``retry`` (still owed),
   ``failed`` (refused for good: correct it, then --retry-failed). A letter
   counts as sent only when each of the mission's addresses has it, or
   bounced;
3. the mission has the letter at some address: ``auto-replied`` (an
   out-of-office says it arrived), else ``sent``, else ``delayed``. A bounce
   of another address does not hide that delivery; nor does a failure at
   an address since corrected in the contacts file (that is history);
4. ``bounced``: no address has it, and one bounced;
5. ``not attempted``: no letter of that campaign was ever attempted.

A reminder's thread is one: an answer to the first letter or to any
reminder counts for the whole thread (``Ledger.answered``), and an address
that bounced any letter of the thread gets no later reminder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from outreach.sendlog import (
    AUTO_REPLIED,
    BOUNCED,
    DELAYED,
    INBOX_STATUSES,
    REPLIED,
    LogRow,
    contact_key,
)

NOT_ATTEMPTED = "not attempted"
#: Address states of a letter some server accepted and that is still there.
HAS_LETTER = ("sent", DELAYED, AUTO_REPLIED, REPLIED)
#: Address states whose letter may still go: refused for now.
OWED = ("retry", "deferred")
#: A mission's states that call for a reminder: it has the letter and has not answered.
FOLLOWED_UP = ("sent", DELAYED, AUTO_REPLIED)
NEVER_GOT_IT = "never got the first letter"
STILL_OWED = "still owed the first letter"
_CUT_SHORT = "the run stopped while this letter was being sent"
#: What a letter that no server accepted at an address came to there, for the repeat check.
_EARLIER = {"ambiguous": "may have", "failed": "refused"}
#: An address's state after a row of a run, where it is not the row's status.
_RUN_STATES = {"refused": "failed", "sending": "ambiguous"}


@dataclass
class Letter:
    """One mission's letter in one campaign: its rows, and each address's state."""

    campaign: str
    contact_id: str
    message_id: str = ""
    subject: str = ""
    #: The campaign this letter follows up ("" for a first letter).
    follows: str = ""
    attempts: int = 0
    rows: list[LogRow] = field(default_factory=list)
    #: Each address's state, and the row that put it there (address in lower case).
    addresses: dict[str, tuple[str, LogRow]] = field(default_factory=dict)
    #: Addresses some server accepted the letter for, at any point.
    accepted: set[str] = field(default_factory=set)

    def state(self, address: str) -> str | None:
        """One address's state; None when it was never tried."""
        found = self.addresses.get(address.lower())
        return found[0] if found is not None else None

    def having(self, *states: str) -> list[str]:
        return [a for a, (s, _) in self.addresses.items() if s in states]

    @property
    def sent_at(self) -> datetime | None:
        """When a server first accepted it."""
        return min((r.time for r in self.rows if r.status == "sent"), default=None)

    def fold(self, row: LogRow) -> str | None:
        """Take one row in; why it changed nothing, for a notice that cannot attach."""
        self.contact_id = row.contact_id
        self.message_id = self.message_id or row.message_id
        self.subject = self.subject or row.subject
        self.follows = self.follows or row.follows
        if row.status in INBOX_STATUSES:
            return self._notice(row)
        self.rows.append(row)
        self.attempts = max(self.attempts, row.attempt)
        refused_now = {
            a
            for a, (_, r) in self.addresses.items()
            if r.status == "refused" and r.attempt == row.attempt
        }
        for address in row.addresses:
            # A log written before each address had rows of its own listed every
            # recipient on ``sent``, after a ``refused`` row for the one refused.
            if row.status == "sent" and address in refused_now:
                continue
            self.addresses[address] = (_RUN_STATES.get(row.status, row.status), row)
            if row.status == "sent":
                self.accepted.add(address)
        return None

    def _notice(self, row: LogRow) -> str | None:
        named = [a for a in row.addresses if a in self.accepted]
        if not named:
            shown = ", ".join(row.addresses) or "no address"
            return f"it is about {shown}, where no server accepted the letter of {self.contact_id}"
        self.rows.append(row)
        for address in named:
            before = self.addresses[address][0]
            if _supersedes(row.status, before):
                self.addresses[address] = (row.status, row)
        return None

    def status(self, current: Collection[str] | None = None) -> str:
        """The mission's status in this campaign (see the module's precedence).

        ``current`` are the mission's addresses in the contacts file now:
        once some address has the letter, what befell an address the file
        no longer has is history.
        """
        states = {s for s, _ in self.addresses.values()}
        if REPLIED in states:
            return REPLIED
        now = None if current is None else {a.lower() for a in current}
        has = self.has_letter
        live = {s for a, (s, _) in self.addresses.items() if not has or now is None or a in now}
        for state in ("ambiguous", "deferred", "retry", "failed", AUTO_REPLIED, "sent", DELAYED):
            if state in live or (state in HAS_LETTER and state in states):
                return state
        return BOUNCED if BOUNCED in states else NOT_ATTEMPTED

    @property
    def has_letter(self) -> bool:
        return bool(self.having(*HAS_LETTER))

    def reason(self, current: Collection[str] | None = None) -> LogRow:
        """The row that explains ``status(current)``: for a problem, the server's words."""
        status = self.status(current)
        found = [row for state, row in self.addresses.values() if state == status]
        row = max(found, key=lambda r: r.line) if found else self.rows[-1]
        if row.status == "sending":
            return dataclasses.replace(row, status="ambiguous", smtp_reply=_CUT_SHORT)
        return row

    def owed(
        self,
        current: Sequence[str],
        *,
        retry_failed: bool,
        resend_ambiguous: bool,
        retry_bounced: bool,
    ) -> tuple[str, ...]:
        """Which of the ``current`` addresses a run sends this letter to, with these options.

        An address refused for now always goes again; one refused for good
        with --retry-failed, an ambiguous one with --resend-ambiguous. Once
        the mission has the letter, no other address does: a mission gets its
        letter once. Until then an address never tried (a corrected one)
        goes, unless the letter failed, bounced or may have arrived: then only
        with --retry-failed, --retry-bounced or --resend-ambiguous. A bounced
        address never: it would bounce again.
        """
        needs = {"failed": retry_failed, BOUNCED: retry_bounced, "ambiguous": resend_ambiguous}
        again = {*OWED, *(s for s in ("failed", "ambiguous") if needs[s])}
        status = self.status(current)
        if not self.has_letter and needs.get(status, True):
            again.add(NOT_ATTEMPTED)
        return tuple(a for a in current if (self.state(a) or NOT_ATTEMPTED) in again)


def _supersedes(status: str, before: str) -> bool:
    """Whether a notice's ``status`` becomes an accepted address's state in place of ``before``."""
    return {DELAYED: before == "sent", AUTO_REPLIED: before != REPLIED}.get(status, True)


@dataclass(frozen=True)
class Original:
    """A mission's letter of the campaign a follow-up answers, as a reminder needs it."""

    status: str
    message_id: str
    subject: str
    sent: datetime | None
    #: The addresses a reminder goes to: those that have a letter of the thread.
    recipients: tuple[str, ...] = ()

    @property
    def followed_up(self) -> bool:
        return self.status in FOLLOWED_UP and bool(self.recipients)

    @property
    def left_out_as(self) -> str:
        """Why no reminder goes, as the plan says it."""
        if self.status in OWED:
            return STILL_OWED
        if self.status in FOLLOWED_UP and not self.recipients:
            return BOUNCED
        return self.status

    def template_values(self, language: str = "en") -> dict[str, str]:
        """``original_date`` and ``original_subject``, for the templates.

        The date is written as the templates' ``language`` writes a letter's
        date line: "31 August 2015", "31 août 2015", "31 de agosto de 2015".
        """
        from outreach.render import long_date

        when = self.sent
        date = long_date(when.date(), language) if when is not None else ""
        return {"original_date": date, "original_subject": self.subject}


class Ledger:
    """Every letter of the send log, by campaign and mission; built once per command."""

    def __init__(self, rows: Iterable[LogRow]) -> None:
        self.letters: dict[tuple[str, str], Letter] = {}
        self.by_message_id: dict[str, Letter] = {}
        #: Test letters' Message-IDs (``outreach test-send``): no contact's letter.
        self.tests: set[str] = set()
        #: Rows of notices that attach to no accepted letter, with why.
        self.ignored: list[tuple[LogRow, str]] = []
        self.rows: list[LogRow] = []
        for row in rows:
            self.add(row)

    def add(self, row: LogRow) -> None:
        """Take one more row in (as a run or ``outreach inbox`` writes it)."""
        self.rows.append(row)
        if row.status == "test":
            self.tests.add(row.message_id.lower())
            return
        key = (row.campaign, contact_key(row.contact_id))
        letter = self.letters.get(key)
        if letter is None:
            letter = self.letters[key] = Letter(row.campaign, row.contact_id)
        why = letter.fold(row)
        if why is not None:
            self.ignored.append((row, why))
        if letter.message_id:
            self.by_message_id.setdefault(letter.message_id.lower(), letter)

    def letter(self, campaign: str, contact_id: str) -> Letter | None:
        return self.letters.get((campaign, contact_key(contact_id)))

    def campaign(self, campaign: str) -> dict[str, Letter]:
        """The letters of one campaign, keyed by ``contact_key``, in log order."""
        return {key: letter for (name, key), letter in self.letters.items() if name == campaign}

    def campaigns(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.letters))

    # -- threads: a first letter and its reminders ---------------------------------------

    def root(self, campaign: str) -> str:
        """The first campaign of ``campaign``'s thread (itself, for a first letter)."""
        follows = {name: lt.follows for (name, _), lt in self.letters.items() if lt.follows}
        seen = {campaign}
        while follows.get(campaign) and follows[campaign] not in seen:
            campaign = follows[campaign]
            seen.add(campaign)
        return campaign

    def thread(self, campaign: str) -> list[str]:
        """Every campaign of the log in ``campaign``'s thread: its root and all that follow it."""
        root = self.root(campaign)
        return [c for c in {root: None, **dict.fromkeys(self.campaigns())} if self.root(c) == root]

    def in_thread(self, campaign: str, contact_id: str) -> list[Letter]:
        """The mission's letters of every campaign in ``campaign``'s thread."""
        found = (self.letter(c, contact_id) for c in self.thread(campaign))
        return [letter for letter in found if letter is not None]

    def answered(self, campaign: str, contact_id: str) -> bool:
        """Whether anyone at the mission answered a letter of ``campaign``'s thread."""
        return any(letter.having(REPLIED) for letter in self.in_thread(campaign, contact_id))

    def original(
        self, follow_up_of: str, contact_id: str, current: Sequence[str]
    ) -> Original | None:
        """What a follow-up of ``follow_up_of`` answers for one mission, or None (no letter).

        A thread is one: an answer to the first letter or to any reminder
        means no more reminders, and an address that bounced any letter of
        the thread gets no later one. The reminder goes to the mission's
        current addresses that have a letter of the thread.
        """
        first = self.letter(follow_up_of, contact_id)
        if first is None:
            return None
        letters = self.in_thread(follow_up_of, contact_id)
        status = REPLIED if self.answered(follow_up_of, contact_id) else first.status(current)
        bounced = {a for letter in letters for a in letter.having(BOUNCED)}
        have = {a for letter in letters for a in letter.having(*HAS_LETTER)}
        recipients = tuple(a for a in current if a.lower() in have - bounced)
        return Original(status, first.message_id, first.subject, first.sent_at, recipients)

    # -- the repeat check -----------------------------------------------------------------

    def earlier(self, address: str) -> list[tuple[Letter, str]]:
        """Letters of any campaign that reached, may have reached or were refused at ``address``.

        Each with what became of it at that address: ``got`` (a server
        accepted it), ``may have`` (ambiguous), ``refused``.
        """
        address = address.lower()
        found = []
        for letter in self.letters.values():
            kind = (
                "got" if address in letter.accepted else _EARLIER.get(letter.state(address) or "")
            )
            if kind:
                found.append((letter, kind))
        return found
