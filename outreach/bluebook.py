"""Contacts from the UN Blue Book: its saved ``data.json`` merged into the contacts file.

The UN Protocol and Liaison Service publishes the Permanent Missions to the
United Nations (the "Blue Book"); its online edition loads one file,
``data.json``, with a ``countries`` list (one object per entity: States,
observer States, organisations) and a ``bluebooks`` list (one object per
member of staff). Typing 195 addresses and names by hand is the slowest and
most error-prone step of a campaign; this module does it, in three steps:

1. ``read_bluebook``: the file, size-capped and shape-checked, becomes one
   ``Mission`` per State it lists. Entities are matched to ISO 3166 alpha-3
   ids only through names the UN uses (``assets/states.csv``: short names,
   long forms, upper case); one that matches no State, or two, is named,
   never guessed. The file is hostile input: every text is stripped of
   control characters and line breaks, every address checked.
2. ``merge``: the contacts file and the Blue Book together. The Blue Book owns
   a mission's address and head of mission; every other column, and every
   row it does not know, stays as staff left it. Each difference is a
   ``Change`` to show before anything is written.
3. ``Merge.write``: the new file, checked as ``outreach send`` would read it,
   replaces the old one atomically, or nothing happens at all.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from outreach.addresses import AddressError, is_placeholder, split_list, validate_address
from outreach.contacts import MAX_FILE_BYTES as MAX_CONTACTS_BYTES
from outreach.contacts import delimiter_of, load_contacts, read_table
from outreach.errors import ContactsError, OutreachError
from outreach.files import write_atomically, writing
from outreach.sendlog import contact_key

#: The Blue Book's data.json is a few MB; anything this large is another file,
#: refused before it is read rather than read into memory.
MAX_FILE_BYTES = 50 * 1024 * 1024
#: No name, title or address in the Blue Book is this long: a longer text is cut.
MAX_TEXT = 200

MEMBER, OBSERVER = 1, 2
#: Intergovernmental organisations, specialised agencies, other entities with
#: an office: they get no letter, and are only counted.
OTHER_ENTITIES = range(4, 10)

PERMANENT_REPRESENTATIVE = "Permanent Representative"
PERMANENT_OBSERVER = "Permanent Observer"
CHARGE = "Chargé d'affaires a.i."

#: The columns the Blue Book fills, in the order a new contacts file has them.
COLUMNS = (
    "id",
    "country",
    "mission",
    "title",
    "representative",
    "function",
    "email",
    "cc",
    "status",
    "name_in_text",
)
#: Filled only where the contacts file has nothing: staff may have worded them.
FILLED_WHEN_EMPTY = ("country", "mission", "status", "name_in_text")

#: Names under which the UN listed a State before it changed them, and the
#: short forms in common use: explicit, so that nothing is matched by guesswork.
OTHER_NAMES = {
    "CPV": ("Cape Verde",),
    "CZE": ("Czech Republic",),
    "GBR": ("United Kingdom",),
    "LAO": ("Laos",),
    "MDA": ("Moldova",),
    "MKD": ("The former Yugoslav Republic of Macedonia",),
    "RUS": ("Russia",),
    "SWZ": ("Swaziland",),
    "SYR": ("Syria",),
    "TUR": ("Turkey",),
    "TZA": ("Tanzania",),
    "USA": ("United States",),
    "VAT": ("Holy See (Vatican City State)",),
    "PSE": ("Palestine",),
}

#: ``BB_NameOrder`` values that put the family name first ("Zhang Wei").
_FAMILY_NAME_FIRST = {"1", "lf", "l", "last", "lastfirst", "last first", "reversed", "reverse"}
_HONORIFICS = {"mr": "Mr.", "ms": "Ms.", "mrs": "Mrs.", "miss": "Miss", "dr": "Dr."}
#: "H.E.", however spaced, dotted or cased ("H.E.Mr.", "h.e ms", "HE Mr").
_HE = re.compile(r"^(?:h\s*\.\s*e\b\s*\.?|he\b\.?)", re.IGNORECASE)
#: Characters that make a spreadsheet run a cell as a formula: never at the
#: start of a value written into the contacts file.
_FORMULA = "=+-@"


class BlueBookError(OutreachError):
    """The Blue Book file cannot be read, or is not the Blue Book's data.json."""


