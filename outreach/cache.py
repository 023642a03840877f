"""Work kept between runs in the user's cache folder: never needed, always checked.

What is kept is what a run would otherwise work out again from the same
input: the spam score of a letter that has not changed (``checks.py``), so
that ``make send`` right after ``make check`` does not wait for
SpamAssassin a second time. Each entry starts with the
SHA-256 of the rest, so a damaged or half-written entry is never used; an
entry that cannot be read or written is simply worked out again. Deleting
the folder loses nothing but time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/outreach, or ~/.cache/outreach."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "outreach"


def file_stamp(path: Path) -> str:
    """A file's path, size and time of change: what a kept entry that depends
    on the file is filed under, as Python itself keys its bytecode cache."""
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def recall(kind: str, name: str, *, max_age: float | None = None) -> str | None:
    """The text kept as ``kind/name``, when it is there, whole, and recent enough."""
    path = cache_folder() / kind / name
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if max_age is not None and time.time() - os.fstat(handle.fileno()).st_mtime > max_age:
                return None
            digest, _, text = handle.read().partition("\n")
    except (OSError, UnicodeDecodeError):
        return None
    return text if hashlib.sha256(text.encode()).hexdigest() == digest else None


def keep(kind: str, name: str, text: str) -> None:
    """Keep ``text`` as ``kind/name`` for later runs, if the folder lets us.

    Written beside its place and moved there whole, readable by this user only.
    """
    path = cache_folder() / kind / name
    written = path.with_name(f".{name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with written.open("w", encoding="utf-8", newline="") as handle:
            handle.write(hashlib.sha256(text.encode()).hexdigest() + "\n" + text)
        os.replace(written, path)
    except OSError:  # a full disk, a read-only home: the next run works it out again
        with contextlib.suppress(OSError):
            written.unlink()
