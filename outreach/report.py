"""After sending: what became of every contact, read from the send log.

The log is the only record, and it is written for machines (one row per
event); staff want one line per contact, the counts, the problems with the
server's own words, and the answers to follow up (``outreach inbox`` puts
bounces and replies into the log). The same report is shown in the terminal, written as
CSV for a spreadsheet, as JSON for other tools, or as one HTML page.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from outreach.contacts import ContactList
from outreach.donotcontact import DoNotContact
from outreach.ledger import FOLLOWED_UP, HAS_LETTER, NOT_ATTEMPTED, OWED, Ledger
from outreach.sendlog import (
    INBOX_STATUSES,
    REPLIED,
    LogRow,
    contact_key,
    neutralise_cell,
)

if TYPE_CHECKING:
    from outreach.verdict import Verdict

HELD_BACK = "held back"
#: The order statuses are shown in: done first, then what needs a look.
ORDER = (
    "sent",
    "replied",
    "auto-replied",
    "delayed",
    "retry",
    "deferred",
    "failed",
    "bounced",
    "ambiguous",
    HELD_BACK,
    NOT_ATTEMPTED,
)
#: Statuses that someone should look at, with the server's reply.
PROBLEMS = ("retry", "deferred", "failed", "bounced", "ambiguous")
#: Statuses of a letter the mission answered: someone follows up.
REPLIES = ("replied", "auto-replied")
FORMATS = ("table", "csv", "json", "html")


#: What to do about the letters no one has answered yet.
AWAITING_STEP = (
    "no reply or bounce read so far (run `make inbox` to read the latest); "
    "a follow-up in a few weeks reminds them (README: Follow-ups)"
)


def next_step(status: str, contacts_file: str = "contacts.csv") -> str:
    """What staff do about a letter in this state, in a sentence."""
    return {
        "retry": "still owed: the server refused it for now; run `make send` again later",
        "deferred": "still owed: the server refused it for now; run `make send` again later",
        "failed": (
            "refused for good: check the address with the mission and correct it in "
            f"{contacts_file}, then run `make send ARGS=--retry-failed`"
        ),
        "ambiguous": (
            "the server may have it: ask the mission, or your provider's logs, whether it "
            "arrived; if not, run `make send ARGS=--resend-ambiguous`"
        ),
        "bounced": (
            "the address no longer works: find the mission's current address (the Blue Book "
            f"is often out of date; ask the mission), put it in {contacts_file}, "
            "run `make send ARGS=--retry-bounced`"
        ),
        "delayed": (
            "the mission's server has not taken it yet and is still trying: nothing to do; "
            "run `make inbox` later to see whether it bounced"
        ),
        "replied": "the mission answered: read the reply in the mailbox and follow up",
        "auto-replied": (
            "an automatic answer (out of office): the letter arrived; follow up if nobody answers"
        ),
        NOT_ATTEMPTED: "not sent yet: `make send` sends it",
        HELD_BACK: "on the do-not-contact list: no letter goes to this mission",
    }.get(status, "")


@dataclass(frozen=True)
class ContactState:
    """One contact's state in a campaign: the status, and the row that explains it.

    ``email`` is the addresses the status is about (for a failed letter, the
    address refused); ``sent_to`` those that have the letter.
    """

    id: str
    country: str
    email: str
    status: str
    attempts: int
    last_time: datetime | None
    smtp_code: int | str | None
    smtp_reply: str
    message_id: str
    sent_to: str = ""
    next_step: str = ""


#: The report's CSV has a column for each field of a contact's state, in this order.
CSV_COLUMNS = tuple(f.name for f in fields(ContactState))


@dataclass
class Report:
    campaign: str
    log: Path
    contacts: list[ContactState]
    first_send: datetime | None = None
    last_send: datetime | None = None
    rate_per_minute: float | None = None
    #: The runs the campaign's letters went in (``runs``): the rate is theirs alone.
    runs: int = 0
    other_campaigns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The receiving server's verdict on the latest test letter read back by ``outreach inbox``.
    test_letter: Verdict | None = None
    #: Mail ``outreach inbox`` read that attaches to no letter (``inbox.unmatched_mail``).
    unmatched_mail: list[dict[str, str]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Contacts per status, in ``ORDER``, leaving out statuses nobody has."""
        found = Counter(c.status for c in self.contacts)
        ordered = [s for s in ORDER if s in found] + sorted(set(found) - set(ORDER))
        return {status: found[status] for status in ordered}

    @property
    def problems(self) -> list[ContactState]:
        """Failed, deferred and ambiguous letters: what someone has to follow up."""
        return [c for c in self.contacts if c.status in PROBLEMS]

    @property
    def replies(self) -> list[ContactState]:
        """Letters the mission answered (the reply's date and sender in ``smtp_reply``)."""
        return [c for c in self.contacts if c.status in REPLIES]

    @property
    def awaiting_answer(self) -> list[ContactState]:
        """Letters delivered and not answered: the missions a follow-up would remind."""
        return [c for c in self.contacts if c.status in FOLLOWED_UP]

    @property
    def never_attempted(self) -> list[ContactState]:
        return [c for c in self.contacts if c.status == NOT_ATTEMPTED]


