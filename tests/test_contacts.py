"""Contacts arrive as spreadsheets export them; each shape reads the same."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.contacts import load_contacts
from outreach.errors import ContactsError
from tests.conftest import CONTACTS, ROOT, write_csv

ROWS = [
    ("id", "country", "email", "cc", "mission"),
    ("CHL", "Chile", "chl@missions.example", "", "Permanent Mission of Chile"),
    ("CIV", "Côte d'Ivoire", "civ@missions.example", "desk@civ.example; pr@civ.example", "Mission"),
]


def table(delimiter: str = ",", line_end: str = "\n", pad: str = "") -> str:
    """The rows as a spreadsheet writes them, quoting where the delimiter appears."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=line_end)
    writer.writerows([[f"{pad}{cell}{pad}" for cell in row] for row in ROWS])
    return out.getvalue()


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        pytest.param(table(), "utf-8", id="utf-8"),
        pytest.param(table(), "utf-8-sig", id="utf-8-with-bom"),
        pytest.param(table(line_end="\r\n"), "utf-8", id="windows-line-ends"),
        pytest.param(table(";"), "utf-8", id="semicolons"),
        pytest.param(table("\t"), "utf-8", id="tabs"),
        pytest.param(table(pad="  "), "utf-8", id="stray-spaces"),
        pytest.param(table(), "utf-16", id="utf-16-with-bom"),
        pytest.param(table(";", "\r\n"), "cp1252", id="excel-cp1252"),
        pytest.param(table() + ",,,,\n\n", "utf-8", id="trailing-empty-rows"),
    ],
)
def test_every_export_shape_reads_the_same(tmp_path: Path, text: str, encoding: str) -> None:
    contacts = load_contacts(write_csv(tmp_path / "contacts.csv", text, encoding))
    assert [c.id for c in contacts] == ["CHL", "CIV"]
    ivory = contacts.contacts[1]
    assert ivory.country == "Côte d'Ivoire"
    assert ivory.to == ("civ@missions.example",)
    assert ivory.cc == ("desk@civ.example", "pr@civ.example")
    assert ivory.fields["mission"] == "Mission"
    assert ivory.line == 3
    warned = any("Windows-1252" in w for w in contacts.warnings)
    assert warned == (encoding == "cp1252")


def test_shipped_contacts_cover_every_state(project: Path) -> None:
    """The project's contacts.csv is the one staff fill in with real addresses: only
    what stays true then is asserted of it (every mission, its name, its language)."""
    contacts = load_contacts(ROOT / "contacts.csv")
    assert len(contacts) == 195
    assert {c.id for c in contacts} == {c.id for c in load_contacts(CONTACTS)}
    by_id = {c.id: c for c in contacts}
    assert by_id["VAT"].fields["mission"] == (
        "Permanent Observer Mission of the Holy See to the United Nations"
    )
    assert by_id["BOL"].fields["mission"] == (
        "Permanent Mission of the Plurinational State of Bolivia to the United Nations"
    )
    # Only English templates exist, so every letter is in English on purpose; the
    # guess from each country's official languages is kept for later.
    assert {c.language for c in contacts} == {"en"}
    assert {c.fields["language_hint"] for c in contacts} == {"en", "fr", "es", "en|fr"}
    assert by_id["FRA"].fields["language_hint"] == "fr"


def test_the_tests_contacts_are_all_on_placeholder_addresses() -> None:
    """The tests' copy of the shipped file: no test may ever write to a real mission."""
    contacts = load_contacts(CONTACTS)
    assert len(contacts) == 195
    assert len(contacts.placeholders()) == 195


def test_real_addresses_in_the_project_s_contacts_fail_no_test(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staff put the missions' real addresses in contacts.csv: the suite stays green."""
    real = (ROOT / "contacts.csv").read_text().replace("@missions.example", "@un.int")
    staff = project / "staff"
    staff.mkdir()
    (staff / "contacts.csv").write_text(real)
    monkeypatch.setattr("tests.test_contacts.ROOT", staff)
    test_shipped_contacts_cover_every_state(project)
    test_the_shipped_campaign_has_no_warning_out_of_the_box(project)


def test_the_shipped_campaign_has_no_warning_out_of_the_box(project: Path) -> None:
    """Warnings that are there from the start teach staff to ignore warnings."""
    shutil.copy(ROOT / "contacts.csv", project / "contacts.csv")
    campaign = Campaign.open(load_settings(environ={}, env_file=None))
    result = campaign.check(spam=None)
    assert result.letters == 195
    assert result.warnings == {}


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "contacts.csv",
        "id,country,email\n"
        "CHL,Chile,chl@missions.example\n"
        "CHL,Chile again,other@missions.example\n"
        "FRA,,fra@missions.example\n"
        "KEN,Kenya,not-an-address\n",
    )
    with pytest.raises(ContactsError) as caught:
        load_contacts(path)
    problems = caught.value.problems
    assert len(problems) == 3
    assert any("line 3, column 1 (id): 'CHL' is also the id on line 2" in p for p in problems)
    assert any("line 4, column 2 (country): empty" in p for p in problems)
    assert any(
        "line 5, column 3 (email): 'not-an-address' is not a valid address" in p for p in problems
    )


def test_extra_columns_reach_the_templates(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "c.csv", "id,country,email,ambassador_since\nCHL,Chile,c@x.example,2014\n"
    )
    (contact,) = load_contacts(path)
    assert contact.fields["ambassador_since"] == "2014"


def test_a_quoted_line_break_keeps_line_numbers_true(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "c.csv",
        'id,country,email,note\nCHL,Chile,c@x.example,"two\nlines"\nKEN,Kenya,bad,\n',
    )
    with pytest.raises(ContactsError, match=r"line 4, column 3 \(email\): 'bad'"):
        load_contacts(path)


def test_select_only_and_limit(tmp_path: Path) -> None:
    contacts = load_contacts(write_csv(tmp_path / "c.csv", table()))
    assert [c.id for c in contacts.select(["civ"])] == ["CIV"]
    assert [c.id for c in contacts.select(limit=1)] == ["CHL"]
    with pytest.raises(ContactsError, match="no contact with id XYZ"):
        contacts.select(["XYZ"])
