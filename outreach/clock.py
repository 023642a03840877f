"""Time, in one place, so that tests can replace it and never sleep for long."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, for spacing messages."""

    def sleep(self, seconds: float) -> None:
        """Wait; the rate limiter and the retry back-off both wait through here."""

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait like ``sleep``, but return at once (True) when ``event`` is set.

        A run that is stopped (Ctrl-C) does not sit out a back-off first.
        """


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(seconds, 0.0))