def build_report(
    rows: Iterable[LogRow],
    campaign: str,
    log: Path,
    contacts: ContactList | None,
    *,
    do_not_contact: DoNotContact | None = None,
) -> Report:
    """Every contact of the contacts file (and any other the log names), with its state.

    Each state is the ledger's (``ledger.py``). Contacts the log never
    mentions are "not attempted"; contacts the log names but the file no
    longer has are kept, so a letter that went out is never missing.
    """
    all_rows = list(rows)
    ledger = Ledger(all_rows)
    mine = [r for r in all_rows if r.campaign == campaign]
    letters = ledger.campaign(campaign)
    known = {contact_key(c.id): c for c in contacts} if contacts is not None else {}
    file_name = str(contacts.path) if contacts is not None else "the contacts file"
    states: list[ContactState] = []
    for key in list(known) + [k for k in letters if k not in known]:
        contact = known.get(key)
        letter = letters.get(key)
        country = contact.country if contact is not None else ""
        held = contact is not None and do_not_contact is not None and do_not_contact.holds(contact)
        if letter is None or (held and not letter.has_letter):
            assert contact is not None
            status = HELD_BACK if held else NOT_ATTEMPTED
            states.append(
                ContactState(
                    contact.id,
                    country,
                    ";".join(contact.recipients),
                    status,
                    letter.attempts if letter else 0,
                    letter.rows[-1].time if letter else None,
                    None,
                    str(held) if held else "",
                    letter.message_id if letter else "",
                    "",
                    next_step(status, file_name),
                )
            )
            continue
        current = contact.recipients if contact is not None else None
        status = letter.status(current)
        if status in FOLLOWED_UP and ledger.answered(campaign, letter.contact_id):
            status = REPLIED  # the mission answered a reminder of this letter
        reason = letter.reason(current)
        # A bounce's or an answer's time is the notice's own date (``inbox.notice_time``).
        when = reason.time if reason.status in INBOX_STATUSES else letter.rows[-1].time
        sent_to = letter.having(*HAS_LETTER)
        step = next_step(status, file_name)
        owed = [a for a in letter.having(*OWED) if current is None or a in current]
        if letter.has_letter and owed:
            step += f"; still owed to {';'.join(owed)}: run `make send` again later"
        states.append(
            ContactState(
                id=contact.id if contact is not None else letter.contact_id,
                country=country,
                email=reason.email if status not in HAS_LETTER else ";".join(sent_to),
                status=status,
                attempts=letter.attempts,
                last_time=when,
                smtp_code=reason.smtp_code,
                smtp_reply=reason.reply_text,
                message_id=letter.message_id,
                sent_to=";".join(sent_to),
                next_step=step,
            )
        )
    starts = sorted(r.time for r in mine if r.status == "sending")
    sends = [r.time for r in mine if r.status == "sent"]
    report = Report(
        campaign=campaign,
        log=log,
        contacts=states,
        first_send=starts[0] if starts else None,
        last_send=max(sends, default=None),
        rate_per_minute=rate_while_sending(starts),
        runs=len(runs(starts)),
        other_campaigns=sorted({r.campaign for r in all_rows} - {campaign}),
    )
    if not all_rows:
        report.notes.append(f"{log}: no send log yet, so nothing has been sent")
    elif not mine:
        others = ", ".join(report.other_campaigns)
        report.notes.append(
            f"{log} has no row for campaign {campaign!r} (it has: {others}); "
            "choose one with --campaign"
        )
    if contacts is None:
        report.notes.append(
            "the contacts file could not be read, so contacts never attempted are not listed"
        )
    report.notes.extend(
        f"not counted: a {row.status} notice for {row.contact_id}: {why}"
        for row, why in ledger.ignored
        if row.campaign == campaign
    )
    return report