@dataclass(frozen=True)
class State:
    """A Member State or observer State, as ``assets/states.csv`` has it."""

    id: str
    country: str
    status: str
    name_in_text: str

    @property
    def mission(self) -> str:
        """The mission's name as a letter is addressed to it."""
        kind = "Permanent Observer Mission" if self.status == "observer" else "Permanent Mission"
        return f"{kind} of {self.name_in_text} to the United Nations"


@dataclass(frozen=True)
class Head:
    """The head of a mission: the one a letter is addressed to."""

    name: str
    title: str
    function: str


@dataclass(frozen=True)
class Mission:
    """What the Blue Book says of one State's mission."""

    state: State
    entity: str
    emails: tuple[str, ...]
    head: Head | None
    status: str


@dataclass
class BlueBook:
    """The States' missions of one data.json, and what of it was left out, and why."""

    path: Path
    missions: dict[str, Mission] = field(default_factory=dict)
    #: Entities of category 1 or 2 whose names match no State (or two).
    unmatched: list[str] = field(default_factory=list)
    #: Organisations, agencies and other entities (categories 4–9).
    other_entities: int = 0
    #: Entities whose category is none of the known ones.
    unknown_category: list[str] = field(default_factory=list)
    #: BB_Mission values of staff whose mission is not in ``countries``.
    stray_staff: list[str] = field(default_factory=list)
    #: Anything else worth a line: an address that is not one, a second entity of a State.
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[State]:
        """States the file does not list at all."""
        return [s for s in all_states() if s.id not in self.missions]


@dataclass(frozen=True)
class Change:
    """One difference between the contacts file and the Blue Book.

    ``kind`` is one of: added, address, cc, representative, removed, gone,
    no-address, filled.
    """

    kind: str
    id: str
    text: str


@dataclass
class Merge:
    """The contacts file as it will be, and how it differs from what it is."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    changes: list[Change]
    delimiter: str = ","
    bom: bool = False
    newline: str = "\n"
    #: The header and rows as the file has them now: a merge that changes
    #: nothing (the second run) writes nothing.
    before: tuple[list[str], list[dict[str, str]]] = field(default_factory=lambda: ([], []))

    @property
    def changed(self) -> bool:
        return (self.header, self.rows) != self.before

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    def text(self) -> str:
        """The file's new content."""
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.delimiter, lineterminator=self.newline)
        writer.writerow(self.header)
        writer.writerows([row.get(name, "") for name in self.header] for row in self.rows)
        return ("\ufeff" if self.bom else "") + out.getvalue()

    def write(self) -> None:
        """Replace the contacts file, atomically, with a file ``outreach send`` accepts.

        The new file is written beside the old one, read back as every other
        command reads it, and only then renamed over it: an interruption, a
        full disk or a merged file that would not load leaves the old file
        as it was.
        """
        # A contacts file that is a link (to a shared folder, say) stays one:
        # the file it points to is the one replaced.
        target = self.path.resolve()

        def loads(written: Path) -> None:
            try:
                load_contacts(written)
            except ContactsError as err:
                merged = (p.replace(str(written), f"{self.path} (as merged)") for p in err.problems)
                raise ContactsError(*(p + "; nothing was changed" for p in merged)) from err

        mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
        with writing(self.path, ContactsError, "; nothing was changed"):
            write_atomically(target, self.text().encode("utf-8"), mode=mode, check=loads)


# --- the States and their names --------------------------------------------------------


@cache
def all_states() -> tuple[State, ...]:
    """The 193 Member States and 2 observer States, in the UN's order."""
    text = resources.files("outreach").joinpath("assets", "states.csv").read_text("utf-8")
    return tuple(State(**row) for row in csv.DictReader(io.StringIO(text)))


