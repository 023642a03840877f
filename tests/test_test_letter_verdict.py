"""The test letter's verdict: `test-send`, back in a mailbox, read by `inbox --from`, in `report`.

The test letter really goes to an SMTP server on loopback; what comes back
is that very message with the headers a receiving server puts on top, in
the shapes Microsoft 365 (Exchange Online Protection) and Gmail write them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from outreach.verdict import VERDICT_FILE, aligned
from tests.conftest import RunCli
from tests.mailsystem import COALITION, SENDER, MailSystem, run_mail_system
from tests.smtp import SmtpServer

#: The headers receiving servers put on top of a letter, as they write them.
RECEIVED = Path(__file__).resolve().parent / "data" / "received"

#: Gmail, for a Google Workspace sender with DKIM turned on for its own domain.
GMAIL_PASS = (RECEIVED / "gmail-pass.txt").read_text(encoding="utf-8")

#: Gmail, for a Google Workspace sender that never turned DKIM on: signed as gappssmtp.com.
GMAIL_GAPPSSMTP = (RECEIVED / "gmail-dkim-by-gappssmtp.txt").read_text(encoding="utf-8")

#: Exchange Online Protection, the sender in Microsoft 365 without DKIM for its domain, SPF failing.
MICROSOFT_DMARC_FAIL = (RECEIVED / "microsoft365-dmarc-fail.txt").read_text(encoding="utf-8")

#: Exchange Online Protection, a letter not signed at all.
MICROSOFT_NOT_SIGNED = (RECEIVED / "microsoft365-not-signed.txt").read_text(encoding="utf-8")
#: Exchange Online Protection, everything in order.
MICROSOFT_PASS = (RECEIVED / "microsoft365-pass.txt").read_text(encoding="utf-8")


def send_test_letter(run_cli: RunCli, smtp_server: SmtpServer) -> bytes:
    """`outreach test-send`, and the letter as the server received it."""
    result = run_cli(
        "test-send", "--to", "me@coalition.example", "--only", "CHL", env=smtp_server.env()
    )
    assert result.code == 0, result.stderr
    assert "Once it has arrived, `make inbox`" in result.stdout
    return smtp_server.received[-1].data


def came_back(letter: bytes, headers: str) -> bytes:
    """The letter as the receiving mailbox holds it: the receiver's headers on top."""
    return headers.replace("\n", "\r\n").encode() + letter


def read_back(run_cli: RunCli, smtp_server: SmtpServer, folder: Path, *messages: bytes) -> str:
    folder.mkdir(exist_ok=True)
    for number, data in enumerate(messages):
        (folder / f"{len(list(folder.iterdir())) + number:03}.eml").write_bytes(data)
    result = run_cli("inbox", "--from", str(folder), env=smtp_server.env())
    assert result.code == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            GMAIL_PASS,
            [
                "as judged by mx.google.com: in order",
                "  SPF pass (coalition.example)",
                "  DKIM pass by coalition.example: aligned with the From domain coalition.example",
                "  DMARC pass",
                "  Spam: Gmail: not spam (X-Gm-Spam 0, X-Gm-Phishy 0)",
            ],
            id="gmail-pass",
        ),
        pytest.param(
            GMAIL_GAPPSSMTP,
            [
                "as judged by mx.google.com: passed, with a warning",
                "  SPF pass (coalition.example)",
                "  DKIM pass by coalition-example.20230601.gappssmtp.com: not aligned with the "
                "From domain coalition.example, so DKIM is not turned on for coalition.example "
                "(`make check` says what to ask your administrator)",
                "  DMARC pass",
            ],
            id="gmail-dkim-by-gappssmtp",
        ),
        pytest.param(
            MICROSOFT_DMARC_FAIL,
            [
                ", as judged: at risk of the spam folder",
                "  SPF fail (coalition.example)",
                "  DKIM pass by coalitionexample.onmicrosoft.com: not aligned with the From "
                "domain coalition.example, so DKIM is not turned on for coalition.example "
                "(`make check` says what to ask your administrator)",
                "  DMARC fail: receivers with a strict policy put such a letter in spam or "
                "refuse it",
                "  Spam: Microsoft 365: spam (SCL 5, SFV:SPM, CAT:SPOOF, BCL 0)",
            ],
            id="microsoft-dmarc-fail",
        ),
        pytest.param(
            MICROSOFT_PASS,
            [
                ", as judged: in order",
                "  DKIM pass by coalition.example: aligned with the From domain coalition.example",
                "  Spam: Microsoft 365: not spam (SCL 1, SFV:NSPM, BCL 0)",
            ],
            id="microsoft-pass",
        ),
        pytest.param(
            MICROSOFT_NOT_SIGNED,
            [
                ", as judged: passed, with a warning",
                "  DKIM none: the letter is not signed, so it cannot align with coalition.example",
            ],
            id="microsoft-not-signed",
        ),
    ],
)
def test_inbox_reads_the_test_letters_verdict(
    run_cli: RunCli, smtp_server: SmtpServer, tmp_path: Path, headers: str, expected: list[str]
) -> None:
    letter = send_test_letter(run_cli, smtp_server)
    shown = read_back(run_cli, smtp_server, tmp_path / "back", came_back(letter, headers))
    lines = shown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Test letter of "))
    assert lines[start].endswith(expected[0]), lines[start]
    for line in expected[1:]:
        assert line in lines[start:], shown
    assert "Recorded:      nothing new" in shown  # a verdict, never a row of the send log


