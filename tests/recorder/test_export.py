"""Export across a backfilled gap: live segments (init.mp4, no B-frames), a WAN cut the
device agent filled with its own recording (init-bf0.mp4, another encode, B-frames), live
again. The clip plays in wall-clock order, each piece behind its own init, with one
continuous timeline, starts at `from` (keyframe before it, edit list) and decodes across
both joins. Against the disk and the S3 (SeaweedFS) object stores."""

from __future__ import annotations

import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from media_server.hls.segmenter import Segment, Segmenter
from media_server.media import StreamEnd, StreamStart
from recorder.export import ExportError, Piece, export_clip, iso, plan, verify_export
from recorder.manifest import Gap, GapCause, InitEntry, Manifest, sha256_hex
from recorder.signing import Signer
from storage.objects import ObjectStore
from storage.recording_keys import manifest_key, object_key, segment_key
from tests.mediafiles import load_clip, make_clip
from tests.recorder.conftest import decoded_video, ffprobe, new_manifest
from tests.recorder.test_backfill import agent_segments

FPS = 25
GAP = (8.0, 12.0)  # seconds after T0 with no live media (the WAN cut)


def live_segments(
    clip: Path, t0: float, runs: list[tuple[float, float]]
) -> tuple[bytes, list[Segment]]:
    """What the recorder's segmenter makes of publications at (offset, seconds) after t0:
    one media timeline, each later publication a discontinuity."""
    tracks, packets = load_clip(clip)
    segmenter = Segmenter(2.0, 0.5, window_segments=1000, prft=True)
    for epoch, (offset, seconds) in enumerate(runs, start=1):
        segmenter.feed(StreamStart(tracks, epoch))
        for p in packets:
            t = p.dts / tracks[p.track].timescale
            if 0 <= t < seconds:
                segmenter.feed(replace(p, arrival=t0 + offset + t))
        segmenter.feed(StreamEnd("publisher left"))
    return next(iter(segmenter.inits.values())), list(segmenter.segments)


async def put_recording(store: ObjectStore, tmp_path: Path, t0: float) -> Manifest:
    """A closed recording with a filled publisher-lost gap, stored."""
    manifest = new_manifest(state="closed")
    init, live = live_segments(
        make_clip(tmp_path, seconds=10, fps=FPS, gop=FPS), t0, [(0.0, GAP[0]), (GAP[1], 8.0)]
    )
    agent = agent_segments(
        make_clip(tmp_path, seconds=4, fps=FPS, gop=FPS, bframes=2), t0 + GAP[0] - 3.0, 10.0
    )
    await add_init(store, manifest, "init.mp4", init)
    await add_init(store, manifest, "init-bf0.mp4", agent.init)
    for seg in live:
        await add_segment(store, manifest, seg, "init.mp4", backfilled=False)
    before = max(s.end for s in manifest.segments if s.end <= t0 + GAP[1] - 1)
    manifest.gaps.append(Gap(before, t0 + GAP[1], GapCause.publisher_lost))
    gap = manifest.gaps[0]
    for seg in agent.segments:
        if min(seg.wallclock + seg.duration, gap.end) - max(seg.wallclock, gap.start) >= 0.1:
            await add_segment(store, manifest, seg, "init-bf0.mp4", backfilled=True)
    assert manifest.fill_gaps() == [gap]
    await store.put(manifest_key(manifest.recording_id), manifest.to_bytes(), "application/json")
    return manifest


async def add_init(store: ObjectStore, manifest: Manifest, name: str, data: bytes) -> None:
    await store.put(object_key(manifest.recording_id, name), data, "video/mp4")
    manifest.inits.append(InitEntry(name, sha256_hex(data), len(data), []))


async def add_segment(
    store: ObjectStore, manifest: Manifest, seg: Segment, init: str, backfilled: bool
) -> None:
    data, seq = seg.data(), manifest.next_seq
    await store.put(segment_key(manifest.recording_id, seq), data, "video/mp4")
    manifest.append(
        start=seg.wallclock,
        duration=seg.duration,
        data_sha256=sha256_hex(data),
        size=len(data),
        init=init,
        media_start=seg.start,
        discontinuity=seg.discontinuity or backfilled,
        backfilled=backfilled,
    )


