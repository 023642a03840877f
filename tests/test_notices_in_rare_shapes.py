"""Notices in the shapes no reader knows by name, modelled on real ones from production systems.

Apache James's "post_master" with a "Re:" subject, Lotus Domino's "AUTO:"
out-of-office, Mimecast's and Lotus Notes' text bounces, a multipart whose
boundary the parser cannot find, a report that names a mailbox's file path
instead of an address. Each is recorded against the right letter, or listed,
never recorded as a mission's answer and never as another address's bounce.
"""

from __future__ import annotations

import signal

import pytest

from outreach.inbox import Unmatched
from outreach.notices import (
    Unreadable,
    _for_detectors,
    _text_addresses,
    automatic,
    parse,
    read_bytes,
)
from outreach.sendlog import ENHANCED_STATUS
from tests.test_inbox_matching import log_row, matched, only

LETTER = "<l1@coalition.example>"
CHILE = [log_row("sent", "CHL", "chl@missions.example", LETTER, 0)]
#: Chile's letter went to its own address and, in copy, to its ambassador's.
CHILE_AND_COPY = [
    *CHILE,
    log_row("sent", "CHL", "amb@missions.example", LETTER, 0),
]


def james(recipient: str = "chl@missions.example") -> bytes:
    """Apache James's bounce: a "Re:" subject, In-Reply-To, and a boundary on a line of its own."""
    return f"""\
From: post_master@gateway.example
To: campaign@coalition.example
Message-ID: <0001.JavaMail@gateway.example>
In-Reply-To: {LETTER}
Subject: Re:A letter from the coalition
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="----=_Part_0"
Date: 28 Nov 2026 02:21:53 -0000

------=_Part_0
Content-Type: multipart/alternative;
boundary="----=_Part_1"

------=_Part_1
Content-Type: text/plain; charset=us-ascii

Error: Invalid user address

Error message below:
550 - Requested action not taken: no such user here

Message details:
  Subject: A letter from the coalition
  MAIL FROM: campaign@coalition.example
  RCPT TO: {recipient}

------=_Part_1--

------=_Part_0--
""".encode()


def text_bounce(body: str, subject: str = "Undeliverable message") -> bytes:
    """A mailer's notice in plain text, with no Message-ID of the letter (Mimecast, Notes)."""
    return f"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example>
To: campaign@coalition.example
Subject: {subject}
Message-ID: <n1@relay.example>
Date: Sat, 28 Nov 2026 10:00:00 +0000
Content-Type: text/plain; charset=us-ascii

{body}
""".encode()


def report(final_recipient: str, action: str = "failed", status: str = "5.0.0") -> bytes:
    """An RFC 3464 report returning the letter's headers, its recipient as given."""
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example>
To: campaign@coalition.example
Subject: Delivery Status Notification
Message-ID: <r1@mx.example>
Date: Sat, 28 Nov 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message to chl@missions.example could not be delivered to the mailbox it forwards to.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example

Final-Recipient: {final_recipient}
Action: {action}
Status: {status}

--B
Content-Type: text/rfc822-headers

From: campaign@coalition.example
To: chl@missions.example
Cc: amb@missions.example
Message-ID: {LETTER}
Subject: A letter from the coalition