def name_key(text: str) -> str:
    """A name as compared: without accents, case, punctuation or a leading "the".

    ``CÔTE D’IVOIRE``, ``Côte d'Ivoire`` and ``cote divoire`` are one key.
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("&", " and ")
    text = re.sub(r"['’`´]", "", text)
    text = re.sub(r"[^\w]+", " ", text).strip()
    return re.sub(r"^the ", "", text)


def _forms(name: str) -> Iterator[str]:
    """The forms the UN writes a name in: as it is, long, and short.

    "Bolivia (Plurinational State of)" is also "Plurinational State of
    Bolivia" and "Bolivia"; "Netherlands (Kingdom of the)" also "Kingdom of
    the Netherlands".
    """
    yield name
    found = re.fullmatch(r"\s*(.+?)\s*\((.+)\)\s*", name)
    if found:
        yield f"{found.group(2)} {found.group(1)}"
        yield found.group(1)


@cache
def _index() -> Mapping[str, str]:
    """Each name key to the id of the one State it names; keys of two States left out."""
    ids: dict[str, set[str]] = {}
    for state in all_states():
        names = [state.country, state.name_in_text, state.id, *OTHER_NAMES.get(state.id, ())]
        for name in names:
            for form in _forms(name):
                ids.setdefault(name_key(form), set()).add(state.id)
    return {key: next(iter(found)) for key, found in ids.items() if len(found) == 1 and key}


def match_state(*names: str) -> str | None:
    """The id of the State these names (of one entity) name, or None.

    None too when two names of the entity point to different States: a
    letter to the wrong mission is worse than a line asking to check.
    """
    index = _index()
    found = {index[name_key(n)] for n in names if n and name_key(n) in index}
    return found.pop() if len(found) == 1 else None


# --- reading data.json -----------------------------------------------------------------


def _text(value: object) -> str:
    """A text of the file, made safe to put in a CSV cell and a letter.

    Control characters and line breaks go (a name is one line; a line break
    in a header would add one), so do the characters that would make a
    spreadsheet run the cell as a formula; runs of spaces become one.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    text = unicodedata.normalize("NFC", str(value))
    text = "".join(" " if unicodedata.category(c).startswith(("C", "Z")) else c for c in text)
    text = " ".join(text.split())[:MAX_TEXT]
    return text.lstrip(_FORMULA + " ")


def _category(value: object) -> int | None:
    """``MC_Category`` as a number, whether written 1, "1", " 1 " or 1.0."""
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _load(path: Path) -> dict[str, Any]:
    """The file as JSON of the Blue Book's shape, or one line saying what it is instead."""
    save = "save it again from the Blue Book's page (see README, The UN Blue Book)"
    try:
        # Refused by its size before it is opened; the read is capped too, for
        # what has no size (a pipe, a device).
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            raise _too_large(path)
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as err:
        raise BlueBookError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise BlueBookError(f"{path}: is a folder, not the Blue Book's data.json") from err
    except OSError as err:
        raise BlueBookError(f"{path}: cannot be read ({err.strerror})") from err
    if len(raw) > MAX_FILE_BYTES:
        raise _too_large(path)
    if not raw.strip():
        raise BlueBookError(f"{path}: the file is empty; {save}")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise BlueBookError(f"{path}: not UTF-8 text, so not the Blue Book's data.json") from err
    except json.JSONDecodeError as err:
        raise BlueBookError(
            f"{path}, line {err.lineno}, column {err.colno}: not JSON ({err.msg}); {save}"
        ) from err
    except (RecursionError, ValueError) as err:
        raise BlueBookError(f"{path}: not JSON that can be read ({type(err).__name__})") from err
    if not isinstance(data, dict):
        kind = {list: "list", str: "text", int: "number", float: "number"}.get(type(data), "value")
        raise BlueBookError(
            f"{path}: JSON, but not the Blue Book's data.json: it holds a {kind}, "
            "not an object with 'countries' and 'bluebooks'"
        )
    for key in ("countries", "bluebooks"):
        if not isinstance(data.get(key), list):
            keys = ", ".join(repr(_text(k)[:40]) for k in list(data)[:8]) or "none"
            raise BlueBookError(
                f"{path}: JSON, but not the Blue Book's data.json: no '{key}' list "
                f"(its keys: {keys})"
            )
    if not any(isinstance(entity, dict) for entity in data["countries"]):
        raise BlueBookError(f"{path}: its 'countries' list is empty; {save}")
    return data


