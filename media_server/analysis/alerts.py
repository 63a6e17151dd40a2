"""Security alerts as entries of the one alerts stream (core/alerts.py), and live.

An alert is an episode: its entries share `alert` (its id) and say what happened to it,
`phase` "start" (stream, court, type, start, score, snapshot), "clip" (the clip is
stored), "end" (end, the episode's best score) and "ack" (who, note). Each entry also
has `kind` (= the type) and `at`, as every alert entry has, so readers of the stream that
know only those keep working. `merge` folds the entries of one alert into the API's item.

Live: each entry is also published on the pub/sub channel LIVE_CHANNEL as
`{"type": "alert", "phase": ..., "alert": <the item as it stands>}`, the item carrying
`court` so a websocket can hold it to the viewer's scope, and its snapshot and clip as
signed URLs (the entries keep object keys). Objects: the snapshot at
`snapshots/{id}.jpg`, the clip at `events/{id}/clip.mp4` (DESIGN.md §6).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from core.alerts import ALERTS_MAX_AGE_S, ALERTS_STREAM
from storage.state import StateStore

log = logging.getLogger(__name__)

LIVE_CHANNEL = "alerts"
PHASES = ("start", "clip", "end", "ack")


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def snapshot_key(alert_id: str) -> str:
    return f"snapshots/{alert_id}.jpg"


def clip_key(alert_id: str) -> str:
    return f"events/{alert_id}/clip.mp4"


def item_of(entry_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The API's item for an alert's start entry, or for any other alert entry (a dropped
    track, a clock offset: `type` is its `kind`, its start its `at`)."""
    return {
        "id": str(entry.get("alert") or entry_id),
        "stream": entry.get("stream"),
        "type": entry.get("type") or entry.get("kind"),
        "court": entry.get("court", ""),
        "start": entry.get("start", entry.get("at")),
        "end": entry.get("end"),
        "score": entry.get("score"),
        "snapshot": entry.get("snapshot"),
        "clip": entry.get("clip"),
        "message": entry.get("message", ""),
        "ack": None,
    }


def merge(item: dict[str, Any], entry: dict[str, Any]) -> None:
    """Fold a later entry of the same alert into its item."""
    phase = entry.get("phase")
    if phase == "end":
        item["end"] = entry.get("end")
        item["score"] = entry.get("score", item["score"])
    elif phase == "clip":
        item["clip"] = entry.get("clip")
    elif phase == "ack":
        item["ack"] = {k: entry.get(k) for k in ("who", "at", "note")}


class AlertWriter:
    """Writes an alert's entries and publishes each one live."""

    def __init__(self, state: StateStore, node: str, sign: Callable[[str], Awaitable[str]]) -> None:
        self._state = state
        self._node = node
        self._sign = sign  # object key -> a URL a viewer may GET for a while
        self._items: dict[str, dict[str, Any]] = {}  # open alerts, as the API shows them

    async def start(
        self,
        alert_id: str,
        stream: str,
        court: str,
        kind: str,
        start: float,
        score: float,
        snapshot: str | None,
    ) -> None:
        entry = {
            "kind": kind,
            "type": kind,
            "phase": "start",
            "alert": alert_id,
            "at": time.time(),
            "stream": stream,
            "court": court,
            "start": start,
            "score": score,
            "snapshot": snapshot,
            "node": self._node,
            "message": f"stream {stream}: {kind.replace('_', ' ')}",
        }
        await self._append(entry)
        self._items[alert_id] = item_of(alert_id, entry)
        await self._publish(alert_id, "start")

    async def update(self, alert_id: str, kind: str, phase: str, **fields: Any) -> None:
        entry = {"kind": kind, "phase": phase, "alert": alert_id, "at": time.time(), **fields}
        await self._append(entry)
        item = self._items.get(alert_id)
        if item is not None:
            merge(item, entry)
            await self._publish(alert_id, phase)
            if item["end"] is not None and item["clip"] is not None:
                del self._items[alert_id]  # nothing more will change it here

    def forget(self, alert_id: str) -> None:
        self._items.pop(alert_id, None)

    async def _append(self, entry: dict[str, Any]) -> None:
        await self._state.append_event(ALERTS_STREAM, entry, ALERTS_MAX_AGE_S)

    async def _publish(self, alert_id: str, phase: str) -> None:
        item = dict(self._items[alert_id])
        for name in ("snapshot", "clip"):
            if item[name]:
                item[name] = await self._sign(item[name])
        await self._state.publish(LIVE_CHANNEL, {"type": "alert", "phase": phase, "alert": item})
