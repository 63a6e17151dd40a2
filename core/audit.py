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
