"""Spacing messages so a provider's per-minute limit is never exceeded.

When the server says to slow down, the rate halves; after a quiet spell it
climbs back, step by step, to SEND_RATE_PER_MINUTE. A throttle is a
moment in the provider's day, not a verdict for the rest of the run.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from outreach.clock import Clock

#: Headroom on the 60-second window, so that a receiving server that counts
#: arrival times, which jitter by milliseconds, never sees one message too many.
WINDOW_SECONDS = 60.25
#: After this long without a throttle, the rate doubles again.
QUIET_SECONDS = 60.0
#: The slowest a throttled run goes: one letter a minute.
SLOWEST = 1.0


class RateLimiter:
    """At most ``per_minute`` messages in any 60 seconds, evenly spaced.

    Shared by every connection of a run. Messages are spaced 60/N seconds
    apart rather than sent in bursts, and a sliding window of the last N
    start times guarantees the limit even when the spacing is disturbed
    (a pause, a slow connection catching up). ``per_minute`` 0 is no limit.
    """

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self.clock = clock
        self.limit = per_minute
        #: The rate now: the limit, or less after a throttle (0: no limit).
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._next = -math.inf
        self._paused_until = -math.inf
        self._throttled_at = -math.inf
        self._unlimited_again_at = math.inf
        self._starts: deque[float] = deque()

    def acquire(self, stop: threading.Event | None = None) -> float:
        """Wait until one more message may start, or until ``stop`` is set.

        Returns the moment (``clock.monotonic``) the message was given to start.
        """
        with self._lock:
            now = self.clock.monotonic()
            self._recover(now)
            start = max(now, self._next, self._paused_until)
            while self._starts and self._starts[0] <= start - WINDOW_SECONDS:
                self._starts.popleft()
            if self.per_minute:
                size = max(1, math.floor(self.per_minute))
                if len(self._starts) >= size:
                    start = max(start, self._starts[-size] + WINDOW_SECONDS)
                self._next = start + 60.0 / self.per_minute
            self._starts.append(start)
        if stop is None:
            self.clock.sleep(start - now)
        else:
            self.clock.wait(stop, start - now)
        return start

    def throttle(self, pause: float) -> None:
        """The server asked to slow down: every connection pauses, then goes at half the rate.

        With no limit set, half the rate the run was going at in the last
        minute; never slower than one a minute.
        """
        with self._lock:
            now = self.clock.monotonic()
            self._paused_until = max(self._paused_until, now + pause)
            recent = sum(1 for t in self._starts if t > now - WINDOW_SECONDS)
            going = self.per_minute or max(float(recent), SLOWEST)
            if not self.per_minute:
                self._unlimited_again_at = going
            self.per_minute = max(SLOWEST, going / 2)
            self._throttled_at = now
            self._next = -math.inf

    def _recover(self, now: float) -> None:
        """After each quiet minute the rate doubles, up to the limit (or no limit) again."""
        if self.per_minute == self.limit or now - self._throttled_at < QUIET_SECONDS:
            return
        doubled = self.per_minute * 2
        # With no limit, the rate comes back to none once it reaches what the run went at.
        ceiling = self.limit or self._unlimited_again_at
        self.per_minute = doubled if doubled < ceiling else self.limit
        self._throttled_at = now


def sending_seconds(messages: int, per_minute: float) -> float | None:
    """How long ``messages`` take to go at ``per_minute``, or None with no limit (0).

    They are spaced evenly and the first goes at once, so N messages span
    N-1 intervals; retries and throttling would add to it.
    """
    if not per_minute:
        return None
    return max(0, messages - 1) * 60.0 / per_minute
