"""What comes back, as it really comes: each shape matched to the letter it is about, or to none.

Seven letters go to a real SMTP server on loopback; then `outreach inbox
--from` reads bounces and answers in the shapes real mail systems send
(tests/data/mail/shapes/). A notice attaches only to a letter some server
accepted: by the Message-ID it names, else, when it names none, by the
failed address or the answering mission's own address.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outreach.inbox import (
    MATCHED_BY_ADDRESS,
    AcceptedLetter,
    Match,
    Unmatched,
    accepted_letters,
    match_notice,
    unaccepted_letters,
)
from outreach.ledger import Ledger
from outreach.notices import Event, Notice, read_bytes
from outreach.sendlog import LogRow, read_log
from tests.conftest import FakeClock, RunCli
from tests.smtp import SmtpServer
from tests.test_inbox import send_letters

SHAPES = Path(__file__).resolve().parent / "data" / "mail" / "shapes"
LETTERS = ["CHL", "FRA", "KEN", "DEU", "BRA", "JPN", "MEX"]
#: (contact, status, matched by address) for each row the shapes come to.
EXPECTED = {
    ("BRA", "bounced", False),  # Exim: the original pasted as text, with its Message-ID
    ("KEN", "bounced", False),  # Sendmail's "permanent fatal errors"
    ("JPN", "bounced", False),  # qmail
    ("MEX", "bounced", False),  # Yahoo
    ("CHL", "bounced", False),  # Exchange 2003: the status in the text only
    ("FRA", "bounced", False),  # a bounce titled "Re:" with In-Reply-To: never an answer
    ("DEU", "bounced", True),  # Gmail's old format: the original without its Message-ID
    ("KEN", "auto-replied", True),  # Exchange: "Automatic reply:", X-Auto-Response-Suppress
    ("JPN", "auto-replied", False),  # Apple's X-Apple-Action: VACATION
    ("MEX", "auto-replied", False),  # Gmail's vacation responder
    ("CHL", "replied", True),  # a mission writing anew, without In-Reply-To
}


@pytest.fixture
def sent(project: Path, smtp_server: SmtpServer, clock: FakeClock) -> SmtpServer:
    send_letters(smtp_server, clock, LETTERS)
    return smtp_server


def guessable_id(campaign: str, contact_id: str, domain: str = "coalition.example") -> str:
    """The Message-ID as outreach made it before its ids carried a key: anyone can compute it."""
    digest = hashlib.sha256(f"{campaign}\0{contact_id}".encode()).hexdigest()[:32]
    return f"<{digest}.outreach@{domain}>"


def recorded(project: Path) -> set[tuple[str, str, bool]]:
    return {
        (r.contact_id, r.status, r.reply_text.startswith(MATCHED_BY_ADDRESS))
        for r in read_log(project / "logs" / "send-log.csv")
        if r.notice_id
    }


def test_every_shape_is_recorded_and_matching_by_address_says_so(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "shapes"
    shutil.copytree(SHAPES, folder)
    done = run_cli("inbox", "--from", str(folder), env=sent.env())
    assert done.code == 0, done.stderr
    assert recorded(project) == EXPECTED
    # The list's rejection names Germany's letter and says "Re:": listed, not recorded.
    assert "Unmatched:     1 message(s)" in done.stdout
    assert "a mailing list's own notice" in done.stdout
    table = run_cli("report", env=sent.env()).stdout
    assert MATCHED_BY_ADDRESS in table


def test_message_ids_computed_from_campaign_and_contact_name_no_letter(
    run_cli: RunCli, sent: SmtpServer, project: Path, tmp_path: Path
) -> None:
    """Anyone can compute sha256(campaign, contact id); the letters' ids carry a secret too."""
    guessed = " ".join(guessable_id("default", c) for c in LETTERS)
    forged = (
        "From: someone@attacker.example\nTo: campaign@coalition.example\n"
        f"Subject: Re: your letter\nMessage-ID: <forged@attacker.example>\nReferences: {guessed}\n"
        "Date: Sat, 28 Nov 2026 10:00:00 +0000\n\nok\n"
    )
    dsn = (SHAPES / "qmail.eml").read_text(encoding="utf-8")
    letter = next(
        r.message_id for r in read_log(project / "logs" / "send-log.csv") if r.contact_id == "JPN"
    )
    old_style = guessable_id("default", "JPN")
    folder = tmp_path / "forged"
    folder.mkdir()
    (folder / "answer.eml").write_text(forged, encoding="utf-8")
    (folder / "dsn.eml").write_text(dsn.replace(letter, old_style), encoding="utf-8")
    done = run_cli("inbox", "--from", str(folder), env=sent.env())
    assert done.code == 0, done.stderr
    assert "Recorded:      nothing new" in done.stdout
    assert recorded(project) == set()
    assert "which is no letter of the send log" in done.stdout


