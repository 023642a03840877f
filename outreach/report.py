"""After sending: what became of every contact, read from the send log.

The log is the only record, and it is written for machines (one row per
event); staff want one line per contact, the counts, and the problems with
the server's own words. The same report is shown in the terminal, written as
CSV for a spreadsheet, as JSON for other tools, or as one HTML page.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from outreach.contacts import ContactList
from outreach.sendlog import LogRow, latest_rows, neutralise_cell

NOT_ATTEMPTED = "not attempted"
#: The order statuses are shown in: done first, then what needs a look.
ORDER = ("sent", "retry", "deferred", "failed", "ambiguous", "sending", NOT_ATTEMPTED)
#: Latest statuses that someone should look at, with the server's reply.
PROBLEMS = ("retry", "deferred", "failed", "ambiguous")
CSV_COLUMNS = (
    "id",
    "country",
    "email",
    "status",
    "attempts",
    "last_time",
    "smtp_code",
    "smtp_reply",
    "message_id",
)
FORMATS = ("table", "csv", "json", "html")


@dataclass(frozen=True)
class ContactState:
    """One contact's latest state in a campaign."""

    id: str
    country: str
    email: str
    status: str
    attempts: int
    last_time: datetime | None
    smtp_code: int | None
    smtp_reply: str
    message_id: str


