"""Letters composed once, for the check, and kept on disk until they are sent.

``outreach send`` composes and checks every letter before it sends the first
(a letter that cannot be built must stop the run while nothing has gone).
Composing them all again to send them would double the work of a send, so
when the letters will all go out soon after the check, the check keeps each
one here and the send takes them back, in the same order: the very bytes
that were checked are the bytes that are sent.

The letters are written to an anonymous file beside the send log (no name
in any folder, readable by this process only, gone when it ends, however
it ends), one at a time, so memory stays flat however long the list.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from outreach.compose import Composed
from outreach.message import Letter
from outreach.settings import Settings

#: Letters composed for the check are sent from the spool only when all of
#: them can go within this many minutes at the rate limit: the ``Date`` each
#: carries is the time it was composed, and should be close to when it goes.
#: At a slower rate each letter is composed again just before it is sent.
SPOOL_MINUTES = 10


def worth_spooling(settings: Settings, count: int) -> bool:
    """Whether ``count`` letters may be sent as composed for the check."""
    rate = settings.send_rate_per_minute
    return not rate or count / rate <= SPOOL_MINUTES


class Spool:
    """Composed letters, written in order and read back in the same order."""

    def __init__(self, folder: Path | None = None) -> None:
        # In ``folder`` (the send log's, on disk), not in a temporary folder
        # that may be memory: a long campaign's letters take hundreds of MB.
        # Closed by close() or the with block, like the file object it wraps.
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix=".outreach-spool-", dir=folder)  # noqa: SIM115
        self.count = 0

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def keep(self, letter: Letter) -> None:
        pickle.dump(letter, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self.count += 1

    def keeping(self, composed: Iterable[Composed]) -> Iterator[Composed]:
        """The same stream, each letter that was composed kept on its way past."""
        for item in composed:
            if item.letter is not None:
                self.keep(item.letter)
            yield item

    def letters(self) -> Iterator[Letter]:
        """Every letter kept, in the order kept, one in memory at a time."""
        self._file.flush()
        self._file.seek(0)
        for _ in range(self.count):
            letter = pickle.load(self._file)  # noqa: S301 - written by this process, unnamed
            assert isinstance(letter, Letter)
            yield letter
