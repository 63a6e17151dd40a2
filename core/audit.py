"""The audit trail (DESIGN.md §7): every view, switch, dispatch, cut, export and deletion.

Entries go to a Redis stream kept for ten years: the trail is evidence and outlives the
recordings it speaks of. Any role writes through `audit()`; the admin API reads it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

AUDIT_STREAM = "audit"
AUDIT_MAX_AGE_S = 10 * 365 * 86400


class EventLog(Protocol):
    """What the audit trail needs of the state store (storage.state.StateStore has it)."""

    async def append_event(
        self, stream: str, event: Mapping[str, Any], max_age_s: float, exact: bool = False
    ) -> str: ...


async def audit(events: EventLog, action: str, who: str, **details: Any) -> None:
    """One entry of the audit trail: what was done, by whom, when, and its details."""
    entry = {"action": action, "who": who, "at": time.time(), **details}
    await events.append_event(AUDIT_STREAM, entry, AUDIT_MAX_AGE_S)


class FirstSeen:
    """Which viewers were seen lately: a viewing is audited at its first request, not at
    each of the several a second an LL-HLS player makes. A viewer (stream, who, address)
    is new again after `idle_s` without a request. In memory and bounded: a flood of
    made-up viewers clears it (and is audited again), it never grows without end."""

    def __init__(self, idle_s: float = 60.0, limit: int = 10_000) -> None:
        self.idle_s = idle_s
        self.limit = limit
        self._last: dict[tuple[str, ...], float] = {}

    def first(self, *key: str, now: float | None = None) -> bool:
        """True when this key was not seen in the last `idle_s`; remembers it either way."""
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if len(self._last) >= self.limit and last is None:
            self._last = {k: t for k, t in self._last.items() if now - t < self.idle_s}
            if len(self._last) >= self.limit:
                self._last.clear()
        self._last[key] = now
        return last is None or now - last >= self.idle_s
