"""From settings to letters: load what a campaign needs, then compose each letter.

``check``, ``preview`` and ``send`` all go through here, so the letter that
passed the check is the letter that is sent: the very bytes when the send
takes its letters from the check (``spool.py``), else the same words,
headers, MIME boundary and Message-ID with only the Date made anew.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from outreach.contacts import Contact, ContactList, load_contacts
from outreach.errors import OutreachError
from outreach.message import Letter, build_letter
from outreach.render import Rendered, Renderer
from outreach.settings import Settings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Campaign:
    """The settings, contacts and templates of one run, each already checked."""

    settings: Settings
    contacts: ContactList
    renderer: Renderer

    @classmethod
    def open(cls, settings: Settings) -> Campaign:
        return cls.prepare(settings).with_contacts()

    @classmethod
    def prepare(cls, settings: Settings) -> Campaign:
        """The campaign with its templates but no contacts read yet.

        Worker processes are started from it (``Composer.start``) while the
        contacts are read.
        """
        return cls(
            settings=settings,
            contacts=ContactList(path=settings.contacts_file, contacts=()),
            renderer=Renderer(settings.templates_dir, settings.letter_date),
        )

    def with_contacts(self) -> Campaign:
        """The same campaign with the contacts of CONTACTS_FILE, read and checked."""
        return replace(self, contacts=load_contacts(self.settings.contacts_file))

    def compose(
        self, contact: Contact, *, now: Clock = utc_now, test_to: str | None = None
    ) -> tuple[Rendered, Letter]:
        """One contact's rendered letter and the message built from it."""
        rendered = self.renderer.render(contact)
        return rendered, build_letter(contact, rendered, self.settings, now=now(), test_to=test_to)


@dataclass(frozen=True)
class Composed:
    """The outcome for one contact: its letter, or why it has none."""

    contact: Contact
    rendered: Rendered | None
    letter: Letter | None
    error: OutreachError | None


def compose_each(
    campaign: Campaign, contacts: Iterable[Contact], *, now: Clock = utc_now
) -> Iterator[Composed]:
    """Compose every letter, one at a time, carrying on past a bad one.

    A run reports every contact whose letter cannot be built, not only the
    first; and streaming keeps memory flat however long the list.
    """
    for contact in contacts:
        try:
            rendered, letter = campaign.compose(contact, now=now)
        except OutreachError as err:
            yield Composed(contact, None, None, err)
        else:
            yield Composed(contact, rendered, letter, None)


def problems_of(errors: Iterable[OutreachError]) -> list[str]:
    """Every distinct problem, in order: one broken template is one line, not 195."""
    seen: dict[str, None] = {}
    for error in errors:
        for problem in error.problems:
            seen.setdefault(problem, None)
    return list(seen)
