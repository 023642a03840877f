"""The do-not-contact list: missions that asked not to be written to.

One entry a line, an address or a contact id, then why (optional), after a
comma, a semicolon, a tab, a space or a ``#``: staff write all of these.
Lines starting with ``#`` are notes. An address may be written as a mail
program copies it (``"Mission of Korea, Republic of" <kor@…>``). An entry
without ``@`` must be the id of a contact: anything else (a country's name,
a typing slip) is an error naming its line, never a mission silently written
to. Anyone on the list is never sent a letter by any campaign or follow-up;
a test send to yourself is not affected.

    chl@missions.example, asked on 2026-10-02 not to be written to
    VAT, written to through the nunciature instead
    KOR # asked on 2026-10-02
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    #: The line each id is on and the id as written, to name it when no contact has it.
    id_lines: dict[str, tuple[int, str]] = field(default_factory=dict)

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

    def unknown_ids(self, contacts: Iterable[Contact], contacts_path: Path) -> list[str]:
        """A problem for each listed id that no contact has: a mission staff meant to hold
        back, written so that nothing matches it, would otherwise get the letter."""
        known = {contact_key(c.id) for c in contacts}
        return [
            f"{self.path}, line {line}: {written!r} is neither an address nor the id of a contact "
            f"in {contacts_path}; write one id or address a line, then why "
            "(KOR, asked on 2026-10-02)"
            for key, (line, written) in self.id_lines.items()
            if key not in known
        ]


#: An address in angle brackets, as a mail program copies it: "Name, with comma" <a@b>.
_BRACKETED = re.compile(r"<([^<>\s]+)>")
#: A bare entry: up to the first comma, semicolon, ``#`` or whitespace, quotes aside.
_BARE = re.compile(r'"?([^\s,;#"]+)"?')
#: What may stand between an entry and why it is there.
_SEPARATORS = " \t,;#"


def _entry(line: str) -> tuple[str, str]:
    """The entry of a line (an address or an id) and the reason written after it."""
    text = line.strip()
    found = _BRACKETED.search(text)
    if found is None or "@" not in found.group(1):
        found = _BARE.match(text)
    if found is None:
        return "", ""
    return found.group(1), text[found.end() :].strip(_SEPARATORS)


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
    id_lines: dict[str, tuple[int, str]] = {}
    addresses: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or not line.strip():
            continue
        entry, reason = _entry(line)
        if not entry:
            problems.append(
                f"{path}, line {number}: no address or id at its start; write one a line, "
                "then why (KOR, asked on 2026-10-02)"
            )
        elif "@" in entry:
            try:
                addresses[validate_address(entry).lower()] = reason
            except AddressError as err:
                problems.append(f"{path}, line {number}: {entry!r} is not a valid address: {err}")
        else:
            ids[contact_key(entry)] = reason
            id_lines.setdefault(contact_key(entry), (number, entry))
    if problems:
        raise SettingsError(*problems)
    return DoNotContact(path, ids, addresses, id_lines)
