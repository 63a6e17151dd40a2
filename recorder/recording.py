"""One recording: a hub subscription cut into keyframe-aligned fMP4 segments, spooled,
uploaded in order, chained in a manifest, and signed when it closes.

The segmenter cuts (one fMP4 writer in the code base): the recorder feeds it hub items
with a 2-6 s segment target and keeps what it makes. Every part is written to the spool
as it closes, so a kill -9 loses at most the part being built; every closed segment goes
to the spool, then to the object store (recorder/uploads.py: in order, retried while the
store is away), then into the manifest, which is checkpointed each time
(recorder/checkpoints.py). A writer resumed after a restart first queues what the spool
holds (recorder/recovery.py).

Gaps: a publisher going away, a recess, a restart of the recorder, a full spool during a
storage outage, a full disk (a spool write failed: the segment is dropped, and each new
segment tries again), the recorder falling behind the hub; each is written with its
start, end and cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.alerts import alert
from media_server.consumer import QueuedConsumer
from media_server.fmp4 import init_segment
from media_server.hls.segmenter import Change, Segment, Segmenter
from media_server.hub import Hub
from media_server.media import Packet, Skipped, StreamEnd, StreamStart, Track
from recorder.audio import AudioWatch, audio_origin
from recorder.checkpoints import CHECKPOINT_EVERY_S, ManifestCheckpoints
from recorder.index import RecordingIndex
from recorder.manifest import Gap, GapCause, InitEntry, Manifest, sha256_hex
from recorder.recovery import recover
from recorder.signing import Signer
from recorder.spool import Spool, SpoolMeter
from recorder.uploads import UploadJob, UploadQueue
from storage.objects import ObjectStore
from storage.recording_keys import FIRST_INIT_NAME, init_name

log = logging.getLogger(__name__)

QUEUE_PACKETS = 3000  # ~40 s of 30 fps + AAC: a slow store must not make the hub skip us
SPOOL_ALERT = 0.8  # share of the spool limit that raises an alert
DISK_ALERT_EVERY_S = 300.0  # a full disk raises an alert at most this often per node


@dataclass
class RecorderOptions:
    segment_target_s: float = 4.0
    part_target_s: float = 0.5
    spool_dir: Path = Path("spool")
    spool_limit_bytes: int = 2 << 30
    node: str = "node-1"
    checkpoint_every_s: float = CHECKPOINT_EVERY_S  # recorder/checkpoints.py
    meter: SpoolMeter = field(default_factory=SpoolMeter)  # shared by the node's recordings
    first_seq: int = 0  # a fleet writer's segment numbers start here (recorder/leases.py)


def codec_string(track: Track) -> str:
    """RFC 6381 codec name, as HLS CODECS and people reading a manifest want it."""
    if track.codec == "h264" and len(track.config) >= 4:
        return "avc1." + track.config[1:4].hex()
    return {"h264": "avc1", "h265": "hvc1", "aac": "mp4a.40.2", "opus": "opus"}[track.codec]


@dataclass
class _State:
    seq_of_msn: dict[int, int] = field(default_factory=dict)
    parts_spooled: dict[int, int] = field(default_factory=dict)
    seen_msn: int = -1
    unspooled: bool = False  # the segmenter closed parts or segments not spooled yet
    # closed segments (with their init's bytes) not spooled yet, oldest first
    closed: list[tuple[Segment, bytes | None]] = field(default_factory=list)
    next_seq: int = 0
    init_names: dict[bytes, str] = field(default_factory=dict)  # init bytes -> name
    gap: Gap | None = None  # open: its end is the start of the next segment
    force_discontinuity: bool = False
    paused: bool = False
    wallclock_end: float | None = None
    dropped_msn: int = -1  # the segment being dropped: the spool failed to take it


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
        self.index = index
        self.signer = signer
        self.manifest = manifest
        self.options = options
        self.id = manifest.recording_id
        self.spool = Spool(options.spool_dir, self.id, options.meter)
        # no window: each closed segment is handed over by the listener (_on_change) and
        # read once; a window of 8 kept ~8 MB per stream for nothing (bench/RESULTS.md)
        self.segmenter = Segmenter(
            options.segment_target_s,
            options.part_target_s,
            window_segments=0,
            first_msn=0,
            prft=True,
        )
        self.segmenter.listen(self._on_change)
        self.uploads = UploadQueue(store, self.id)
        self.checkpoints = ManifestCheckpoints(
            manifest,
            self.spool,
            self.uploads,
            signer,
            index,
            options.node,
            options.checkpoint_every_s,
        )
        self.spool_alert = False
        self.closing = False  # close() began: nothing may be queued any more (backfill)
        self._s = _State()
        self._audio = AudioWatch(manifest.audio_gaps)
        self._sub: QueuedConsumer | None = None
        self._alerts: set[asyncio.Task[None]] = set()  # disk-full alerts being raised
        self._reader: asyncio.Task[None] | None = None

    @property
    def outage_since(self) -> float | None:
        """Since when (wall-clock) the object store has been refusing uploads, if it is."""
        return self.uploads.outage_since

    @property
    def upload_latencies(self) -> deque[float]:
        return self.uploads.latencies

    # -- lifecycle ----------------------------------------------------------------------

    async def start(
        self, resumed: bool = False, cause: GapCause = GapCause.recorder_restart
    ) -> None:
        """Subscribe and write. resumed: a recording found open after a restart (or taken
        over from another recorder: cause); what the spool holds is recovered first, and a
        gap of that cause opens."""
        self.manifest.signing_key_id = self.signer.key_id
        self._s.next_seq = max(self.manifest.next_seq, self.options.first_seq)
        self._s.init_names = {}
        if resumed:
            self.checkpoints.inherited = [*self.manifest.inits, *self.manifest.segments]
            self._recover(cause)
        stream = self.hub.stream(self.manifest.stream)
        if not resumed and not stream.live:
            self._open_gap(self.manifest.opened_at, GapCause.publisher_lost, "not live yet")
        self._sub = self.hub.subscribe(self.manifest.stream, f"recorder {self.id}", QUEUE_PACKETS)
        self.uploads.start(self.checkpoints.uploaded)
        self._reader = asyncio.create_task(self._read_loop(), name=f"record {self.id}")
        # through the upload queue: a store that is away must not hold up the start
        self.uploads.add(UploadJob.for_checkpoint())
        with contextlib.suppress(Exception):  # the index is a catalogue; checkpoints refresh it
            await self.index.put(self.manifest, self.options.node)

    def pause(self, reason: str) -> None:
        """Recess: stop writing media; a gap with cause recess until resume()."""
        if self._s.paused:
            return
        self._end_run()
        self._collect()  # the segment the recess ends is spooled before the gap opens
        self._s.paused = True
        self._audio.end()
        self._open_gap(self._s.wallclock_end or time.time(), GapCause.recess, reason)

    def resume(self) -> None:
        self._s.paused = False

    async def close(self, timeout_s: float = 30.0) -> Manifest:
        """End the recording: flush, upload everything, write and sign the manifest."""
        self.closing = True
        await self._stop_reading()
        self._end_run()
        self._collect()
        self._audio.end()
        if self._s.gap is not None:
            self._s.gap.end = round(max(time.time(), self._s.gap.start), 6)
            self.manifest.gaps.append(self._s.gap)
            self._s.gap = None
        try:
            await asyncio.wait_for(self.uploads.drain(), timeout_s)
        finally:
            self.checkpoints.cancel()
        self.uploads.stop()
        await self.checkpoints.close()
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
            await asyncio.wait_for(self._drain_and_list(), timeout_s)
        self.checkpoints.cancel()
        self.uploads.stop()

    async def _drain_and_list(self) -> None:
        await self.uploads.drain()
        await self.checkpoints.flush()  # a restart need not upload them again

    async def _stop_reading(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def _end_run(self) -> None:
        if not self._s.paused:
            self.segmenter.end_run()

    def _recover(self, cause: GapCause) -> None:
        """Queue what a killed writer left in the spool; open a recorder-restart gap from
        the end of the last media it kept."""
        found = recover(self.spool, self.manifest, self.uploads, self._s.next_seq)
        self._s.next_seq = found.next_seq
        # the media timeline goes on where the last run ended, so that the recording
        # plays (and exports) as one fMP4 timeline
        self.segmenter.continue_timeline(found.media_end)
        self._s.wallclock_end = found.wallclock_end
        reason = "recorder restarted" if cause == GapCause.recorder_restart else str(cause)
        self._open_gap(found.wallclock_end, cause, reason)

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
            if self._s.unspooled:  # spooled once per batch read, not per part
                self._collect()

    def _feed(self, item: Any) -> None:
        try:
            if isinstance(item, Packet):
                if not self._s.paused:
                    self.segmenter.feed(item)
                    self._audio.packet(item)
                return
            self.segmenter.feed(item)
            if isinstance(item, StreamStart):
                self._audio.start(item.tracks)
            else:
                self._audio.end()
            if isinstance(item, StreamEnd):
                self._collect()
                self._open_gap(
                    self._s.wallclock_end or time.time(), GapCause.publisher_lost, item.reason
                )
            elif isinstance(item, Skipped):
                self._collect()
                self._open_gap(
                    self._s.wallclock_end or time.time(),
                    GapCause.recorder_overload,
                    f"{item.count} packets skipped",
                )
            elif isinstance(item, StreamStart):
                self._s.force_discontinuity = bool(self._s.seq_of_msn)
        except Exception:  # one bad packet must not end the recording: new run after it
            log.exception("recording %s: segmenter failed; next keyframe starts a new run", self.id)
            self.segmenter.end_run()

    def _on_change(self, change: Change, segment: Segment | None) -> None:
        if change is Change.segment and segment is not None:
            # its init too: the segmenter may drop it once a segment of a newer one closes
            init = self.segmenter.inits.get(segment.init_id)
            self._s.closed.append((segment, init))
        if change in (Change.part, Change.segment):
            self._s.unspooled = True

    def _open_gap(self, start: float, cause: str, reason: str = "") -> None:
        if self._s.gap is None:
            self._s.gap = Gap(round(start, 6), round(start, 6), str(cause), reason)

    def _end_gap(self, start: float) -> None:
        """The segment starting at `start` is in the spool: an open gap ends there."""
        if self._s.gap is not None:
            self._s.gap.end = round(max(start, self._s.gap.start), 6)
            self.manifest.gaps.append(self._s.gap)
            self._s.gap = None
        self._s.force_discontinuity = False

    def _drop_gap(self, start: float, cause: str, reason: str) -> None:
        """Media from `start` on is dropped: a gap of this cause opens there (one of
        another cause still open ends there)."""
        gaps, at = self.manifest.gaps, round(start, 6)
        if self._s.gap is not None and self._s.gap.cause != cause:
            self._end_gap(start)
        elif self._s.gap is None and gaps and (gaps[-1].cause, gaps[-1].end) == (cause, at):
            # the segment that ended it was dropped too (a disk on the edge of full)
            self._s.gap = gaps.pop()
        self._open_gap(start, cause, reason)

    # -- what the segmenter made --------------------------------------------------------

    def _collect(self) -> None:
        """Spool the parts and segments the segmenter made since the last look."""
        seg = self.segmenter
        self._s.unspooled = False
        closed, self._s.closed = self._s.closed, []
        for done, init in closed:
            if done.msn > self._s.seen_msn:
                self._segment_closed(done, init)
                self._s.seen_msn = done.msn
        if seg.open is not None and seg.open.parts and seg.open.msn > self._s.seen_msn:
            self._spool_parts(seg.open)

    def _seq(self, seg: Segment) -> int:
        seq = self._s.seq_of_msn.get(seg.msn)
        if seq is None:
            seq = self._s.seq_of_msn[seg.msn] = self._s.next_seq
            self._s.next_seq += 1
        return seq

    def _segment_meta(self, seg: Segment, init: bytes | None = None) -> dict[str, Any]:
        # after a gap, a discontinuity; the gap ends once it is in the spool (_open_in_spool)
        s = self._s
        return {
            "start": seg.wallclock,
            "media_start": seg.start,
            "init": self._init_name(seg, init),
            "discontinuity": seg.discontinuity or s.force_discontinuity or s.gap is not None,
        }

    def _open_in_spool(self, seq: int, meta: dict[str, Any]) -> None:
        self.spool.open_segment(seq, meta)
        self._end_gap(meta["start"])

    def _spool_parts(self, seg: Segment) -> None:
        if seg.msn == self._s.dropped_msn:
            _release(seg)
            return
        new = seg.msn not in self._s.seq_of_msn
        seq = self._seq(seg)
        try:
            if new:
                self._open_in_spool(seq, self._segment_meta(seg))
            self._append_parts(seq, seg)
        except OSError as exc:
            self._spool_failed(seq, seg, exc)
            return
        self._s.wallclock_end = seg.wallclock + sum(p.duration for p in seg.parts)

    def _append_parts(self, seq: int, seg: Segment) -> None:
        done = self._s.parts_spooled.get(seq, 0)
        for part in seg.parts[done:]:
            self.spool.put_part(seq, part.data, part.duration)
            part.data = b""  # in the spool now; the recorder never reads a part again
        self._s.parts_spooled[seq] = len(seg.parts)

    def _segment_closed(self, seg: Segment, init: bytes | None) -> None:
        if seg.msn == self._s.dropped_msn:
            return  # its gap is open; the next segment tries the spool again
        new = seg.msn not in self._s.seq_of_msn
        seq = self._seq(seg)
        self._s.wallclock_end = seg.wallclock + seg.duration
        if self._spool_full(seq):
            self.spool.drop_open(seq)
            self._s.parts_spooled.pop(seq, None)
            self._drop_gap(seg.wallclock, GapCause.storage_outage, "spool full")
            return
        # the parts that closed with the segment join the spooled ones, so the spool keeps
        # the file it has rather than writing the segment again (a new file per segment
        # was the recorder's largest cost: bench/RESULTS.md), and the parts are never
        # joined in memory
        try:
            meta = self._segment_meta(seg, init) if new else self.spool.open_meta(seq)
            meta["duration"] = seg.duration
            if new:
                self._open_in_spool(seq, meta)
            self._append_parts(seq, seg)
            pending = self.spool.close_segment(seq, meta)
        except OSError as exc:
            self._spool_failed(seq, seg, exc)
            return
        meter = self.options.meter
        if meter.error is not None:  # a whole segment spooled: the disk takes writes again
            log.warning("spool %s takes writes again: recording resumes", self.options.spool_dir)
            meter.error = None
        self._s.parts_spooled.pop(seq, None)
        self.uploads.add(UploadJob.for_segment(self.id, pending))

    def _spool_failed(self, seq: int, seg: Segment, exc: OSError) -> None:
        """The spool could not take segment seq (a full disk): it is dropped, not kept in
        memory, and a disk-full gap opens at its start."""
        with contextlib.suppress(OSError):
            self.spool.drop_open(seq)
        self._s.parts_spooled.pop(seq, None)
        self._s.dropped_msn = seg.msn
        _release(seg)
        reason = disk_error(exc, self.options.spool_dir)
        self._drop_gap(seg.wallclock, GapCause.disk_full, reason)
        meter = self.options.meter
        if meter.error is None:
            log.error("recording %s: %s; segment %d dropped", self.id, reason, seq)
        meter.error = reason
        if time.monotonic() - meter.alerted >= DISK_ALERT_EVERY_S:
            meter.alerted = time.monotonic()
            self._alert(reason)

    def _alert(self, reason: str) -> None:
        message = f"{reason}: recordings have gaps until space is freed on that disk"
        raised = alert(
            self.index.state,
            "disk-full",
            message,
            path=str(self.options.spool_dir),
            node=self.options.node,
        )
        task = asyncio.get_running_loop().create_task(_quietly(raised))
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    def _spool_full(self, seq: int) -> bool:
        """Whether the node's spool is over its limit (segment seq is then dropped); past
        SPOOL_ALERT of it, the recording says so (health)."""
        used, limit = self.options.meter.used, self.options.spool_limit_bytes
        self.spool_alert = used > SPOOL_ALERT * limit
        if self.spool_alert:
            log.warning("spool %s is %d %% full", self.options.spool_dir, 100 * used // limit)
        if used > limit:
            log.error(
                "recording %s: spool full (%d bytes), segment %d dropped", self.id, limit, seq
            )
        return used > limit

    def _init_name(self, seg: Segment, init: bytes | None = None) -> str:
        data = init or self.segmenter.inits.get(seg.init_id) or init_segment(self.segmenter.tracks)
        name = self._s.init_names.get(data)
        if name is not None:
            return name
        queued = self.uploads.inits()
        known = {i.sha256: i.name for i in [*self.manifest.inits, *queued]}
        digest = sha256_hex(data)
        if digest in known:  # same codecs as before a restart
            name = known[digest]
        else:
            first = not self.manifest.inits and not queued
            name = FIRST_INIT_NAME if first else init_name(self._s.next_seq - 1)
            tracks = self.segmenter.tracks
            entry = InitEntry(
                name, digest, len(data), [codec_string(t) for t in tracks], *audio_origin(tracks)
            )
            path = self.spool.put_init(name, data)
            self.uploads.add(UploadJob.for_init(self.id, entry, path))
        self._s.init_names[data] = name
        return name

    # -- backfill (recorder/backfill.py decides what is accepted) ------------------------

    def queued_sha256(self) -> set[str]:
        """Content hashes of backfill uploads queued but not yet in the manifest."""
        metas = [s.meta for s in self.uploads.segments()]
        return {m["sha256"] for m in metas if m.get("sha256")}

    def queued_inits(self) -> list[InitEntry]:
        return self.uploads.inits()

    async def add_init(self, entry: InitEntry, data: bytes) -> None:
        """An init segment from a device agent: uploaded and listed in queue order."""
        if self.closing:
            raise RecordingClosing(self.id)
        path = self.spool.put_init(entry.name, data)
        await self._queue_and_wait(UploadJob.for_init(self.id, entry, path))

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
        await self._queue_and_wait(UploadJob.for_segment(self.id, pending))
        return seq

    async def _queue_and_wait(self, job: UploadJob) -> None:
        if self.closing:  # the uploader may be gone: the caller uses the closed path
            raise RecordingClosing(self.id)
        await self.uploads.add_and_wait(job)


def _release(seg: Segment) -> None:
    """Let go of the media of a segment the spool did not take (memory stays bounded)."""
    for part in seg.parts:
        part.data = b""


def disk_error(exc: OSError, spool_dir: Path) -> str:
    """A spool write's failure as a person running the node should read it."""
    code = errno.errorcode.get(exc.errno or 0, "EIO")
    what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "disk write failed"
    return f"{what} ({code}: {exc.strerror}) writing the recordings spool {spool_dir}"


async def _quietly(raised: Awaitable[str]) -> None:
    try:
        await raised
    except Exception:  # the state store away too: health and the log still say it
        log.exception("disk-full alert not raised")
