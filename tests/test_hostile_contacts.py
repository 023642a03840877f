"""Hostile and broken contacts files: a clear error, nothing sent, nothing lost.

Campaign staff export the contacts from spreadsheets, and some of the data
comes from outside. Each case here is a file someone could really hand the
tool; `outreach send --yes` must answer with an `Error:` line that names the
file, line and column, exit 2, send nothing to the (real, loopback) SMTP
server and leave the send log of the earlier run exactly as it was.

The helpers at the top are shared by the other ``test_hostile_*`` files.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from tests.conftest import Result, RunCli
from tests.smtp import SmtpServer

HEADER = "id,country,mission,title,representative,email,cc,language,status,name_in_text"
CHILE = "CHL,Chile,Permanent Mission of Chile,,,chl@missions.example,,en,member,Chile"
FRANCE = "FRA,France,Permanent Mission of France,,,fra@missions.example,,en,member,France"


def table(*rows: str, header: str = HEADER, end: str = "\n") -> str:
    return end.join([header, *rows]) + end


@dataclass
class Story:
    """A campaign folder where AFG's letter already went out in an earlier run."""

    project: Path
    server: SmtpServer
    run_cli: RunCli
    log_before: bytes

    @property
    def log(self) -> Path:
        return self.project / "logs" / "send-log.csv"

    @property
    def contacts(self) -> Path:
        return self.project / "contacts.csv"

    def write_contacts(self, content: str | bytes, encoding: str = "utf-8") -> None:
        data = content if isinstance(content, bytes) else content.encode(encoding)
        self.contacts.write_bytes(data)

    def run(self, *args: str, **env: str) -> Result:
        return self.run_cli(*args, env=self.server.env(**env))

    def send(self, *args: str, **env: str) -> Result:
        return self.run("send", "--yes", *args, **env)

    def refused(self, result: Result, *expected: str) -> list[str]:
        """The run stopped with these problems, exit 2, nothing sent, nothing changed."""
        errors = [
            line[len("Error: ") :]
            for line in result.stderr.splitlines()
            if line.startswith("Error: ")
        ]
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert result.code == 2, result.stdout + result.stderr
        for text in expected:
            assert any(text in error for error in errors), f"{text!r} not in {errors}"
        assert self.server.received == []
        assert self.log.read_bytes() == self.log_before
        return errors


def sent_earlier(project: Path, server: SmtpServer, ids: list[str]) -> bytes:
    """Send ``ids`` from the shipped contacts, as a previous run would have; the log's bytes."""
    settings = load_settings(environ=server.env(), env_file=None)
    campaign = Campaign.open(settings)
    with campaign.open_log() as log:
        outcome = campaign.send(campaign.plan(log, campaign.select(ids)), log)
    assert outcome.all_sent
    server.received.clear()
    return settings.send_log.read_bytes()


@pytest.fixture
def story(project: Path, smtp_server: SmtpServer, run_cli: RunCli) -> Story:
    return Story(project, smtp_server, run_cli, sent_earlier(project, smtp_server, ["AFG"]))


def with_email(value: str, column: str = "email") -> str:
    """The Chile row with ``value`` (quoted for CSV) in the email or cc column."""
    quoted = '"' + value.replace('"', '""') + '"'
    if column == "email":
        return CHILE.replace("chl@missions.example", quoted)
    return CHILE.replace(",,en,", f",{quoted},en,")


# --- Files that cannot be read at all --------------------------------------------------------


def test_missing_contacts_file_names_it_and_the_setting(story: Story) -> None:
    result = story.send(CONTACTS_FILE="exports/contacts-final.csv")
    story.refused(
        result, "exports/contacts-final.csv: no such file (set CONTACTS_FILE to your contacts)"
    )


def test_a_folder_is_not_a_contacts_file(story: Story) -> None:
    (story.project / "exports").mkdir()
    story.refused(story.send(CONTACTS_FILE="exports"), "exports: is a folder, not a CSV file")


