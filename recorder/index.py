"""The index of recordings in Redis: list and search without scanning the object store.

One record per recording (kind "recording"), indexed by court, room, case number, date
(UTC day of its start), stream, session and state. The manifest in the object store stays
the source of truth; the index is a catalogue, refreshed as segments land.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from recorder.manifest import Manifest
from storage.state import Record, StateStore

KIND = "recording"
INDEXED = (
    "court",
    "room",
    "case_number",
    "date",
    "stream",
    "session",
    "state",
    "node",
    "stream_class",
)


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class RecordingIndex:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        for field in INDEXED:
            state.declare_index(KIND, field)

    async def put(self, manifest: Manifest, node: str, **extra: Any) -> None:
        await self.state.put_record(
            KIND, manifest.recording_id, self.record(manifest, node, **extra)
        )

    @staticmethod
    def record(manifest: Manifest, node: str, **extra: Any) -> Record:
        """The index record of a manifest written by node."""
        return {
            "stream": manifest.stream,
            "session": manifest.session,
            "court": manifest.court,
            "room": manifest.room,
            "case_number": manifest.case_number,
            "stream_class": manifest.stream_class,
            "public": manifest.public,
            "state": manifest.state,
            "date": day_of(manifest.opened_at),
            "opened_at": manifest.opened_at,
            "closed_at": manifest.closed_at,
            "segments": len(manifest.segments),
            "duration": round(manifest.duration, 3),
            "gaps": len(manifest.gaps),
            "node": node,
            "updated": time.time(),
            **extra,
        }

    async def get(self, recording_id: str) -> Record | None:
        return await self.state.get_record(KIND, recording_id)

    async def search(self, **filters: str) -> list[Record]:
        """Recordings matching every given filter (court, room, case_number, date, ...),
        newest first. Uses the indexes; with no filter, the id set."""
        given = {k: v for k, v in filters.items() if v}
        unknown = set(given) - set(INDEXED)
        if unknown:
            raise ValueError(f"cannot search recordings by {', '.join(sorted(unknown))}")
        if not given:
            found = await self.state.list_records(KIND)
        else:
            (first, value), *rest = given.items()
            found = await self.state.find_records(KIND, first, value)
            found = [r for r in found if all(r.get(k) == v for k, v in rest)]
        return sorted(found, key=lambda r: float(r.get("opened_at") or 0), reverse=True)

    async def delete(self, recording_id: str) -> None:
        await self.state.delete_record(KIND, recording_id)