#: A pause this long between two letters means the first run ended and another began
#: (``make send`` again, the next day): within a run letters go at most a
#: retry's pause apart (SEND_RETRY_MAX_WAIT_SECONDS, 2 minutes by default).
RUN_GAP = timedelta(minutes=10)


def runs(starts: Iterable[datetime]) -> list[list[datetime]]:
    """The start times of transactions, grouped into runs: a pause over RUN_GAP ends one.

    The send log has no row for a run's start or end; its transactions'
    times show them.
    """
    found: list[list[datetime]] = []
    for start in sorted(starts):
        if found and start - found[-1][-1] <= RUN_GAP:
            found[-1].append(start)
        else:
            found.append([start])
    return found


def rate_while_sending(starts: Iterable[datetime]) -> float | None:
    """Transactions a minute while letters were going, the hours between runs left out.

    The runs' intervals over the runs' spans: for one run the same as
    ``sendlog.rate_per_minute``; for several never above the fastest of
    them, so never above the limit a run kept, however many days lie
    between runs.
    """
    grouped = runs(starts)
    intervals = sum(len(run) - 1 for run in grouped)
    seconds = sum((run[-1] - run[0]).total_seconds() for run in grouped)
    return intervals / seconds * 60 if seconds > 0 else None


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def _short_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _when(state: ContactState) -> str:
    """A contact's time as the HTML page shows it: a bounce's or an answer's is its own date."""
    return f"{_short_time(state.last_time)[:16]} UTC" if state.last_time is not None else ""


def countries(states: Iterable[ContactState]) -> list[str]:
    """The missions as staff name them: by country (by id when there is none), A to Z.

    Sorted as a reader expects, accents and capitals aside: Côte d'Ivoire
    comes before Croatia.
    """

    def key(name: str) -> str:
        bare = unicodedata.normalize("NFKD", name)
        return "".join(c for c in bare if not unicodedata.combining(c)).casefold()

    return sorted((s.country or s.id for s in states), key=key)


def _commands(text: str) -> Markup:
    """``text`` for the page, each `command` in it set as code and never broken at a hyphen."""
    parts = text.split("`")
    return Markup("").join(
        Markup('<code class="command">{}</code>').format(part) if odd % 2 else escape(part)
        for odd, part in enumerate(parts)
    )


def _code(value: int | str | None) -> str:
    return "" if value is None else str(value)


def _rate(report: Report) -> str:
    rate = report.rate_per_minute
    if rate is None:
        return "not enough sends to tell"
    if report.runs > 1:
        return f"{rate:.1f} a minute while sending ({report.runs} runs)"
    return f"{rate:.1f} a minute"


