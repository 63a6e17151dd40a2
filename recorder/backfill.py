"""Backfill: a device agent uploads what it recorded locally while its uplink was down, and
the recording's gaps close (issue 6, store-and-forward).

The agent asks for the gaps of its streams (closed gaps not filled yet, in recordings of
the last days), then uploads its init segment and every ring segment that overlaps one.
A segment is accepted only when it adds media to a gap (Manifest.backfill_room: the part
of a non-recess gap no backfilled segment covers yet, gaps marked filled included, since
they are marked within a tolerance of their edges); it is stored like a live
segment and appended to the manifest's chain with `backfilled: true` (its wall-clock start
lies back in the gap, its seq is simply the next free one). Once backfilled segments cover
a gap (Manifest.fill_gaps), the gap says `filled_by: "backfill"`. The same content twice
is a duplicate: nothing is stored twice.

Who writes the manifest (the one rule that keeps it consistent):
- the recording is open in this process (RecorderRole.find): everything goes through its
  Recording, whose single upload queue already orders segment objects, manifest entries
  and checkpoints; a backfilled segment is one more job in that queue;
- otherwise the recording must be closed: the manifest is loaded, changed, stored and
  re-signed under a Redis lock per recording (two API processes cannot interleave), sealed
  (recorder/manifest_store.py: the stored manifest must match its signature and its media
  its hashes, else 409 naming what does not; the version signed before is kept). The
  media is hashed once per recording: while the stored manifest is the one this process
  sealed last, only its signature is checked again. An
  open recording written by another process is refused with 503 (retry later): only its
  writer may change its manifest. A recording being closed here is waited for.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from device_agents.protocol import GapOut
from recorder.manifest import InitEntry, Manifest, SegmentEntry, overlap, sha256_hex
from recorder.manifest_store import (
    EvidenceError,
    check_media,
    read_manifest,
    seal_manifest,
    signed_bytes,
)
from recorder.recording import Recording, RecordingClosing, disk_error
from storage.objects import ObjectNotFound
from storage.recording_keys import backfill_init_name, manifest_key, object_key, segment_key

if TYPE_CHECKING:
    from recorder.role import RecorderRole

RECENT_S = 7 * 86400  # gaps of recordings opened this long ago or less may be backfilled
MIN_OVERLAP_S = 0.1  # a segment must share this much with a gap to be taken
MAX_SEGMENT_S = 60.0
LOCK_TIMEOUT_S = 120.0  # a holder that died frees the lock after this
FRAGMENT_BOXES = {b"styp", b"prft", b"moof", b"sidx", b"emsg"}


class BackfillError(Exception):
    """A request that cannot be done; status is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SegmentIn:
    """One uploaded segment and what the agent says about it."""

    stream: str
    start: float  # wall-clock of its first sample
    duration: float
    init: str  # the init name the server gave when the init was uploaded
    media_start: float  # seconds on the agent's media timeline (tfdt)
    sha256: str  # X-Content-SHA256, checked against data
    data: bytes


# -- reading an init segment (pure) -------------------------------------------------------


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} at {pos} runs past the end")
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((a, b) for k, a, b in _boxes(data, start, end) if k == kind), None)


def init_codecs(data: bytes) -> list[str]:
    """The RFC 6381 codec of each track of an fMP4 init segment, as the recorder names them
    (recorder.recording.codec_string). ValueError when it is not an init segment."""
    moov = _child(data, 0, len(data), b"moov")
    if moov is None:
        raise ValueError("no moov box: not an fMP4 init segment")
    codecs = []
    for kind, a, b in _boxes(data, *moov):
        if kind != b"trak":
            continue
        stsd = _path(data, a, b, (b"mdia", b"minf", b"stbl", b"stsd"))
        if stsd is None or stsd[1] - stsd[0] < 16:
            raise ValueError("a track has no sample description")
        entry_kind, ea, eb = next(_boxes(data, stsd[0] + 8, stsd[1]))
        codecs.append(_codec(data, entry_kind, ea, eb))
    if not codecs:
        raise ValueError("the init segment has no tracks")
    return codecs