--B--
""".encode()


def test_a_bounce_from_post_master_titled_re_is_a_bounce_never_an_answer() -> None:
    notice = read_bytes(james())
    assert notice.kind == "report"
    letter, by_address = only(matched(notice, CHILE))
    assert (letter.contact_id, letter.address, by_address) == ("CHL", "chl@missions.example", False)
    [target] = matched(notice, CHILE).targets  # type: ignore[union-attr]
    assert (target.event.kind, target.event.status) == ("bounced", "5.0.0")
    assert target.event.text.startswith("named in the text of a notice in a shape not known here")


def test_a_bounce_naming_an_address_the_letter_never_went_to_records_nothing() -> None:
    found = matched(read_bytes(james("stranger@elsewhere.example")), CHILE)
    assert isinstance(found, Unmatched)
    assert "no failed address can be read" in found.why


@pytest.mark.parametrize(
    "subject",
    [
        "AUTO: Maria Lopez is out of the office (returning 12/12/2026)",
        "AUTO: Maria Lopez is out of office",
    ],
)
def test_lotus_dominos_out_of_office_is_an_automatic_reply(subject: str) -> None:
    message = parse(
        f"From: maria@missions.example\nSubject: {subject}\nIn-Reply-To: {LETTER}\n\n"
        "I am out of the office until 12/12/2026.\n".encode()
    )
    assert automatic(message).startswith("Lotus Domino's out-of-office subject")
    assert (
        automatic(parse(b"From: a@b.example\nSubject: AUTO: reply on the motor pool\n\nx\n")) == ""
    )


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("by mx.example with ESMTP id 2014.11.23.0001", []),
        ("from [192.0.2.25] by 198.51.100.2.5", []),
        ("Diagnostic-Code: smtp; 550 5.1.1 <a@b.example>: no such user", ["5.1.1"]),
        ("452 4.2.2 Mailbox full.", ["4.2.2"]),
        ("status 5.1.10 (RFC 3463bis)", ["5.1.10"]),
    ],
    ids=["a-date", "addresses", "a-code", "a-code-at-the-end", "three-digits"],
)
def test_a_status_code_is_never_read_from_a_date_or_an_ip_address(
    text: str, codes: list[str]
) -> None:
    assert ENHANCED_STATUS.findall(text) == codes


@pytest.mark.parametrize(
    "body",
    [
        # Mimecast
        "Your message couldn't be delivered to the following recipients:\n\n"
        "-- chl@missions.example\n\n550 Invalid recipient\n",
        # Lotus Notes
        "Your document:\tA letter from the coalition\nwas not delivered to:\n\n"
        "  chl@missions.example\n\nbecause:\n\n  User chl (chl@missions.example) not listed\n",
        # DragonFly's dma
        "This is the DragonFly Mail Agent at relay.example.\n\nThere was an error delivering "
        "your mail to <chl@missions.example>.\n\nremote delivery failed: 550 5.1.1 no mailbox\n",
    ],
    ids=["mimecast", "lotus-notes", "dragonfly"],
)
def test_a_text_bounce_in_an_unknown_shape_is_matched_by_the_one_letter_address_it_names(
    body: str,
) -> None:
    notice = read_bytes(text_bounce(body))
    assert notice.guessed
    found = matched(notice, CHILE)
    letter, by_address = only(found)
    assert (letter.address, by_address) == ("chl@missions.example", True)
    [target] = found.targets  # type: ignore[union-attr]
    assert target.event.kind == "bounced"
    assert target.event.status.startswith("5.")


def test_a_text_bounce_that_names_two_addresses_of_letters_is_listed_not_guessed() -> None:
    body = "Delivery failed.\n\nOriginal To: chl@missions.example\nCc: amb@missions.example\n"
    found = matched(read_bytes(text_bounce(body)), CHILE_AND_COPY)
    assert isinstance(found, Unmatched)
    assert "several addresses of letters (amb@missions.example, chl@missions.example)" in found.why


def test_a_text_notice_that_says_delayed_records_a_delay() -> None:
    body = "Your message to chl@missions.example has not yet been delivered; we will retry.\n"
    notice = read_bytes(text_bounce(body, subject="Delivery delayed"))
    [target] = matched(notice, CHILE).targets  # type: ignore[union-attr]
    assert (target.event.kind, target.event.status) == ("delayed", "4.0.0")


@pytest.mark.parametrize(
    "final_recipient",
    ["rfc822;/mail/spool/mx.example/chl/inbox", "rfc822; @mx.example"],
    ids=["a-mailbox-path", "no-local-part"],
)
def test_a_report_of_a_letter_by_id_that_names_no_usable_address_is_about_its_one_address(
    final_recipient: str,
) -> None:
    notice = read_bytes(report(final_recipient))
    letter, by_address = only(matched(notice, CHILE))
    assert (letter.address, by_address) == ("chl@missions.example", False)
    # The same report of a letter that went to two addresses cannot tell which.
    assert isinstance(matched(notice, CHILE_AND_COPY), Unmatched)


def test_a_report_that_says_delivered_is_never_guessed_a_bounce() -> None:
    notice = read_bytes(report("rfc822; chl@missions.example", action="delivered", status="2.0.0"))
    assert (notice.events, notice.guessed) == ((), False)
    found = matched(notice, CHILE)
    assert isinstance(found, Unmatched)
    assert "says no letter failed" in found.why


def test_each_failed_address_of_a_text_bounce_gets_the_code_written_beside_it() -> None:
    """Exim's text: two addresses, two reasons; not the first code for both."""
    notice = read_bytes(
        b"From: Mail Delivery System <Mailer-Daemon@mx.example>\n"
        b"To: campaign@coalition.example\n"
        b"Subject: Mail delivery failed: returning message to sender\n"
        b"X-Failed-Recipients: chl@missions.example, amb@missions.example\n"
        b"Message-ID: <e1@mx.example>\n"
        b"\n"
        b"This message was created automatically by mail delivery software.\n\n"
        b"A message that you sent could not be delivered to one or more of its\n"
        b"recipients. This is a permanent error. The following address(es) failed:\n\n"
        b"  chl@missions.example\n"
        b"    SMTP error from remote mail server after RCPT TO:<chl@missions.example>:\n"
        b"    550 5.1.1 <chl@missions.example>: Recipient address rejected\n"
        b"  amb@missions.example\n"
        b"    SMTP error from remote mail server after RCPT TO:<amb@missions.example>:\n"
        b"    552 5.2.2 <amb@missions.example>: Mailbox full\n"
    )
    assert {e.recipients[0]: e.status for e in notice.events} == {
        "chl@missions.example": "5.1.1",
        "amb@missions.example": "5.2.2",
    }