def to_csv(report: Report) -> str:
    """One row per contact, for spreadsheets; no cell can run as a formula.

    A reply or a country that begins with ``=``, ``+``, ``-``, ``@``, a tab
    or CR would be run by Excel or LibreOffice; such cells get a leading
    apostrophe, which spreadsheets show as text.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in report.contacts:
        writer.writerow(neutralise_cell(_code(value)) for value in _state_dict(c).values())
    return out.getvalue()


def _state_dict(state: ContactState) -> dict[str, Any]:
    values = asdict(state)
    values["last_time"] = _time(state.last_time) or None
    return values


def to_json(report: Report) -> str:
    data = {
        "campaign": report.campaign,
        "log": str(report.log),
        "counts": report.counts,
        "first_send": _time(report.first_send) or None,
        "last_send": _time(report.last_send) or None,
        "rate_per_minute": report.rate_per_minute,
        "runs": report.runs,
        "contacts": [_state_dict(c) for c in report.contacts],
        "problems": [_state_dict(c) for c in report.problems],
        "replies": [_state_dict(c) for c in report.replies],
        "awaiting_answer": [c.id for c in report.awaiting_answer],
        "never_attempted": [c.id for c in report.never_attempted],
        "notes": report.notes,
        "test_letter": report.test_letter.to_data() if report.test_letter else None,
        "unmatched_mail": report.unmatched_mail,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


#: The pages outreach writes (the report, the preview's index), from ``assets/*.html.j2``.
PAGES = Environment(
    loader=PackageLoader("outreach", "assets"),
    autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
)


def to_html(report: Report) -> str:
    """One page with no other file and no script: it can be mailed as it is."""
    total = len(report.contacts) or 1
    bar = [
        {"status": status, "count": count, "percent": 100 * count / total}
        for status, count in report.counts.items()
    ]
    return PAGES.get_template("report.html.j2").render(
        report=report,
        bar=bar,
        generated=_time(datetime.now().astimezone()),
        rate=_rate(report),
        time=_time,
        when=_when,
        countries=countries,
        commands=_commands,
        code=_code,
        awaiting_step=AWAITING_STEP,
    )


STYLES = {
    "sent": "green",
    "retry": "yellow",
    "deferred": "yellow",
    "failed": "red",
    "ambiguous": "magenta",
    "bounced": "red",
    "delayed": "green",
    "replied": "bold green",
    "auto-replied": "green",
    NOT_ATTEMPTED: "dim",
}


def to_renderables(report: Report) -> RenderableType:
    """The report for a terminal: counts, times, then each letter to act on.

    Each letter to follow up is a short block rather than a row of a wide
    table: in an 80-column terminal a table breaks addresses into pieces,
    and an address must stay whole to be copied.
    """
    parts: list[RenderableType] = [Text(f"Campaign {report.campaign!r}, from {report.log}")]
    parts.extend(Text(note, style="yellow") for note in report.notes)
    if report.test_letter is not None:
        style = {"ok": "green", "warning": "yellow", "problem": "red"}[report.test_letter.level]
        first, *rest = report.test_letter.lines()
        parts.append(Text(first, style=style))
        parts.extend(Text(line) for line in rest)
    counts = Table(title="Contacts by status", title_justify="left")
    counts.add_column("status")
    counts.add_column("contacts", justify="right")
    for status, count in report.counts.items():
        counts.add_row(Text(status, style=STYLES.get(status, "")), str(count))
    counts.add_row(Text("total", style="bold"), str(len(report.contacts)))
    parts.append(counts)
    parts.append(
        Text(
            f"First send {_time(report.first_send) or '—'}, last {_time(report.last_send) or '—'}"
            f", rate {_rate(report)}"
        )
    )
    if report.problems:
        parts.append(Text(f"\nTo follow up ({len(report.problems)})", style="bold"))
        for c in report.problems:
            head = Text.assemble(
                (c.id, "bold"), f"  {c.country}  ", (c.status, STYLES.get(c.status, ""))
            )
            head.append(f"  {c.attempts} attempt{'s' if c.attempts != 1 else ''}")
            # A bounce's time is the notice's own date, not the letter's last attempt.
            dated = "dated" if c.status in INBOX_STATUSES else "last"
            head.append(f", {dated} {_short_time(c.last_time)} UTC")
            parts.append(head)
            for address in c.email.split(";"):
                parts.append(Text(f"    {address}", no_wrap=True, overflow="ellipsis"))
            reply = f"{_code(c.smtp_code)} {c.smtp_reply}".strip()
            if reply:
                parts.append(Padding(Text(f"server: {reply}"), (0, 0, 0, 4)))
            parts.append(Padding(Text(f"→ {c.next_step}", style="cyan"), (0, 0, 0, 4)))
    if report.replies:
        parts.append(Text(f"\nReplies ({len(report.replies)})", style="bold"))
        for c in report.replies:
            parts.append(
                Text.assemble((c.id, "bold"), f"  {c.country}  ", (c.status, STYLES[c.status]))
            )
            parts.append(Padding(Text(c.smtp_reply), (0, 0, 0, 4)))
            parts.append(Padding(Text(f"→ {c.next_step}", style="cyan"), (0, 0, 0, 4)))
    awaiting = report.awaiting_answer
    if awaiting:
        # Right after a send this is nearly everyone: a count, and where the list is.
        parts.append(
            Text(f"\nNo answer yet: {len(awaiting)} (listed by --format html, csv or json)")
        )
        parts.append(Padding(Text(f"→ {AWAITING_STEP}", style="cyan"), (0, 0, 0, 4)))
    never = report.never_attempted
    if never:
        parts.append(
            Text(f"\nNever attempted ({len(never)}): " + ", ".join(countries(never)), style="dim")
        )
    if report.unmatched_mail:
        # Mail that attaches to no letter, each message named: date, sender, subject, why.
        count = len(report.unmatched_mail)
        parts.append(Text(f"\nMail about no letter ({count}), not recorded", style="bold"))
    for mail in report.unmatched_mail:
        line = f"{mail['date'][:16].replace('T', ' ')}  {mail['sender'] or '?'}  {mail['subject']}"
        parts.append(Text(line, no_wrap=True, overflow="ellipsis"))
        parts.append(Padding(Text(f"why: {mail['why']}"), (0, 0, 0, 4)))
    return Group(*parts)
