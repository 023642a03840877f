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

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2.utils import htmlsafe_json_dumps

from outreach.addresses import is_placeholder
from outreach.checks import letter_warnings
from outreach.errors import OutreachError, PreviewError, TemplateError, problems_of
from outreach.files import writing
from outreach.report import PAGES

if TYPE_CHECKING:
    from outreach.campaign import Composed

#: Marks a folder as written by ``outreach preview`` and lists the files it
#: wrote: those, and only those, may be replaced by the next preview.
MARKER = ".outreach-preview"
#: Each letter's files go into this folder of the preview, so that no id
#: (``index``, say) can take the name of the gallery page.
LETTERS = "letters"
SUFFIXES = (".eml", ".html", ".txt")
_OWN_NAME = re.compile(r"index\.html|letters/[A-Za-z0-9][A-Za-z0-9._-]*\.(?:eml|html|txt)")


@dataclass
class PreviewEntry:
    """One row of the index page."""

    id: str
    country: str
    recipients: list[str]
    #: The To and Cc headers as the ``.eml`` has them, decoded: names and
    #: addresses ("" when there is no Cc).
    to: str
    cc: str
    subject: str
    language: str
    #: The From header as the ``.eml`` has it: whom the mission sees the letter from.
    sender: str = ""
    warnings: list[str] = field(default_factory=list)
    placeholder_addresses: int = 0
    #: The files the letter carries: name, size and a link from the preview folder.
    attachments: list[dict[str, object]] = field(default_factory=list)

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


def _written_before(folder: Path) -> set[str]:
    """The files (relative paths) an earlier preview wrote into ``folder``, from its marker.

    A folder that holds files and no marker is refused: outreach did not write it.
    Only names a preview writes are believed (``index.html`` and
    ``letters/<name>``): a marker edited to name anything else names nothing.
    """
    marker = folder / MARKER
    if marker.is_file() and not marker.is_symlink():
        heading, *lines = marker.read_text(encoding="utf-8").splitlines() or [""]
        if heading == "written by outreach preview":  # an older preview, which kept no list
            return {p.name for p in folder.iterdir() if p.suffix in SUFFIXES}
        return {line for line in lines if _OWN_NAME.fullmatch(line)}
    if folder.exists() and any(folder.iterdir()):
        raise PreviewError(
            f"PREVIEW_DIR={str(folder)!r} holds files that outreach did not write; "
            "choose an empty or new folder"
        )
    return set()


def _put_in_place(built: Path, folder: Path, earlier: set[str]) -> None:
    """Move the new preview's files into ``folder``, removing the earlier preview's.

    Only files that an earlier preview listed in its marker are ever
    removed or written over: anything else in the folder is someone's, and
    is left as it is. A file of someone else's where a new one must go
    stops the preview before anything is moved.
    """
    new = {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()}
    letters = folder / LETTERS
    if letters.is_symlink() or (letters.exists() and not letters.is_dir()):
        raise PreviewError(f"{letters}: not a folder that outreach wrote; move it away")
    for name in sorted(new - earlier - {MARKER}):
        if os.path.lexists(folder / name):
            raise PreviewError(
                f"{folder / name}: a file that outreach did not write is in the way; "
                "move it, or choose another PREVIEW_DIR"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)  # the folder is not whole until it is back
    for name in sorted(earlier - new):
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    letters.mkdir(exist_ok=True)
    for name in sorted(new - {MARKER}):
        os.replace(built / name, folder / name)
    os.replace(built / MARKER, folder / MARKER)


def check_folder(folder: Path, log_dir: Path) -> None:
    """Refuse a preview folder that is no folder, or that shares a folder with the send log.

    A preview replaces its own files; the send log is what keeps letters
    from going twice, and must never be in the way of that.
    """
    if folder.is_symlink():
        raise PreviewError(
            f"PREVIEW_DIR={str(folder)!r} is a symbolic link; give the folder it points to"
        )
    if folder.exists() and not folder.is_dir():
        raise PreviewError(f"PREVIEW_DIR={str(folder)!r} is a file, not a folder")
    previews, logs = folder.resolve(), log_dir.resolve()
    if previews == logs or previews in logs.parents or logs in previews.parents:
        raise PreviewError(
            f"PREVIEW_DIR={str(folder)!r} and LOG_DIR={str(log_dir)!r} overlap: the previews "
            "and the send log must be in folders of their own; choose another PREVIEW_DIR"
        )


