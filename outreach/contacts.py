"""Reading the contacts file.

Staff export this file from spreadsheets, so it arrives in any of the usual
shapes: with or without a byte-order mark, in Windows-1252, separated by
commas, semicolons or tabs. Every problem is reported with its file, line and
column, all of them together, and nothing is rendered until the file is clean.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from outreach.addresses import AddressError, is_placeholder, split_list, validate_address
from outreach.errors import ContactsError
from outreach.headers import unsafe_header_reason
from outreach.sendlog import contact_key

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("id", "country", "email")
#: The other columns the shipped templates use, and what stands in for each
#: when the contacts file has no such column or leaves the cell empty: a
#: file with only the required columns gives complete letters.
OPTIONAL_COLUMNS: dict[str, Callable[[Mapping[str, str]], str]] = {
    "mission": lambda row: f"Permanent Mission of {row['country']} to the United Nations",
    "title": lambda row: "",
    "representative": lambda row: "",
    "function": lambda row: "",
    "cc": lambda row: "",
    "language": lambda row: "en",
    "status": lambda row: "member",
    "name_in_text": lambda row: row["country"],
    "salutation": lambda row: "",
    "attachments": lambda row: "",
}
#: The optional columns whose default is a value of its own, which check names.
_NAMED_DEFAULTS = ("mission", "language", "status", "name_in_text")
#: Columns whose values become a header (the To display name is the mission,
#: or the country when there is none).
HEADER_COLUMNS = ("country", "mission")
DELIMITERS = (",", ";", "\t")
#: Far above any campaign (20,000 contacts take about 2 MB) and far below
#: what would exhaust memory: a larger file is refused, not half read.
MAX_FILE_BYTES = 25 * 1024 * 1024
_LANGUAGE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")
#: Ids name preview files and send-log rows, so they stay plain.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Contact:
    """One recipient mission: its addresses checked, every column kept."""

    id: str
    country: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    language: str
    line: int
    fields: Mapping[str, str] = field(repr=False)

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient: To, then Cc."""
        return self.to + self.cc


@dataclass(frozen=True)
class ContactList:
    """The contacts of a file, in file order, with what is worth a warning."""

    path: Path
    contacts: tuple[Contact, ...]
    warnings: tuple[str, ...] = ()
    #: Optional columns the file does not have, which take their defaults.
    defaulted: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Contact]:
        return iter(self.contacts)

    def __len__(self) -> int:
        return len(self.contacts)

    def placeholders(self) -> list[str]:
        """Addresses on reserved domains, which no real mission has."""
        return [a for c in self.contacts for a in c.recipients if is_placeholder(a)]

    def select(self, only: Sequence[str] = (), limit: int | None = None) -> list[Contact]:
        """The contacts named by ``--only`` (in file order), at most ``limit``.

        An id that matches no contact is an error: a typo must not quietly
        shrink the run.
        """
        chosen = list(self.contacts)
        if only:
            wanted = {contact_key(i.strip()) for i in only if i.strip()}
            known = {contact_key(c.id) for c in self.contacts}
            unknown = sorted(wanted - known)
            if unknown:
                raise ContactsError(
                    f"{self.path}: no contact with id {', '.join(unknown)} (see the id column)"
                )
            chosen = [c for c in chosen if contact_key(c.id) in wanted]
        return chosen[:limit]


def _decode(path: Path, raw: bytes) -> tuple[str, list[str]]:
    """The file's text and any warning about how it was read."""
    if raw.startswith(codecs.BOM_UTF8):
        body = raw[len(codecs.BOM_UTF8) :]
        try:
            return body.decode("utf-8"), []
        except UnicodeDecodeError as err:
            line, column = _position(body.decode("latin-1"), err.start)
            raise ContactsError(
                f"{path}, line {line}, column {column}: byte 0x{body[err.start]:02X} is not "
                "UTF-8, though the file begins with UTF-8's byte-order mark; save the file as "
                "CSV UTF-8"
            ) from err
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16"), []
        except UnicodeDecodeError as err:
            raise ContactsError(f"{path}: not valid UTF-16 text ({err.reason})") from err
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as utf8_err:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError as err:
            line, column = _position(raw.decode("latin-1"), err.start)
            raise ContactsError(
                f"{path}, line {line}, column {column}: byte 0x{raw[err.start]:02X} is neither "
                "UTF-8 nor Windows-1252; save the file as CSV UTF-8"
            ) from utf8_err
        line, _ = _position(raw.decode("latin-1"), utf8_err.start)
        return text, [
            f"{path}: not UTF-8 (first at line {line}); read as Windows-1252. "
            "Check accented names in the previews, or save the file as CSV UTF-8"
        ]


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def delimiter_of(header_line: str) -> str:
    """The separator a spreadsheet used, judged from the header line."""
    best = max(DELIMITERS, key=header_line.count)
    return best if best in header_line else ","


