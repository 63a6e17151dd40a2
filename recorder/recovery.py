"""Crash recovery: what a killed writer left in a recording's spool goes back on its
upload queue, and where its media ended is found, so the resumed writer continues the
media timeline and opens its recorder-restart gap there.

The spool's journal says what was left (recorder/spool.py): init segments not uploaded,
closed segments not listed in the manifest yet, and the open segment's parts, which are
closed as a segment of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder.manifest import InitEntry, Manifest, sha256_hex
from recorder.spool import PendingSegment, Spool
from recorder.uploads import UploadJob, UploadQueue


@dataclass(frozen=True, slots=True)
class Recovered:
    next_seq: int  # the next free segment number
    media_end: float  # seconds on the media timeline where the last kept media ends
    wallclock_end: float  # wall-clock of that end: the restart gap starts there


def recover(spool: Spool, manifest: Manifest, uploads: UploadQueue, next_seq: int) -> Recovered:
    """Queue what the spool holds that the manifest does not list, in order: inits, closed
    segments, then the open one, closed as it was left."""
    _queue_inits(spool, manifest, uploads)
    ends = [manifest.wallclock_end or manifest.opened_at]
    listed = {s.seq for s in manifest.segments}
    queued: list[PendingSegment] = []
    for pending in spool.pending_segments():
        if pending.seq in listed:
            spool.done(pending)  # uploaded and in the manifest already
            continue
        uploads.add(UploadJob.for_segment(manifest.recording_id, pending))
        queued.append(pending)
        if not pending.meta.get("backfilled"):  # those lie back in a gap
            ends.append(pending.meta["start"] + pending.meta["duration"])
        next_seq = max(next_seq, pending.seq + 1)
    for left in spool.open_segments():
        if not left.parts:
            spool.drop_open(left.seq)
            continue
        meta = {**left.meta, "duration": left.duration}
        pending = spool.put_segment(left.seq, b"".join(left.parts), meta)
        uploads.add(UploadJob.for_segment(manifest.recording_id, pending))
        queued.append(pending)
        ends.append(meta["start"] + left.duration)
        next_seq = max(next_seq, left.seq + 1)
    live = [p for p in queued if p.seq not in listed and not p.meta.get("backfilled")]
    media_end = manifest.media_end + sum(p.meta["duration"] for p in live)
    return Recovered(next_seq, media_end, max(ends))


def _queue_inits(spool: Spool, manifest: Manifest, uploads: UploadQueue) -> None:
    listed = {i.name for i in manifest.inits}
    for path in spool.pending_inits():
        name = path.name.removeprefix("init-file-")
        if name not in listed:
            data = path.read_bytes()
            entry = InitEntry(name, sha256_hex(data), len(data), [])
            uploads.add(UploadJob.for_init(manifest.recording_id, entry, path))