@dataclass
class Report:
    campaign: str
    log: Path
    contacts: list[ContactState]
    refused: list[ContactState] = field(default_factory=list)
    first_send: datetime | None = None
    last_send: datetime | None = None
    other_campaigns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Contacts per latest status, in ``ORDER``, leaving out statuses nobody has."""
        if not self.contacts:
            return {}
        import pandas as pd  # only here: it takes a third of a second to import

        frame = pd.DataFrame({"status": [c.status for c in self.contacts]})
        found = {str(k): int(v) for k, v in frame["status"].value_counts().items()}
        ordered = [s for s in ORDER if s in found] + sorted(set(found) - set(ORDER))
        return {status: found[status] for status in ordered}

    @property
    def problems(self) -> list[ContactState]:
        """Failed, deferred, ambiguous and refused: what someone has to follow up."""
        return [c for c in self.contacts if c.status in PROBLEMS] + self.refused

    @property
    def never_attempted(self) -> list[ContactState]:
        return [c for c in self.contacts if c.status == NOT_ATTEMPTED]

    @property
    def sent(self) -> int:
        return self.counts.get("sent", 0)

    @property
    def rate_per_minute(self) -> float | None:
        """Letters sent per minute between the first and the last send."""
        if self.first_send is None or self.last_send is None or self.sent < 2:
            return None
        minutes = (self.last_send - self.first_send).total_seconds() / 60
        return self.sent / minutes if minutes > 0 else None


def build_report(
    rows: Iterable[LogRow], campaign: str, log: Path, contacts: ContactList | None
) -> Report:
    """Every contact of the contacts file (and any other the log names), with its state.

    Contacts the log never mentions are "not attempted"; contacts the log
    names but the file no longer has are kept, so a letter that went out is
    never missing from the report.
    """
    import pandas as pd  # only here: it takes a third of a second to import

    all_rows = list(rows)
    mine = [r for r in all_rows if r.campaign == campaign]
    latest = latest_rows(mine, campaign)
    frame = pd.DataFrame(
        {
            "contact_id": [r.contact_id for r in mine],
            "status": [r.status for r in mine],
            "attempt": [r.attempt for r in mine],
        }
    )
    sendings = frame[frame["status"] == "sending"].groupby("contact_id").size().to_dict()
    highest = frame.groupby("contact_id")["attempt"].max().to_dict() if len(frame) else {}

    def attempts(contact_id: str) -> int:
        return int(max(sendings.get(contact_id, 0), highest.get(contact_id, 0)))

    known = {c.id: c for c in contacts} if contacts is not None else {}
    states: list[ContactState] = []
    for contact_id in list(known) + [i for i in latest if i not in known]:
        contact = known.get(contact_id)
        row = latest.get(contact_id)
        country = contact.country if contact is not None else ""
        if row is None:
            email = ";".join(contact.recipients) if contact is not None else ""
            states.append(
                ContactState(contact_id, country, email, NOT_ATTEMPTED, 0, None, None, "", "")
            )
            continue
        states.append(
            ContactState(
                id=contact_id,
                country=country,
                email=row.email,
                status=row.status,
                attempts=attempts(contact_id),
                last_time=row.time,
                smtp_code=row.smtp_code,
                smtp_reply=row.smtp_reply,
                message_id=row.message_id,
            )
        )
    refused: dict[tuple[str, str], LogRow] = {}
    for row in mine:
        if row.status == "refused":
            refused[(row.contact_id, row.email)] = row
    refused_states = [
        ContactState(
            id=r.contact_id,
            country=known[r.contact_id].country if r.contact_id in known else "",
            email=r.email,
            status="refused",
            attempts=attempts(r.contact_id),
            last_time=r.time,
            smtp_code=r.smtp_code,
            smtp_reply=r.smtp_reply,
            message_id=r.message_id,
        )
        for r in refused.values()
    ]
    sends = [r.time for r in mine if r.status in ("sending", "sent")]
    report = Report(
        campaign=campaign,
        log=log,
        contacts=states,
        refused=refused_states,
        first_send=min(sends) if sends else None,
        last_send=max((r.time for r in mine if r.status == "sent"), default=None),
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
            "the contacts file could not be found, so contacts never attempted are not listed"
        )
    return report


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def _short_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _code(value: int | None) -> str:
    return "" if value is None else str(value)


def _rate(report: Report) -> str:
    rate = report.rate_per_minute
    return f"{rate:.1f} a minute" if rate is not None else "not enough sends to tell"


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
        cells = [
            c.id,
            c.country,
            c.email,
            c.status,
            str(c.attempts),
            _time(c.last_time),
            _code(c.smtp_code),
            c.smtp_reply,
            c.message_id,
        ]
        writer.writerow([neutralise_cell(cell) for cell in cells])
    return out.getvalue()


def _state_dict(state: ContactState) -> dict[str, Any]:
    values = asdict(state)
    values["last_time"] = _time(state.last_time) or None
    return values


def to_data(report: Report) -> dict[str, Any]:
    return {
        "campaign": report.campaign,
        "log": str(report.log),
        "counts": report.counts,
        "first_send": _time(report.first_send) or None,
        "last_send": _time(report.last_send) or None,
        "rate_per_minute": report.rate_per_minute,
        "contacts": [_state_dict(c) for c in report.contacts],
        "problems": [_state_dict(c) for c in report.problems],
        "never_attempted": [c.id for c in report.never_attempted],
        "notes": report.notes,
    }


def to_json(report: Report) -> str:
    return json.dumps(to_data(report), indent=2, ensure_ascii=False) + "\n"


def to_html(report: Report, generated: datetime) -> str:
    """One page with no other file and no script: it can be mailed as it is."""
    environment = Environment(
        loader=PackageLoader("outreach", "assets"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
    )
    total = len(report.contacts) or 1
    bar = [
        {"status": status, "count": count, "percent": 100 * count / total}
        for status, count in report.counts.items()
    ]
    return environment.get_template("report.html.j2").render(
        report=report,
        bar=bar,
        generated=_time(generated),
        rate=_rate(report),
        time=_time,
        code=_code,
    )


STYLES = {
    "sent": "green",
    "retry": "yellow",
    "deferred": "yellow",
    "failed": "red",
    "ambiguous": "magenta",
    "refused": "red",
    NOT_ATTEMPTED: "dim",
}


def to_renderables(report: Report) -> RenderableType:
    """The report for a terminal: counts, times, then the tables to act on."""
    parts: list[RenderableType] = [Text(f"Campaign {report.campaign!r}, from {report.log}")]
    parts.extend(Text(note, style="yellow") for note in report.notes)
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
        problems = Table(title="To follow up", title_justify="left")
        problems.add_column("id", no_wrap=True)
        problems.add_column("country")
        problems.add_column("email", overflow="fold")
        problems.add_column("status", no_wrap=True)
        problems.add_column("attempts", justify="right")
        problems.add_column("last time (UTC)", no_wrap=True)
        problems.add_column("SMTP reply", overflow="fold", ratio=1)
        for c in report.problems:
            problems.add_row(
                c.id,
                c.country,
                c.email,
                Text(c.status, style=STYLES.get(c.status, "")),
                str(c.attempts),
                _short_time(c.last_time),
                f"{_code(c.smtp_code)} {c.smtp_reply}".strip(),
            )
        parts.append(problems)
    never = report.never_attempted
    if never:
        parts.append(
            Text(f"Never attempted ({len(never)}): " + ", ".join(c.id for c in never), style="dim")
        )
    return Group(*parts)
