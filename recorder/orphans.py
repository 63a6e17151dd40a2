"""Segments a writer stored but never listed: a recorder killed (or fenced out) between a
segment's upload and the checkpoint that lists it leaves that object in the store. The
writer taking the recording over lists them first (they are media the recording has, and
verify refuses an object the closed manifest does not list), reading what the manifest
says of a segment from the segment itself: the wall-clock of its first sample (prft), its
start on the media timeline (tfdt) and its duration (trun), in the timescale of its init.

Only segments this code base's recorder wrote are understood (media_server/fmp4.py: prft,
then moof with tfhd, tfdt v1 and trun v1 per track, then mdat, per part); one that is not
is left alone, and verify says so.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass

from media_server.fmp4 import NTP_UNIX_OFFSET
from recorder.backfill import _boxes, _child, _path
from recorder.manifest import Manifest, sha256_hex
from storage.objects import ObjectStore
from storage.recording_keys import object_key, recording_prefix

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^seg-(\d+)\.m4s$")


@dataclass(frozen=True)
class Described:
    start: float  # wall-clock (UNIX seconds) of the first sample
    media_start: float  # seconds on the media timeline
    duration: float  # seconds


def timescales(init: bytes) -> dict[int, int]:
    """Track id -> timescale, from an init segment's moov."""
    moov = _child(init, 0, len(init), b"moov")
    if moov is None:
        raise ValueError("no moov box")
    found = {}
    for kind, a, b in _boxes(init, *moov):
        if kind != b"trak":
            continue
        tkhd, mdhd = _child(init, a, b, b"tkhd"), _path(init, a, b, (b"mdia", b"mdhd"))
        if tkhd is None or mdhd is None:
            raise ValueError("a track without tkhd or mdhd")
        long_tkhd, long_mdhd = init[tkhd[0]] == 1, init[mdhd[0]] == 1
        track = struct.unpack_from(">I", init, tkhd[0] + (20 if long_tkhd else 12))[0]
        found[track] = struct.unpack_from(">I", init, mdhd[0] + (20 if long_mdhd else 12))[0]
    return found


def describe(segment: bytes, scales: dict[int, int]) -> Described:
    """What a manifest says of a segment, read from it. ValueError when it cannot be."""
    wallclock: float | None = None
    track: int | None = None
    first_dts: int | None = None
    ticks = 0
    for kind, a, b in _boxes(segment):
        if kind == b"prft" and wallclock is None:
            track, ntp = struct.unpack_from(">IQ", segment, a + 4)
            wallclock = ntp / (1 << 32) - NTP_UNIX_OFFSET
        elif kind == b"moof":
            for traf_kind, ta, tb in _boxes(segment, a, b):
                if traf_kind != b"traf":
                    continue
                dts, durations, traf_track = _traf(segment, ta, tb)
                if track is None:
                    track = traf_track
                if traf_track == track:
                    first_dts = dts if first_dts is None else first_dts
                    ticks += durations
    if wallclock is None or track is None or first_dts is None or track not in scales:
        raise ValueError("not a segment of this recorder (no prft, or no run of its track)")
    scale = scales[track]
    return Described(wallclock, first_dts / scale, ticks / scale)


def _traf(data: bytes, a: int, b: int) -> tuple[int, int, int]:
    """(first decode time, sum of sample durations, track id) of a track fragment."""
    tfhd, tfdt, trun = (_child(data, a, b, k) for k in (b"tfhd", b"tfdt", b"trun"))
    if tfhd is None or tfdt is None or trun is None:
        raise ValueError("a traf without tfhd, tfdt or trun")
    track = struct.unpack_from(">I", data, tfhd[0] + 4)[0]
    long = data[tfdt[0]] == 1
    dts = struct.unpack_from(">Q" if long else ">I", data, tfdt[0] + 4)[0]
    flags = int.from_bytes(data[trun[0] + 1 : trun[0] + 4], "big")
    count = struct.unpack_from(">I", data, trun[0] + 4)[0]
    if not flags & 0x100:
        raise ValueError("a trun without sample durations")
    pos = trun[0] + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
    step = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    total = sum(struct.unpack_from(">I", data, pos + i * step)[0] for i in range(count))
    return dts, total, track


async def adopt(store: ObjectStore, manifest: Manifest, below: int) -> int:
    """List in the manifest the segments stored under it, numbered below `below` (the new
    writer's range) and after its last one, in order; returns how many. Stops at the first
    it cannot read."""
    rid = manifest.recording_id
    listed = {s.seq for s in manifest.segments}
    last = max(listed, default=-1)
    names = [
        i.key.removeprefix(recording_prefix(rid)) for i in await store.list(recording_prefix(rid))
    ]
    seqs = sorted(
        int(m.group(1))
        for n in names
        if (m := _SEGMENT.match(n)) and last < int(m.group(1)) < below
    )
    if not seqs or not manifest.inits:
        return 0
    init = manifest.segments[-1].init if manifest.segments else manifest.inits[-1].name
    scales = timescales(await store.get(object_key(rid, init)))
    for seq in seqs:
        data = await store.get(object_key(rid, f"seg-{seq}.m4s"))
        try:
            found = describe(data, scales)
        except (ValueError, struct.error) as exc:
            log.error("recording %s: seg-%d.m4s left unlisted (%s)", rid, seq, exc)
            return seqs.index(seq)
        manifest.append(
            start=found.start,
            duration=found.duration,
            data_sha256=sha256_hex(data),
            size=len(data),
            init=init,
            media_start=found.media_start,
            discontinuity=False,
            seq=seq,
        )
    log.info("recording %s: %d segments its last writer stored unlisted, listed", rid, len(seqs))
    return len(seqs)