async def test_export_across_a_backfilled_gap(
    objects: ObjectStore, tmp_path: Path, signer: Signer
) -> None:
    t0 = round(time.time() - 60, 3)
    manifest = await put_recording(objects, tmp_path, t0)
    start, end = t0 + 4.3, t0 + 15.3  # from inside a live GOP, over both joins
    pieces = plan(manifest, start, end)
    assert [p.init for p in pieces] == ["init.mp4", "init-bf0.mp4", "init.mp4"]
    assert all(a.wall_to <= b.wall_from for a, b in pairwise(pieces))
    seen: list[float] = []
    out = tmp_path / "clip.mp4"
    result = await export_clip(objects, manifest, start, end, out, signer, seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert abs(result.duration_s - (end - start)) <= 0.01, result
    info = ffprobe(out)
    # each join may hold a frame a little longer (B-frame reorder delay, the frame grid)
    assert abs(float(info["format"]["duration"]) - (end - start)) <= 0.4, info["format"]
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert video["codec_tag_string"] == "avc3"  # parameter sets change in-band
    frames = decoded_video(out)
    # presentation starts at `from`: the frames before it (from the keyframe) are cut by
    # the edit list; every frame after decodes, across both joins, with no hole longer
    # than the overlap trimmed at a join
    assert frames and abs(frames[0]) <= 1 / FPS, frames[:3]
    assert abs(len(frames) / FPS - (end - start)) <= 0.5, len(frames)
    assert max(b - a for a, b in pairwise(frames)) <= 0.5
    statement = verify_export(signer.public, out, result.signature_path.read_bytes())
    assert (statement["from"], statement["to"]) == (iso(start), iso(end))


async def test_export_of_live_media_only_is_exact(
    objects: ObjectStore, tmp_path: Path, signer: Signer
) -> None:
    """The stretch before the cut: one piece, one init, avc1 as before backfill."""
    t0 = round(time.time() - 60, 3)
    manifest = await put_recording(objects, tmp_path, t0)
    out = tmp_path / "live.mp4"
    result = await export_clip(objects, manifest, t0 + 1.5, t0 + 6.5, out, signer)
    assert [p.init for p in plan(manifest, t0 + 1.5, t0 + 6.5)] == ["init.mp4"]
    info = ffprobe(out)
    assert abs(float(info["format"]["duration"]) - 5.0) <= 0.1, info["format"]
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert video["codec_tag_string"] == "avc1"
    assert abs(len(decoded_video(out)) / FPS - 5.0) <= 0.1
    assert result.start == round(t0 + 1.5, 6)


def test_plan_shows_an_overlap_once() -> None:
    """A backfilled segment reaching back over the last live one: the live piece yields
    where it starts; the next live segment after the backfilled one ends it."""
    m = Manifest(recording_id="r", stream="s", opened_at=100.0)
    for n in range(3):
        m.append(
            start=100.0 + 2 * n,
            duration=2.0,
            data_sha256="x",
            size=1,
            init="init.mp4",
            media_start=2.0 * n,
            discontinuity=False,
        )
    m.append(
        start=110.0,
        duration=2.0,
        data_sha256="x",
        size=1,
        init="init.mp4",
        media_start=6.0,
        discontinuity=True,
    )
    for n, at in enumerate((105.0, 107.0, 109.0)):
        m.append(
            start=at,
            duration=2.0,
            data_sha256="x",
            size=1,
            init="init-bf0.mp4",
            media_start=50.0 + 2 * n,
            discontinuity=True,
            backfilled=True,
        )
    pieces = plan(m, 101.0, 111.0)
    assert [(p.init, p.wall_from, p.wall_to) for p in pieces] == [
        ("init.mp4", 101.0, 105.0),
        ("init-bf0.mp4", 105.0, 110.0),
        ("init.mp4", 110.0, 111.0),
    ]
    assert [len(p.segments) for p in pieces] == [3, 3, 1]
    assert (pieces[0].media_from, pieces[0].media_to) == (1.0, 5.0)
    assert (pieces[1].media_from, pieces[1].media_to) == (50.0, 55.0)


def test_plan_a_live_tail_inside_a_backfilled_segment_does_not_cut_it() -> None:
    """A media node died (tests/courtcast/test_node_failover.py): the live recording ends
    on a short segment that lies inside the agent's first backfilled one, which started a
    little before it (keyframes). That backfilled segment is shown whole, not cut where
    the tail starts with the rest of the gap lost."""
    m = Manifest(recording_id="r", stream="s", opened_at=100.0)
    for start, duration, media, new_run in ((100.0, 4.0, 0.0, False), (104.0, 0.28, 4.0, False),
                                            (107.6, 4.0, 4.28, True)):  # fmt: skip
        m.append(start=start, duration=duration, data_sha256="x", size=1, init="init.mp4",
                 media_start=media, discontinuity=new_run)  # fmt: skip
    for n, at in enumerate((103.5, 105.5)):
        m.append(start=at, duration=2.0, data_sha256="x", size=1, init="init-bf0.mp4",
                 media_start=12.0 + 2 * n, discontinuity=True, backfilled=True)  # fmt: skip
    pieces = plan(m, 101.0, 110.0)
    assert [(p.init, p.wall_from, p.wall_to) for p in pieces] == [
        ("init.mp4", 101.0, 103.5),
        ("init-bf0.mp4", 103.5, 107.5),
        ("init.mp4", 107.6, 110.0),
    ]


async def test_codec_change_inside_a_stretch_is_refused(
    objects: ObjectStore, tmp_path: Path, signer: Signer
) -> None:
    t0 = round(time.time() - 60, 3)
    manifest = await put_recording(objects, tmp_path, t0)
    h265 = agent_segments(
        make_clip(tmp_path, seconds=2, fps=FPS, gop=FPS, video="h265"), t0 + 30, 2.0
    )
    await add_init(objects, manifest, "init-30.mp4", h265.init)
    await add_segment(objects, manifest, h265.segments[0], "init-30.mp4", backfilled=False)
    with pytest.raises(ExportError, match="codec changed"):
        await export_clip(objects, manifest, t0 + 1, t0 + 40, tmp_path / "x.mp4", signer)


def test_piece_media_times_follow_its_segments() -> None:
    m = Manifest(recording_id="r", stream="s", opened_at=0.0)
    a = m.append(
        start=10.0,
        duration=2.0,
        data_sha256="x",
        size=1,
        init="i",
        media_start=4.0,
        discontinuity=False,
    )
    b = m.append(
        start=12.01,
        duration=2.0,
        data_sha256="x",
        size=1,
        init="i",
        media_start=6.0,
        discontinuity=False,
    )
    piece = Piece("i", [a, b], 11.0, 13.01)
    assert (piece.media_from, piece.media_to) == (5.0, 7.0)