def test_a_50_mb_file_is_refused_before_it_is_read(story: Story) -> None:
    # Sparse: 50 MB on paper, a few bytes on disk, made in no time.
    with story.contacts.open("wb") as handle:
        handle.write(table(CHILE).encode())
        handle.truncate(50 * 1024 * 1024)
    story.refused(
        story.send(),
        "contacts.csv: 50 MB is larger than the 25 MB a contacts file may have; split it",
    )


# --- Files whose shape is wrong ---------------------------------------------------------------

SHAPES = [
    pytest.param(b"", "contacts.csv: the file is empty", id="empty-file"),
    pytest.param(b"\r\n \n", "contacts.csv: the file is empty", id="only-blank-lines"),
    pytest.param(
        table().encode(), "contacts.csv: only a header line, no contacts", id="header-only"
    ),
    pytest.param(
        table(
            "CHL,Chile,Permanent Mission of Chile,,,en,member,Chile",
            header=HEADER.replace("email,cc,", "cc,"),
        ).encode(),
        "contacts.csv, line 1: required column email missing (the header has: id, country, "
        "mission, title, representative, cc, language, status, name_in_text)",
        id="required-column-missing",
    ),
    pytest.param(
        table(CHILE + ",Santiago", header=HEADER + ",").encode(),
        "contacts.csv, line 1, column 11: a column without a name (it holds a value on line 2)",
        id="column-without-a-name",
    ),
    pytest.param(
        table(CHILE + ",x", header=HEADER + ",email").encode(),
        "contacts.csv, line 1, column 11: a second column named 'email'",
        id="column-twice",
    ),
    pytest.param(
        table(CHILE + ",extra").encode(),
        "contacts.csv, line 2: 11 fields where the header has 10 (a stray separator, "
        "or a value that needs quotes?)",
        id="too-many-fields",
    ),
    pytest.param(
        table(FRANCE, CHILE.removesuffix(",Chile")).encode(),
        "contacts.csv, line 3: 9 fields where the header has 10",
        id="too-few-fields",
    ),
    pytest.param(
        table(
            FRANCE, CHILE.replace("Permanent Mission of Chile", '"Permanent Mission of Chile')
        ).encode(),
        'contacts.csv, line 3: a quoted field starts here and is never closed (a missing ")',
        id="unterminated-quote",
    ),
    pytest.param(
        table(FRANCE, CHILE.replace("Chile,", "Ch\0ile,", 1)).encode(),
        "contacts.csv, line 3, column 7: a NUL byte; this is not a text CSV file",
        id="nul-byte",
    ),
    pytest.param(
        table(CHILE).encode("utf-16-le"),
        "contacts.csv, line 1, column 2: a NUL byte; this is not a text CSV file (UTF-16 "
        "without a byte-order mark?); save it as CSV UTF-8",
        id="utf-16-without-bom",
    ),
    pytest.param(
        table(FRANCE, CHILE).encode().replace(b"Chile,", b"Chile\x81,", 1),
        "contacts.csv, line 3, column 10: byte 0x81 is neither UTF-8 nor Windows-1252; "
        "save the file as CSV UTF-8",
        id="bytes-no-encoding-knows",
    ),
    pytest.param(
        codecs.BOM_UTF8 + table(FRANCE, CHILE).encode().replace(b"Chile,", b"Chil\xe9,", 1),
        "contacts.csv, line 3, column 9: byte 0xE9 is not UTF-8, though the file begins with "
        "UTF-8's byte-order mark; save the file as CSV UTF-8",
        id="utf-8-mark-then-other-bytes",
    ),
    pytest.param(
        codecs.BOM_UTF16_LE + table(CHILE).encode("utf-16-le") + b"\x00\xd8",
        "contacts.csv: not valid UTF-16 text",
        id="broken-utf-16",
    ),
]


