"""Limits on guessing a secret (a password, a join code): failures counted per subject (a
user name, a client address, a room) in Redis, so every process of a cluster counts the
same; past the free failures, the subject is held for a back-off that doubles with each
further failure. While held, attempts are refused before the secret is even checked,
and a hold once seen is remembered in the process until it ends: a flood of attempts
costs a dictionary look-up each, not a Redis round trip (a hold only ever grows, so the
memory cannot let through what Redis would refuse).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from storage.state import StateStore

MAX_REMEMBERED = 100_000


@dataclass(frozen=True)
class Limit:
    """How many failures of one subject in `window_s` are free, and the back-off after."""

    scope: str  # what kind of subject: "signin-user", "signin-ip", "arraignment-join"
    free: int
    window_s: float = 900.0
    first_hold_s: float = 1.0
    max_hold_s: float = 900.0

    def hold_s(self, failures: int) -> float:
        """The hold after the failure numbered `failures` (0 while still free)."""
        if failures < self.free:
            return 0.0
        doublings = min(failures - self.free, 30)
        return min(self.max_hold_s, self.first_hold_s * float(2**doublings))


@dataclass(frozen=True)
class Lockout:
    """A hold that a failure has just started: what the audit trail is told."""

    scope: str
    subject: str
    failures: int
    hold_s: float


class Attempts:
    """Per-subject attempt limits over the state store; subjects are named by scope
    (`{"signin-user": "ada", "signin-ip": "10.0.0.1"}`)."""

    def __init__(self, state: StateStore, *limits: Limit) -> None:
        self._state = state
        self._limits = {limit.scope: limit for limit in limits}
        self._held_until: dict[tuple[str, str], float] = {}  # monotonic end of known holds

    async def wait_s(self, subjects: Mapping[str, str]) -> float:
        """Seconds until these subjects may try again; 0 when they may now."""
        now = time.monotonic()
        known = [self._held_until.get(item, 0.0) - now for item in subjects.items()]
        if max(known, default=0.0) > 0:
            return max(known)
        waits = [await self._state.held_for(scope, id) for scope, id in subjects.items()]
        for item, wait in zip(subjects.items(), waits, strict=True):
            if wait > 0:
                self._remember(item, now + wait)
        return max(waits, default=0.0)

    def _remember(self, item: tuple[str, str], until: float) -> None:
        if len(self._held_until) >= MAX_REMEMBERED:  # many addresses: forget the ended ones
            now = time.monotonic()
            self._held_until = {k: t for k, t in self._held_until.items() if t > now}
            if len(self._held_until) >= MAX_REMEMBERED:
                return
        self._held_until[item] = until

    async def failed(self, subjects: Mapping[str, str]) -> list[Lockout]:
        """Count a failure of each subject; the holds it starts."""
        started = []
        for scope, id in subjects.items():
            limit = self._limits[scope]
            failures = await self._state.count_hit(scope, id, limit.window_s)
            hold_s = limit.hold_s(failures)
            if hold_s:
                await self._state.hold(scope, id, hold_s)
                self._remember((scope, id), time.monotonic() + hold_s)
                started.append(Lockout(scope, id, failures, hold_s))
        return started

    async def succeeded(self, subjects: Mapping[str, str]) -> None:
        """Forget the failures of these subjects."""
        for scope, id in subjects.items():
            await self._state.forget_hits(scope, id)