def _too_large(path: Path) -> BlueBookError:
    return BlueBookError(
        f"{path}: larger than the {MAX_FILE_BYTES // 1024 // 1024} MB the Blue Book's "
        "data.json could be (it is a few MB); not read. Is it the right file?"
    )


def read_bluebook(path: Path) -> BlueBook:
    """The States' missions the Blue Book's data.json lists, with their heads and addresses."""
    data = _load(path)
    book = BlueBook(path)
    #: Each State's entity, by the key of its name, which staff rows name it by.
    entities: dict[str, State] = {}
    states = {s.id: s for s in all_states()}
    used: dict[str, str] = {}
    for number, entity in enumerate(data["countries"], start=1):
        if not isinstance(entity, dict):
            book.notes.append(f"countries, entry {number}: not an object; left out")
            continue
        name = _text(entity.get("MC_Entity")) or _text(entity.get("MC_EntityBB"))
        if not name:
            book.notes.append(f"countries, entry {number}: no MC_Entity; left out")
            continue
        category = _category(entity.get("MC_Category"))
        if category in OTHER_ENTITIES:
            book.other_entities += 1
            continue
        if category not in (MEMBER, OBSERVER):
            book.unknown_category.append(name)
            continue
        found = match_state(
            *(_text(entity.get(k)) for k in ("MC_Entity", "MC_EntityBB", "MC_EntityShort"))
        )
        if found is None:
            book.unmatched.append(name)
            continue
        if found in book.missions:
            book.notes.append(
                f"{name!r} is a second entry for {found} (after "
                f"{book.missions[found].entity!r}); left out"
            )
            continue
        status = "observer" if category == OBSERVER else "member"
        entities[name_key(name)] = states[found]
        emails = _addresses(entity.get("MC_eMail"), found, book.notes, used)
        book.missions[found] = Mission(states[found], name, emails, None, status)

    every_entity = {
        name_key(_text(e.get("MC_Entity"))) for e in data["countries"] if isinstance(e, dict)
    }
    staff: dict[str, list[dict[str, Any]]] = {}
    for person in data["bluebooks"]:
        if not isinstance(person, dict):
            continue
        mission = _text(person.get("BB_Mission"))
        key = name_key(mission)
        if key in entities:
            staff.setdefault(key, []).append(person)
        elif mission and key not in every_entity and mission not in book.stray_staff:
            book.stray_staff.append(mission)
    for key, state in entities.items():
        entry = book.missions[state.id]
        book.missions[state.id] = replace(entry, head=_head(staff.get(key, []), entry.status))
    book.missions = {s.id: book.missions[s.id] for s in all_states() if s.id in book.missions}
    return book


def _addresses(
    cell: object, state_id: str, notes: list[str], used: dict[str, str]
) -> tuple[str, ...]:
    """The addresses of an ``MC_eMail`` cell: checked, each once, none another mission's."""
    found: list[str] = []
    for part in re.split(r"[;,\s/]+", _text(cell)):
        part = re.sub(r"^mailto:", "", part.strip("<>()[]"), flags=re.IGNORECASE)
        if not part:
            continue
        try:
            address = validate_address(part)
        except AddressError as err:
            notes.append(f"{state_id}: {part!r} in MC_eMail is not an address ({err}); left out")
            continue
        owner = used.setdefault(address.lower(), state_id)
        if owner != state_id:
            notes.append(
                f"{state_id}: {address} is also {owner}'s address; left out for {state_id}"
            )
        elif address.lower() not in (a.lower() for a in found):
            found.append(address)
    return tuple(found)


