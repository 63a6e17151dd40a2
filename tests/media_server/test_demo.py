"""Demo courtrooms: live 720p test pictures in the hub that decode, show the wall clock's
seconds, loop seamlessly, and cost next to no CPU once the loop is encoded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import numpy as np
import pytest

from media_server.demo import (
    DemoCourtroom,
    DemoPicture,
    demo_court_tree,
    text_mask,
)
from media_server.hub import Hub
from tests.media_server.media_check import collect, decode_errors, probe, write_mp4

TITLE = "East District People's Court - Courtroom 2"


async def test_demo_publishes_720p_that_decodes(tmp_path: Path) -> None:
    hub = Hub()
    sub = hub.subscribe("demo-east-2", "test")
    room = DemoCourtroom(hub, "demo-east-2", TITLE)
    started = time.monotonic()
    await room.start()
    start_s = time.monotonic() - started
    cpu = time.process_time()
    try:
        starts, packets = await collect(sub, 3.0)
    finally:
        await room.stop()
    cpu_first = (time.process_time() - cpu) / 3.0
    print(f"start {start_s:.3f} s; CPU while the first loop encodes {cpu_first * 1000:.0f} ms/s")
    assert start_s < 2.0 and not hub.stream("demo-east-2").live
    video, audio = starts[0].tracks
    assert (video.codec, video.width, video.height) == ("h264", 1280, 720)
    assert (audio.codec, audio.sample_rate) == ("aac", 48000)
    path = tmp_path / "demo.mp4"
    write_mp4(path, starts[0].tracks, packets)
    info = probe(path)
    duration = float(str(info["video"]["duration"]))
    frames = int(str(info["video"]["nb_read_frames"]))
    assert (info["video"]["width"], info["video"]["height"]) == (1280, 720)
    # ~3 s, plus up to 1 s sent at once: the loop starts on the last whole second
    assert 2.8 <= duration <= 4.1 and abs(frames - duration * 25) <= 2
    assert float(str(info["audio"]["duration"])) > 2.5
    assert decode_errors(path) == ""


async def test_replay_loops_seamlessly_and_costs_little_cpu() -> None:
    hub = Hub()
    room = DemoCourtroom(hub, "demo-1", TITLE, loop_s=2.0)
    sub = hub.subscribe("demo-1", "test")
    await room.start()
    try:
        for _ in range(300):
            if room.encoded:
                break
            await asyncio.sleep(0.01)
        assert room.encoded
        await collect(sub, 0.1)  # drain what came while encoding
        cpu, wall = time.process_time(), time.monotonic()
        _, packets = await collect(sub, 3.0)
        per_s = (time.process_time() - cpu) / (time.monotonic() - wall)
    finally:
        await room.stop()
    print(f"replay CPU {per_s * 1000:.1f} ms per second of 720p25 + AAC (publisher and reader)")
    assert per_s < 0.05
    video = [p for p in packets if p.track == 0]
    audio = [p for p in packets if p.track == 1]
    steps = {b.dts - a.dts for a, b in zip(video, video[1:])}
    assert steps == {3600}  # 25 fps in 90 kHz, across loop boundaries too
    assert all(b.dts > a.dts for a, b in zip(audio, audio[1:]))
    keys = [p.dts for p in video if p.keyframe]
    assert len(keys) >= 1 and all((b - a) == 180000 for a, b in zip(keys, keys[1:]))
    assert abs(len(video) - 75) <= 3


async def test_picture_shows_the_wall_clock_seconds(tmp_path: Path) -> None:
    hub = Hub()
    sub = hub.subscribe("demo-2", "test")
    room = DemoCourtroom(hub, "demo-2", TITLE, width=640, height=360)
    await room.start()
    try:
        starts, packets = await collect(sub, 1.5)
    finally:
        await room.stop()
    path = tmp_path / "clock.mp4"
    write_mp4(path, starts[0].tracks, packets)
    first_dts = next(p.dts for p in packets if p.track == 0)
    picture = DemoPicture(TITLE, 640, 360)
    with av.open(str(path)) as container:
        frame = next(f for i, f in enumerate(container.decode(video=0)) if i == 30)
    shown = frame.to_ndarray(format="yuv420p")[:360].astype(int)
    at = room.started_at + (first_dts + 30 * 3600) / 90000
    expected = picture.frame(at)[:360].astype(int)
    other = picture.frame(at + 1.0)[:360].astype(int)  # the next second's digits
    assert np.abs(shown - expected).mean() < 3 < np.abs(expected - other).max()
    assert np.abs(shown - expected).mean() < np.abs(shown - other).mean()


def test_court_tree_has_three_levels_and_unique_streams() -> None:
    rooms = demo_court_tree()
    assert [r.level for r in rooms] == ["high", "intermediate", "basic", "basic"]
    courts = {r.court_id: r for r in rooms}
    assert all(r.parent is None or r.parent in courts for r in rooms)
    assert courts["demo-east"].parent == "demo-city" and courts["demo-city"].parent == "demo-high"
    streams = [r.stream_id for r in rooms]
    titles = {r.stream_id: r.title for r in rooms}
    assert len(set(streams)) == len(streams) == 4 and set(titles) == set(streams)
    assert titles["demo-city-3"] == "City Intermediate People's Court - Courtroom 3"


def test_text_mask_and_bad_sizes() -> None:
    mask = text_mask("A?庭", 2)
    assert mask.shape == (14, 36) and mask.any()
    assert (text_mask("?", 1) == text_mask("庭", 1)).all()  # unknown glyphs show as '?'
    with pytest.raises(ValueError):
        DemoCourtroom(Hub(), "x", "t", loop_s=1.01)
    with pytest.raises(ValueError):
        DemoPicture("t", 641, 360)
