"""A synthetic Blue Book ``data.json``, in the shape the UN's page publishes it.

Every person is invented (names put together from syllables) and every address
is on a reserved ``.example`` domain: no real person or mission is in it. What
it holds is what makes the real file awkward:

- all 195 States under their UN upper-case names, some in their long forms
  (``PLURINATIONAL STATE OF BOLIVIA``), without accents or with a curly
  apostrophe (``COTE D’IVOIRE``), with a display and a short name beside;
- ``MC_Category`` written as a number for some and as text for others;
  organisations and agencies (categories 4 to 9), and an entity of category
  1 that is no State;
- inactive former Permanent Representatives listed before the active ones,
  deputies, missions headed by a Chargé d'affaires a.i. (one of them an
  ambassador, "H.E."), the observers' Permanent Observers;
- missions with no address, or several in one cell; family names first;
  names in many scripts' accents; titles spaced and cased unevenly;
- staff of a mission that is not in ``countries``.

``make_blue_book()`` returns the data and what a correct reading of it is.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTACTS = Path(__file__).resolve().parent / "data" / "contacts.csv"

#: The UN's long forms and other spellings the Blue Book uses for some States.
LONG_FORMS = {
    "BOL": "PLURINATIONAL STATE OF BOLIVIA",
    "VEN": "BOLIVARIAN REPUBLIC OF VENEZUELA",
    "IRN": "ISLAMIC REPUBLIC OF IRAN",
    "FSM": "FEDERATED STATES OF MICRONESIA",
    "NLD": "KINGDOM OF THE NETHERLANDS",
    "CIV": "COTE D’IVOIRE",
    "TUR": "TURKIYE",
    "LAO": "LAO PEOPLE’S DEMOCRATIC REPUBLIC",
    "PRK": "DEMOCRATIC PEOPLE'S REPUBLIC OF KOREA",
    "GBR": "UNITED KINGDOM OF GREAT BRITAIN AND NORTHERN IRELAND",
}
SHORT_NAMES = {"BOL": "Bolivia", "NLD": "Netherlands", "RUS": "Russia", "TZA": "Tanzania"}
ORGANISATIONS = [
    ("EUROPEAN UNION", 4),
    ("AFRICAN UNION", "5"),
    ("INTERNATIONAL COMMITTEE OF THE RED CROSS", 6),
    ("INTERNATIONAL ORGANIZATION FOR EXAMPLES", "7"),
    ("UNITED NATIONS TEST PROGRAMME", 8),
    ("WORLD ORGANIZATION OF PLACEHOLDERS", "9"),
]
#: Missions headed by a Chargé d'affaires a.i.: no active Permanent Representative.
CHARGE_LED = ("ISL", "NZL", "URY")
#: Of those, the one whose Chargé d'affaires is of ambassadorial rank.
CHARGE_AMBASSADOR = "URY"
NO_ADDRESS = ("TUV", "NRU", "PLW")
NO_HEAD = ("KIR",)
FAMILY_NAME_FIRST = ("CHN", "JPN", "HUN", "KOR")
SEVERAL_ADDRESSES = {
    "CHL": "chl@chl-mission.example; desk.chl@chl-mission.example",
    "FRA": "fra@fra-mission.example, un.fra@fra-mission.example",
    "DEU": "deu@deu-mission.example\r\ncontact.deu@deu-mission.example",
    "MEX": "mex@mex-mission.example / onu.mex@mex-mission.example",
}
TITLES = ("H.E. Mr.", "H.E. Ms.", "H.E.  Mr.", "h.e. ms", "H.E.Mr.", "H.E. MS.")
FIRST = ("Amaru", "Zoë", "Øyvind", "Ngọc", "Şule", "Émile", "Ana-María", "Jiří", "Kwame", "Leilani")
SYLLABLES = ("var", "ke", "lo", "mi", "dra", "sen", "tor", "qu", "bel", "nar", "ös", "ñe")


@dataclass(frozen=True)
class State:
    id: str
    country: str
    status: str


@dataclass(frozen=True)
class Head:
    title: str
    name: str
    function: str


@dataclass
class BlueBookData:
    """The file's content and what a correct reading makes of it."""

    data: dict[str, Any]
    states: list[State]
    emails: dict[str, str] = field(default_factory=dict)
    cc: dict[str, list[str]] = field(default_factory=dict)
    heads: dict[str, Head] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.data, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    def entity(self, state_id: str) -> dict[str, Any]:
        return next(e for e in self.data["countries"] if e.get("_id") == state_id)


def states() -> list[State]:
    with CONTACTS.open(encoding="utf-8") as file:
        return [State(r["id"], r["country"], r["status"]) for r in csv.DictReader(file)]