def write_previews(
    composed: Iterable[Composed],
    folder: Path,
    campaign: str,
    *,
    log_dir: Path,
    progress: Callable[[int], None] = lambda done: None,
) -> PreviewResult:
    """Write ``index.html`` and, per contact, ``letters/<id>.eml``, ``.html`` and ``.txt``.

    The files are written to a new folder beside ``folder`` and moved into
    it at the end, so a failed preview leaves the last good one intact.
    Only one letter at a time is held in memory: the index page is written
    from the files, so memory stays flat however long the list.
    """
    check_folder(folder, log_dir)
    earlier = _written_before(folder)
    with writing(folder, PreviewError):
        folder.parent.mkdir(parents=True, exist_ok=True)
        built = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        (built / LETTERS).mkdir()
        entries: list[PreviewEntry] = []
        errors: list[OutreachError] = []
        for done, item in enumerate(composed, start=1):
            progress(done)
            if item.error is not None:
                errors.append(item.error)
                continue
            _write_letter(built, folder, item, entries)
        if errors:
            raise OutreachError(*problems_of(errors))
        result = PreviewResult(folder=folder, entries=entries)
        _write_index(built, result, campaign)
        names = ["index.html", *(f"{LETTERS}/{e.id}{s}" for e in entries for s in SUFFIXES)]
        (built / MARKER).write_text(
            "written by outreach preview; these files are its own:\n" + "\n".join(names) + "\n",
            encoding="utf-8",
        )
        _put_in_place(built, folder, earlier)
        return result
    except OSError as err:
        where = err.filename or folder
        raise PreviewError(f"{where}: cannot be written ({err.strerror})") from err
    finally:
        shutil.rmtree(built, ignore_errors=True)


def _write_letter(
    built: Path, folder: Path, composed: Composed, entries: list[PreviewEntry]
) -> None:
    """One letter's three files, and its row of the index (without the letter)."""
    assert composed.rendered is not None
    assert composed.letter is not None
    contact, rendered, letter = composed.contact, composed.rendered, composed.letter
    letters = built / LETTERS
    (letters / f"{contact.id}.eml").write_bytes(letter.data)
    (letters / f"{contact.id}.html").write_text(rendered.html, encoding="utf-8")
    (letters / f"{contact.id}.txt").write_text(rendered.text, encoding="utf-8")
    shown = dict(letter.shown)
    entries.append(
        PreviewEntry(
            id=contact.id,
            country=contact.country,
            recipients=list(letter.recipients),
            to=shown.get("To", ""),
            cc=shown.get("Cc", ""),
            sender=shown.get("From", ""),
            subject=letter.subject,
            language=rendered.language,
            warnings=letter_warnings(rendered, letter, contact),
            placeholder_addresses=sum(1 for a in letter.recipients if is_placeholder(a)),
            attachments=[
                {"name": name, "size": size, "href": os.path.relpath(path, folder.resolve())}
                for name, size, path in letter.attachments
            ],
        )
    )


#: Stands for the letters' data in the page until they are streamed in.
_DATA_MARK = "\ue000letters\ue001"


def _read_back(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as handle:  # every \r kept
        return handle.read()


#: What the page shows of a letter's entry, under the same names.
_SHOWN = ("id", "country", "to", "cc", "subject", "language", "warnings", "attachments")


def _letter_data(built: Path, entry: PreviewEntry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in _SHOWN} | {
        "from": entry.sender,
        "html": _read_back(built / LETTERS / f"{entry.id}.html"),
        "text": _read_back(built / LETTERS / f"{entry.id}.txt"),
    }


def _write_index(built: Path, result: PreviewResult, campaign: str) -> None:
    """``index.html``, with every letter in it, one letter in memory at a time.

    The page is rendered with a mark where the letters' JSON goes; the JSON
    is then written letter by letter, each exactly as Jinja's ``tojson``
    writes it (sorted keys, HTML-safe), so the page is the one that
    rendering it with every letter in memory would give.
    """
    page = PAGES.get_template("index.html.j2").render(
        result=result, campaign=campaign, letters=[_DATA_MARK]
    )
    dumps_kwargs = PAGES.policies["json.dumps_kwargs"]
    mark = str(htmlsafe_json_dumps([_DATA_MARK], **dumps_kwargs))
    if page.count(mark) != 1:
        raise TemplateError("index.html.j2: the letters' data must appear once, as letters|tojson")
    before, after = page.split(mark)
    with (built / "index.html").open("w", encoding="utf-8") as out:
        out.write(before + "[")
        for number, entry in enumerate(result.entries):
            letter = str(htmlsafe_json_dumps(_letter_data(built, entry), **dumps_kwargs))
            out.write(f", {letter}" if number else letter)
        out.write("]" + after)