def _records(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) for each record, with csv's own quoting rules.

    pandas' parser cannot tell on which physical line a record with a quoted
    line break starts; error messages must, so the tokenising is csv's.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as err:
        reason = str(err)
        if "unexpected end of data" in reason or "EOF" in reason:
            reason = 'a quoted field starts here and is never closed (a missing ")'
        raise ContactsError(f"{path}, line {start}: {reason}") from err


def read_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The file as a frame of stripped strings, with a ``_line`` column."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ContactsError(
                f"{path}: {size / 1024 / 1024:.0f} MB is larger than the "
                f"{MAX_FILE_BYTES // 1024 // 1024} MB a contacts file may have; split it"
            )
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise ContactsError(f"{path}: no such file (set CONTACTS_FILE to your contacts)") from err
    except IsADirectoryError as err:
        raise ContactsError(f"{path}: is a folder, not a CSV file") from err
    except OSError as err:
        raise ContactsError(f"{path}: cannot be read ({err.strerror})") from err
    text, warnings = _decode(path, raw)
    if "\x00" in text:
        line, column = _position(text, text.index("\x00"))
        raise ContactsError(
            f"{path}, line {line}, column {column}: a NUL byte; this is not a text CSV file"
            " (UTF-16 without a byte-order mark?); save it as CSV UTF-8"
        )
    if not text.strip():
        raise ContactsError(
            f"{path}: the file is empty; it needs a header line and one row per contact"
        )

    records = _records(path, text, delimiter_of(text.split("\n", 1)[0]))
    _, header = next(records)
    header = [_column_name(name) for name in header]
    problems = _header_problems(path, header)
    rows: list[list[str]] = []
    for line, values in records:
        if not any(v.strip() for v in values):
            continue  # blank line, or a spreadsheet's empty row of separators
        if len(values) != len(header):
            problems.append(
                f"{path}, line {line}: {len(values)} fields where the header has {len(header)}"
                " (a stray separator, or a value that needs quotes?)"
            )
            continue
        rows.append([*(value.strip() for value in values), str(line)])
    header, rows = _without_empty_unnamed_columns(path, header, rows, problems)
    if problems:
        raise ContactsError(*problems)
    if not rows:
        raise ContactsError(f"{path}: only a header line, no contacts")
    # Imported here: pandas takes half a second to import, which commands that
    # never read contacts (report, --help) and the worker processes need not pay.
    import pandas as pd

    return pd.DataFrame(rows, columns=[*header, "_line"], dtype="string"), warnings


def _without_empty_unnamed_columns(
    path: Path, header: list[str], rows: list[list[str]], problems: list[str]
) -> tuple[list[str], list[list[str]]]:
    """The table less the columns with neither a name nor a value.

    Spreadsheets export a trailing separator for a column that was once
    used; it holds nothing, and is dropped. An unnamed column that does
    hold values is a problem: its values could not be used by name.
    """
    unnamed = [number for number, name in enumerate(header) if not name]
    drop = []
    for number in unnamed:
        used = next((row[-1] for row in rows if len(row) > number and row[number].strip()), None)
        if used is None:
            drop.append(number)
        else:
            problems.append(
                f"{path}, line 1, column {number + 1}: a column without a name "
                f"(it holds a value on line {used}); give it a name in the first line"
            )
    if not drop:
        return header, rows
    keep = [n for n in range(len(header)) if n not in drop]
    return [header[n] for n in keep], [[row[n] for n in keep] + row[-1:] for row in rows]


def _column_name(name: str) -> str:
    """A header's name, stripped; the known columns in lower case whatever their case.

    A spreadsheet's header often reads ``ID,Country,Email``.
    """
    name = name.strip()
    known = name.lower()
    return known if known in REQUIRED_COLUMNS or known in OPTIONAL_COLUMNS else name


def _header_problems(path: Path, header: list[str]) -> list[str]:
    problems = []
    for number, name in enumerate(header, start=1):
        if not name:
            continue  # dropped when empty, else a problem (_without_empty_unnamed_columns)
        if header.index(name) != number - 1:
            problems.append(f"{path}, line 1, column {number}: a second column named {name!r}")
        elif name.startswith("_"):
            problems.append(f"{path}, line 1, column {number}: column names may not start with '_'")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(
            f"{path}, line 1: required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} missing (the header has: {', '.join(header)})"
        )
    return problems