def _role(function: str, status: str) -> str | None:
    """The head-of-mission role a ``BB_Function`` names, or None for other staff."""
    key = name_key(function)
    if "charge d affaires" in key or "charge daffaires" in key:
        return CHARGE if re.search(r"\ba i\b|ad interim", key) else "Chargé d'affaires"
    if re.search(r"\b(deputy|alternate|assistant|vice|acting)\b", key):
        return None
    if "permanent representative" in key or "permanent observer" in key:
        return PERMANENT_OBSERVER if status == "observer" else PERMANENT_REPRESENTATIVE
    return None


def _head(staff: list[dict[str, Any]], status: str) -> Head | None:
    """The Active Permanent Representative or Observer, else the Chargé d'affaires.

    Inactive staff are former staff: never addressed.
    """
    ambassadors = (PERMANENT_REPRESENTATIVE, PERMANENT_OBSERVER)
    heads: list[Head] = []
    for person in staff:
        if _text(person.get("BB_Status")).casefold() != "active":
            continue
        role = _role(_text(person.get("BB_Function")), status)
        name = _person_name(person)
        if role is not None and name:
            title = honorific(_text(person.get("BB_Title")), role in ambassadors)
            heads.append(Head(name, title, role))
    return min(heads, key=lambda h: h.function not in ambassadors, default=None)


def _person_name(person: Mapping[str, Any]) -> str:
    first, last = _text(person.get("BB_FirstName")), _text(person.get("BB_LastName"))
    order = _text(person.get("BB_NameOrder")).casefold()
    parts = [last, first] if order in _FAMILY_NAME_FIRST else [first, last]
    return " ".join(p for p in parts if p)


def honorific(title: str, ambassador: bool) -> str:
    """``BB_Title`` as a letter writes it: "H.E. Mr.", "Ms.", "H.E. Dr." …

    The Blue Book spells titles unevenly ("H.E.Mr.", "h.e.  ms", "Mr").
    A Permanent Representative or Observer is an Excellency whatever the
    title says; a Chargé d'affaires only when the Blue Book says so (one of
    ambassadorial rank).
    """
    text = " ".join(title.split())
    excellency = bool(_HE.match(text))
    rest = _HE.sub("", text).strip(" .") if excellency else text.strip()
    rest = _HONORIFICS.get(rest.rstrip(".").casefold(), rest)
    prefix = "H.E." if excellency or ambassador else ""
    return " ".join(p for p in (prefix, rest) if p)


# --- merging into the contacts file ----------------------------------------------------


def merge(book: BlueBook, path: Path) -> Merge:
    """The contacts file with the Blue Book's addresses and heads of mission.

    The Blue Book owns, for each State it lists, ``email`` (its first
    address; the others are added to ``cc``) and ``title``,
    ``representative`` and ``function`` (the head of mission, or nothing
    when it lists none). Every other column of a row is filled only where
    empty; rows and columns the Blue Book knows nothing of stay as they
    are. A State it lists without an address keeps the address the file
    has, unless that is a placeholder, which no letter can go to: then the
    row goes, and the mission is listed, as is one that has no row yet.
    """
    header, rows, style = _existing(path)
    before = (list(header), [dict(r) for r in rows])
    header = header + [c for c in COLUMNS if c not in header]
    by_key: dict[str, dict[str, str]] = {}
    for row in rows:
        row.update({name: "" for name in header if name not in row})
        by_key.setdefault(contact_key(row["id"]), row)
    changes: list[Change] = []
    removed: set[int] = set()

    for mission in book.missions.values():
        state = mission.state
        given = {
            "country": state.country,
            "mission": state.mission,
            "status": mission.status,
            "name_in_text": state.name_in_text,
        }
        existing = by_key.get(contact_key(state.id))
        if existing is None:
            if not mission.emails:
                changes.append(Change("no-address", state.id, "not added: no letter can go to it"))
                continue
            new = {**dict.fromkeys(header, ""), "id": state.id, **given}
            _update_head(new, mission, [])
            _update_addresses(new, mission, [])
            rows.append(new)
            head = mission.head
            said = f", {head.title} {head.name}, {head.function}" if head else ""
            changes.append(Change("added", state.id, f"{new['email']}{said}"))
            continue
        row = existing
        if not mission.emails and is_placeholder(row["email"] or "@x.example"):
            removed.add(id(row))
            changes.append(
                Change("no-address", state.id, f"removed: only a placeholder ({row['email']})")
            )
            continue
        if not mission.emails:
            changes.append(Change("no-address", state.id, f"kept the file's {row['email']}"))
        _update_addresses(row, mission, changes)
        _update_head(row, mission, changes)
        filled = [n for n in FILLED_WHEN_EMPTY if not row[n]]
        row.update((name, given[name]) for name in filled)
        if filled:
            changes.append(Change("filled", state.id, ", ".join(filled)))

    listed = {contact_key(i) for i in book.missions}
    known = {contact_key(s.id) for s in all_states()}
    for row in rows:
        key = contact_key(row["id"])
        if key in known and key not in listed and id(row) not in removed:
            placeholder = is_placeholder(row["email"] or "@x.example")
            if placeholder:
                removed.add(id(row))
            what = f"placeholder {row['email']} removed" if placeholder else "row kept"
            changes.append(Change("gone", row["id"], f"not in the Blue Book; {what}"))
    rows = [r for r in rows if id(r) not in removed]
    return Merge(path, header, rows, changes, *style, before)


