"""The analysis pieces on their own: the sampler never makes the hub wait and counts what
it skips (issue 17, item 4), episodes make one alert of a flapping condition, a clip from
the pre-roll ring decodes, motion keeps to zones and masks, schedules. Real H.264 from
the ffmpeg CLI (tests/mediafiles.py)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from media_server.analysis import clips
from media_server.analysis.detectors import MotionDetector
from media_server.analysis.episodes import Episodes
from media_server.analysis.sampler import MAX_BACKLOG, Picture, Sampler
from media_server.analysis.settings import AnalysisSettings, Polygon, Window
from media_server.media import StreamEnd, StreamStart
from tests.mediafiles import load_clip, make_clip

pytestmark = pytest.mark.timeout(60)


def test_a_stuck_analysis_never_holds_the_publisher_and_counts_what_it_skips(
    tmp_path: Path,
) -> None:
    tracks, packets = load_clip(make_clip(tmp_path, seconds=10, fps=30, gop=30, audio=None))
    release = threading.Event()
    seen: list[Picture] = []

    def stuck(picture: Picture) -> None:
        seen.append(picture)
        release.wait(10)  # a detector that takes for ever

    sampler = Sampler("cam", stuck, lambda marker: None, fps=2, width=160)
    try:
        sampler.offer(StreamStart(tracks, 1))
        began = time.perf_counter()
        for packet in packets:
            sampler.offer(packet)
        spent = time.perf_counter() - began
        assert spent < 0.05, f"offering 300 packets took {spent:.3f} s"
        assert sampler.skipped >= len(packets) - MAX_BACKLOG - 30, sampler.skipped
        release.set()
        for _ in range(100):
            if sampler.pictures >= 2:
                break
            time.sleep(0.05)
        # it went on after the skip, from a keyframe, with pictures the width it was told
        assert sampler.pictures >= 2 and seen[-1].grey.shape == (120, 160)
    finally:
        release.set()
        sampler.close()


def test_the_sampler_hands_on_fps_pictures_a_second_of_media_time(tmp_path: Path) -> None:
    tracks, packets = load_clip(make_clip(tmp_path, seconds=4, fps=30, gop=30, audio=None))
    media: list[float] = []
    markers: list[object] = []
    sampler = Sampler("cam", lambda p: media.append(p.media), markers.append, fps=2)
    try:
        sampler.offer(StreamStart(tracks, 1))
        for packet in packets:
            sampler.offer(packet)
        sampler.offer(StreamEnd("done"))
        for _ in range(100):
            if len(markers) == 2:
                break
            time.sleep(0.05)
    finally:
        sampler.close()
    assert [round(m, 2) for m in media] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert sampler.skipped == 0


def test_a_flapping_condition_is_one_episode() -> None:
    episodes = Episodes()
    out = []
    # motion seen, gone for 2 s, seen again, then quiet: one alert (hold is 5 s)
    pattern = [1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    for n, on in enumerate(pattern):
        t = n * 0.5
        out += episodes.update(t, 1000 + t, {"motion": 0.1 * (n + 1)} if on else {})
    assert [(t.kind, t.phase, t.at) for t in out] == [
        ("motion", "start", 1000.0),
        ("motion", "end", 1003.5),
    ]
    assert out[1].score == pytest.approx(0.8)
    # covered must hold for its rise time: one black picture is not an alert
    assert episodes.update(20, 1020, {"covered": 1}) == []
    assert episodes.update(20.5, 1020.5, {}) == []
    assert episodes.update(21.5, 1021.5, {"covered": 1}) == []


def test_a_clip_from_the_ring_starts_at_a_keyframe_before_the_event_and_decodes(
    tmp_path: Path,
) -> None:
    tracks, packets = load_clip(make_clip(tmp_path, seconds=10, fps=30, gop=30))
    base = time.time()
    ring = clips.PacketRing(keep_s=3)
    ring.start(tracks)
    video = [p for p in packets if p.track == 0]
    for packet in packets:  # arriving at the media's pace
        packet.arrival = base + packet.dts / tracks[packet.track].timescale
        ring.push(packet)
    clip = clips.clip_from(ring, base + 7.0, pre_roll_s=3, post_roll_s=2)
    first = clip.packets[0]
    assert first.keyframe and first.track == 0 and first.arrival == pytest.approx(base + 4.0)
    assert clip.until == pytest.approx(base + 9.0)
    path = tmp_path / "clip.mp4"
    path.write_bytes(clips.mp4(clip))
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == len([p for p in video if p.arrival >= base + 4.0])


def test_keyframes_alone_are_decoded_when_they_come_often_enough(tmp_path: Path) -> None:
    """A GOP of 1/fps or shorter: P-frames would cost decoding and give no picture."""
    tracks, packets = load_clip(make_clip(tmp_path, seconds=4, fps=30, gop=15, audio=None))
    media: list[float] = []
    markers: list[object] = []
    sampler = Sampler("cam", lambda p: media.append(p.media), markers.append, fps=2)
    try:
        sampler.offer(StreamStart(tracks, 1))
        for packet in packets:
            sampler.offer(packet)
        sampler.offer(StreamEnd("done"))
        for _ in range(100):
            if len(markers) == 2:
                break
            time.sleep(0.05)
    finally:
        sampler.close()
    assert [round(m, 2) for m in media] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    # the first GOP decoded whole (the keyframe interval is not known yet), then keyframes
    assert sampler.decoded == 15 + 7, sampler.decoded


def test_motion_counts_in_zones_and_not_under_masks() -> None:
    """A square moving in the lower right: seen with the whole frame, with a zone there,
    not with the zone elsewhere, nor under a mask."""
    rng = np.random.default_rng(3)
    scene = rng.integers(60, 160, (240, 320)).astype(np.uint8)
    scene = cv2.GaussianBlur(scene, (0, 0), 3)

    def frames() -> list[np.ndarray]:
        out = []
        for n in range(6):
            picture = scene.copy()
            if n >= 3:  # the square comes in at the fourth picture
                picture[150:190, 200 + 10 * n : 240 + 10 * n] = 240
            noise = rng.normal(0, 3, picture.shape)
            out.append(np.clip(picture + noise, 0, 255).astype(np.uint8))
        return out

    lower_right = Polygon(points=[(0.5, 0.5), (1, 0.5), (1, 1), (0.5, 1)])
    upper_left = Polygon(points=[(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)])

    def scores(settings: AnalysisSettings) -> list[float | None]:
        detector = MotionDetector(settings)
        return [detector.score(f) for f in frames()]

    whole = scores(AnalysisSettings())
    assert whole[:3] == [None, None, None] and all(whole[3:]), whole
    assert all(scores(AnalysisSettings(zones=[lower_right]))[3:])
    assert not any(scores(AnalysisSettings(zones=[upper_left])))
    assert not any(scores(AnalysisSettings(masks=[lower_right])))
    # a blob smaller than min_area does not count
    assert not any(scores(AnalysisSettings(min_area=0.05)))


def test_schedules_limit_motion_and_person_only() -> None:
    night = AnalysisSettings(
        schedule=[Window(start="18:00", end="08:00")],
        detectors={"person": True},
    )
    noon, late, early = (datetime(2026, 12, 6, h, m) for h, m in ((12, 0), (23, 30), (7, 59)))
    assert not night.wants("motion", noon) and not night.wants("person", noon)
    assert night.wants("motion", late) and night.wants("person", early)
    assert night.wants("covered", noon) and night.wants("signal_loss", noon)
    assert not AnalysisSettings(detectors={"frozen": False}).wants("frozen", noon)
    with pytest.raises(ValueError, match="unknown detectors"):
        AnalysisSettings(detectors={"fire": True})
    with pytest.raises(ValueError, match="HH:MM"):
        Window(start="25:00", end="08:00")