def _path(data: bytes, a: int, b: int, kinds: tuple[bytes, ...]) -> tuple[int, int] | None:
    span: tuple[int, int] | None = (a, b)
    for kind in kinds:
        if span is None:
            return None
        span = _child(data, span[0], span[1], kind)
    return span


def _codec(data: bytes, kind: bytes, a: int, b: int) -> str:
    if kind == b"avc1":
        avcc = _child(data, a + 78, b, b"avcC")  # after the VisualSampleEntry fields
        if avcc is None or avcc[1] - avcc[0] < 4:
            raise ValueError("avc1 without avcC")
        return "avc1." + data[avcc[0] + 1 : avcc[0] + 4].hex()
    named = {b"hvc1": "hvc1", b"hev1": "hvc1", b"mp4a": "mp4a.40.2", b"Opus": "opus"}
    if kind not in named:
        raise ValueError(f"codec {kind.decode(errors='replace')!r} is not recorded")
    return named[kind]


def family(codec: str) -> str:
    return codec.split(".")[0]


def codec_mismatch(recording: list[str], agent: list[str]) -> str:
    """Why the agent's codecs cannot join the recording ('' when they can)."""
    if not recording or sorted(map(family, recording)) == sorted(map(family, agent)):
        return ""
    return (
        f"the agent's init has codecs {', '.join(agent)}, the recording "
        f"{', '.join(recording)}: backfill cannot mix them (same camera, same settings?)"
    )


def looks_like_fragment(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] in FRAGMENT_BOXES


# -- who may change the manifest -----------------------------------------------------------


class _Target(Protocol):
    manifest: Manifest

    def known_sha256(self) -> set[str]: ...
    def inits(self) -> list[InitEntry]: ...
    async def add_init(self, entry: InitEntry, data: bytes) -> None: ...
    async def add_segment(self, data: bytes, meta: dict[str, Any]) -> int: ...