def load_contacts(path: Path) -> ContactList:
    """Every contact in ``path``, checked; ContactsError lists all problems."""
    frame, warnings = read_table(path)
    columns = [c for c in frame.columns if c != "_line"]
    where = {name: f"column {number} ({name})" for number, name in enumerate(columns, start=1)}
    problems: list[str] = []
    contacts: list[Contact] = []
    first_use: dict[str, tuple[str, int]] = {}

    for row in frame.to_dict("records"):
        line = int(row.pop("_line"))
        fields = {str(name): str(value) for name, value in row.items()}
        at = f"{path}, line {line}"
        row_problems: list[str] = []
        for name in ("id", "country"):
            if not fields[name]:
                row_problems.append(f"{at}, {where[name]}: empty")
        if fields["id"] and not _ID.match(fields["id"]):
            row_problems.append(
                f"{at}, {where['id']}: {fields['id']!r} is not a usable id "
                "(letters, digits, '.', '_' and '-', at most 64)"
            )
        for name in (c for c in HEADER_COLUMNS if c in where):
            # Refused here, where file, line and column are known, so the one
            # who edits the spreadsheet learns where the line break hides;
            # message.py refuses them again in case a Contact comes from elsewhere.
            reason = unsafe_header_reason(fields.get(name, ""))
            if reason:
                row_problems.append(
                    f"{at}, {where[name]}: cannot go into the To header of a mail: it {reason}"
                )
        language = fields.get("language") or "en"
        if not _LANGUAGE.match(language):
            row_problems.append(
                f"{at}, {where['language']}: {language!r} is not a language code like en or fr"
            )
        # Each mailbox once, in the first place it appears (email before cc),
        # compared without regard to case: ``a@x`` and ``A@x`` are one
        # recipient, and would otherwise get the letter twice.
        addresses: dict[str, tuple[str, ...]] = {}
        seen: set[str] = set()
        repeated: dict[str, None] = {}
        for name in ("email", "cc"):
            found = []
            for text in split_list(fields.get(name, "")):
                try:
                    address = validate_address(text)
                except AddressError as err:
                    row_problems.append(
                        f"{at}, {where[name]}: {text!r} is not a valid address: {err}"
                    )
                    continue
                if address.lower() in seen:
                    repeated[address] = None
                else:
                    seen.add(address.lower())
                    found.append(address)
            addresses[name] = tuple(found)
        if repeated:
            warnings.append(
                f"{at}: {', '.join(repeated)} written more than once; each address gets one letter"
            )
        if not addresses["email"] and not any(
            p.startswith(f"{at}, {where['email']}") for p in row_problems
        ):
            row_problems.append(f"{at}, {where['email']}: empty; every contact needs an address")
        for address in addresses["email"] + addresses["cc"]:
            key = address.lower()
            if key in first_use and first_use[key][0] != fields["id"]:
                row_problems.append(
                    f"{at}: {address} is also the address of {first_use[key][0]} on line "
                    f"{first_use[key][1]}; one mission, one row (put extra addresses in cc)"
                )
            first_use.setdefault(key, (fields["id"], line))
        problems += row_problems
        if not row_problems:
            for name, default in OPTIONAL_COLUMNS.items():
                if not fields.get(name):
                    fields[name] = default(fields)
            contacts.append(
                Contact(
                    id=fields["id"],
                    country=fields["country"],
                    to=addresses["email"],
                    cc=addresses["cc"],
                    language=language,
                    line=line,
                    fields=fields,
                )
            )

    problems += _duplicate_ids(path, frame, where["id"])
    if problems:
        raise ContactsError(*problems)
    # Columns that are merely optional (a Cc, a salutation) are not named.
    defaulted = tuple(name for name in _NAMED_DEFAULTS if name not in columns)
    return ContactList(path, tuple(contacts), tuple(warnings), defaulted)


def _duplicate_ids(path: Path, frame: pd.DataFrame, where: str) -> list[str]:
    """A problem for each id used again, naming where it was first used."""
    ids = frame["id"].str.upper()
    repeated = frame[ids.duplicated(keep="first") & (ids != "")]
    first_line = frame.assign(_key=ids).groupby("_key")["_line"].first()
    return [
        f"{path}, line {line}, {where}: {identifier!r} is also the id on line "
        f"{first_line[identifier.upper()]}"
        for identifier, line in zip(repeated["id"], repeated["_line"], strict=True)
    ]
