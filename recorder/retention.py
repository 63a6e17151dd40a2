"""Retention: security recordings are deleted after their class's days; trial and
arraignment recordings never automatically (they are evidence: disk pressure raises an
alert instead). Every deletion is audited.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from core.alerts import ALERTS_MAX_AGE_S, ALERTS_STREAM
from core.audit import audit
from recorder.index import RecordingIndex
from storage.objects import ObjectStore
from storage.recording_keys import MANIFEST_NAME, manifest_key, recording_prefix

log = logging.getLogger(__name__)

NEVER_DELETED = ("trial", "arraignment")
DISK_ALERT_FREE = 0.10  # alert when less than this share of the data disk is free


async def apply_retention(
    store: ObjectStore,
    index: RecordingIndex,
    retention_days: dict[str, int],
    now: float | None = None,
) -> list[str]:
    """Delete closed recordings past their class's retention; returns their ids."""
    now = time.time() if now is None else now
    deleted: list[str] = []
    for stream_class, days in retention_days.items():
        if stream_class in NEVER_DELETED:
            continue  # config forbids it too; this is the second lock
        cutoff = now - days * 86400
        for record in await index.search(stream_class=stream_class, state="closed"):
            closed_at = float(record.get("closed_at") or now)
            if closed_at < cutoff:
                await delete_recording(
                    store, index, record["id"], "retention", f"{stream_class} kept {days} days"
                )
                deleted.append(record["id"])
    return deleted


async def delete_recording(
    store: ObjectStore, index: RecordingIndex, recording_id: str, who: str, reason: str
) -> None:
    """Objects first, the index entry last, so a crash half-way is retried next round."""
    objects = await store.list(recording_prefix(recording_id))
    for info in objects:
        if not info.key.endswith(MANIFEST_NAME):
            await store.delete(info.key)
    await store.delete(manifest_key(recording_id))
    await index.delete(recording_id)
    await audit(
        index.state, "delete", who, recording=recording_id, reason=reason, objects=len(objects)
    )
    log.info("recording %s deleted (%s)", recording_id, reason)


async def disk_pressure_alert(index: RecordingIndex, data_dir: Path) -> bool:
    """Raise an alert (nothing is deleted) when the data disk is nearly full."""
    usage = shutil.disk_usage(data_dir)
    if usage.free / usage.total >= DISK_ALERT_FREE:
        return False
    await index.state.append_event(
        ALERTS_STREAM,
        {
            "kind": "disk-pressure",
            "at": time.time(),
            "path": str(data_dir),
            "free_bytes": usage.free,
            "message": "recordings disk nearly full; trial recordings "
            "are never deleted automatically: add storage or move recordings",
        },
        ALERTS_MAX_AGE_S,
    )
    return True