@pytest.mark.parametrize(("content", "error"), SHAPES)
def test_a_file_of_the_wrong_shape_is_refused(story: Story, content: bytes, error: str) -> None:
    story.write_contacts(content)
    story.refused(story.send(), error)


# --- Rows that cannot be used -----------------------------------------------------------------

ROWS = [
    pytest.param(
        [CHILE, CHILE.replace("chl@", "chl.desk@")],
        "contacts.csv, line 3, column 1 (id): 'CHL' is also the id on line 2",
        id="duplicate-id",
    ),
    pytest.param(
        [CHILE, CHILE.replace("CHL,", "chl,").replace("chl@", "chl.desk@")],
        "contacts.csv, line 3, column 1 (id): 'chl' is also the id on line 2",
        id="duplicate-id-other-case",
    ),
    pytest.param(
        [CHILE, FRANCE.replace("fra@missions.example", "chl@missions.example")],
        "contacts.csv, line 3: chl@missions.example is also the address of CHL on line 2; "
        "one mission, one row",
        id="same-address-for-two-contacts",
    ),
    pytest.param(
        [CHILE, FRANCE.replace("fra@missions.example", "CHL@Missions.Example")],
        "contacts.csv, line 3: CHL@missions.example is also the address of CHL on line 2",
        id="same-address-other-case",
    ),
    pytest.param(
        [CHILE, FRANCE.replace(",,en,", ",chl@missions.example,en,")],
        "contacts.csv, line 3: chl@missions.example is also the address of CHL on line 2",
        id="same-address-as-a-cc",
    ),
    pytest.param(
        [CHILE.replace("CHL,", "../../etc/passwd,")],
        "contacts.csv, line 2, column 1 (id): '../../etc/passwd' is not a usable id",
        id="id-that-is-a-path",
    ),
    pytest.param(
        [CHILE.replace("CHL,Chile,", "CHL,,")],
        "contacts.csv, line 2, column 2 (country): empty",
        id="empty-country",
    ),
    pytest.param(
        [CHILE.replace("chl@missions.example", "")],
        "contacts.csv, line 2, column 6 (email): empty; every contact needs an address",
        id="empty-email",
    ),
    pytest.param(
        [CHILE.replace(",en,", ",english!,")],
        "contacts.csv, line 2, column 8 (language): 'english!' is not a language code",
        id="bad-language",
    ),
]


@pytest.mark.parametrize(("rows", "error"), ROWS)
def test_a_row_that_cannot_be_used_is_refused(story: Story, rows: list[str], error: str) -> None:
    story.write_contacts(table(*rows))
    story.refused(story.send(), error)


ADDRESSES = [
    pytest.param("chl.missions.example", "An email address must have an @-sign", id="no-at"),
    pytest.param(
        "chl @missions.example", "invalid characters before the @-sign: SPACE", id="space"
    ),
    pytest.param(
        "chl@@missions.example", "The part after the @-sign contains invalid", id="two-at"
    ),
    pytest.param(
        "chl@missions.example.", "An email address cannot end with a period", id="trailing-dot"
    ),
    pytest.param(
        "Chile <chl@missions.example>",
        "A display name and angle brackets around the email address are not permitted",
        id="display-name-form",
    ),
    pytest.param(
        '"Mission of Chile" <chl@missions.example>',
        "A display name and angle brackets around the email address are not permitted",
        id="quoted-display-name-form",
    ),
    pytest.param(
        "chl@missions.example, evil@attacker.example",
        "it holds ','; separate several addresses with ';'",
        id="two-addresses-with-a-comma",
    ),
    pytest.param(
        "chl@missions.example,evil@attacker.example",
        "it holds ','; separate several addresses with ';'",
        id="two-addresses-with-a-bare-comma",
    ),
    pytest.param(
        "chl@missions.example evil@attacker.example",
        "invalid characters",
        id="two-addresses-with-a-space",
    ),
    pytest.param('"a,b"@missions.example', "it holds ','", id="quoted-local-part"),
]


