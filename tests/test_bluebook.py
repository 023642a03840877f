"""Staff save the UN Blue Book's data.json and run `outreach bluebook`: the contacts file
gets every mission's address and head of mission, keeps what staff wrote in it, and the
letters are addressed to the right person in the right form."""

from __future__ import annotations

import csv
import json
import os
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from outreach.bluebook import COLUMNS, honorific, match_state
from outreach.contacts import load_contacts
from tests.bluebook_data import (
    CHARGE_AMBASSADOR,
    CHARGE_LED,
    NO_ADDRESS,
    NO_HEAD,
    BlueBookData,
    Head,
    make_blue_book,
)
from tests.conftest import RunCli, Seed, squash, write_csv
from tests.smtp import SmtpServer, parse
from tests.terminal import run_in_terminal


@pytest.fixture
def book(project: Path) -> BlueBookData:
    """The synthetic Blue Book, saved as data.json in the project folder."""
    made = make_blue_book()
    made.write(project / "data.json")
    return made


def rows_of(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return {row["id"]: row for row in csv.DictReader(file)}


def text_of(project: Path, contact_id: str) -> str:
    message = parse((project / "out" / "preview" / "letters" / f"{contact_id}.eml").read_bytes())
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return squash(part.get_content())


def html_words_of(project: Path, contact_id: str) -> str:
    html = (project / "out" / "preview" / "letters" / f"{contact_id}.html").read_text()
    body = html.split("<body", 1)[1]
    return squash(re.sub(r"<[^>]+>", " ", body).replace("&#39;", "'").replace("&amp;", "&"))


def test_all_195_missions_get_their_address_and_head_of_mission(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    result = run_cli("bluebook", "data.json", "--yes")
    assert result.code == 0, result.stderr
    assert (
        "data.json: 195 missions of States (193 Member States, 2 observer States); "
        "6 organisations and other entities left out"
    ) in result.stdout

    rows = rows_of(project / "contacts.csv")
    with_address = {s.id for s in book.states} - set(NO_ADDRESS)
    assert set(rows) == with_address
    for state_id in with_address:
        row = rows[state_id]
        assert row["email"] == book.emails[state_id], state_id
        assert split(row["cc"]) == book.cc[state_id], state_id
        expected = book.heads.get(state_id, Head("", "", ""))
        assert Head(row["title"], row["representative"], row["function"]) == expected, state_id
    assert rows["CHL"]["cc"] == "desk.chl@chl-mission.example"
    assert rows["CHN"]["representative"].split()[0] == book.heads["CHN"].name.split()[0]
    assert rows["ISL"]["title"] == "Ms."
    assert rows["URY"]["title"] == "H.E. Ms."
    assert rows["VAT"]["function"] == rows["PSE"]["function"] == "Permanent Observer"
    assert {rows[i]["representative"] for i in NO_HEAD} == {""}
    assert not any(r["representative"].startswith("Former") for r in rows.values())
    # The file is one `outreach send` reads as it is.
    assert len(load_contacts(project / "contacts.csv")) == len(with_address)


def split(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(";") if part.strip()]


def test_what_matches_no_state_is_named_and_never_guessed(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    # Chile's entry whose display name is another State's: it could be either.
    book.entity("CHL")["MC_EntityBB"] = "Peru"
    book.write(project / "data.json")
    # The Holy See's row holds an address staff found, on a domain of no one.
    contacts = project / "contacts.csv"
    contacts.write_text(contacts.read_text().replace("vat@missions.example", "vat@holy-see.un"))
    book.entity("VAT")["MC_Entity"] = "HOLY SEE MISSION"
    book.entity("VAT")["MC_EntityBB"] = "Holy See Mission"
    book.write(project / "data.json")
    result = run_cli("bluebook", "data.json", "--yes")
    assert result.code == 0, result.stderr
    assert (
        "Not matched:   3 entities match no State (left out; check the name): "
        "'CHILE', 'HOLY SEE MISSION', 'NEVERLAND'"
    ) in result.stdout
    assert "Not listed:    2 States are not in this file: CHL, VAT" in result.stdout
    assert (
        "Left out:      staff of missions not in its countries: 'HOLY SEE', 'ATLANTIS'"
    ) in result.stdout
    assert (
        "Missions gone from the Blue Book: 2\n"
        "  CHL  not in the Blue Book; placeholder chl@missions.example removed\n"
        "  VAT  not in the Blue Book; row kept\n"
    ) in result.stdout
    rows = rows_of(project / "contacts.csv")
    assert "CHL" not in rows
    assert rows["VAT"]["email"] == "vat@holy-see.un"
    assert rows["VAT"]["representative"] == ""
    assert rows["PER"]["email"] == book.emails["PER"]


def test_a_new_contacts_file_holds_every_mission_with_an_address(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    env = {"CONTACTS_FILE": "campaign/contacts.csv"}
    (project / "campaign").mkdir()
    result = run_cli("bluebook", "data.json", "--yes", env=env)
    assert result.code == 0, result.stderr
    written = project / "campaign" / "contacts.csv"
    with written.open(encoding="utf-8", newline="") as file:
        assert next(csv.reader(file)) == list(COLUMNS)
    rows = rows_of(written)
    assert len(rows) == 195 - len(NO_ADDRESS)
    for state_id in NO_ADDRESS:
        assert f"  {state_id}  not added: no letter can go to it" in result.stdout
    assert rows["BOL"]["mission"] == (
        "Permanent Mission of the Plurinational State of Bolivia to the United Nations"
    )
    assert rows["PSE"]["mission"] == (
        "Permanent Observer Mission of the State of Palestine to the United Nations"
    )
    assert rows["PSE"]["status"] == "observer"


def test_the_merge_keeps_what_staff_added(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    write_csv(
        project / "contacts.csv",
        "id,country,email,language,notes\n"
        "CHL,Chile,chl@missions.example,es,call the desk first\n"
        "EUR,European Union,eu@delegation.example,en,not a State: staff's own row\n"
        "tuv,Tuvalu,tuv@tuvalu.un,en,address from the mission's own letter\n"
        "NRU,Nauru,nru@missions.example,en,\n",
    )
    result = run_cli("bluebook", "data.json", "--yes")
    assert result.code == 0, result.stderr
    with (project / "contacts.csv").open(encoding="utf-8", newline="") as file:
        header = next(csv.reader(file))
    assert header[:5] == ["id", "country", "email", "language", "notes"]
    assert header[5:] == [c for c in COLUMNS if c not in header[:5]]
    rows = rows_of(project / "contacts.csv")
    assert rows["CHL"]["notes"] == "call the desk first"
    assert rows["CHL"]["language"] == "es"
    assert rows["CHL"]["email"] == "chl@chl-mission.example"
    assert rows["EUR"] == {**dict.fromkeys(header, ""), **{
        "id": "EUR", "country": "European Union", "email": "eu@delegation.example",
        "language": "en", "notes": "not a State: staff's own row",
    }}  # fmt: skip
    # Tuvalu's entry has no address: the one staff found is kept, under its own id.
    assert rows["tuv"]["email"] == "tuv@tuvalu.un"
    assert "  TUV  kept the file's tuv@tuvalu.un" in result.stdout
    # Nauru's only address was a placeholder, which no letter can go to.
    assert "NRU" not in rows
    assert "  NRU  removed: only a placeholder (nru@missions.example)" in result.stdout
    assert list(rows)[:4] == ["CHL", "EUR", "tuv", "AFG"]
    assert "Missions added: 191" in result.stdout  # 195 less CHL, TUV, NRU, PLW (no address)


def test_the_second_run_changes_nothing(run_cli: RunCli, project: Path, book: BlueBookData) -> None:
    assert run_cli("bluebook", "data.json", "--yes").code == 0
    contacts = project / "contacts.csv"
    before = contacts.read_bytes(), os.stat(contacts).st_ino
    again = run_cli("bluebook", "data.json")
    assert again.code == 0, again.stderr
    assert "Nothing to change: contacts.csv already agrees with the Blue Book." in again.stdout
    assert "Addresses changed" not in again.stdout
    assert (contacts.read_bytes(), os.stat(contacts).st_ino) == before


def test_a_spreadsheets_own_way_of_writing_the_file_is_kept(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    write_csv(
        project / "contacts.csv",
        "\ufeffID;Country;Email;Status\r\nCHL;Chile;chl@missions.example;member\r\n",
    )
    assert run_cli("bluebook", "data.json", "--yes").code == 0
    raw = (project / "contacts.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfid;country;email;status;mission;")
    assert raw.count(b"\r\n") == 193
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_without_a_terminal_and_without_yes_nothing_is_written(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    before = (project / "contacts.csv").read_bytes()
    result = run_cli("bluebook", "data.json")
    assert result.code == 2
    assert "  CHL  chl@missions.example → chl@chl-mission.example" in result.stdout
    assert result.stderr == (
        "Error: no terminal to confirm on: nothing written to contacts.csv; run "
        "`outreach bluebook data.json --yes` to write it without asking\n"
    )
    assert (project / "contacts.csv").read_bytes() == before


@pytest.mark.parametrize(("answer", "written"), [("n", False), ("y", True)])
def test_at_a_terminal_it_asks_before_writing(
    project: Path, book: BlueBookData, answer: str, written: bool
) -> None:
    before = (project / "contacts.csv").read_bytes()
    result = run_in_terminal(
        ["bluebook", "data.json"], project, {}, {"Write these changes to contacts.csv?": answer}
    )
    assert result.code == 0, result.stdout
    assert ((project / "contacts.csv").read_bytes() != before) is written
    assert ("Wrote contacts.csv: 192 contacts." in result.stdout) is written
    assert ("Nothing written." in result.stdout) is not written


def deeply_nested(path: Path) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


def sparse(size: int) -> object:
    def make(path: Path) -> None:
        with path.open("wb") as file:
            file.truncate(size)

    return make


BAD_FILES: list[tuple[str, object, str]] = [
    ("not-json", b"<html><body>Blue Book</body></html>", "data.json, line 1, column 1: not JSON"),
    (
        "cut-short",
        b'{"countries": [{"MC_Entity": "CHILE"',
        "data.json, line 1, column 37: not JSON",
    ),
    ("a-list", b"[1, 2, 3]", "data.json: JSON, but not the Blue Book's data.json: it holds a list"),
    (
        "other-keys",
        b'{"data": [], "total": 3}',
        "data.json: JSON, but not the Blue Book's data.json: no 'countries' list "
        "(its keys: 'data', 'total')",
    ),
    (
        "no-staff",
        b'{"countries": [{"MC_Entity": "CHILE", "MC_Category": 1}]}',
        "data.json: JSON, but not the Blue Book's data.json: no 'bluebooks' list",
    ),
    (
        "no-countries",
        b'{"countries": [], "bluebooks": []}',
        "data.json: its 'countries' list is empty",
    ),
    ("empty", b"", "data.json: the file is empty"),
    ("blank", b" \r\n\t\n", "data.json: the file is empty"),
    ("not-utf8", b'{"countries": "\xff\xfe"}', "data.json: not UTF-8 text"),
    ("nested", deeply_nested, "data.json: not JSON that can be read"),
    ("300-MB", sparse(300 * 1024 * 1024), "data.json: larger than the 50 MB"),
    ("a-folder", lambda path: path.mkdir(), "data.json: is a folder"),
    ("missing", lambda path: None, "data.json: no such file"),
]


@pytest.mark.parametrize(
    ("content", "message"), [pytest.param(c, m, id=i) for i, c, m in BAD_FILES]
)
def test_a_file_that_is_not_the_blue_book_is_one_line_and_changes_nothing(
    run_cli: RunCli, project: Path, content: object, message: str
) -> None:
    path = project / "data.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content(path)  # type: ignore[operator]
    before = (project / "contacts.csv").read_bytes()
    result = run_cli("bluebook", "data.json", "--yes")
    assert result.code == 2
    assert result.stderr.startswith(f"Error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert (project / "contacts.csv").read_bytes() == before


def test_a_merge_that_would_not_load_writes_nothing(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    # Staff gave their own row the address the Blue Book now gives Chile.
    write_csv(
        project / "contacts.csv",
        "id,country,email\nCHL,Chile,chl@missions.example\nXXX,Desk,chl@chl-mission.example\n",
    )
    before = (project / "contacts.csv").read_bytes()
    result = run_cli("bluebook", "data.json", "--yes")
    assert result.code == 2
    assert (
        "contacts.csv (as merged), line 3: chl@chl-mission.example is also the address of CHL"
        in (result.stderr)
    )
    assert "nothing was changed" in result.stderr
    assert (project / "contacts.csv").read_bytes() == before
    assert [p.name for p in project.iterdir() if p.name.startswith(".contacts")] == []


def test_the_letters_are_addressed_as_the_blue_book_says(
    run_cli: RunCli, project: Path, book: BlueBookData, seed: Seed
) -> None:
    assert run_cli("bluebook", "data.json", "--yes").code == 0
    assert run_cli("preview").code == 0
    head = book.heads["AFG"]
    assert (
        f"{head.title} {head.name} Permanent Representative of Afghanistan to the United Nations "
        "Permanent Mission of Afghanistan to the United Nations New York Excellency,"
    ) in text_of(project, "AFG")
    charge, other = CHARGE_LED[0], CHARGE_AMBASSADOR
    assert (
        f"Ms. {book.heads[charge].name} Chargé d'affaires a.i. Permanent Mission of Iceland "
        "to the United Nations New York Dear Chargé d'affaires,"
    ) in text_of(project, charge)
    assert (
        f"H.E. Ms. {book.heads[other].name} Chargé d'affaires a.i. Permanent Mission of Uruguay "
        "to the United Nations New York Excellency,"
    ) in text_of(project, other)
    assert (
        f"{book.heads['VAT'].title} {book.heads['VAT'].name} Permanent Observer of the Holy See "
        "to the United Nations Permanent Observer Mission of the Holy See"
    ) in text_of(project, "VAT")
    assert "The Permanent Representative of Kiribati to the United Nations" in text_of(
        project, "KIR"
    )
    for contact_id in ("AFG", charge, other, "VAT", "KIR"):
        assert text_of(project, contact_id).split(" New York ")[0] in html_words_of(
            project, contact_id
        )
        # The letter itself is the coalition's, word for word (the first paragraph
        # ends with the footnote mark, which test_letter follows).
        for paragraph in seed.paragraphs[1:]:
            assert paragraph in text_of(project, contact_id)
            assert paragraph in html_words_of(project, contact_id)
    letters = (project / "out" / "preview" / "letters").glob("*.txt")
    assert not [p.name for p in letters if re.search(r"H\.E\.\s+H\.E\.", p.read_text())]


ADDRESS_BLOCKS = [
    ("Ms.", "", "H.E. Ms. Jane Doe Permanent Representative of Chile", "Excellency,"),
    ("H.E. Ms.", "", "H.E. Ms. Jane Doe Permanent Representative of Chile", "Excellency,"),
    ("h.e. ms.", "", "h.e. ms. Jane Doe Permanent Representative of Chile", "Excellency,"),
    ("", "", "H.E. Jane Doe Permanent Representative of Chile", "Excellency,"),
    (
        "Ms.",
        "Chargé d'affaires a.i.",
        "Ms. Jane Doe Chargé d'affaires a.i. Permanent Mission of Chile",
        "Dear Chargé d'affaires,",
    ),
    (
        "H.E. Ms.",
        "Chargé d'affaires a.i.",
        "H.E. Ms. Jane Doe Chargé d'affaires a.i. Permanent Mission of Chile",
        "Excellency,",
    ),
]


@pytest.mark.parametrize(("title", "function", "address", "salutation"), ADDRESS_BLOCKS)
def test_a_hand_written_contacts_file_is_addressed_with_one_honorific(
    run_cli: RunCli, project: Path, title: str, function: str, address: str, salutation: str
) -> None:
    write_csv(
        project / "contacts.csv",
        "id,country,title,representative,function,email\n"
        f'CHL,Chile,{title},Jane Doe,"{function}",chl@missions.example\n',
    )
    assert run_cli("preview").code == 0
    for words in (text_of(project, "CHL"), html_words_of(project, "CHL")):
        assert f"31 August 2015 {address}" in words
        assert f"New York {salutation}" in words
        assert "h.e. h.e." not in words.lower()


def test_an_address_changed_after_the_letter_went_gets_no_second_letter(
    run_cli: RunCli, project: Path, book: BlueBookData, smtp_server: SmtpServer
) -> None:
    sent = run_cli("send", "--yes", "--only", "CHL", env=smtp_server.env())
    assert sent.code == 0, sent.stdout + sent.stderr
    assert run_cli("bluebook", "data.json", "--yes").code == 0
    again = run_cli("send", "--yes", "--only", "CHL", env=smtp_server.env())
    assert again.code == 0, again.stdout + again.stderr
    assert "Nothing to send." in again.stdout
    assert [r.recipients for r in smtp_server.received] == [["chl@missions.example"]]


def test_hostile_text_in_the_blue_book_stays_text(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    data = book.data
    chile = next(p for p in data["bluebooks"] if p["BB_Mission"] == "CHILE" and
                 p["BB_Status"] == "Active" and "Deputy" not in p["BB_Function"])  # fmt: skip
    chile["BB_FirstName"] = '=HYPERLINK("https://evil.example")'
    chile["BB_LastName"] = "<script>alert(1)</script>\r\nBcc: spy@evil.example"
    book.entity("FRA")["MC_eMail"] = "fra@fra-mission.example\r\nBcc: x"
    (project / "data.json").write_text(json.dumps(data), encoding="utf-8")
    result = run_cli("bluebook", "data.json", "--yes")
    assert result.code == 0, result.stderr
    assert "Note:          FRA: 'Bcc:' in MC_eMail is not an address" in result.stdout
    rows = rows_of(project / "contacts.csv")
    assert rows["CHL"]["representative"] == (
        'HYPERLINK("https://evil.example") <script>alert(1)</script> Bcc: spy@evil.example'
    )
    assert rows["FRA"]["email"] == "fra@fra-mission.example"
    assert rows["FRA"]["cc"] == ""
    lines = (project / "contacts.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(rows) + 1  # no cell holds a line break
    assert run_cli("preview").code == 0
    message: EmailMessage = parse(
        (project / "out" / "preview" / "letters" / "CHL.eml").read_bytes()
    )
    assert message["Bcc"] is None
    assert "<script>" not in (project / "out" / "preview" / "letters" / "CHL.html").read_text()


def test_a_contacts_file_that_is_a_link_stays_one_and_a_home_folder_path_is_read(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    shared = project / "shared"
    shared.mkdir()
    (project / "contacts.csv").rename(shared / "contacts.csv")
    (project / "contacts.csv").symlink_to(shared / "contacts.csv")
    result = run_cli("bluebook", "~/data.json", "--yes", env={"HOME": str(project)})
    assert result.code == 0, result.stderr
    assert (project / "contacts.csv").is_symlink()
    assert rows_of(shared / "contacts.csv")["CHL"]["email"] == "chl@chl-mission.example"


@pytest.mark.parametrize(
    ("written", "ambassador", "title"),
    [
        ("H.E. Mr.", True, "H.E. Mr."),
        ("H.E.Mr.", True, "H.E. Mr."),
        ("h.e.  ms", True, "H.E. Ms."),
        ("HE Mrs", True, "H.E. Mrs."),
        ("H.E.Archbishop", True, "H.E. Archbishop"),
        ("Ms", True, "H.E. Ms."),
        ("", True, "H.E."),
        ("mr.", False, "Mr."),
        ("H.E. Dr.", False, "H.E. Dr."),
        ("Hon.", False, "Hon."),
    ],
)
def test_titles_are_made_even(written: str, ambassador: bool, title: str) -> None:
    assert honorific(written, ambassador) == title


@pytest.mark.parametrize(
    ("names", "state_id"),
    [
        (("CÔTE D’IVOIRE",), "CIV"),
        (("cote d'ivoire",), "CIV"),
        (("TURKEY",), "TUR"),
        (("NETHERLANDS (KINGDOM OF THE)",), "NLD"),
        (("KINGDOM OF THE NETHERLANDS", "Netherlands"), "NLD"),
        (("CONGO",), "COG"),
        (("DEMOCRATIC REPUBLIC OF THE CONGO",), "COD"),
        (("REPUBLIC OF KOREA",), "KOR"),
        (("DEMOCRATIC PEOPLE’S REPUBLIC OF KOREA",), "PRK"),
        (("GUINEA",), "GIN"),
        (("GUINEA-BISSAU",), "GNB"),
        (("NIGER",), "NER"),
        (("DOMINICA",), "DMA"),
        (("SUDAN",), "SDN"),
        (("SOUTH SUDAN",), "SSD"),
        (("STATE OF PALESTINE",), "PSE"),
        (("HOLY SEE",), "VAT"),
        (("KOREA",), None),
        (("GUINEA", "Equatorial Guinea"), None),
        (("EUROPEAN UNION",), None),
    ],
)
def test_names_match_one_state_or_none(names: tuple[str, ...], state_id: str | None) -> None:
    assert match_state(*names) == state_id


def test_thousands_of_unknown_names_are_counted_not_all_printed(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    book.data["countries"] += [{"MC_Entity": f"NOWHERE {n}", "MC_Category": 1} for n in range(5000)]
    book.write(project / "data.json")
    result = run_cli("bluebook", "data.json")
    assert "'NEVERLAND', 'NOWHERE 0', " in result.stdout
    assert "'NOWHERE 18' and 4981 more\n" in result.stdout
    assert "NOWHERE 19'" not in result.stdout


def test_a_windows_1252_file_is_written_as_utf8_that_excel_recognises(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    write_csv(
        project / "contacts.csv",
        "id,country,email,notes\nCIV,Côte d'Ivoire,civ@missions.example,déjà vu\n",
        encoding="cp1252",
    )
    assert run_cli("bluebook", "data.json", "--yes").code == 0
    raw = (project / "contacts.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfid,country,email,notes,")
    assert "CIV,Côte d'Ivoire,civ@civ-pm.example,déjà vu," in raw.decode("utf-8-sig")


def test_an_empty_contacts_file_is_filled_and_a_folder_is_refused(
    run_cli: RunCli, project: Path, book: BlueBookData
) -> None:
    (project / "contacts.csv").write_bytes(b"\xef\xbb\xbf\r\n")
    assert run_cli("bluebook", "data.json", "--yes").code == 0
    assert len(rows_of(project / "contacts.csv")) == 195 - len(NO_ADDRESS)

    (project / "folder.csv").mkdir()
    result = run_cli("bluebook", "data.json", "--yes", env={"CONTACTS_FILE": "folder.csv"})
    assert result.code == 2
    assert result.stderr.startswith("Error: folder.csv: is a folder, not a CSV file\n")
    assert list((project / "folder.csv").iterdir()) == []
