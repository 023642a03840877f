"""After a send, staff see what became of every contact, from the send log."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outreach.contacts import load_contacts
from outreach.report import NOT_ATTEMPTED, build_report, to_csv
from outreach.sendlog import LogRow, SendLog, read_log
from tests.conftest import RunCli, with_cc

START = datetime(2015, 8, 31, 14, 0, tzinfo=UTC)
Event = tuple[int, str, str, str, int | None, str]


def write_log(path: Path, events: list[Event], campaign: str = "default") -> Path:
    """A send log as a run would leave it: (second, contact, email, status, code, reply)."""
    attempts: dict[str, int] = {}
    with SendLog(path) as log:
        for second, contact_id, email, status, code, reply in events:
            if status == "sending":
                attempts[contact_id] = attempts.get(contact_id, 0) + 1
            log.append(
                LogRow(
                    time=START + timedelta(seconds=second),
                    campaign=campaign,
                    contact_id=contact_id,
                    email=email,
                    status=status,
                    attempt=attempts.get(contact_id, 1),
                    smtp_code=code,
                    smtp_reply=reply,
                    message_id=f"<{contact_id.lower()}@outreach.example>",
                )
            )
    return path


def sent(second: int, contact_id: str) -> list[Event]:
    email = f"{contact_id.lower()}@missions.example"
    return [
        (second, contact_id, email, "sending", None, ""),
        (second + 1, contact_id, email, "sent", 250, "2.0.0 Ok: queued"),
    ]


A_RUN: list[Event] = [
    *sent(0, "AFG"),
    *sent(30, "ALB"),
    *sent(60, "DZA"),
    (90, "AND", "and@missions.example", "sending", None, ""),
    (91, "AND", "and@missions.example", "retry", 421, "4.3.2 try again"),
    (120, "AND", "and@missions.example", "sending", None, ""),
    (121, "AND", "and@missions.example", "failed", 550, "5.1.1 <and@missions.example> unknown"),
    (150, "AGO", "ago@missions.example", "deferred", 451, "4.7.1 greylisted"),
    (180, "ATG", "atg@missions.example", "sending", None, ""),
    (181, "ARG", "cc@arg.example", "refused", 550, "5.1.1 no such user"),
    *sent(182, "ARG"),
]


@pytest.fixture
def log(project: Path) -> Path:
    with_cc(project, "ARG", "cc@arg.example")
    return write_log(project / "logs" / "send-log.csv", A_RUN)


def test_every_contact_has_its_latest_state(project: Path, log: Path) -> None:
    report = build_report(read_log(log), "default", log, load_contacts(project / "contacts.csv"))
    states = {c.id: c for c in report.contacts}
    assert len(states) == 195
    assert report.counts == {
        "sent": 3,
        "deferred": 1,
        "failed": 2,
        "ambiguous": 1,
        NOT_ATTEMPTED: 188,
    }
    assert (states["AND"].status, states["AND"].attempts, states["AND"].smtp_code) == (
        "failed",
        2,
        550,
    )
    assert states["ATG"].status == "ambiguous"
    assert states["CHL"].status == NOT_ATTEMPTED
    assert states["CHL"].email == "chl@missions.example"
    assert [(c.id, c.status) for c in report.problems] == [
        ("AND", "failed"),
        ("AGO", "deferred"),
        ("ATG", "ambiguous"),
        ("ARG", "failed"),
    ]
    # Argentina's own address has the letter; the copy was refused for good.
    assert (states["ARG"].status, states["ARG"].email) == ("failed", "cc@arg.example")
    assert states["ARG"].sent_to == "arg@missions.example"
    assert "--retry-failed" in states["ARG"].next_step
    assert "ask the mission" in states["ATG"].next_step
    assert report.first_send == START
    assert report.last_send == START + timedelta(seconds=183)
    # Seven transactions began between 0 s and 182 s: six intervals.
    assert report.rate_per_minute == pytest.approx(6 / (182 / 60))


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param('=HYPERLINK("https://evil.example","click")', id="equals"),
        pytest.param("+1 555 0100", id="plus"),
        pytest.param("-2+3", id="minus"),
        pytest.param("@SUM(A1)", id="at"),
        pytest.param("\t=1+1", id="tab"),
        pytest.param("\r=1+1", id="carriage-return"),
    ],
)
def test_csv_cells_cannot_run_as_formulas(project: Path, reply: str) -> None:
    log = write_log(
        project / "logs" / "send-log.csv",
        [(0, "AFG", "afg@missions.example", "failed", 554, reply)],
    )
    report = build_report(read_log(log), "default", log, load_contacts(project / "contacts.csv"))
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    (afg,) = [r for r in rows if r["id"] == "AFG"]
    assert afg["smtp_reply"].startswith("'")
    assert not any(
        cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row.values()
    )


def test_report_table_in_the_terminal(run_cli: RunCli, log: Path) -> None:
    result = run_cli("report")
    assert result.code == 0, result.stderr
    out = result.stdout
    assert "Contacts by status" in out
    for label, count in (("sent", 3), ("failed", 2), ("not attempted", 188), ("total", 195)):
        assert any(label in line and f" {count} " in line for line in out.splitlines()), label
    assert "To follow up" in out
    assert "5.1.1 <and@missions.example> unknown" in out
    assert "rate 2.0 a minute" in out
    assert "Never attempted (188): " in out


def test_report_csv_has_one_row_per_contact(run_cli: RunCli, log: Path) -> None:
    result = run_cli("report", "--format", "csv")
    assert result.code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "id",
        "country",
        "email",
        "status",
        "attempts",
        "last_time",
        "smtp_code",
        "smtp_reply",
        "message_id",
        "sent_to",
        "next_step",
    ]
    assert len(rows) == 195
    (andorra,) = [r for r in rows if r["id"] == "AND"]
    assert andorra == {
        "id": "AND",
        "country": "Andorra",
        "email": "and@missions.example",
        "status": "failed",
        "attempts": "2",
        "last_time": "2015-08-31T14:02:01+00:00",
        "smtp_code": "550",
        "smtp_reply": "5.1.1 <and@missions.example> unknown",
        "message_id": "<and@outreach.example>",
        "sent_to": "",
        "next_step": "refused for good: check the address with the mission and correct it in "
        "contacts.csv, then run `make send ARGS=--retry-failed`",
    }


def test_report_json_for_other_tools(run_cli: RunCli, log: Path) -> None:
    result = run_cli("report", "--format", "json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["counts"]["sent"] == 3
    assert data["first_send"] == "2015-08-31T14:00:00+00:00"
    assert [p["id"] for p in data["problems"]] == ["AND", "AGO", "ATG", "ARG"]
    assert len(data["never_attempted"]) == 188


def test_report_html_written_to_a_file(run_cli: RunCli, log: Path, project: Path) -> None:
    out = project / "out" / "report.html"
    result = run_cli("report", "--format", "html", "--out", str(out))
    assert result.code == 0, result.stderr
    assert result.stdout == f"Wrote the report of campaign 'default' to {out}\n"
    page = out.read_text(encoding="utf-8")
    assert 'data-status="sent" data-count="3"' in page
    assert "<script" not in page
    assert "http" not in page.replace("http-equiv", "")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--campaign", "spring"],
            "has no row for campaign 'spring' (it has: default); choose one with --campaign",
            id="unknown-campaign",
        ),
        pytest.param([], "no send log yet, so nothing has been sent", id="no-log"),
    ],
)
def test_report_says_when_there_is_nothing_to_report(
    run_cli: RunCli, project: Path, args: list[str], expected: str
) -> None:
    if args:
        write_log(project / "logs" / "send-log.csv", A_RUN)
    result = run_cli("report", *args)
    assert result.code == 0, result.stderr
    assert expected in " ".join(result.stdout.split())
    assert "not attempted" in result.stdout


def test_damaged_log_is_an_error_naming_the_line(run_cli: RunCli, log: Path) -> None:
    with log.open("a", encoding="utf-8") as handle:
        handle.write("yesterday,default,AFG,afg@missions.example,sent,1,250,ok,,,\n")
    result = run_cli("report")
    assert result.code == 2
    assert result.stderr.startswith(f"Error: {log.relative_to(log.parents[1])}, line ")
    assert "column 1 (time)" in result.stderr


def test_the_report_reads_in_an_80_column_terminal(run_cli: RunCli, project: Path) -> None:
    """Addresses stay whole (to be copied), and each problem says what to do next."""
    long = "permanent.mission.of.the.plurinational.state@cancilleria-bolivia.example"
    write_log(
        project / "logs" / "send-log.csv",
        [
            (0, "BOL", long, "sending", None, ""),
            (1, "BOL", long, "failed", 550, "5.1.1 <" + long + "> User unknown; no such mailbox"),
            (2, "AGO", "ago@missions.example", "deferred", 451, "4.7.1 greylisted"),
            (3, "ATG", "atg@missions.example", "sending", None, ""),
        ],
    )
    result = run_cli("report", env={"COLUMNS": "80"})
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(long in line for line in lines)
    text = " ".join(result.stdout.split())
    assert "→ refused for good: check the address with the mission" in text
    assert "→ still owed: the server refused it for now; run `make send` again later" in text
    assert "→ the server may have it: ask the mission" in text
