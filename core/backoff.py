"""Reconnect waits for anything that dials out again after a failure."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Reconnect waits doubling from first_s up to cap_s, each spread by +-jitter so
    cameras that dropped together (a switch reboot) do not all call back at once."""

    def __init__(
        self,
        first_s: float = 0.5,
        cap_s: float = 30.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.first_s, self.cap_s, self.jitter = first_s, cap_s, jitter
        self._rng = rng
        self.attempt = 0

    def next(self) -> float:
        base = min(self.cap_s, self.first_s * 2.0 ** min(self.attempt, 64))
        self.attempt += 1
        return base * (1.0 - self.jitter + 2.0 * self.jitter * self._rng())

    def reset(self) -> None:
        self.attempt = 0