@pytest.mark.parametrize(
    "header",
    [b"X-Failed-Recipients: ", b"To: ", b"Subject: "],
    ids=["failed-recipients", "to", "subject"],
)
def test_headers_over_a_megabyte_are_unreadable_not_read_for_hours(header: bytes) -> None:
    """The standard library reads a header's words in time growing with their square."""
    addresses = b", ".join(b"u%d@x.example" % n for n in range(80_000))
    message = b"From: MAILER-DAEMON@x.example\n" + header + addresses + b"\n\nhello\n"
    with pytest.raises(Unreadable, match="headers longer than 1 MB"):
        read_bytes(message)


def test_at_most_a_hundred_failed_addresses_are_read_from_one_notice() -> None:
    """A letter has a few addresses; each one read is looked for in every line of the text."""
    many = b", ".join(b"u%d@x.example" % n for n in range(5_000))
    head = b"From: MAILER-DAEMON@x.example\nX-Failed-Recipients: "
    notice = read_bytes(head + many + b"\n\nx\n")
    assert [e.recipients[0] for e in notice.events] == [f"u{n}@x.example" for n in range(100)]


def test_a_notice_text_of_megabytes_of_letters_is_searched_for_addresses_word_by_word() -> None:
    """Four megabytes in one word: a pattern tried at every position would take hours."""

    def stop(signum: int, frame: object) -> None:
        raise TimeoutError("the addresses of a text were searched position by position")

    before = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)  # a bound on a hang, not a measure of speed: word by word takes milliseconds
    try:
        assert _text_addresses("a" * 4_000_000 + " chl@missions.example") == [
            "chl@missions.example"
        ]
        assert _text_addresses(("a" * 100 + "@") * 40_000) == []
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def test_a_text_naming_more_than_twenty_addresses_is_not_guessed_from() -> None:
    body = (
        "\n".join(f"-- user{n}@missions.example" for n in range(21)) + "\n-- chl@missions.example"
    )
    notice = read_bytes(text_bounce(body))
    assert notice.events == ()
    assert isinstance(matched(notice, CHILE), Unmatched)


def test_flufl_bounces_detectors_read_the_first_megabyte_of_a_large_notice() -> None:
    """They try dozens of patterns on every line: 32 MB of short lines would take minutes."""
    data = text_bounce("-- chl@missions.example\n" + "a\n" * 3_000_000)
    cut = _for_detectors(parse(data), data)
    assert len(cut.as_bytes()) <= 1024 * 1024 + 1024
    assert "chl@missions.example" in cut.get_content()
    small = text_bounce("-- chl@missions.example\n")
    message = parse(small)
    assert _for_detectors(message, small) is message


def test_one_address_written_in_two_cases_is_one_address_of_a_letter() -> None:
    body = "Delivery to CHL@Missions.example failed.\n\nRCPT TO:<chl@missions.example>\n"
    letter, by_address = only(matched(read_bytes(text_bounce(body)), CHILE))
    assert (letter.address, by_address) == ("chl@missions.example", True)