def test_report_shows_the_latest_verdict_above_the_counts(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path, tmp_path: Path
) -> None:
    letter = send_test_letter(run_cli, smtp_server)
    read_back(run_cli, smtp_server, tmp_path / "back", came_back(letter, MICROSOFT_DMARC_FAIL))
    table = run_cli("report", env=smtp_server.env()).stdout
    verdict_at = table.index("Test letter of ")
    assert verdict_at < table.index("Contacts by status")
    assert "  DMARC fail: receivers with a strict policy" in table
    data = json.loads(run_cli("report", "--format", "json", env=smtp_server.env()).stdout)
    assert data["test_letter"]["level"] == "problem"
    assert data["test_letter"]["dkim"] == [["pass", "coalitionexample.onmicrosoft.com"]]
    assert data["test_letter"]["dkim_aligned"] is False
    page = run_cli("report", "--format", "html", env=smtp_server.env()).stdout
    assert '<section id="test-letter" class="verdict v-problem">' in page
    assert page.index('id="test-letter"') < page.index("contacts by status")
    kept = json.loads((project / "logs" / VERDICT_FILE).read_text(encoding="utf-8"))
    assert kept["verdict"]["dmarc"] == "fail"


def test_a_strangers_message_cannot_plant_a_pass(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path, tmp_path: Path
) -> None:
    """Same subject, same headers, all passing: but not the Message-ID of a test letter."""
    letter = send_test_letter(run_cli, smtp_server)
    read_back(run_cli, smtp_server, tmp_path / "back", came_back(letter, MICROSOFT_DMARC_FAIL))
    text = letter.decode()
    own_id = next(line for line in text.splitlines() if line.startswith("Message-ID: "))
    forged = text.replace(own_id, "Message-ID: <forged.1@attacker.example>")
    shown = read_back(
        run_cli, smtp_server, tmp_path / "back", came_back(forged.encode(), MICROSOFT_PASS)
    )
    assert shown.count("Test letter of ") == 1  # the real one, read again; not the forgery
    data = json.loads(run_cli("report", "--format", "json", env=smtp_server.env()).stdout)
    assert data["test_letter"]["level"] == "problem"