class _Live:
    """An open recording written by this process: through its upload queue."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.manifest = recording.manifest

    def known_sha256(self) -> set[str]:
        return {s.sha256 for s in self.manifest.segments} | self.recording.queued_sha256()

    def inits(self) -> list[InitEntry]:
        return [*self.manifest.inits, *self.recording.queued_inits()]

    async def add_init(self, entry: InitEntry, data: bytes) -> None:
        try:
            await self.recording.add_init(entry, data)
        except OSError as exc:
            raise self._disk_full(exc) from None

    async def add_segment(self, data: bytes, meta: dict[str, Any]) -> int:
        try:
            return await self.recording.add_segment(data, meta)
        except OSError as exc:
            raise self._disk_full(exc) from None

    def _disk_full(self, exc: OSError) -> BackfillError:
        """The spool could not take it (a full disk): the agent keeps it and tries later."""
        spool = self.recording.options.spool_dir
        return BackfillError(507, f"{disk_error(exc, spool)}; try again later")


class _Stored:
    """A closed recording: its stored manifest, changed and re-signed (under the lock).
    sealed: recording id -> SHA-256 of the manifest bytes this process signed last."""

    def __init__(self, role: RecorderRole, raw: bytes, sealed: dict[str, str]) -> None:
        self.role = role
        self.manifest = Manifest.from_bytes(raw)
        self.sealed = sealed
        ours = sealed.get(self.manifest.recording_id) == sha256_hex(raw)
        self.unchecked: list[InitEntry | SegmentEntry] = (
            [] if ours else [*self.manifest.inits, *self.manifest.segments]
        )

    def known_sha256(self) -> set[str]:
        return {s.sha256 for s in self.manifest.segments}

    def inits(self) -> list[InitEntry]:
        return list(self.manifest.inits)

    async def add_init(self, entry: InitEntry, data: bytes) -> None:
        key = object_key(self.manifest.recording_id, entry.name)
        await self.role.storage.objects.put(key, data, "video/mp4")
        self.manifest.inits.append(entry)
        await self._save()

    async def add_segment(self, data: bytes, meta: dict[str, Any]) -> int:
        seq = self.manifest.next_seq
        # the object first: a manifest never lists what is not stored (a retry after a
        # failure here writes the same name again)
        key = segment_key(self.manifest.recording_id, seq)
        await self.role.storage.objects.put(key, data, "video/mp4")
        self.manifest.append(
            start=meta["start"],
            duration=meta["duration"],
            data_sha256=meta["sha256"],
            size=len(data),
            init=meta["init"],
            media_start=meta["media_start"],
            discontinuity=True,
            backfilled=True,
            seq=seq,
        )
        self.manifest.fill_gaps()
        await self._save()
        return seq

    async def check(self) -> None:
        """Before anything is stored: what is stored may be signed again (BackfillError
        409 naming what may not)."""
        objects, rid = self.role.storage.objects, self.manifest.recording_id
        try:
            await signed_bytes(objects, rid, self.role.signer.public)
            await check_media(objects, rid, self.unchecked)
        except EvidenceError as exc:
            raise BackfillError(409, f"recording {rid} is not signed again: {exc}") from None
        self.unchecked = []

    async def _save(self) -> None:
        objects = self.role.storage.objects
        try:  # the signature is checked again: it may have changed since check()
            await seal_manifest(objects, objects.put, self.manifest, self.role.signer)
        except EvidenceError as exc:
            raise BackfillError(
                409, f"recording {self.manifest.recording_id} is not signed again: {exc}"
            ) from None
        self.sealed[self.manifest.recording_id] = sha256_hex(self.manifest.to_bytes())
        await self.role.index.put(self.manifest, self.role.options.node)


# -- the service --------------------------------------------------------------------------


class RecordingBackfill:
    """What the backfill API does, given the device's streams (authenticated by the API)."""

    def __init__(self, role: RecorderRole) -> None:
        self.role = role
        self._locks: dict[str, asyncio.Lock] = {}
        self._sealed: dict[str, str] = {}  # see _Stored

    # -- gaps --

    async def gaps(self, stream: str, now: float | None = None) -> list[GapOut]:
        """Closed, unfilled, non-recess gaps of the stream's recent recordings."""
        since = (now or time.time()) - RECENT_S
        found: list[GapOut] = []
        for record in await self.role.index.search(stream=stream):
            if float(record.get("opened_at") or 0) < since:
                continue
            manifest = await self._current(record["id"])
            if manifest is None:
                continue
            found += [
                GapOut(recording_id=manifest.recording_id, stream=stream, start=g.start, end=g.end)
                for g in manifest.fillable_gaps()
            ]
        return sorted(found, key=lambda g: g.start)

    async def _current(self, rid: str) -> Manifest | None:
        live = self.role.find(rid)
        if live is not None:
            return live.manifest
        try:
            return await read_manifest(self.role.storage.objects, rid)
        except ObjectNotFound:
            return None

    # -- uploads --

    async def put_init(self, rid: str, streams: list[str], data: bytes) -> dict[str, Any]:
        await self._owned(rid, streams)
        try:
            codecs = init_codecs(data)
        except (ValueError, struct.error) as exc:
            raise BackfillError(400, f"not an fMP4 init segment: {exc}") from None
        digest = sha256_hex(data)

        async def work(target: _Target) -> dict[str, Any]:
            inits = target.inits()
            same = next((i for i in inits if i.sha256 == digest), None)
            if same is not None:
                return {"status": "duplicate", "init": same.name}
            live_codecs = target.manifest.codecs()
            if why := codec_mismatch(live_codecs, codecs):
                raise BackfillError(409, why)
            taken = {i.name for i in inits}
            names = (backfill_init_name(n) for n in range(len(inits) + 1))
            name = next(n for n in names if n not in taken)
            await target.add_init(InitEntry(name, digest, len(data), codecs), data)
            return {"status": "stored", "init": name}

        return await self._change(rid, work)

    async def put_segment(self, rid: str, streams: list[str], seg: SegmentIn) -> dict[str, Any]:
        stream = await self._owned(rid, streams)
        self._check_segment(seg, stream)

        async def work(target: _Target) -> dict[str, Any]:
            if seg.sha256 in target.known_sha256():
                return {"status": "duplicate"}
            if seg.init not in {i.name for i in target.inits()}:
                raise BackfillError(
                    400,
                    f"unknown init {seg.init!r}: upload the init first "
                    "and use the name it was given",
                )
            end = seg.start + seg.duration
            if target.manifest.backfill_room(seg.start, end) < MIN_OVERLAP_S:
                raise BackfillError(
                    409,
                    "no gap there: the recording has media (or a "
                    "recess, or a filled gap) at that time",
                )
            meta = {
                "start": round(seg.start, 6),
                "duration": round(seg.duration, 6),
                "init": seg.init,
                "media_start": round(seg.media_start, 6),
                "discontinuity": True,
                "backfilled": True,
                "sha256": seg.sha256,
            }
            seq = await target.add_segment(seg.data, meta)
            filled = [
                g
                for g in target.manifest.gaps
                if g.filled and overlap(seg.start, end, g.start, g.end) > 0
            ]
            return {"status": "stored", "seq": seq, "gap_filled": bool(filled)}

        return await self._change(rid, work)

    @staticmethod
    def _check_segment(seg: SegmentIn, stream: str) -> None:
        if seg.stream != stream:
            raise BackfillError(400, f"recording is of stream {stream}, not {seg.stream}")
        if sha256_hex(seg.data) != seg.sha256.lower():
            raise BackfillError(
                400,
                "X-Content-SHA256 does not match the body: the upload was damaged; send it again",
            )
        if not (
            math.isfinite(seg.start)
            and 0 < seg.duration <= MAX_SEGMENT_S
            and math.isfinite(seg.media_start)
        ):
            raise BackfillError(
                400, f"start/duration out of range (duration must be in (0, {MAX_SEGMENT_S:.0f}] s)"
            )
        if not looks_like_fragment(seg.data):
            raise BackfillError(400, "the body is not an fMP4 media segment (moof/prft)")

    async def _owned(self, rid: str, streams: list[str]) -> str:
        """The recording's stream, if the device owns it."""
        record = await self.role.index.get(rid)
        if record is None:
            raise BackfillError(404, f"no recording {rid}")
        if record.get("stream") not in streams:
            raise BackfillError(403, f"recording {rid} is not of a stream of this device")
        return str(record["stream"])

    # -- one change at a time --

    async def _change(
        self, rid: str, work: Callable[[_Target], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        async with self._locks.setdefault(rid, asyncio.Lock()):
            live = self.role.find(rid)
            if live is not None and not live.closing:
                try:
                    return await work(_Live(live))
                except RecordingClosing:
                    pass  # closed meanwhile: its final manifest is changed below
            lock = self.role.storage.state.lock(
                f"backfill:{rid}", timeout_s=LOCK_TIMEOUT_S, wait_s=LOCK_TIMEOUT_S / 2
            )
            async with lock:
                target = _Stored(self.role, await self._closed_manifest(rid), self._sealed)
                await target.check()
                return await work(target)

    async def _closed_manifest(self, rid: str) -> bytes:
        raw = await self._current_stored(rid)
        if Manifest.from_bytes(raw).state != "closed":
            await self.role.wait_closed()  # being closed by this process: its signature
            raw = await self._current_stored(rid)
        if Manifest.from_bytes(raw).state != "closed":
            raise BackfillError(
                503, f"recording {rid} is being written by another recorder; try again later"
            )
        return raw

    async def _current_stored(self, rid: str) -> bytes:
        try:
            return await self.role.storage.objects.get(manifest_key(rid))
        except ObjectNotFound:
            raise BackfillError(404, f"recording {rid} has no manifest yet") from None
