"""An open recording's manifest as its uploads land, in the upload queue's order
(recorder/uploads.py): each stored object is listed, then checkpointed: the manifest goes
to the object store (and to the spool while the store may lack it: a restart during an
outage resumes from that copy), and the index record is refreshed now and then. At the
end the closed manifest is sealed: signed after checking what is stored
(recorder/manifest_store.py); the media a resumed recording inherited from the run
before is hashed again then, the rest this process hashed as it uploaded it. A recording
that fails the checks is stored closed and unsigned, so verify fails and says why.
"""

from __future__ import annotations

import contextlib
import logging
import time

from recorder.index import RecordingIndex
from recorder.manifest import InitEntry, Manifest, SegmentEntry, sha256_hex
from recorder.manifest_store import JSON, EvidenceError, save_manifest, seal_manifest
from recorder.signing import Signer
from recorder.spool import Spool
from recorder.uploads import UploadJob, UploadQueue
from storage.recording_keys import manifest_key

log = logging.getLogger(__name__)

INDEX_EVERY_S = 30.0  # the index is a catalogue: its segment count may lag this much


class ManifestCheckpoints:
    def __init__(
        self,
        manifest: Manifest,
        spool: Spool,
        uploads: UploadQueue,
        signer: Signer,
        index: RecordingIndex,
        node: str,
    ) -> None:
        self.manifest = manifest
        self.spool = spool
        self.uploads = uploads
        self.signer = signer
        self.index = index
        self.node = node
        self._indexed: tuple[tuple[int, ...], float] | None = None  # what, when (monotonic)
        # listed by an earlier run of the recording (resumed): hashed again before signing
        self.inherited: list[InitEntry | SegmentEntry] = []

    async def uploaded(self, job: UploadJob, data: bytes) -> None:
        """A job of the upload queue is done: list its object (data: its bytes), then
        checkpoint."""
        if job.checkpoint:
            await self.checkpoint()
            return
        if job.init is not None:
            self.manifest.inits.append(job.init)
            job.path.unlink(missing_ok=True)
        if job.segment is not None:
            meta = job.segment.meta
            backfilled = bool(meta.get("backfilled"))
            # seq from the job: a backfilled segment may take a seq while the live one
            # before it is still open (recorder/backfill.py)
            self.manifest.append(
                start=meta["start"],
                duration=meta["duration"],
                data_sha256=sha256_hex(data),
                size=len(data),
                init=meta["init"],
                media_start=meta["media_start"],
                discontinuity=meta["discontinuity"],
                seq=job.segment.seq,
                backfilled=backfilled,
            )
            if backfilled:
                self.manifest.fill_gaps()  # before the checkpoint, so it says so at once
            await self.checkpoint()
            self.spool.done(job.segment)

    async def checkpoint(self) -> None:
        data = self.manifest.to_bytes()
        if self.uploads.outage_since is not None or self.spool.has_manifest:
            # the store may not have it: a restart during the outage resumes from this copy
            self.spool.save_manifest(data)
        await save_manifest(self.uploads.put, self.manifest, self.signer, data)
        await self._refresh_index()

    async def close(self) -> None:
        """The recording is over (its uploads done): the manifest closed, stored, signed."""
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
