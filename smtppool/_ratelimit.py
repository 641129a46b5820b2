"""A pool-wide limit on messages per period, shared by every thread."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """Let at most ``limit`` messages start in any window of ``period`` seconds.

    Each caller books the earliest moment it may send, under a lock, then sleeps
    until then without it, so callers go in the order they asked and a slow
    sleeper holds up nobody. The booked moments of the last ``limit`` messages are
    kept; a new one is at least ``period`` after the oldest of them.
    """

    def __init__(
        self,
        limit: int,
        period: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._period = period
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._booked: deque[float] = deque(maxlen=limit)

    def wait(self) -> float:
        """Wait for this message's turn; return the seconds waited."""
        with self._lock:
            now = self._clock()
            at = now
            if len(self._booked) == self._booked.maxlen:
                at = max(now, self._booked[0] + self._period)
            self._booked.append(at)

        delay = at - now
        if delay > 0:
            self._sleep(delay)
        return delay
