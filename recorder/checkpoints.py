"""An open recording's manifest as its uploads land, in the upload queue's order
(recorder/uploads.py): each stored object is listed, then checkpointed: the manifest goes
to the object store (and to the spool while the store may lack it: a restart during an
outage resumes from that copy), and the index record is refreshed now and then.

A live segment alone is checkpointed at most every `every_s` seconds (a timer catches the
last ones): the whole manifest was rewritten after each segment, a put as costly as the
segment's own, and growing with the trial (bench/RESULTS.md, issue 19). The segment is
durable in the store as soon as it is uploaded; until a checkpoint lists it, the spool
keeps it (no `d` line), so a restart lists it again (recorder/recovery.py). A gap, an
init, a backfilled segment or a filled gap is checkpointed at once. At the
end the closed manifest is sealed: signed after checking what is stored
(recorder/manifest_store.py); the media a resumed recording inherited from the run
before is hashed again then, the rest this process hashed as it uploaded it. A recording
that fails the checks is stored closed and unsigned, so verify fails and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from recorder.index import RecordingIndex
from recorder.manifest import InitEntry, Manifest, SegmentEntry, sha256_hex
from recorder.manifest_store import JSON, EvidenceError, save_manifest, seal_manifest
from recorder.signing import Signer
from recorder.spool import PendingSegment, Spool
from recorder.uploads import UploadJob, UploadQueue
from storage.objects import ObjectInfo
from storage.recording_keys import manifest_key

log = logging.getLogger(__name__)

INDEX_EVERY_S = 30.0  # the index is a catalogue: its segment count may lag this much
# how late the stored manifest may list a live segment (playback of an open recording
# reads the stored one); 0 checkpoints after every segment
CHECKPOINT_EVERY_S = 10.0


class ManifestCheckpoints:
    def __init__(
        self,
        manifest: Manifest,
        spool: Spool,
        uploads: UploadQueue,
        signer: Signer,
        index: RecordingIndex,
        node: str,
        every_s: float = CHECKPOINT_EVERY_S,
    ) -> None:
        self.manifest = manifest
        self.spool = spool
        self.uploads = uploads
        self.signer = signer
        self.index = index
        self.node = node
        self.every_s = every_s
        self._indexed: tuple[tuple[int, ...], float] | None = None  # what, when (monotonic)
        self._stored: tuple[tuple[int, ...], float] | None = None  # last checkpoint's too
        self._unlisted: list[PendingSegment] = []  # uploaded, not in a stored checkpoint yet
        self._timer: asyncio.TimerHandle | None = None
        # listed by an earlier run of the recording (resumed): hashed again before signing
        self.inherited: list[InitEntry | SegmentEntry] = []

    async def uploaded(self, job: UploadJob, info: ObjectInfo | None) -> None:
        """A job of the upload queue is done: list its object (info: what the store says
        of it), then checkpoint."""
        if job.checkpoint:
            await self.checkpoint()
            return
        if job.init is not None:
            self.manifest.inits.append(job.init)
            job.path.unlink(missing_ok=True)
        if job.segment is not None:
            assert info is not None
            meta = job.segment.meta
            backfilled = bool(meta.get("backfilled"))
            # seq from the job: a backfilled segment may take a seq while the live one
            # before it is still open (recorder/backfill.py)
            self.manifest.append(
                start=meta["start"],
                duration=meta["duration"],
                data_sha256=await _sha256(info, job),
                size=info.size,
                init=meta["init"],
                media_start=meta["media_start"],
                discontinuity=meta["discontinuity"],
                seq=job.segment.seq,
                backfilled=backfilled,
            )
            if backfilled:
                self.manifest.fill_gaps()  # before the checkpoint, so it says so at once
            self._unlisted.append(job.segment)
            if backfilled or self._due():
                await self.checkpoint()
            else:
                self._schedule()

    async def checkpoint(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        data = self.manifest.to_bytes()
        if self.uploads.outage_since is not None or self.spool.has_manifest:
            # the store may not have it: a restart during the outage resumes from this copy
            self._save_local(data)
        await save_manifest(self.uploads.put, self.manifest, self.signer, data)
        self._stored = (self._what(), time.monotonic())
        for pending in self._unlisted:  # listed now: the spool may let them go
            self.spool.done(pending)
        self._unlisted.clear()
        await self._refresh_index()

    def _save_local(self, data: bytes) -> None:
        try:
            self.spool.save_manifest(data)
        except OSError as exc:
            # a full disk: no local copy rather than one older than the store's (the
            # store's own, or its next put, then says what is listed)
            self.spool.forget_manifest()
            log.error(
                "recording %s: manifest not spooled (%s); the object store's is kept",
                self.manifest.recording_id,
                exc,
            )

    async def flush(self) -> None:
        """Checkpoint now if a segment waits to be listed (the process is stopping)."""
        if self._unlisted:
            await self.checkpoint()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _what(self) -> tuple[int, ...]:
        """What a checkpoint must not wait for when it changes: gaps (and their filling),
        audio gaps, inits."""
        m = self.manifest
        return (len(m.gaps), sum(g.filled for g in m.gaps), len(m.audio_gaps), len(m.inits))

    def _due(self) -> bool:
        if self._stored is None or self.every_s <= 0:
            return True
        what, when = self._stored
        return what != self._what() or time.monotonic() - when >= self.every_s

    def _schedule(self) -> None:
        """A checkpoint job on the upload queue (in order after what is queued) once
        every_s has passed since the last checkpoint."""
        if self._timer is not None or self._stored is None:
            return
        delay = max(0.0, self._stored[1] + self.every_s - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._queue_checkpoint)

    def _queue_checkpoint(self) -> None:
        self._timer = None
        if self._unlisted:
            self.uploads.add(UploadJob.for_checkpoint())

    async def close(self) -> None:
        """The recording is over (its uploads done): the manifest closed, stored, signed."""
        self.cancel()
        self.manifest.state = "closed"
        self.manifest.closed_at = round(time.time(), 6)
        try:
            await seal_manifest(
                self.uploads.store, self.uploads.put, self.manifest, self.signer, self.inherited
            )
        except EvidenceError as exc:
            log.error("recording %s closed UNSIGNED: %s", self.manifest.recording_id, exc)
            await self.uploads.put(
                manifest_key(self.manifest.recording_id), self.manifest.to_bytes(), JSON
            )
        await self.index.put(self.manifest, self.node)

    async def _refresh_index(self) -> None:
        """The index record, when a gap or an init came, or INDEX_EVERY_S passed: a Redis
        round trip per segment was a large share of the recorder's CPU (bench/RESULTS.md,
        Recorder: profile and fixes)."""
        m = self.manifest
        what = (len(m.gaps), sum(g.filled for g in m.gaps), len(m.inits))
        now = time.monotonic()
        if (
            self._indexed is not None
            and self._indexed[0] == what
            and now - self._indexed[1] < INDEX_EVERY_S
        ):
            return
        with contextlib.suppress(Exception):  # the index is a catalogue; the next one fixes it
            await self.index.put(m, self.node)
            self._indexed = (what, now)


async def _sha256(info: ObjectInfo, job: UploadJob) -> str:
    """The SHA-256 the store computed as it wrote the object; both stores give it on put
    (hashed from the spool file in a thread, if a store ever did not)."""
    if info.sha256:
        return info.sha256
    return await asyncio.to_thread(lambda: sha256_hex(job.path.read_bytes()))