def test_a_test_letter_without_authentication_results_says_so(
    run_cli: RunCli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    letter = send_test_letter(run_cli, smtp_server)
    shown = read_back(run_cli, smtp_server, tmp_path / "back", letter)
    assert ", as judged: not judged" in shown
    assert "  no Authentication-Results header: the server that delivered it judged nothing" in (
        shown
    )


def test_hostile_header_values_are_printed_on_one_line(
    run_cli: RunCli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    letter = send_test_letter(run_cli, smtp_server)
    headers = (
        "Authentication-Results: mx.google.com; dkim=pass header.d=evil\x1b[31m.example;"
        " spf=pass smtp.mailfrom=a@b.example; dmarc=pass header.from=coalition.example\n"
        "X-Forefront-Antispam-Report: SCL:1;SFV:NSPM\x07;CAT:" + "X" * 500 + "\n"
    )
    shown = read_back(run_cli, smtp_server, tmp_path / "back", came_back(letter, headers))
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert max(len(line) for line in shown.splitlines()) < 400


def test_no_verdict_file_means_no_verdict_in_the_report(
    run_cli: RunCli, smtp_server: SmtpServer, project: Path
) -> None:
    send_test_letter(run_cli, smtp_server)
    (project / "logs" / VERDICT_FILE).write_text("{not json", encoding="utf-8")
    result = run_cli("report", "--format", "json", env=smtp_server.env())
    assert result.code == 0
    assert json.loads(result.stdout)["test_letter"] is None


@pytest.mark.parametrize(
    ("signer", "sender", "expected"),
    [
        ("coalition.org", "coalition.org", True),
        ("coalition.org", "news.coalition.org", True),
        ("mail.coalition.org", "coalition.org", True),
        ("coalition.onmicrosoft.com", "coalition.org", False),
        ("coalition-org.20230601.gappssmtp.com", "coalition.org", False),
        ("other.org.uk", "coalition.org.uk", False),
        ("news.coalition.org.uk", "coalition.org.uk", True),
        ("", "coalition.org", False),
    ],
)
def test_dkim_aligns_only_within_one_organisation(signer: str, sender: str, expected: bool) -> None:
    assert aligned(signer, sender) is expected


@pytest.fixture(scope="module")
def mail_system() -> Iterator[MailSystem]:
    """Postfix and Dovecot on loopback (tests/mailsystem.py): the campaign's own mailbox."""
    yield from run_mail_system({"chl"})


def test_a_test_letter_to_the_campaigns_own_mailbox_is_read_over_imap(
    run_cli: RunCli, mail_system: MailSystem, project: Path
) -> None:
    env = mail_system.env()
    before = len(mail_system.delivered("campaign", COALITION))
    sent = run_cli("test-send", "--to", SENDER, "--only", "CHL", env=env)
    assert sent.code == 0, sent.stderr
    mail_system.wait_for("campaign", before + 1, COALITION)
    read = run_cli("inbox", env=env)
    assert read.code == 0, read.stderr
    # Postfix here judges nothing (no SPF or DKIM milter): the verdict says so.
    assert "Test letter of " in read.stdout
    assert "  no Authentication-Results header" in read.stdout
    assert "Recorded:      nothing new" in read.stdout
    kept = json.loads((project / "logs" / VERDICT_FILE).read_text(encoding="utf-8"))
    assert kept["verdict"]["found"] is False


def test_an_older_test_letter_read_later_leaves_the_latest_verdict(
    run_cli: RunCli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    older = send_test_letter(run_cli, smtp_server).decode()
    newer = send_test_letter(run_cli, smtp_server)
    read_back(run_cli, smtp_server, tmp_path / "new", came_back(newer, MICROSOFT_PASS))
    date = next(line for line in older.splitlines() if line.startswith("Date: "))
    a_day_before = older.replace(date, "Date: Sun, 06 Dec 2026 09:00:00 +0000")
    shown = read_back(
        run_cli,
        smtp_server,
        tmp_path / "old",
        came_back(a_day_before.encode(), MICROSOFT_DMARC_FAIL),
    )
    assert "Test letter of 2026-12-06 09:00:00 UTC, as judged: at risk" in shown
    data = json.loads(run_cli("report", "--format", "json", env=smtp_server.env()).stdout)
    assert data["test_letter"]["level"] == "ok"


def test_an_authentication_results_header_that_does_not_read_says_so(
    run_cli: RunCli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    letter = send_test_letter(run_cli, smtp_server)
    garbled = "Authentication-Results: mx.google.com; dkim; spf=\n"
    shown = read_back(run_cli, smtp_server, tmp_path / "back", came_back(letter, garbled))
    assert "  its Authentication-Results header could not be read" in shown
