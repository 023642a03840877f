"""Dry-run previews: every letter written to disk, nothing sent.

Staff judge the letters by looking at them, so each contact gets the exact
``.eml`` that would be sent plus its HTML and text parts on their own, and
``index.html`` shows them all in one page: a list with each letter's
warnings, a filter, and the chosen letter's HTML beside its text. That page
carries every letter inside it (no other file, no network), so it opens from
``file://`` and still works when mailed to a colleague on its own. No
network connection is ever opened here.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from jinja2.utils import htmlsafe_json_dumps

from outreach.addresses import is_placeholder
from outreach.compose import Campaign, Clock, problems_of, utc_now
from outreach.contacts import Contact
from outreach.errors import OutreachError, TemplateError
from outreach.pipeline import Composer, Previewed

#: Marks a folder as written by ``outreach preview``, so that it, and only
#: it, may be replaced by the next preview.
MARKER = ".outreach-preview"


@dataclass
class PreviewEntry:
    """One row of the index page."""

    id: str
    country: str
    recipients: list[str]
    subject: str
    language: str
    warnings: list[str] = field(default_factory=list)
    placeholder_addresses: int = 0

    @property
    def placeholder(self) -> bool:
        """Whether any recipient of this letter is on a reserved domain."""
        return self.placeholder_addresses > 0


@dataclass
class PreviewResult:
    folder: Path
    entries: list[PreviewEntry]

    @property
    def placeholders(self) -> int:
        """Letters that go to at least one placeholder address."""
        return sum(1 for e in self.entries if e.placeholder)

    @property
    def placeholder_addresses(self) -> int:
        return sum(e.placeholder_addresses for e in self.entries)

    @property
    def warnings(self) -> int:
        return sum(len(e.warnings) for e in self.entries)


def _index_environment() -> Environment:
    return Environment(
        loader=PackageLoader("outreach", "assets"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
    )


def _spare(target: Path) -> Path:
    """Where the preview before the current one is kept, hidden, to be written over."""
    return target.parent / f".{target.name}.spare"


def _build_folder(target: Path) -> Path:
    """A new folder beside ``target`` to write the preview into.

    It is the spare folder of an earlier preview when there is one: writing
    over its files is several times cheaper than making new ones (on some
    file systems a new file costs a millisecond), and a preview is run
    again and again while a letter is being edited. Every file this run
    does not write is removed before the folder is put in place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    spare = _spare(target)
    if (spare / MARKER).is_file():
        with contextlib.suppress(OSError):  # taken by a preview running beside this one
            spare.rename(built)  # over the new folder, which is empty
    return built


def _remove_unwritten(built: Path, written: set[str]) -> None:
    for path in built.iterdir():
        if path.name not in written:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _replace_folder(built: Path, target: Path) -> None:
    """Put the new preview where the old one was, and never anything else.

    The old folder is moved aside (to be the next preview's spare) only
    when an earlier preview wrote it: a PREVIEW_DIR pointed by mistake at a
    folder of documents loses nothing.
    """
    if target.exists():
        if not target.is_dir():
            raise TemplateError(f"PREVIEW_DIR={str(target)!r} is a file, not a folder")
        if (target / MARKER).exists():
            spare = _spare(target)
            if (spare / MARKER).is_file():
                shutil.rmtree(spare)
            if spare.exists():
                shutil.rmtree(target)
            else:
                target.rename(spare)
        elif any(target.iterdir()):
            raise TemplateError(
                f"PREVIEW_DIR={str(target)!r} holds files that outreach did not write; "
                "choose an empty or new folder"
            )
        else:
            target.rmdir()
    built.rename(target)


