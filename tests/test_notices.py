"""Reading one message: a bounce, a delay, an answer, an automatic answer, or nothing.

The fixtures in tests/data/mail/ were written for these tests, each in the
documented shape of what a real system sends (tests/data/mail/README.md
says which); the ids in them are the Message-IDs outreach gives the tests'
letters in campaign ``default`` from campaign@coalition.example.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from outreach.message import message_id_for
from outreach.notices import (
    AUTO_REPLIED,
    BOUNCED,
    DELAYED,
    MAX_NOTICE_BYTES,
    REPLIED,
    Notice,
    Unreadable,
    automatic,
    clean,
    parse,
    read_bytes,
    read_notice,
)

MAIL = Path(__file__).resolve().parent / "data" / "mail"


def letter_id(contact_id: str) -> str:
    return message_id_for("default", contact_id, "coalition.example")


def notice_of(name: str) -> Notice:
    data = (MAIL / name).read_bytes()
    return read_notice(parse(data), data)


@pytest.mark.parametrize(
    ("name", "contact_id", "kind", "recipient", "status", "diagnostic"),
    [
        pytest.param(
            "postfix-bounce.eml",
            "BRA",
            BOUNCED,
            "bra@missions.example",
            "5.1.1",
            "smtp; 550 5.1.1 <bra@missions.example>: Recipient address rejected",
            id="postfix",
        ),
        pytest.param(
            "exchange-online-ndr.eml",
            "KEN",
            BOUNCED,
            "ken@missions.example",
            "5.1.10",
            "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound",
            id="exchange-online",
        ),
        pytest.param(
            "gmail-dsn.eml",
            "DEU",
            BOUNCED,
            "deu@missions.example",
            "5.1.1",
            "smtp; 550-5.1.1 The email account that you tried to reach does not exist",
            id="gmail",
        ),
        pytest.param(
            "delayed.eml",
            "JPN",
            DELAYED,
            "jpn@missions.example",
            "4.4.1",
            "X-Postfix; connect to mx.missions.example[192.0.2.40]:25: Connection timed out",
            id="delayed",
        ),
    ],
)
def test_each_report_names_the_letter_the_address_and_the_status(
    name: str, contact_id: str, kind: str, recipient: str, status: str, diagnostic: str
) -> None:
    notice = notice_of(name)
    assert notice.kind == "report"
    assert notice.refers_to[0] == letter_id(contact_id)
    [event] = notice.events
    assert (event.kind, event.recipients, event.status) == (kind, (recipient,), status)
    assert event.text.startswith(diagnostic)
    assert "\n" not in event.text


def test_a_report_with_several_recipients_gives_one_event_each_and_skips_the_delivered() -> None:
    notice = notice_of("several-recipients.eml")
    assert notice.refers_to == (letter_id("MEX"),)
    assert [(e.kind, e.recipients, e.status) for e in notice.events] == [
        (BOUNCED, ("mex@missions.example",), "5.1.1"),
        (DELAYED, ("protocol@mex.missions.example",), "4.4.7"),
        (BOUNCED, ("someone-else@missions.example",), "5.1.1"),
    ]


def test_a_report_that_cannot_be_read_gives_no_event_and_says_why() -> None:
    notice = notice_of("malformed-report.eml")
    assert notice.kind == "report"
    assert notice.events == ()
    assert "cannot be read" in notice.problem
    # The text mentions an address and "failed": nothing is guessed from it.
    assert notice.refers_to == (letter_id("BRA"),)


def test_a_report_about_another_message_names_that_message() -> None:
    notice = notice_of("unknown-message.eml")
    assert notice.refers_to == ("<caf4lunch-not-a-letter@mail.coalition.example>",)
    assert notice.events[0].recipients == ("colleague@elsewhere.example",)


def test_a_human_reply_is_replied_with_date_sender_and_subject_never_its_body() -> None:
    notice = notice_of("reply.eml")
    assert notice.kind == "answer"
    assert notice.refers_to == (letter_id("CHL"),)
    [event] = notice.events
    assert event.kind == REPLIED
    assert event.text == (
        "2026-11-30 15:15 UTC, from Ana Pérez <chl@missions.example>, subject: RE: Request "
        "to endorse the Code of Conduct regarding Security Council action"
    )
    assert "PRIVATE-BODY-TEXT" not in repr(notice)


def test_an_out_of_office_is_auto_replied_and_never_a_bounce() -> None:
    notice = notice_of("out-of-office.eml")
    assert [e.kind for e in notice.events] == [AUTO_REPLIED]
    assert notice.refers_to == (letter_id("FRA"),)


def test_a_newsletter_is_nothing() -> None:
    assert notice_of("newsletter.eml").kind == "other"


def test_postfix_marks_its_bounces_auto_replied_and_they_stay_bounces() -> None:
    data = (MAIL / "postfix-bounce.eml").read_bytes()
    message = parse(data)
    assert message["Auto-Submitted"] == "auto-replied"
    assert [e.kind for e in read_notice(message, data).events] == [BOUNCED]


def answer(**headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Someone <chl@missions.example>"
    message["Subject"] = "Re: the letter"
    message["In-Reply-To"] = letter_id("CHL")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("the body")
    return message


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Auto_Submitted": "auto-replied"}, id="rfc3834-auto-replied"),
        pytest.param({"Auto_Submitted": "auto-generated"}, id="rfc3834-auto-generated"),
        pytest.param({"Auto_Submitted": "Auto-Replied; owner-email=x@y"}, id="rfc3834-params"),
        pytest.param({"X_Autoreply": "yes"}, id="x-autoreply"),
        pytest.param({"X_Autorespond": "Out of office"}, id="x-autorespond"),
        pytest.param({"X_Autogenerated": "Reply"}, id="x-autogenerated"),
        pytest.param({"Precedence": "auto_reply"}, id="precedence-auto-reply"),
        pytest.param({"Precedence": "bulk"}, id="vacation-precedence-bulk"),
        pytest.param({"Precedence": "junk"}, id="vacation-precedence-junk"),
        pytest.param({"X_MS_Exchange_Inbox_Rules_Loop": "fra@missions.example"}, id="inbox-rule"),
    ],
)
def test_headers_that_mark_an_automatic_answer(headers: dict[str, str]) -> None:
    message = answer(**headers)
    assert automatic(message)
    assert [e.kind for e in read_notice(message).events] == [AUTO_REPLIED]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="plain"),
        pytest.param({"Auto_Submitted": "no"}, id="auto-submitted-no"),
        pytest.param({"X_Auto_Response_Suppress": "All"}, id="outlook-asks-not-to-be-answered"),
        pytest.param(
            {"Precedence": "list", "List_Id": "<diplomats.lists.example>"}, id="list-copy"
        ),
        pytest.param(
            {"Precedence": "bulk", "List_Post": "<mailto:l@lists.example>"}, id="bulk-list-copy"
        ),
    ],
)
def test_headers_that_leave_an_answer_human(headers: dict[str, str]) -> None:
    message = answer(**headers)
    assert not automatic(message)
    assert [e.kind for e in read_notice(message).events] == [REPLIED]


def test_an_answer_names_the_nearest_message_first() -> None:
    message = answer(References=f"<older@elsewhere.example> {letter_id('CHL')} <last@x.example>")
    del message["In-Reply-To"]
    assert read_notice(message).refers_to == (
        "<last@x.example>",
        letter_id("CHL"),
        "<older@elsewhere.example>",
    )


def test_x_failed_recipients_without_a_report_is_a_bounce_of_those_addresses() -> None:
    # What Gmail sent before it used RFC 3464, and Exim still sends.
    message = EmailMessage()
    message["From"] = "Mail Delivery Subsystem <mailer-daemon@googlemail.com>"
    message["Subject"] = "Delivery Status Notification (Failure)"
    message["X-Failed-Recipients"] = "chl@missions.example, cc@missions.example"
    message["References"] = letter_id("CHL")
    message.set_content("Delivery to the following recipient failed permanently: ...")
    notice = read_notice(message)
    assert notice.refers_to == (letter_id("CHL"),)
    assert [(e.kind, e.recipients, e.status) for e in notice.events] == [
        (BOUNCED, ("chl@missions.example",), "5.0.0"),
        (BOUNCED, ("cc@missions.example",), "5.0.0"),
    ]


def test_gmails_original_message_id_field_is_enough_to_name_the_letter() -> None:
    data = (MAIL / "gmail-dsn.eml").read_bytes()
    text = data.decode()
    for line in ("References", "In-Reply-To"):
        start = text.index(f"\n{line}:")
        text = text[:start] + text[text.index("\n", start + 1) :]
    text = text.replace("Message-ID: <14438f7f", "X-Not-Message-ID: <14438f7f", 1)
    notice = read_notice(parse(text.encode()))
    assert notice.refers_to == (letter_id("DEU"),)


def test_a_message_without_a_message_id_gets_a_stable_one() -> None:
    message = answer()
    data = message.as_bytes()
    first, again = read_notice(parse(data), data), read_notice(parse(data), data)
    assert first.notice_id == again.notice_id
    assert first.notice_id.startswith("<")
    assert first.notice_id.endswith(".invalid>")


def test_a_mangled_message_is_read_without_an_error() -> None:
    data = (
        b"From: <<<>>>\r\nDate: yesterday-ish\r\nSubject: =?utf-8?q?broken\r\n"
        b"In-Reply-To: " + letter_id("CHL").encode() + b"\r\n"
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\nno parts at all\r\n'
    )
    notice = read_notice(parse(data), data)
    assert notice.kind == "answer"
    assert notice.date is None
    assert notice.events[0].text.startswith("undated, from ")


@pytest.mark.parametrize("name", sorted(p.name for p in MAIL.glob("*.eml")))
def test_a_message_cut_short_anywhere_is_read_without_an_error(name: str) -> None:
    data = (MAIL / name).read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 40)):
        for damaged in (data[:cut], data[:cut] + b"\xff\xfe\x00garbage\r\n", data[cut:]):
            notice = read_notice(parse(damaged), damaged)
            assert notice.notice_id.startswith("<")


# -- the shapes of other mail systems (tests/data/mail/shapes/) ---------------------------

SHAPES = MAIL / "shapes"


def shape(name: str) -> Notice:
    data = (SHAPES / name).read_bytes()
    return read_notice(parse(data), data)


@pytest.mark.parametrize(
    ("name", "contact_id", "recipient", "status"),
    [
        pytest.param("exim.eml", "BRA", "bra@missions.example", "5.1.1", id="exim"),
        pytest.param("sendmail.eml", "KEN", "ken@missions.example", "5.1.1", id="sendmail"),
        pytest.param("qmail.eml", "JPN", "jpn@missions.example", "5.1.1", id="qmail"),
        pytest.param("yahoo.eml", "MEX", "mex@missions.example", "5.1.1", id="yahoo"),
        pytest.param(
            "exchange-2003.eml", "CHL", "chl@missions.example", "5.0.0", id="exchange-2003"
        ),
        pytest.param("re-bounce.eml", "FRA", "fra@missions.example", "5.1.1", id="re-bounce"),
        pytest.param("gmail-old.eml", None, "deu@missions.example", "5.1.1", id="gmail-old"),
    ],
)
def test_a_bounce_in_any_shape_names_the_failed_address_and_the_letter_it_returns(
    name: str, contact_id: str | None, recipient: str, status: str
) -> None:
    """The original pasted as text, the status in the text only, a "Re:" subject: a bounce."""
    notice = shape(name)
    assert notice.kind == "report"
    assert notice.refers_to == ((letter_id(contact_id),) if contact_id else ())
    [event] = notice.events
    assert (event.kind, event.recipients, event.status) == (BOUNCED, (recipient,), status)
    assert "\n" not in event.text


@pytest.mark.parametrize(
    ("name", "contact_id", "why"),
    [
        pytest.param("exchange-auto-reply.eml", None, "automatic reply", id="exchange"),
        pytest.param("apple-vacation.eml", "JPN", "X-Apple-Action: vacation", id="apple"),
        pytest.param("gmail-vacation.eml", "MEX", "Auto-Submitted: auto-replied", id="gmail"),
    ],
)
def test_an_automatic_reply_is_known_by_the_headers_its_responder_writes(
    name: str, contact_id: str | None, why: str
) -> None:
    notice = shape(name)
    assert notice.kind == "answer"
    assert [e.kind for e in notice.events] == [AUTO_REPLIED]
    assert notice.refers_to == ((letter_id(contact_id),) if contact_id else ())
    assert why in automatic(parse((SHAPES / name).read_bytes()))


def test_a_mailing_lists_rejection_is_no_answer_though_it_says_re_and_names_the_letter() -> None:
    notice = shape("list-rejection.eml")
    assert notice.kind == "list"
    assert notice.events == ()
    assert "mailing list" in notice.problem


def test_a_message_from_a_mission_without_in_reply_to_is_an_answer_naming_its_sender() -> None:
    notice = shape("plain-answer.eml")
    assert notice.kind == "answer"
    assert notice.refers_to == ()
    assert notice.address == "chl@missions.example"
    assert [e.kind for e in notice.events] == [REPLIED]


@pytest.mark.parametrize(
    "date",
    ["Fri, 31 Dec 9999 23:59:59 -0100", "Thu, 1 Jan 1970 00:00:00 +1400", "Sat, 1 Jan 1900 0:0 Z"],
    ids=["year-9999", "before-1970-utc", "year-1900"],
)
def test_a_date_out_of_range_is_no_date(date: str) -> None:
    data = (SHAPES / "plain-answer.eml").read_bytes()
    data = data.replace(b"Sat, 28 Nov 2026 09:16:00 -0500", date.encode())
    assert read_notice(parse(data), data).date is None


def nested(depth: int) -> bytes:
    """A message whose MIME parts are nested ``depth`` levels deep."""
    head = b"From: x@missions.example\r\nSubject: deep\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % n for n in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nhello" + closing


def test_a_message_nested_thousands_deep_or_too_large_is_unreadable_not_a_crash() -> None:
    with pytest.raises(Unreadable, match="nested MIME parts"):
        read_bytes(nested(3000))
    assert read_bytes(nested(5)).kind == "answer"
    with pytest.raises(Unreadable, match="larger than"):
        read_bytes(b"Subject: big\r\n\r\n" + b"x" * (MAX_NOTICE_BYTES + 1))


def test_printed_text_from_mail_holds_no_control_character() -> None:
    assert clean("\x1b]0;owned\x07subject\r\nBcc: x") == "]0;owned subject Bcc: x"


def test_an_answer_to_a_letter_whose_subject_sounds_like_a_bounce_is_an_answer() -> None:
    """A letter titled "Delivery problems in humanitarian aid": its answers are answers."""
    data = (MAIL / "reply.eml").read_bytes()
    data = data.replace(b"Subject: RE: Request", b"Subject: RE: Delivery problems; Request", 1)
    notice = read_notice(parse(data), data)
    assert notice.kind == "answer"
    assert [e.kind for e in notice.events] == [REPLIED]
