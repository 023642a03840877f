"""The contacts contract, as README states it: ``id``, ``country`` and ``email`` are all
a file needs; every other column the letter uses has a default; a spreadsheet's own
export reads as it is. Each file goes all the way: check, preview, and a real send."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import RunCli, squash, write_csv
from tests.smtp import SmtpServer, parse

MINIMAL = "id,country,email\nCHL,Chile,chl@missions.example\nVAT,Holy See,vat@missions.example\n"

MAXIMAL = (
    "id,country,mission,title,representative,email,cc,language,status,name_in_text,"
    "salutation,desk_officer\n"
    "CHL,Chile,Permanent Mission of Chile to the United Nations,Ms.,Paula Narváez,"
    'chl@missions.example,"desk@chile.example; pr@chile.example",en,member,Chile,'
    '"Dear Ambassador Narváez,",J. Soto\n'
    "VAT,Holy See,Permanent Observer Mission of the Holy See to the United Nations,"
    ",,vat@missions.example,,en,observer,the Holy See,,\n"
)

#: Excel's "CSV UTF-8" in a European locale: a byte-order mark, CRLF, semicolons,
#: capitalised headers, columns in the sheet's order, an empty trailing column and rows.
EXCEL = (
    "\ufeffCountry;ID;E-mail notes;Email;Status;\r\n"
    "Chile;CHL;main desk;chl@missions.example;;\r\n"
    "Holy See;VAT;;vat@missions.example;observer;\r\n"
    ";;;;;\r\n"
)


def letter(project: Path, contact_id: str) -> EmailMessage:
    return parse((project / "out" / "preview" / "letters" / f"{contact_id}.eml").read_bytes())


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return squash(part.get_content())


@pytest.mark.parametrize(
    "content", [pytest.param(MINIMAL, id="minimal"), pytest.param(EXCEL, id="excel-export")]
)
def test_a_file_with_only_the_required_columns_gives_whole_letters(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, content: str
) -> None:
    write_csv(project / "contacts.csv", content)
    check = run_cli("check", env=smtp_server.env())
    assert check.code == 0, check.stderr
    assert "Letters:   2 rendered" in check.stdout

    assert run_cli("preview", env=smtp_server.env()).code == 0
    chile, holy_see = letter(project, "CHL"), letter(project, "VAT")
    assert chile["To"] == "Permanent Mission of Chile to the United Nations <chl@missions.example>"
    assert (
        "The Permanent Representative of Chile to the United Nations "
        "Permanent Mission of Chile to the United Nations New York Excellency,"
    ) in text_of(chile)
    observer = "Permanent Observer" if content is EXCEL else "Permanent Representative"
    assert f"The {observer} of Holy See to the United Nations" in text_of(holy_see)

    sent = run_cli("send", "--yes", env=smtp_server.env())
    assert sent.code == 0, sent.stdout + sent.stderr
    assert [r.recipients for r in smtp_server.received] == [
        ["chl@missions.example"],
        ["vat@missions.example"],
    ]


def test_a_file_with_every_column_uses_each_of_them(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    write_csv(project / "contacts.csv", MAXIMAL)
    template = project / "templates" / "en" / "letter.txt.j2"
    template.write_text(template.read_text().replace("New York", "New York ({{ desk_officer }})"))
    assert run_cli("preview").code == 0
    chile = letter(project, "CHL")
    assert chile["Cc"] == "desk@chile.example, pr@chile.example"
    text = text_of(chile)
    assert "H.E. Ms. Paula Narváez Permanent Representative of Chile" in text
    assert "New York (J. Soto) Dear Ambassador Narváez," in text
    assert "The Permanent Observer of the Holy See" in text_of(letter(project, "VAT"))

    sent = run_cli("send", "--yes", env=smtp_server.env())
    assert sent.code == 0, sent.stdout + sent.stderr
    assert smtp_server.received[0].recipients == [
        "chl@missions.example",
        "desk@chile.example",
        "pr@chile.example",
    ]


def test_check_says_which_columns_take_their_defaults(run_cli: RunCli, project: Path) -> None:
    write_csv(project / "contacts.csv", MINIMAL)
    result = run_cli("check")
    assert result.code == 0, result.stderr
    absent = ["mission", "language", "status", "name_in_text"]
    assert f"Columns:   not in contacts.csv, so their defaults: {', '.join(absent)}" in (
        result.stdout
    )


def test_a_column_no_contact_has_is_named_as_missing_from_the_contacts_file(
    run_cli: RunCli, project: Path
) -> None:
    write_csv(project / "contacts.csv", MINIMAL)
    template = project / "templates" / "en" / "letter.txt.j2"
    template.write_text("{{ ambassador }}\n" + template.read_text())
    result = run_cli("preview")
    assert result.code == 2
    assert (
        "Error: templates/en/letter.txt.j2, line 1: 'ambassador' is undefined: "
        "the contacts file has no column 'ambassador'"
    ) in result.stderr
