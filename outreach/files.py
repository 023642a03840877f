"""Writing a file whole: the old one or the new one on the disk, never half of one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from outreach.errors import OutreachError


@contextlib.contextmanager
def writing(
    path: object, error: type[OutreachError] = OutreachError, then: str = ""
) -> Iterator[None]:
    """Raise an OSError inside as ``error("<path>: cannot be written (<reason>)<then>")``."""
    try:
        yield
    except OSError as err:
        raise error(f"{path}: cannot be written ({err.strerror or err}){then}") from err


def write_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    check: Callable[[Path], None] = lambda written: None,
) -> None:
    """Replace ``path`` with ``data``: written beside it, synced, then renamed over it.

    The new file has ``mode`` from its first moment and is made afresh
    (``O_EXCL``, never a file someone else prepared, nor one behind a
    link). ``check`` may look at the written file and raise before it
    replaces the old one, which then stays as it was. The rename is synced
    too, so that it survives a power cut. Raises OSError; callers say which
    file and what it means.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(descriptor, mode)  # exactly ``mode``, whatever the umask
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        check(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
