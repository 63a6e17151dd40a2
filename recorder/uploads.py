"""A recording's upload queue: its objects go to the object store one at a time, in the
order they were queued, each retried until the store takes it (the spool holds it
meanwhile, so nothing is lost while the store is away).

One queue per recording orders everything that changes the recording: segment and init
objects, then their manifest entries and checkpoints (the `uploaded` callback given to
start() does those, recorder/checkpoints.py), and a device agent's backfill, which waits
for its job to be done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.backoff import Backoff
from recorder.manifest import InitEntry
from recorder.spool import PendingSegment
from storage.objects import ObjectInfo, ObjectStore, PutData, StorageError
from storage.recording_keys import object_key, segment_key

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 2.0
LATENCIES_KEPT = 10000


@dataclass
class UploadJob:
    """Something to do in order: upload an init or a media segment, or checkpoint."""

    key: str
    path: Path
    init: InitEntry | None = None
    segment: PendingSegment | None = None
    queued: float = field(default_factory=time.monotonic)
    checkpoint: bool = False  # write the manifest (the first one, when nothing else is due)
    done: asyncio.Future[None] | None = None  # set once uploaded and in the manifest (backfill)

    @classmethod
    def for_init(cls, recording_id: str, entry: InitEntry, path: Path) -> UploadJob:
        return cls(object_key(recording_id, entry.name), path, init=entry)

    @classmethod
    def for_segment(cls, recording_id: str, pending: PendingSegment) -> UploadJob:
        return cls(segment_key(recording_id, pending.seq), pending.path, segment=pending)

    @classmethod
    def for_checkpoint(cls) -> UploadJob:
        return cls("", Path(), checkpoint=True)


# called with each job once its object is stored (what the store says of it: size and
# SHA-256, hashed once as it was written; None for a checkpoint)
Uploaded = Callable[[UploadJob, ObjectInfo | None], Awaitable[None]]


class UploadQueue:
    def __init__(self, store: ObjectStore, recording_id: str) -> None:
        self.store = store
        self.recording_id = recording_id
        self.jobs: deque[UploadJob] = deque()
        self.latencies: deque[float] = deque(maxlen=LATENCIES_KEPT)  # segment closed -> stored
        self.outage_since: float | None = None  # wall-clock of the first failed put
        self.error: str | None = None  # why the store refuses puts (health), during an outage
        self._added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, uploaded: Uploaded) -> None:
        """Upload what is queued and what comes, calling uploaded after each job."""
        self._task = asyncio.create_task(self._loop(uploaded), name=f"upload {self.recording_id}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def add(self, job: UploadJob) -> None:
        self.jobs.append(job)
        self._added.set()

    async def add_and_wait(self, job: UploadJob) -> None:
        """Queue the job and return once it is done."""
        job.done = asyncio.get_running_loop().create_future()
        self.add(job)
        await job.done

    async def drain(self) -> None:
        while self.jobs:
            await asyncio.sleep(0.02)

    def inits(self) -> list[InitEntry]:
        """Init segments queued, not yet in the manifest."""
        return [j.init for j in self.jobs if j.init is not None]

    def segments(self) -> list[PendingSegment]:
        """Media segments queued, not yet in the manifest."""
        return [j.segment for j in self.jobs if j.segment is not None]

    async def _loop(self, uploaded: Uploaded) -> None:
        while True:
            while not self.jobs:
                self._added.clear()
                await self._added.wait()
            job = self.jobs[0]
            await self._upload(job, uploaded)
            self.jobs.popleft()
            if job.done is not None and not job.done.done():
                job.done.set_result(None)

    async def _upload(self, job: UploadJob, uploaded: Uploaded) -> None:
        info = None
        if not job.checkpoint:
            # the spooled file itself: the store reads and hashes it in a worker thread,
            # once (it was read and hashed again on the event loop: bench/RESULTS.md)
            info = await self.put(job.key, job.path, "video/mp4")
            if job.segment is not None:  # segment closed -> durable in the object store
                self.latencies.append(time.monotonic() - job.queued)
        await uploaded(job, info)

    async def put(self, key: str, data: PutData, content_type: str) -> ObjectInfo:
        """Put until it works: the media is in the spool meanwhile, nothing is lost."""
        backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S, jitter=0.0)
        while True:
            try:
                info = await self.store.put(key, data, content_type)
            except (StorageError, OSError) as exc:
                self.error = str(exc)
                if self.outage_since is None:
                    self.outage_since = time.time()
                    log.warning(
                        "recording %s: object store unreachable (%s); spooling",
                        self.recording_id,
                        exc,
                    )
                await asyncio.sleep(backoff.next())
                continue
            if self.outage_since is not None:
                log.info(
                    "recording %s: object store back after %.1f s",
                    self.recording_id,
                    time.time() - self.outage_since,
                )
                self.outage_since = None
                self.error = None
            return info


def durable_ms(queues: Iterable[UploadQueue]) -> dict[str, float]:
    """Segment closed -> durable in the object store, over the last segments of these
    queues, in ms (health: the durability rule asks at most 1 s)."""
    lat = sorted(x for q in queues for x in q.latencies)
    if not lat:
        return {"segments": 0}

    def at(share: float) -> float:
        return round(lat[min(len(lat) - 1, int(share * len(lat)))] * 1000, 1)

    return {"segments": len(lat), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)}