def _update_addresses(row: dict[str, str], mission: Mission, changes: list[Change]) -> None:
    if not mission.emails:
        return
    first, further = mission.emails[0], mission.emails[1:]
    if [a.lower() for a in split_list(row["email"])] != [first.lower()]:
        changes.append(Change("address", row["id"], f"{row['email'] or '(none)'} → {first}"))
        row["email"] = first
    cc = [a for a in split_list(row["cc"]) if a.lower() != first.lower()]
    added = [a for a in further if a.lower() not in {c.lower() for c in cc}]
    if added or len(cc) != len(split_list(row["cc"])):
        if added:
            changes.append(Change("cc", row["id"], f"+ {'; '.join(added)}"))
        row["cc"] = "; ".join(cc + added)


def _update_head(row: dict[str, str], mission: Mission, changes: list[Change]) -> None:
    head = mission.head
    new = (head.title, head.name, head.function) if head else ("", "", "")
    old = (row["title"], row["representative"], row["function"])
    if new == old:
        return
    row["title"], row["representative"], row["function"] = new
    if head is None:
        text = f"none listed any more (was {old[1] or old[0]})"
    else:
        was = f" (was {' '.join(p for p in old[:2] if p)})" if old[1] else ""
        text = f"{head.title} {head.name}, {head.function}{was}"
    changes.append(Change("representative", row["id"], text))


def _existing(path: Path) -> tuple[list[str], list[dict[str, str]], tuple[str, bool, str]]:
    """The contacts file's header, rows and way of writing (separator, BOM, line end).

    A file that does not exist yet, or holds nothing, is a new file; any other
    file is read as every command reads it (its size capped, its errors named).
    """
    if not path.exists() or (
        path.is_file()
        and path.stat().st_size <= MAX_CONTACTS_BYTES
        and not path.read_bytes().strip(b"\xef\xbb\xbf \r\n\t")
    ):
        return [], [], (",", False, "\n")
    frame, _ = read_table(path)
    header = [str(c) for c in frame.columns if c != "_line"]
    rows = [
        {str(name): str(value) for name, value in record.items() if name != "_line"}
        for record in frame.to_dict("records")
    ]
    raw = path.read_bytes()
    text = raw.decode("utf-8", "replace")
    # UTF-8 is written; a file that was not UTF-8 (Windows-1252 from an older
    # Excel; its bytes do not survive the decoding above) gets the byte-order
    # mark by which Excel knows UTF-8.
    bom = raw.startswith(b"\xef\xbb\xbf") or text.encode("utf-8") != raw
    newline = "\r\n" if b"\r\n" in raw else "\n"
    return header, rows, (delimiter_of(text.split("\n", 1)[0]), bom, newline)
