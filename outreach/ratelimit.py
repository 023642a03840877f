"""Spacing messages so a provider's per-minute limit is never exceeded."""

from __future__ import annotations

import math
import threading
from collections import deque

from outreach.clock import Clock

#: Headroom on the 60-second window, so that a receiving server that counts
#: arrival times, which jitter by milliseconds, never sees one message too many.
WINDOW_SECONDS = 60.25


class RateLimiter:
    """At most ``per_minute`` messages in any 60 seconds, evenly spaced.

    Shared by every connection of a run. Messages are spaced 60/N seconds
    apart rather than sent in bursts, and a sliding window of the last N
    start times guarantees the limit even when the spacing is disturbed
    (a pause, a slow connection catching up).
    """

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._lock = threading.Lock()
        self._next = -math.inf
        self._paused_until = -math.inf
        self._starts: deque[float] = deque()

    @property
    def _window_size(self) -> int:
        return max(1, math.floor(self.per_minute)) if self.per_minute else 0

    def acquire(self) -> None:
        """Wait until one more message may start."""
        with self._lock:
            now = self.clock.monotonic()
            start = max(now, self._next, self._paused_until)
            size = self._window_size
            if size:
                while self._starts and self._starts[0] <= start - WINDOW_SECONDS:
                    self._starts.popleft()
                if len(self._starts) >= size:
                    start = max(start, self._starts[-size] + WINDOW_SECONDS)
                self._starts.append(start)
                while len(self._starts) > size:
                    self._starts.popleft()
            self._next = start + self._interval
        self.clock.sleep(start - now)

    def slow_down(self, pause: float) -> None:
        """The server asked us to slow down (421, 4.7.x): every connection pauses.

        The pause is the retry's back-off; after it, the rate is halved for the
        rest of the run (an unlimited rate becomes one a second).
        """
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock.monotonic() + pause)
            if self.per_minute:
                self.per_minute = max(1.0, self.per_minute / 2)
            else:
                self.per_minute = 60.0
            self._interval = 60.0 / self.per_minute