def write_previews(
    campaign: Campaign,
    contacts: Sequence[Contact],
    folder: Path,
    *,
    now: Clock = utc_now,
    progress: Callable[[int], None] = lambda done: None,
    processes: int | None = None,
    composer: Composer | None = None,
) -> PreviewResult:
    """Write ``<id>.eml``, ``<id>.html`` and ``<id>.txt`` per contact, and ``index.html``.

    The files are written to a folder beside ``folder`` and moved into
    place at the end, so a failed preview leaves the last good one intact.
    The letters are composed and checked in worker processes (``processes``;
    by default one per CPU for a long list, none for a short one; or those
    of ``composer``, already started) and only one letter at a time is held
    here: the index page is written from the files, so memory stays flat
    however long the list.
    """
    built = _build_folder(folder)
    try:
        entries: list[PreviewEntry] = []
        errors: list[OutreachError] = []
        with contextlib.ExitStack() as stack:
            if composer is None:
                composer = stack.enter_context(Composer(campaign, processes=processes))
            stream = composer.run(contacts, "preview", now=now, processes=processes)
            for done, composed in enumerate(stream, start=1):
                progress(done)
                if composed.error is not None:
                    errors.append(composed.error)
                    continue
                assert isinstance(composed, Previewed)
                _write_letter(built, composed, entries)
        if errors:
            raise OutreachError(*problems_of(errors))
        result = PreviewResult(folder=folder, entries=entries)
        _write_index(built, result, campaign.settings.campaign)
        (built / MARKER).write_text("written by outreach preview\n", encoding="utf-8")
        written = {MARKER, "index.html"}
        written.update(f"{e.id}{suffix}" for e in entries for suffix in (".eml", ".html", ".txt"))
        _remove_unwritten(built, written)
        _replace_folder(built, folder)
        return result
    finally:
        if built.exists():
            shutil.rmtree(built)


def _write_letter(built: Path, composed: Previewed, entries: list[PreviewEntry]) -> None:
    """One letter's three files, and its row of the index (without the letter)."""
    assert composed.rendered is not None
    assert composed.letter is not None
    contact, rendered, letter = composed.contact, composed.rendered, composed.letter
    (built / f"{contact.id}.eml").write_bytes(letter.data)
    (built / f"{contact.id}.html").write_text(rendered.html, encoding="utf-8")
    (built / f"{contact.id}.txt").write_text(rendered.text, encoding="utf-8")
    entries.append(
        PreviewEntry(
            id=contact.id,
            country=contact.country,
            recipients=list(letter.recipients),
            subject=letter.subject,
            language=rendered.language,
            warnings=list(composed.warnings),
            placeholder_addresses=sum(1 for a in letter.recipients if is_placeholder(a)),
        )
    )


#: Stands for the letters' data in the page until they are streamed in.
_DATA_MARK = "\ue000letters\ue001"


def _read_back(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as handle:  # every \r kept
        return handle.read()


def _letter_data(built: Path, entry: PreviewEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "country": entry.country,
        "recipients": entry.recipients,
        "subject": entry.subject,
        "language": entry.language,
        "warnings": entry.warnings,
        "html": _read_back(built / f"{entry.id}.html"),
        "text": _read_back(built / f"{entry.id}.txt"),
    }


def _write_index(built: Path, result: PreviewResult, campaign: str) -> None:
    """``index.html``, with every letter in it, one letter in memory at a time.

    The page is rendered with a mark where the letters' JSON goes; the JSON
    is then written letter by letter, each exactly as Jinja's ``tojson``
    writes it (sorted keys, HTML-safe), so the page is the one that
    rendering it with every letter in memory would give.
    """
    environment = _index_environment()
    page = environment.get_template("index.html.j2").render(
        result=result, campaign=campaign, letters=[_DATA_MARK]
    )
    mark = str(htmlsafe_json_dumps([_DATA_MARK], **environment.policies["json.dumps_kwargs"]))
    if page.count(mark) != 1:
        raise TemplateError("index.html.j2: the letters' data must appear once, as letters|tojson")
    before, after = page.split(mark)
    dumps_kwargs = environment.policies["json.dumps_kwargs"]
    with (built / "index.html").open("w", encoding="utf-8") as out:
        out.write(before)
        out.write("[")
        for number, entry in enumerate(result.entries):
            if number:
                out.write(", ")
            out.write(str(htmlsafe_json_dumps(_letter_data(built, entry), **dumps_kwargs)))
        out.write("]")
        out.write(after)
