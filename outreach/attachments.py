"""Files sent with the letter: the campaign's own (ATTACHMENTS) and each contact's.

A file is refused before anything is sent when it is missing, unreadable, a
folder, empty, outside the working folder (a link included: the letter must
carry what staff see in the project), or so large that the letter could not
go. A hidden file or folder (``.env``, ``.git/``, ``.venv/``) and any
settings file (``*.env``) is refused too, whatever the cell's template made
of its name: those hold passwords, never a mission's annex. Each problem
names the setting or the contact, the column and the path.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from pathlib import Path

from outreach.headers import unsafe_header_reason


class AttachmentProblem(ValueError):
    """Why a file cannot be attached."""


@dataclass(frozen=True)
class Attachment:
    """One file as it goes into the letter."""

    path: Path
    name: str
    maintype: str
    subtype: str
    data: bytes = field(repr=False)
    #: The file itself, resolved (for a link to it in the preview).
    source: Path = Path()

    @property
    def size(self) -> int:
        return len(self.data)


def load(text: str, base: Path, max_bytes: int) -> Attachment:
    """The file ``text`` names (relative to ``base``), read and typed.

    Raises AttachmentProblem saying what is wrong with it.
    """
    path = base / text
    unsafe = unsafe_header_reason(path.name)
    if unsafe:
        # The name goes into the letter's headers (Content-Disposition).
        raise AttachmentProblem(f"has a name that {unsafe}; rename the file")
    working = Path.cwd().resolve()
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise AttachmentProblem("no such file") from None
    except (OSError, RuntimeError) as err:
        raise AttachmentProblem(f"cannot be read ({err})") from None
    if resolved != working and working not in resolved.parents:
        raise AttachmentProblem(
            "lies outside the working folder (through a link, or '..'); put the file in the project"
        )
    hidden = [part for part in resolved.relative_to(working).parts if part.startswith(".")]
    if hidden or resolved.name.lower().endswith(".env"):
        raise AttachmentProblem(
            f"is {'a hidden file' if hidden else 'a settings file'} "
            f"({(hidden or [resolved.name])[0]}), which may hold passwords: a letter never "
            "carries one; name the annex itself"
        )
    if resolved.is_dir():
        raise AttachmentProblem("is a folder, not a file")
    if not resolved.is_file():
        raise AttachmentProblem("is not a regular file")
    size = resolved.stat().st_size
    if size == 0:
        raise AttachmentProblem(
            "is empty (0 bytes): an export or a copy went wrong; attach it again"
        )
    if size > max_bytes:
        raise AttachmentProblem(
            f"is {size / 1024 / 1024:.1f} MB, more than the {max_bytes / 1024 / 1024:.0f} MB a "
            "letter may carry (MAX_MESSAGE_MB)"
        )
    try:
        data = resolved.read_bytes()
    except OSError as err:
        raise AttachmentProblem(f"cannot be read ({err.strerror})") from None
    kind, encoding = mimetypes.guess_type(path.name)
    if kind is None or encoding is not None:
        kind = "application/octet-stream"
    maintype, _, subtype = kind.partition("/")
    return Attachment(Path(text), path.name, maintype, subtype, data, resolved)