# -- match_notice, over the letters a log shows accepted ----------------------------------

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def log_row(
    status: str, contact: str, email: str, message_id: str, minutes: int, campaign: str = "a"
) -> LogRow:
    return LogRow(
        T0 + timedelta(minutes=minutes),
        campaign,
        contact,
        email,
        status,
        1,
        message_id=message_id,
    )


def bounce(address: str, *refers: str, minutes: int = 600) -> Notice:
    return Notice(
        "<n@x.example>",
        "report",
        refers_to=refers,
        events=(Event("bounced", (address,), "5.1.1", "550 no such user"),),
        date=T0 + timedelta(minutes=minutes),
    )


def answer(address: str, *refers: str, minutes: int = 600) -> Notice:
    return Notice(
        "<a@x.example>",
        "answer",
        refers_to=refers,
        events=(Event("replied", text="…"),),
        date=T0 + timedelta(minutes=minutes),
        address=address,
    )


def matched(notice: Notice, rows: list[LogRow]) -> Match | Unmatched:
    return match_notice(
        notice,
        accepted_letters(Ledger(rows)),
        now=T0 + timedelta(days=30),
        unaccepted=unaccepted_letters(Ledger(rows)),
    )


def only(found: Match | Unmatched) -> tuple[AcceptedLetter, bool]:
    assert isinstance(found, Match), found
    [target] = found.targets
    return target.letter, target.by_address


@pytest.mark.parametrize(
    "statuses",
    [["sending"], ["sending", "failed"], ["deferred"], ["sending", "refused"], ["retry"]],
    ids=["sending", "failed", "deferred", "refused", "retry"],
)
def test_a_notice_naming_a_letter_no_server_accepted_changes_nothing(statuses: list[str]) -> None:
    rows = [log_row(s, "CHL", "chl@m.example", "<l1@c.example>", n) for n, s in enumerate(statuses)]
    for notice in (
        bounce("chl@m.example", "<l1@c.example>"),
        answer("chl@m.example", "<l1@c.example>"),
    ):
        found = matched(notice, rows)
        assert isinstance(found, Unmatched)
        assert "no server accepted" in found.why
    found = matched(bounce("chl@m.example"), rows)  # nor by address
    assert isinstance(found, Unmatched)


def test_without_a_message_id_the_latest_letter_accepted_before_the_notice_is_the_one() -> None:
    rows = [
        log_row("sent", "CHL", "chl@m.example", "<first@c.example>", 0, "a"),
        log_row("sent", "CHL", "chl@m.example", "<second@c.example>", 60, "b"),
        log_row("failed", "CHL", "chl@m.example", "<third@c.example>", 90, "c"),
    ]
    letter, by_address = only(matched(bounce("chl@m.example", minutes=30), rows))
    assert (letter.message_id, by_address) == ("<first@c.example>", True)
    letter, by_address = only(matched(answer("chl@m.example", minutes=120), rows))
    assert (letter.message_id, by_address) == ("<second@c.example>", True)
    early = matched(bounce("chl@m.example", minutes=-5), rows)
    assert isinstance(early, Unmatched)
    assert "no letter was accepted for chl@m.example" in early.why


def test_an_address_with_several_letters_accepted_at_once_is_not_guessed() -> None:
    rows = [
        log_row("sent", "CHL", "shared@m.example", "<l1@c.example>", 0, "a"),
        log_row("sent", "PER", "shared@m.example", "<l2@c.example>", 0, "a"),
    ]
    found = matched(bounce("shared@m.example"), rows)
    assert isinstance(found, Unmatched)
    assert "several letters" in found.why


def test_a_log_written_before_the_keyed_ids_keeps_matching() -> None:
    old = guessable_id("a", "CHL", "c.example")
    rows = [log_row("sent", "CHL", "chl@m.example", old, 0)]
    letter, by_address = only(matched(answer("chl@m.example", old), rows))
    assert (letter.contact_id, by_address) == ("CHL", False)


def test_a_dated_notice_from_the_future_counts_as_read_now() -> None:
    rows = [log_row("sent", "CHL", "chl@m.example", "<l1@c.example>", 0)]
    found = matched(bounce("chl@m.example", minutes=60 * 24 * 365 * 100), rows)
    letter, _ = only(found)
    assert letter.message_id == "<l1@c.example>"


def test_a_bounce_read_from_bytes_without_any_id_is_matched_by_its_failed_address() -> None:
    notice = read_bytes((SHAPES / "gmail-old.eml").read_bytes())
    rows = [log_row("sent", "DEU", "deu@missions.example", "<l@c.example>", 0)]
    letter, by_address = only(matched(notice, rows))
    assert (letter.contact_id, by_address) == ("DEU", True)
