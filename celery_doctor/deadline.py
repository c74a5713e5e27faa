"""One deadline for a whole run: every network call gets what is left of it."""
from __future__ import annotations

import time


class Deadline:
    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self.seconds = float(seconds)
        self._clock = clock
        self._end = clock() + self.seconds

    def remaining(self, floor: float = 0.0) -> float:
        return max(floor, self._end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self._end

    def budget(self, cap: float | None = None, floor: float = 0.05) -> float:
        """Seconds a single call may take: what is left, at most `cap`, at least `floor`."""
        left = self.remaining(floor)
        return min(left, cap) if cap is not None else left

    def __repr__(self) -> str:
        return f"Deadline({self.seconds:g}s, {self.remaining():.2f}s left)"
