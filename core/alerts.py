"""Alerts: what a technician or operator must look at (a camera's clock off, the disk
nearly full, a track of a source in no output). One Redis stream every role writes to,
kept 90 days; each entry has `kind`, `at` and a `message` a person can act on."""

from __future__ import annotations

import time
from typing import Any

from core.audit import EventLog

ALERTS_STREAM = "alerts"
ALERTS_MAX_AGE_S = 90 * 86400


async def alert(events: EventLog, kind: str, message: str, **details: Any) -> str:
    """Append one alert; returns its id."""
    entry = {"kind": kind, "at": time.time(), **details, "message": message}
    return await events.append_event(ALERTS_STREAM, entry, ALERTS_MAX_AGE_S)
