"""The do-not-contact list: missions that asked not to be written to.

One entry a line, an address or a contact id, then, after a comma, why
(optional). Lines starting with ``#`` are notes. Anyone on it is never sent
a letter by any campaign or follow-up; a test send to yourself is not
affected.

    chl@missions.example, asked on 2026-10-02 not to be written to
    VAT, written to through the nunciature instead
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

from outreach.addresses import AddressError, validate_address
from outreach.contacts import Contact
from outreach.errors import SettingsError
from outreach.sendlog import contact_key


@dataclass(frozen=True)
class DoNotContact:
    """The list, read: ids and addresses, each with why."""

    path: Path | None = None
    ids: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids) + len(self.addresses)

    def holds(self, contact: Contact) -> str | None:
        """Why ``contact`` is held back, or None: its id, or one of its To addresses, is listed.

        A listed Cc alone does not hold the letter back; ``without`` drops it.
        """
        key = contact_key(contact.id)
        if key in self.ids:
            return self.ids[key] or "on the do-not-contact list"
        for address in contact.to:
            if address.lower() in self.addresses:
                return self.addresses[address.lower()] or "on the do-not-contact list"
        return None

    def without(self, addresses: tuple[str, ...]) -> tuple[str, ...]:
        """``addresses`` less those on the list."""
        return tuple(a for a in addresses if a.lower() not in self.addresses)


def load_do_not_contact(path: Path, *, required: bool) -> DoNotContact:
    """The list in ``path``; no file is an empty list unless the setting named it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if required:
            raise SettingsError(f"DO_NOT_CONTACT_FILE={str(path)!r}: no such file") from None
        return DoNotContact()
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{path}: cannot be read ({err})") from err
    ids: dict[str, str] = {}
    addresses: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        cells = next(csv.reader([line], skipinitialspace=True), [])
        if not cells or not cells[0].strip():
            continue
        entry, reason = cells[0].strip(), ", ".join(c.strip() for c in cells[1:] if c.strip())
        if "@" in entry:
            if "<" in entry:
                # As a mail program copies it: "Mission of France <fra@…>".
                entry = parseaddr(entry)[1] or entry
            try:
                addresses[validate_address(entry).lower()] = reason
            except AddressError as err:
                problems.append(f"{path}, line {number}: {entry!r} is not a valid address: {err}")
        else:
            ids[contact_key(entry)] = reason
    if problems:
        raise SettingsError(*problems)
    return DoNotContact(path, ids, addresses)
