"""Lines fitted to the terminal they are shown on: broken between words, never inside one.

A terminal breaks a line that is too long at its last column, in the
middle of a word or an address ("templates/fr/ fol" / "der"). The plan,
the summaries and the errors are written one line per fact, some longer
than 80 columns; on a terminal each such line is broken between words
instead, its continuation lined up under the value it continues
("Sender domain: not checked: …" goes on under "not"). A word longer than
the line (an address, a path) stays whole. Output to a file or a pipe is
left exactly as written, one line per fact, for logs and scripts.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from typing import TextIO

from rich.cells import cell_len

#: A line's label ("Send log:", "  Sender domain:") and the spaces after it:
#: a broken line goes on where the value begins.
_LABEL = re.compile(r" *[A-Z][A-Za-z -]{0,24}: +(?=\S)")
#: Below this width, breaking lines would make them harder to read, not easier.
_NARROWEST = 30


def fit(line: str, width: int) -> str:
    """``line`` broken between words into lines of at most ``width`` columns.

    Columns are counted as a terminal counts them (a CJK character takes
    two). A line holding terminal controls (colours, a progress bar) is
    someone else's layout and is left alone, as is one that fits.
    """
    if width < _NARROWEST or "\x1b" in line or "\r" in line or cell_len(line) <= width:
        return line
    # A broken line goes on under its value, or a little in from where it starts.
    label = _LABEL.match(line)
    hang = label.end() if label else len(line) - len(line.lstrip(" ")) + 2
    indent = " " * min(hang, width // 3)
    lines: list[str] = []
    current = ""
    for space, word in re.findall(r"(\s*)(\S+)", line):
        if not current:
            current = space + word if not lines else indent + word
        elif cell_len(current + space + word) <= width:
            current += space + word
        else:
            lines.append(current)
            current = indent + word
    lines.append(current)
    return "\n".join(lines)


class FittedLines(io.TextIOBase):
    """A terminal's text stream that writes each whole line through ``fit``.

    What is written without an end of line (a question, before the answer
    is typed) goes out as it is when flushed.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.stream.errors

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *whole, self._pending = (self._pending + text).split("\n")
        if whole:
            width = self._width()
            self.stream.write("".join(fit(line, width) + "\n" for line in whole))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.stream.write(self._pending)
            self._pending = ""
        self.stream.flush()

    def _width(self) -> int:
        """The terminal's width now (it may have been resized since the last line)."""
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, io.UnsupportedOperation):
            return shutil.get_terminal_size().columns


@contextmanager
def fitted_to_terminal() -> Iterator[None]:
    """Standard output and error, where each is a terminal, written through ``FittedLines``."""
    with ExitStack() as stack:
        for stream, redirect in ((sys.stdout, redirect_stdout), (sys.stderr, redirect_stderr)):
            if _is_terminal(stream):
                fitted = FittedLines(stream)
                stack.enter_context(redirect(fitted))
                stack.callback(fitted.flush)
        yield


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, AttributeError):
        return False
