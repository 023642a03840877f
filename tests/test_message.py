"""The message on the wire: exactly the expected headers, and nothing injected."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.contacts import Contact
from outreach.errors import MessageError
from outreach.message import build_letter, dated, message_id_for
from outreach.render import Rendered
from tests.conftest import RunCli, write_csv
from tests.smtp import SmtpServer, parse

NOW = datetime(2015, 8, 31, 9, 30, tzinfo=UTC)
SETTINGS = {
    "MAIL_FROM": "campaigns@coalition.example",
    "MAIL_FROM_NAME": "Coalition for the Code of Conduct",
    "MAIL_REPLY_TO": "replies@coalition.example",
    "CAMPAIGN": "code-of-conduct-2015",
}


@pytest.fixture
def campaign(project: Path) -> Campaign:
    return Campaign.open(load_settings(environ=SETTINGS, env_file=None))


def test_the_eml_has_exactly_the_expected_headers(campaign: Campaign) -> None:
    (chile,) = campaign.contacts.select(["CHL"])
    rendered, letter = campaign.compose(chile, now=NOW)
    message = parse(letter.data)
    assert list(message.keys()) == [
        "From",
        "To",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
    ]
    assert message["From"] == "Coalition for the Code of Conduct <campaigns@coalition.example>"
    assert message["To"] == (
        "Permanent Mission of Chile to the United Nations <chl@missions.example>"
    )
    assert message["Reply-To"] == "replies@coalition.example"
    # The folded Subject starts on its own continuation line; the leading space
    # is folding whitespace, which mail programs drop.
    assert message["Subject"].strip() == rendered.subject
    assert message["Date"] == "Mon, 31 Aug 2015 09:30:00 +0000"
    assert message["Message-ID"] == message_id_for(
        "code-of-conduct-2015", "CHL", "coalition.example"
    )
    assert message["Message-ID"].endswith("@coalition.example>")
    assert letter.recipients == ("chl@missions.example",)
    assert letter.sender == "campaigns@coalition.example"


def test_text_first_then_html_both_utf8(campaign: Campaign) -> None:
    (ivory,) = campaign.contacts.select(["CIV"])
    rendered, letter = campaign.compose(ivory, now=NOW)
    message = parse(letter.data)
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    # On the wire every line ends in CRLF; the content is otherwise unchanged.
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content().replace("\r\n", "\n") == rendered.html
    assert "government’s" in text.get_content()


def test_wire_format_is_crlf_and_no_line_is_too_long(campaign: Campaign) -> None:
    for contact in campaign.contacts:
        _, letter = campaign.compose(contact, now=NOW)
        lines = letter.data.split(b"\r\n")
        assert b"\n" not in b"".join(lines), contact.id
        assert max(len(line) for line in lines) <= 998, contact.id


def test_the_message_id_is_the_same_on_every_run(campaign: Campaign) -> None:
    (chile,) = campaign.contacts.select(["CHL"])
    first = campaign.compose(chile, now=NOW)[1]
    later = campaign.compose(chile, now=datetime(2015, 9, 1, tzinfo=UTC))[1]
    assert first.message_id == later.message_id


def test_a_letter_checked_earlier_goes_out_dated_as_it_goes_and_is_otherwise_the_same(
    project: Path,
) -> None:
    """The Date of a kept letter is set as it goes; a line of its text starting "Date: " stays."""
    text = project / "templates" / "en" / "letter.txt.j2"
    text.write_text("Date: of the meeting, as agreed\n" + text.read_text())
    campaign = Campaign.open(load_settings(environ=SETTINGS, env_file=None))
    (chile,) = campaign.contacts.select(["CHL"])
    _, letter = campaign.compose(chile, now=NOW)
    later = datetime(2015, 8, 31, 11, 5, 7, tzinfo=UTC)

    sent = dated(letter, later)

    message = parse(sent.data)
    assert message["Date"] == "Mon, 31 Aug 2015 11:05:07 +0000"
    assert message.get_all("Date") == [message["Date"]]
    assert "Date: of the meeting, as agreed" in message.get_body(("plain",)).get_content()
    assert sent.data.replace(b"11:05:07", b"09:30:00") == letter.data
    assert dataclasses.replace(sent, data=letter.data) == letter


def test_cc_is_a_header_and_an_envelope_recipient(campaign: Campaign) -> None:
    contact = Contact(
        id="CHL",
        country="Chile",
        to=("chl@missions.example",),
        cc=("desk@chile.example", "pr@chile.example"),
        language="en",
        line=2,
        fields={"mission": "Permanent Mission of Chile"},
    )
    rendered = Rendered(subject="S", text="t", html="<p>h</p>", language="en")
    letter = build_letter(contact, rendered, campaign.settings, now=NOW)
    message = parse(letter.data)
    assert message["Cc"] == "desk@chile.example, pr@chile.example"
    assert letter.recipients == ("chl@missions.example", "desk@chile.example", "pr@chile.example")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            "--{b}\n\nContent-Type: text/html\n\n<p>forged</p>\n--{b}--", id="forged-part"
        ),
        pytest.param("=" * 80 + "\n--" + "=" * 40, id="equals-signs"),
    ],
)
def test_a_body_cannot_forge_a_part_of_the_letter(campaign: Campaign, body: str) -> None:
    """A body written to look like a MIME boundary stays text: the letter keeps two parts."""
    (chile,) = campaign.contacts.select(["CHL"])
    first = build_letter(chile, Rendered("S", "t", "<p>h</p>", "en"), campaign.settings, now=NOW)
    boundary = parse(first.data).get_boundary()
    assert boundary
    text = body.format(b=boundary) + "\n"
    html = f"<pre>{text}</pre>\n"
    rendered = Rendered(subject="S", text=text, html=html, language="en")
    letter = build_letter(chile, rendered, campaign.settings, now=NOW)
    message = parse(letter.data)
    plain, html_part = message.iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == text
    assert html_part.get_content().replace("\r\n", "\n") == html
    assert not message.defects
    assert not plain.defects
    assert not html_part.defects


AWKWARD_BODIES = [
    pytest.param("", id="empty"),
    pytest.param("no newline at the end", id="no-final-newline"),
    pytest.param("trailing space \nand a tab\t\n  \n", id="trailing-whitespace"),
    pytest.param(".\n..\n. \nend\n.", id="lone-dots"),
    pytest.param("=" * 200 + "\n=\n==3D\n", id="equals-signs"),
    pytest.param("x" * 2000 + "\n", id="one-long-word"),
    pytest.param("é" * 300 + "\n" + "a" * 75 + "é\n", id="long-accented"),
    pytest.param("🕊 " * 100 + "\n", id="non-bmp"),
    pytest.param("one\r\ntwo\rthree\nfour\r\n", id="mixed-line-ends"),
    pytest.param("From the desk\n>From\nFrom \n", id="from-lines"),
    pytest.param("page\x0cbreak\x0bvertical\x00nul\x7fdel\n", id="control-characters"),
    pytest.param(" " * 80 + "\n\t" * 40 + "\n", id="only-whitespace"),
]


@pytest.mark.parametrize("body", AWKWARD_BODIES)
def test_each_version_reads_back_exactly_as_written(campaign: Campaign, body: str) -> None:
    """Whatever the text holds, a mail reader decodes the very text, line ends aside,
    from quoted-printable lines no longer than the 76 characters RFC 2045 allows."""
    (chile,) = campaign.contacts.select(["CHL"])
    rendered = Rendered(subject="S", text=body, html=body, language="en")
    letter = build_letter(chile, rendered, campaign.settings, now=NOW)
    message = parse(letter.data)
    expected = re.sub(r"\r\n|\r", "\n", body)
    expected = expected if expected.endswith("\n") else expected + "\n"
    for part in message.iter_parts():
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content().replace("\r\n", "\n") == expected
        assert not part.defects
        encoded = part.get_payload(decode=False)
        assert max(len(line) for line in encoded.split("\r\n")) <= 76
    assert not message.defects


INJECTIONS = [
    pytest.param("Chile\r\nBcc: evil@attacker.example", id="crlf"),
    pytest.param("Chile\nBcc: evil@attacker.example", id="lf"),
    pytest.param("Chile\rBcc: evil@attacker.example", id="cr"),
    pytest.param("Chile\u2028Bcc: evil@attacker.example", id="line-separator"),
    pytest.param("Chile\u0085Bcc: evil@attacker.example", id="next-line"),
    pytest.param("=?utf-8?q?Chile=0D=0ABcc=3A_evil=40attacker=2Eexample?=", id="encoded-word"),
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("where", ["mission", "country", "subject"])
def test_header_injection_is_refused(campaign: Campaign, value: str, where: str) -> None:
    # The To display name is the mission, or the country when there is no mission.
    fields = {"mission": "Permanent Mission of Chile"} if where == "subject" else {}
    fields[where] = value
    contact = Contact(
        id="CHL",
        country=fields.get("country", "Chile"),
        to=("chl@missions.example",),
        cc=(),
        language="en",
        line=7,
        fields={k: v for k, v in fields.items() if k != "subject"},
    )
    subject = value if where == "subject" else "Request"
    rendered = Rendered(subject=subject, text="t", html="<p>h</p>", language="en")
    with pytest.raises(MessageError, match=r"CHL \(line 7\).*cannot go into a mail header"):
        build_letter(contact, rendered, campaign.settings, now=NOW)


SENDER_NAMES = [
    pytest.param("Coalition for the Code of Conduct", id="plain"),
    pytest.param("Coalition, Code of Conduct", id="comma"),
    pytest.param('The "Code of Conduct" Coalition', id="quotes"),
    pytest.param("Coalición por el Código de Conducta", id="accents"),
    pytest.param("Coalition (33 organisations) <for> the Code; of Conduct", id="specials"),
    pytest.param("Coalition for the Code of Conduct " * 4, id="long-folded"),
    pytest.param("联盟 🕊", id="non-latin"),
]


@pytest.mark.parametrize("name", SENDER_NAMES)
def test_the_sender_name_reads_back_as_written(project: Path, name: str) -> None:
    environ = {**SETTINGS, "MAIL_FROM_NAME": name, "MAIL_REPLY_TO": "r@coalition.example"}
    campaign = Campaign.open(load_settings(environ=environ, env_file=None))
    (chile,) = campaign.contacts.select(["CHL"])
    sender = parse(campaign.compose(chile, now=NOW)[1].data)["From"].addresses
    assert [(s.display_name, s.addr_spec) for s in sender] == [
        (name.strip(), "campaigns@coalition.example")
    ]


# -- every address header reads back as built --------------------------------------------------

MISSION_NAMES = [
    pytest.param(
        "Permanent Mission of Chile to the United Nations, New York <evil@attacker.org>",
        id="a-mailbox-hidden-in-a-long-name",
    ),
    pytest.param(
        "Permanent Mission of Chile to the United Nations, New York", id="long-with-a-comma"
    ),
    pytest.param("Mission of Côte d’Ivoire, New York", id="accents-and-a-comma"),
    pytest.param('The "Permanent" Mission; of Chile: (New York) [UN]', id="every-special"),
    pytest.param("x" * 2000, id="two-thousand-characters-in-one-word"),
    pytest.param("Permanent Mission, " * 60, id="long-and-many-commas"),
]


@pytest.mark.parametrize("name", MISSION_NAMES)
def test_the_to_header_reads_back_as_exactly_the_mission(campaign: Campaign, name: str) -> None:
    """Reply-All must reach the mission and nobody else, whatever its name holds."""
    contact = Contact(
        id="CHL",
        country="Chile",
        to=("chl@missions.example",),
        cc=("desk@chile.example",),
        language="en",
        line=2,
        fields={"mission": name},
    )
    rendered = Rendered(subject="S", text="t", html="<p>h</p>", language="en")
    letter = build_letter(contact, rendered, campaign.settings, now=NOW)
    message = parse(letter.data)
    to = message["To"].addresses
    # (Python's parser puts a space between encoded words; mail programs do not.)
    assert [("".join(a.display_name.split()), a.addr_spec) for a in to] == [
        ("".join(name.split()), "chl@missions.example")
    ]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["desk@chile.example"]
    assert b"evil@attacker.org>" not in letter.data.split(b"\r\n\r\n")[0].replace(b"=40", b"@")
    assert max(len(line) for line in letter.data.split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Coalition for the Code of Conduct, Global Centre for R2P", id="comma"),
        pytest.param("Coalition, " * 12, id="many-commas"),
    ],
)
def test_a_long_sender_name_with_a_comma_reads_back_as_one_sender(project: Path, name: str) -> None:
    environ = {**SETTINGS, "MAIL_FROM_NAME": name}
    campaign = Campaign.open(load_settings(environ=environ, env_file=None))
    (chile,) = campaign.contacts.select(["CHL"])
    sender = parse(campaign.compose(chile, now=NOW)[1].data)["From"].addresses
    assert [("".join(s.display_name.split()), s.addr_spec) for s in sender] == [
        ("".join(name.split()), "campaigns@coalition.example")
    ]


@pytest.mark.parametrize(
    "mission",
    [pytest.param("x" * 2000, id="one-long-word"), pytest.param("Mission, " * 250, id="commas")],
)
def test_a_two_thousand_character_mission_passes_check_and_is_delivered(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, mission: str
) -> None:
    """No line of the letter passes the 998 characters a server takes (RFC 5322)."""
    write_csv(
        project / "contacts.csv", f'id,country,mission,email\nCHL,Chile,"{mission}",c@m.example\n'
    )
    assert run_cli("check", env=smtp_server.env()).code == 0
    result = run_cli("send", "--yes", env=smtp_server.env())
    assert result.code == 0, result.stdout + result.stderr
    (received,) = smtp_server.received
    assert max(len(line) for line in received.data.split(b"\r\n")) <= 998
    assert [a.addr_spec for a in received.message["To"].addresses] == ["c@m.example"]


def test_the_same_mailbox_twice_in_a_row_gets_one_letter(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    write_csv(
        project / "contacts.csv",
        "id,country,email,cc\nCHL,Chile,chl@missions.example;CHL@Missions.example,"
        "chl@missions.example;desk@chile.example;Desk@Chile.example\n",
    )
    result = run_cli("send", "--yes", env=smtp_server.env())
    assert result.code == 0, result.stdout + result.stderr
    assert "written more than once; each address gets one letter" in result.stderr
    (received,) = smtp_server.received
    assert received.recipients == ["chl@missions.example", "desk@chile.example"]


def test_the_message_id_key_is_made_once_kept_private_and_never_guessable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone can compute a hash of campaign and contact id; no one can without the key."""
    import hashlib
    import stat

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    first = message_id_for("c", "CHL", "x.org")
    key = tmp_path / "state" / "outreach" / "message-id.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}\n", key.read_text(encoding="ascii"))
    made = key.read_bytes()
    # The same on every call, every retry, every run: exactly-once depends on it.
    assert message_id_for("c", "CHL", "x.org") == first == message_id_for("c", "chl", "x.org")
    assert key.read_bytes() == made
    guessable = f"<{hashlib.sha256(b'c' + bytes(1) + b'CHL').hexdigest()[:32]}.outreach@x.org>"
    assert first != guessable
    # Another installation, another key: other ids.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "elsewhere"))
    assert message_id_for("c", "CHL", "x.org") != first


@pytest.mark.parametrize(
    "content", ["", "not a key\n", "00" * 31 + "\n"], ids=["empty", "text", "short"]
)
def test_a_damaged_key_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    key = tmp_path / "outreach" / "message-id.key"
    key.parent.mkdir()
    key.write_text(content, encoding="ascii")
    with pytest.raises(MessageError, match=r"message-id\.key: not a key outreach wrote"):
        message_id_for("c", "CHL", "x.org")