@pytest.mark.parametrize("column", ["email", "cc"])
@pytest.mark.parametrize(("address", "reason"), ADDRESSES)
def test_an_invalid_address_is_refused_never_half_used(
    story: Story, column: str, address: str, reason: str
) -> None:
    # smtplib (3.11) would send "a@x, b@y" to a@x alone: never let it get that far.
    story.write_contacts(table(FRANCE, with_email(address, column)))
    number = 6 if column == "email" else 7
    errors = story.refused(
        story.send(),
        f"contacts.csv, line 3, column {number} ({column}): {address!r} is not a valid address: ",
    )
    assert len(errors) == 1
    assert reason in errors[0]


def test_every_bad_row_is_reported_in_one_run(story: Story) -> None:
    story.write_contacts(
        table(
            CHILE.replace("chl@missions.example", "chl.missions.example"),
            FRANCE.replace("France,", ",", 1),
            CHILE.replace("chl@", "chl.desk@"),
        )
    )
    errors = story.refused(story.send())
    assert errors == [
        "contacts.csv, line 2, column 6 (email): 'chl.missions.example' is not a valid "
        "address: An email address must have an @-sign.",
        "contacts.csv, line 3, column 2 (country): empty",
        "contacts.csv, line 4, column 1 (id): 'CHL' is also the id on line 2",
    ]


def test_a_broken_shape_is_reported_before_the_rows(story: Story) -> None:
    # Rows are only judged once every line has its fields in the right columns.
    story.write_contacts(table(CHILE.replace("chl@missions.example", "x"), FRANCE + ",extra"))
    errors = story.refused(story.send())
    assert errors == [
        "contacts.csv, line 3: 11 fields where the header has 10 (a stray separator, or a "
        "value that needs quotes?)"
    ]


@pytest.mark.parametrize("command", ["check", "preview", "send"])
def test_every_command_reports_the_same_line(story: Story, command: str) -> None:
    story.write_contacts(table(FRANCE, CHILE.replace("chl@missions.example", "chl@@x.example")))
    args = ("send", "--yes") if command == "send" else (command,)
    story.refused(story.run(*args), "contacts.csv, line 3, column 6 (email): 'chl@@x.example'")
    assert not (story.project / "out").exists()


# --- Files in the other shapes spreadsheets write: read, and nothing lost ---------------------

COTE = (
    "CIV,Côte d'Ivoire,Mission permanente de la Côte d’Ivoire,,,civ@missions.example,,en,"
    "member,Côte d'Ivoire"
)

READABLE = [
    pytest.param(table(COTE).encode("utf-8-sig"), "", id="utf-8-with-bom"),
    pytest.param(table(COTE, end="\r\n").encode("utf-16"), "", id="utf-16-with-bom"),
    pytest.param(codecs.BOM_UTF16_BE + table(COTE).encode("utf-16-be"), "", id="utf-16-big-endian"),
    pytest.param(
        table(COTE.replace("’", "'"), end="\r\n").replace(",", ";").encode("cp1252"),
        "contacts.csv: not UTF-8 (first at line 2); read as Windows-1252",
        id="excel-cp1252-semicolons",
    ),
    pytest.param(table(COTE).replace(",", "\t").encode(), "", id="tabs"),
]


@pytest.mark.parametrize(("content", "warning"), READABLE)
def test_spreadsheet_encodings_are_read_without_losing_a_letter(
    story: Story, content: bytes, warning: str
) -> None:
    story.write_contacts(content)
    result = story.send()
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    if warning:
        assert f"Warning: {warning}" in result.stderr
    else:
        assert "Warning" not in result.stderr
    [received] = story.server.received
    assert received.recipients == ["civ@missions.example"]
    to = received.message["To"]
    assert to.addresses[0].display_name.startswith("Mission permanente de la Côte d")
    # The earlier run's rows are still there, first, byte for byte.
    assert story.log.read_bytes().startswith(story.log_before)
