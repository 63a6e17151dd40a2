"""One recording: a hub subscription cut into keyframe-aligned fMP4 segments, spooled,
uploaded in order, chained in a manifest, and signed when it closes.

The LL-HLS segmenter does the cutting (one fMP4 writer in the code base): the recorder
feeds it hub items with a 2-6 s segment target and keeps what it makes. Every part is
written to the spool as it closes, so a kill -9 loses at most the part being built; every
closed segment goes to the spool, then to the object store (in order, retried while the
store is away), then into the manifest, which is checkpointed each time.

Gaps: a publisher going away, a recess, a restart of the recorder, a full spool during a
storage outage; each is written with its start, end and cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from media_server.fmp4 import init_segment
from media_server.hls.segmenter import Segment, Segmenter
from media_server.hub import Hub, Subscription
from media_server.media import Packet, Skipped, StreamEnd, StreamStart, Track
from recorder.index import RecordingIndex
from recorder.manifest import Gap, GapCause, InitEntry, Manifest, object_prefix, sha256_hex
from recorder.signing import Signer
from recorder.spool import PendingSegment, Spool, SpoolMeter
from storage.objects import ObjectNotFound, ObjectStore, StorageError

log = logging.getLogger(__name__)

QUEUE_PACKETS = 3000  # ~40 s of 30 fps + AAC: a slow store must not make the hub skip us
RETRY_MAX_S = 2.0
SPOOL_ALERT = 0.8  # share of the spool limit that raises an alert
INDEX_EVERY_S = 30.0  # the index is a catalogue: its segment count may lag this much


@dataclass
class RecorderOptions:
    segment_target_s: float = 4.0
    part_target_s: float = 0.5
    spool_dir: Path = Path("spool")
    spool_limit_bytes: int = 2 << 30
    node: str = "node-1"
    meter: SpoolMeter = field(default_factory=SpoolMeter)  # shared by the node's recordings


def codec_string(track: Track) -> str:
    """RFC 6381 codec name, as HLS CODECS and people reading a manifest want it."""
    if track.codec == "h264" and len(track.config) >= 4:
        return "avc1." + track.config[1:4].hex()
    return {"h264": "avc1", "h265": "hvc1", "aac": "mp4a.40.2", "opus": "opus"}[track.codec]


@dataclass
class _Job:
    """Something to upload, in order: an init segment or a media segment."""

    key: str
    path: Path
    init: InitEntry | None = None
    segment: PendingSegment | None = None
    queued: float = field(default_factory=time.monotonic)
    checkpoint: bool = False  # write the manifest (the first one, when nothing else is due)
    done: asyncio.Future[None] | None = None  # set once uploaded and in the manifest (backfill)


@dataclass
class _State:
    seq_of_msn: dict[int, int] = field(default_factory=dict)
    parts_spooled: dict[int, int] = field(default_factory=dict)
    seen_msn: int = -1
    version: int = -1
    next_seq: int = 0
    init_names: dict[bytes, str] = field(default_factory=dict)  # init bytes -> name
    gap: Gap | None = None  # open: its end is the start of the next segment
    force_discontinuity: bool = False
    paused: bool = False
    wallclock_end: float | None = None


class RecordingClosing(Exception):
    """The recording is being closed; what comes now goes to the closed manifest."""


class Recording:
    """Writes one recording of one stream. start() / pause() / resume() / close()."""

    def __init__(
        self,
        hub: Hub,
        store: ObjectStore,
        index: RecordingIndex,
        signer: Signer,
        manifest: Manifest,
        options: RecorderOptions,
    ) -> None:
        self.hub = hub
        self.store = store
        self.index = index
        self.signer = signer
        self.manifest = manifest
        self.options = options
        self.id = manifest.recording_id
        self.spool = Spool(options.spool_dir, self.id, options.meter)
        self.segmenter = Segmenter(
            options.segment_target_s,
            options.part_target_s,
            window_segments=8,
            first_msn=0,
            prft=True,
        )
        self.upload_latencies: deque[float] = deque(maxlen=10000)
        self.outage_since: float | None = None
        self.spool_alert = False
        self.closing = False  # close() began: nothing may be queued any more (backfill)
        self._s = _State()
        self._indexed: tuple[tuple[int, ...], float] | None = None  # what, when (monotonic)
        self._jobs: deque[_Job] = deque()
        self._job_added = asyncio.Event()
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._uploader: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, resumed: bool = False) -> None:
        """Subscribe and write. resumed: a recording found open after a restart; what the
        spool holds is recovered first, and a recorder-restart gap opens."""
        self.manifest.signing_key_id = self.signer.key_id
        self._s.next_seq = self.manifest.next_seq
        self._s.init_names = {}
        if resumed:
            self._recover()
        stream = self.hub.stream(self.manifest.stream)
        if not resumed and not stream.live:
            self._open_gap(self.manifest.opened_at, GapCause.publisher_lost, "not live yet")
        self._sub = self.hub.subscribe(self.manifest.stream, f"recorder {self.id}", QUEUE_PACKETS)
        self._uploader = asyncio.create_task(self._upload_loop(), name=f"upload {self.id}")
        self._reader = asyncio.create_task(self._read_loop(), name=f"record {self.id}")
        # through the upload queue: a store that is away must not hold up the start
        self._queue(_Job("", Path(), checkpoint=True))
        with contextlib.suppress(Exception):  # the index is a catalogue; checkpoints refresh it
            await self.index.put(self.manifest, self.options.node)

    def pause(self, reason: str) -> None:
        """Recess: stop writing media; a gap with cause recess until resume()."""
        if self._s.paused:
            return
        self._end_run()
        self._collect()  # the segment the recess ends is spooled before the gap opens
        self._s.paused = True
        self._open_gap(self._s.wallclock_end or time.time(), GapCause.recess, reason)

    def resume(self) -> None:
        self._s.paused = False

    async def close(self, timeout_s: float = 30.0) -> Manifest:
        """End the recording: flush, upload everything, write and sign the manifest."""
        self.closing = True
        await self._stop_reading()
        self._end_run()
        self._collect()
        if self._s.gap is not None:
            self._s.gap.end = round(max(time.time(), self._s.gap.start), 6)
            self.manifest.gaps.append(self._s.gap)
            self._s.gap = None
        await asyncio.wait_for(self._drain(), timeout_s)
        self._stop_uploader()
        self.manifest.state = "closed"
        self.manifest.closed_at = round(time.time(), 6)
        data = self.manifest.to_bytes()
        await self._put_retrying(f"{object_prefix(self.id)}manifest.json", data, "application/json")
        await self._put_retrying(
            f"{object_prefix(self.id)}manifest.sig", self.signer.sign(data), "application/json"
        )
        await self.index.put(self.manifest, self.options.node)
        self.spool.remove()
        log.info(
            "recording %s closed: %d segments, %.1f s, %d gaps",
            self.id,
            len(self.manifest.segments),
            self.manifest.duration,
            len(self.manifest.gaps),
        )
        return self.manifest

    async def stop(self, timeout_s: float = 1.0) -> None:
        """The process is stopping, the recording is not over: spool what is open and
        upload what can be in time; a restart resumes from the spool."""
        await self._stop_reading()
        self._end_run()
        self._collect()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain(), timeout_s)
        self._stop_uploader()

    async def _stop_reading(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def _stop_uploader(self) -> None:
        if self._uploader is not None:
            self._uploader.cancel()

    def _end_run(self) -> None:
        if not self._s.paused:
            self.segmenter.end_run()

    # -- reading the hub ----------------------------------------------------------------

    async def _read_loop(self) -> None:
        sub = self._sub
        assert sub is not None
        while True:
            try:
                item = await sub.get()
            except EOFError:
                return
            self._feed(item)
            while (more := sub.get_nowait()) is not None:
                self._feed(more)
            if self.segmenter.version != self._s.version:
                self._collect()

    def _feed(self, item: Any) -> None:
        try:
            if isinstance(item, Packet):
                if not self._s.paused:
                    self.segmenter.feed(item)
                return
            self.segmenter.feed(item)
            if isinstance(item, StreamEnd):
                self._collect()
                self._open_gap(
                    self._s.wallclock_end or time.time(), GapCause.publisher_lost, item.reason
                )
            elif isinstance(item, Skipped):
                self._collect()
                self._open_gap(
                    self._s.wallclock_end or time.time(),
                    "recorder-overload",
                    f"{item.count} packets skipped",
                )
            elif isinstance(item, StreamStart):
                self._s.force_discontinuity = bool(self._s.seq_of_msn)
        except Exception:  # one bad packet must not end the recording: new run after it
            log.exception("recording %s: segmenter failed; next keyframe starts a new run", self.id)
            self.segmenter.end_run()

    def _open_gap(self, start: float, cause: str, reason: str = "") -> None:
        if self._s.gap is None:
            self._s.gap = Gap(round(start, 6), round(start, 6), str(cause), reason)

    # -- what the segmenter made --------------------------------------------------------

    def _collect(self) -> None:
        """Spool the parts and segments the segmenter made since the last look."""
        seg = self.segmenter
        self._s.version = seg.version
        for done in seg.segments:
            if done.msn > self._s.seen_msn:
                self._segment_closed(done)
                self._s.seen_msn = done.msn
        if seg.open is not None and seg.open.parts and seg.open.msn > self._s.seen_msn:
            self._spool_parts(seg.open)

    def _seq(self, seg: Segment) -> int:
        seq = self._s.seq_of_msn.get(seg.msn)
        if seq is None:
            seq = self._s.seq_of_msn[seg.msn] = self._s.next_seq
            self._s.next_seq += 1
        return seq

    def _segment_meta(self, seg: Segment) -> dict[str, Any]:
        if self._s.gap is not None:
            self._s.gap.end = round(max(seg.wallclock, self._s.gap.start), 6)
            self.manifest.gaps.append(self._s.gap)
            self._s.gap = None
            self._s.force_discontinuity = True
        discontinuity = seg.discontinuity or self._s.force_discontinuity
        self._s.force_discontinuity = False
        return {
            "start": seg.wallclock,
            "media_start": seg.start,
            "init": self._init_name(seg),
            "discontinuity": discontinuity,
        }

    def _spool_parts(self, seg: Segment) -> None:
        new = seg.msn not in self._s.seq_of_msn
        seq = self._seq(seg)
        if new:
            self.spool.open_segment(seq, self._segment_meta(seg))
        self._append_parts(seq, seg)
        self._s.wallclock_end = seg.wallclock + sum(p.duration for p in seg.parts)

    def _append_parts(self, seq: int, seg: Segment) -> None:
        done = self._s.parts_spooled.get(seq, 0)
        for part in seg.parts[done:]:
            self.spool.put_part(seq, part.data, part.duration)
        self._s.parts_spooled[seq] = len(seg.parts)

    def _segment_closed(self, seg: Segment) -> None:
        new = seg.msn not in self._s.seq_of_msn
        seq = self._seq(seg)
        meta = self._segment_meta(seg) if new else self.spool.open_meta(seq)
        meta["duration"] = seg.duration
        self._s.wallclock_end = seg.wallclock + seg.duration
        used = self.options.meter.used
        self.spool_alert = used > SPOOL_ALERT * self.options.spool_limit_bytes
        if self.spool_alert:
            log.warning(
                "spool %s is %d %% full",
                self.options.spool_dir,
                100 * used // self.options.spool_limit_bytes,
            )
        if used > self.options.spool_limit_bytes:
            log.error(
                "recording %s: spool full (%d bytes), segment %d dropped",
                self.id,
                self.options.spool_limit_bytes,
                seq,
            )
            self.spool.drop_open(seq)
            self._s.parts_spooled.pop(seq, None)
            self._open_gap(seg.wallclock, GapCause.storage_outage, "spool full")
            return
        # the parts that closed with the segment join the spooled ones, so the spool keeps
        # the file it has rather than writing the segment again (a new file per segment
        # was the recorder's largest cost), and the parts are never joined in memory
        if new:
            self.spool.open_segment(seq, meta)
        self._append_parts(seq, seg)
        self._s.parts_spooled.pop(seq, None)
        pending = self.spool.close_segment(seq, meta)
        self._queue(_Job(f"{object_prefix(self.id)}seg-{seq}.m4s", pending.path, segment=pending))

    def _init_name(self, seg: Segment) -> str:
        data = self.segmenter.inits.get(seg.init_id) or init_segment(self.segmenter.tracks)
        name = self._s.init_names.get(data)
        if name is not None:
            return name
        queued = [j.init for j in self._jobs if j.init is not None]
        known = {i.sha256: i.name for i in [*self.manifest.inits, *queued]}
        digest = sha256_hex(data)
        if digest in known:  # same codecs as before a restart
            name = known[digest]
        else:
            name = (
                "init.mp4"
                if not self.manifest.inits and not self._has_pending_init()
                else f"init-{self._s.next_seq - 1}.mp4"
            )
            entry = InitEntry(
                name, digest, len(data), [codec_string(t) for t in self.segmenter.tracks]
            )
            path = self.spool.put_init(name, data)
            self._queue(_Job(f"{object_prefix(self.id)}{name}", path, init=entry))
        self._s.init_names[data] = name
        return name

    def _has_pending_init(self) -> bool:
        return any(job.init is not None for job in self._jobs)

    # -- upload, in order ---------------------------------------------------------------

    def _queue(self, job: _Job) -> None:
        self._jobs.append(job)
        self._job_added.set()

    async def _upload_loop(self) -> None:
        while True:
            while not self._jobs:
                self._job_added.clear()
                await self._job_added.wait()
            job = self._jobs[0]
            await self._upload(job)
            self._jobs.popleft()
            if job.done is not None and not job.done.done():
                job.done.set_result(None)

    async def _upload(self, job: _Job) -> None:
        if job.checkpoint:
            await self._checkpoint()
            return
        data = job.path.read_bytes()
        await self._put_retrying(job.key, data, "video/mp4")
        if job.segment is not None:  # segment closed -> durable in the object store
            self.upload_latencies.append(time.monotonic() - job.queued)
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
            await self._checkpoint()
            self.spool.done(job.segment)

    async def _put_retrying(self, key: str, data: bytes, content_type: str) -> None:
        """Put until it works: the media is in the spool meanwhile, nothing is lost."""
        delay = 0.2
        while True:
            try:
                await self.store.put(key, data, content_type)
            except (StorageError, OSError) as exc:
                if self.outage_since is None:
                    self.outage_since = time.time()
                    log.warning(
                        "recording %s: object store unreachable (%s); spooling", self.id, exc
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if self.outage_since is not None:
                log.info(
                    "recording %s: object store back after %.1f s",
                    self.id,
                    time.time() - self.outage_since,
                )
                self.outage_since = None
            return

    async def _checkpoint(self) -> None:
        data = self.manifest.to_bytes()
        if self.outage_since is not None or self.spool.has_manifest:
            # the store may not have it: a restart during the outage resumes from this copy
            self.spool.save_manifest(data)
        await self._put_retrying(f"{object_prefix(self.id)}manifest.json", data, "application/json")
        await self._refresh_index()

    async def _refresh_index(self) -> None:
        """The index record, when a gap or an init came, or INDEX_EVERY_S passed: a Redis
        round trip per segment was a tenth of the recorder's CPU."""
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
            await self.index.put(m, self.options.node)
            self._indexed = (what, now)

    async def _drain(self) -> None:
        while self._jobs:
            await asyncio.sleep(0.02)

    # -- backfill (recorder/backfill.py decides what is accepted) ------------------------

    def queued_sha256(self) -> set[str]:
        """Content hashes of backfill uploads queued but not yet in the manifest."""
        metas = [j.segment.meta for j in self._jobs if j.segment is not None]
        return {m["sha256"] for m in metas if m.get("sha256")}

    def queued_inits(self) -> list[InitEntry]:
        return [j.init for j in self._jobs if j.init is not None]

    async def add_init(self, entry: InitEntry, data: bytes) -> None:
        """An init segment from a device agent: uploaded and listed in queue order."""
        if self.closing:
            raise RecordingClosing(self.id)
        path = self.spool.put_init(entry.name, data)
        await self._queue_and_wait(_Job(f"{object_prefix(self.id)}{entry.name}", path, init=entry))

    async def add_segment(self, data: bytes, meta: dict[str, Any]) -> int:
        """A segment from a device agent (meta: start, duration, init, media_start,
        discontinuity, backfilled, sha256). It takes the next free seq now, while the live
        segment being written keeps the one it has: seqs stay unique and match the object
        names, and the chain follows the order of upload. Returns the seq once the segment
        is in the object store and the manifest."""
        if self.closing:
            raise RecordingClosing(self.id)
        seq = self._s.next_seq
        self._s.next_seq += 1
        pending = self.spool.put_segment(seq, data, meta)
        await self._queue_and_wait(
            _Job(f"{object_prefix(self.id)}seg-{seq}.m4s", pending.path, segment=pending)
        )
        return seq

    async def _queue_and_wait(self, job: _Job) -> None:
        if self.closing:  # the uploader may be gone: the caller uses the closed path
            raise RecordingClosing(self.id)
        job.done = asyncio.get_running_loop().create_future()
        self._queue(job)
        await job.done

    # -- crash recovery -----------------------------------------------------------------

    def _recover(self) -> None:
        """Queue what a killed writer left in the spool, and open a recorder-restart gap
        from the end of the last media it kept."""
        for path in self.spool.pending_inits():
            name = path.name.removeprefix("init-file-")
            data = path.read_bytes()
            if name not in {i.name for i in self.manifest.inits}:
                entry = InitEntry(name, sha256_hex(data), len(data), [])
                self._queue(_Job(f"{object_prefix(self.id)}{name}", path, init=entry))
        ends = [self.manifest.wallclock_end or self.manifest.opened_at]
        listed = {s.seq for s in self.manifest.segments}
        for pending in self.spool.pending_segments():
            if pending.seq not in listed:
                self._queue(
                    _Job(
                        f"{object_prefix(self.id)}seg-{pending.seq}.m4s",
                        pending.path,
                        segment=pending,
                    )
                )
                if not pending.meta.get("backfilled"):  # those lie back in a gap
                    ends.append(pending.meta["start"] + pending.meta["duration"])
                self._s.next_seq = max(self._s.next_seq, pending.seq + 1)
            else:
                self.spool.done(pending)  # uploaded and in the manifest already
        for left in self.spool.open_segments():
            if not left.parts:
                self.spool.drop_open(left.seq)
                continue
            meta = {**left.meta, "duration": left.duration}
            pending = self.spool.put_segment(left.seq, b"".join(left.parts), meta)
            self._queue(
                _Job(f"{object_prefix(self.id)}seg-{left.seq}.m4s", pending.path, segment=pending)
            )
            ends.append(meta["start"] + left.duration)
            self._s.next_seq = max(self._s.next_seq, left.seq + 1)
        media_end = self.manifest.media_end + sum(
            j.segment.meta["duration"]
            for j in self._jobs
            if j.segment is not None
            and j.segment.seq not in listed
            and not j.segment.meta.get("backfilled")
        )
        # continue the media timeline where the last run ended, so that the recording
        # plays (and exports) as one fMP4 timeline; the segmenter has no public knob yet
        self.segmenter._timeline_end = media_end
        self._s.wallclock_end = max(ends)
        self._open_gap(max(ends), GapCause.recorder_restart, "recorder restarted")


async def load_manifest(store: ObjectStore, spool_dir: Path, recording_id: str) -> Manifest:
    """The newest manifest of an open recording: the spool's checkpoint if this node has
    one, else the object store's."""
    local = Spool(spool_dir, recording_id).load_manifest()
    if local is not None:
        return Manifest.from_bytes(local)
    try:
        return Manifest.from_bytes(await store.get(f"{object_prefix(recording_id)}manifest.json"))
    except ObjectNotFound:
        raise LookupError(f"recording {recording_id} has no manifest") from None