def surname(number: int) -> str:
    a = SYLLABLES[number % len(SYLLABLES)]
    b = SYLLABLES[(number // len(SYLLABLES)) % len(SYLLABLES)]
    return (a + b + "ander").capitalize()


def person(
    mission: str, first: str, last: str, title: str, function: str, status: str = "Active"
) -> dict[str, Any]:
    return {
        "BB_Mission": mission,
        "BB_FirstName": first,
        "BB_LastName": last,
        "BB_Title": title,
        "BB_Dipl_Rank_Display": "Ambassador" if "H.E." in title.upper() else "Counsellor",
        "BB_Function": function,
        "BB_Appointment": "2024-01-15",
        "BB_Cred_Presented": "2024-02-01",
        "BB_Status": status,
        "BB_Email": "",
    }


def make_blue_book() -> BlueBookData:
    """The synthetic data.json; its ``_id`` keys are the test's own, ignored by the reader."""
    book = BlueBookData({"countries": [], "bluebooks": []}, states())
    countries, staff = book.data["countries"], book.data["bluebooks"]
    for number, state in enumerate(book.states):
        entity_name = LONG_FORMS.get(state.id, state.country.upper())
        observer = state.status == "observer"
        category: int | str = 2 if observer else 1
        if number % 2:
            category = str(category)
        email = SEVERAL_ADDRESSES.get(state.id, f"{state.id.lower()}@{state.id.lower()}-pm.example")
        entity: dict[str, Any] = {
            "_id": state.id,
            "MC_Entity": entity_name,
            "MC_EntityBB": state.country,
            "MC_Category": category,
            "MC_Address": f"{number} Example Plaza\r\nNew York, NY 10017",
            "MC_Telephone": "(212) 555-0100",
            "MC_Telefax": "(212) 555-0199",
            "MC_eMail": email,
            "MC_WebSite": f"https://{state.id.lower()}-pm.example",
            "MC_MembershipDate": "" if observer else "1945-10-24",
        }
        if state.id in SHORT_NAMES:
            entity["MC_EntityShort"] = SHORT_NAMES[state.id]
        if state.id in NO_ADDRESS:
            if state.id == "TUV":
                del entity["MC_eMail"]
            else:
                entity["MC_eMail"] = None if state.id == "NRU" else ""
        else:
            addresses = [
                a.strip() for a in email.replace(",", ";").replace("/", ";").split() if "@" in a
            ]
            addresses = [a.strip(";") for a in addresses]
            book.emails[state.id], book.cc[state.id] = addresses[0], addresses[1:]
        countries.append(entity)

        first, last = FIRST[number % len(FIRST)], surname(number)
        title = TITLES[number % len(TITLES)]
        women = "ms" in title.lower()
        clean_title = "H.E. Ms." if women else "H.E. Mr."
        # A former head of mission, listed first, whom no letter may name.
        staff.append(
            person(
                entity_name,
                "Former",
                surname(number + 7),
                "H.E. Mr.",
                "Permanent Representative",
                status="Inactive",
            )
        )
        staff.append(
            person(
                entity_name,
                FIRST[(number + 3) % len(FIRST)],
                surname(number + 11),
                "Mr.",
                "Deputy Permanent Representative",
            )
        )
        if state.id in NO_HEAD:
            continue
        if state.id in CHARGE_LED:
            ambassador = state.id == CHARGE_AMBASSADOR
            charge_title = ("H.E. " if ambassador else "") + ("Ms." if women else "Mr.")
            staff.append(
                person(
                    entity_name,
                    first,
                    last,
                    charge_title,
                    "Minister Counsellor, Chargé d'affaires a.i.",
                )
            )
            book.heads[state.id] = Head(charge_title, f"{first} {last}", "Chargé d'affaires a.i.")
            continue
        function = (
            "Permanent Observer"
            if observer
            else (
                "Ambassador, Permanent Representative" if number % 3 else "Permanent Representative"
            )
        )
        head = person(entity_name, first, last, title, function)
        name = f"{first} {last}"
        if state.id in FAMILY_NAME_FIRST:
            head["BB_NameOrder"] = 1 if state.id in ("CHN", "JPN") else "LF"
            name = f"{last} {first}"
        elif number % 5 == 0:
            head["BB_NameOrder"] = 0
        staff.append(head)
        book.heads[state.id] = Head(
            clean_title, name, "Permanent Observer" if observer else "Permanent Representative"
        )

    for name, category in ORGANISATIONS:
        countries.append(
            {
                "MC_Entity": name,
                "MC_EntityBB": name.title(),
                "MC_Category": category,
                "MC_eMail": f"office@{name.split()[0].lower()}-igo.example",
            }
        )
        staff.append(person(name, "Head", "Oforganisation", "Mr.", "Permanent Observer"))
    countries.append(
        {"MC_Entity": "NEVERLAND", "MC_Category": 1, "MC_eMail": "pm@neverland.example"}
    )
    staff.append(person("ATLANTIS", "Stray", "Member", "H.E. Mr.", "Permanent Representative"))
    return book
