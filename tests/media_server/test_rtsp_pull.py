"""RTSP pull against a real RTSP server (GStreamer) as the camera: packets reach the hub and
decode, the camera dies and comes back, hangs, refuses a password; secrets stay hidden."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.backoff import Backoff
from media_server.hub import Hub
from media_server.media import Packet, StreamEnd, StreamStart
from media_server.rtsp.pull import RtspPull
from tests.fixtures.rtsp_camera import RtspCamera
from tests.media_server.media_check import collect, decode_errors, probe, write_mp4

PASSWORD = "Pa55-w0rd!x"
Camera = Callable[..., RtspCamera]


class StateLog:
    """Every (state, reason) a puller goes through, sampled every 10 ms."""

    def __init__(self, pull: RtspPull) -> None:
        self.pull = pull
        self.seen: list[tuple[str, str]] = []
        self.retries: list[float] = []
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        last: tuple[str, str, int] | None = None
        while True:
            source = self.pull.state
            now = (source.state, source.reason, source.reconnects)
            if now != last:  # reconnects tells two refusals in a row apart
                last = now
                self.seen.append(now[:2])
                if now[0] == "failed":
                    self.retries.append(self.pull.next_retry_s)
            await asyncio.sleep(0.01)

    async def wait(self, state: str, timeout_s: float, reason: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.seen and self.seen[-1][0] == state and reason in self.seen[-1][1]:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {state!r} ({reason!r}) within {timeout_s} s: {self.seen}")

    def states(self) -> list[str]:
        out: list[str] = []
        for state, _ in self.seen:
            if not out or out[-1] != state:
                out.append(state)
        return out

    def close(self) -> None:
        self._task.cancel()


# -- pure parts --


def test_transport_is_checked() -> None:
    with pytest.raises(ValueError, match="transport"):
        RtspPull(Hub(), "s", "rtsp://cam/x", transport="http")


# -- against the camera --


async def test_h264_tcp_reaches_hub_and_decodes(
    rtsp_camera: Camera, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    camera = rtsp_camera(user="admin", password=PASSWORD)
    hub = Hub()
    sub = hub.subscribe("room-1", "test")
    pull = RtspPull(hub, "room-1", camera.url, timeout_s=3.0)
    pull.start()
    states = StateLog(pull)
    try:
        starts, packets = await collect(sub, 4.5)
    finally:
        await pull.stop()
        states.close()
    assert states.states()[:2] == ["connecting", "live"] and pull.state.state == "stopped"
    video, audio = starts[0].tracks
    assert (video.codec, video.width, video.height, video.timescale) == ("h264", 640, 360, 90000)
    assert (audio.codec, audio.sample_rate, audio.channels, audio.timescale) == (
        "aac",
        48000,
        1,
        48000,
    )
    assert packets[0].track == 0 and packets[0].keyframe
    path = tmp_path / "pulled.mp4"
    write_mp4(path, starts[0].tracks, packets)
    info = probe(path)
    frames = int(str(info["video"]["nb_read_frames"]))
    duration = float(str(info["video"]["duration"]))
    assert (info["video"]["width"], info["video"]["height"]) == (640, 360)
    assert duration > 2.0 and abs(frames - duration * 25) <= 3
    assert int(str(info["audio"]["nb_read_frames"])) > 0
    assert decode_errors(path) == ""
    assert PASSWORD not in caplog.text and "rtsp://***@127.0.0.1" in caplog.text
    assert PASSWORD not in repr(pull) and PASSWORD not in str(vars(pull.state))


@pytest.mark.parametrize("codec,transport", [("h264", "udp"), ("h265", "tcp")])
async def test_udp_and_h265(
    codec: str, transport: str, rtsp_camera: Camera, tmp_path: Path
) -> None:
    camera = rtsp_camera(codec=codec)
    hub = Hub()
    sub = hub.subscribe("room-2", "test")
    pull = RtspPull(hub, "room-2", camera.url, transport=transport, timeout_s=3.0)
    pull.start()
    try:
        starts, packets = await collect(sub, 3.5)
    finally:
        await pull.stop()
    video = starts[0].tracks[0]
    assert (video.codec, video.width, video.height) == (codec, 640, 360)
    path = tmp_path / "pulled.mp4"
    write_mp4(path, starts[0].tracks, packets)
    info = probe(path)
    assert int(str(info["video"]["nb_read_frames"])) >= 40
    assert decode_errors(path) == ""


async def test_camera_reboot_reconnects_with_backoff_and_new_epoch(
    rtsp_camera: Camera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    camera = rtsp_camera(audio="none", user="admin", password=PASSWORD)
    hub = Hub()
    sub = hub.subscribe("room-3", "test")
    pull = RtspPull(hub, "room-3", camera.url, timeout_s=2.0, backoff=Backoff(0.2, 1.6, jitter=0.1))
    pull.start()
    states = StateLog(pull)
    try:
        await states.wait("live", 10)
        camera.kill()
        await states.wait("failed", 5, "connection refused")
        await asyncio.sleep(2.5)  # a few refused retries
        assert states.retries[-1] > states.retries[1] * 2  # the wait grows...
        assert max(states.retries) <= 1.6 * 1.1  # ...up to its cap
        assert pull.reconnects >= 3 and pull.state.reconnects == pull.reconnects
        camera.start()  # the camera is back on the same port
        await states.wait("live", 10)
        await asyncio.sleep(0.5)
    finally:
        await pull.stop()
        states.close()
    markers = []
    while (item := sub.get_nowait()) is not None:
        if isinstance(item, (StreamStart, StreamEnd)):
            markers.append(item)
    assert [type(m) for m in markers] == [StreamStart, StreamEnd, StreamStart, StreamEnd]
    assert [m.epoch for m in markers if isinstance(m, StreamStart)] == [1, 2]
    assert hub.stream("room-3").stats.video_frames > 25
    failed = [reason for state, reason in states.seen if state == "failed"]
    assert failed[0] == "the source ended the stream" or "reset" in failed[0]
    assert PASSWORD not in caplog.text and PASSWORD not in " ".join(failed)


async def test_stop_is_prompt_while_the_camera_hangs(rtsp_camera: Camera) -> None:
    camera = rtsp_camera(audio="none")
    hub = Hub()
    pull = RtspPull(hub, "room-4", camera.url, timeout_s=10.0)
    pull.start()
    states = StateLog(pull)
    try:
        await states.wait("live", 10)
        camera.pause()  # SIGSTOP: the socket stays open, nothing comes
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await pull.stop()
        elapsed = time.monotonic() - started
    finally:
        camera.resume()
        states.close()
    assert elapsed < 0.5, f"stop() took {elapsed:.2f} s"
    assert pull._thread is not None and not pull._thread.is_alive()
    assert pull.state.state == "stopped" and not hub.stream("room-4").live


async def test_stalled_camera_times_out_and_recovers(rtsp_camera: Camera) -> None:
    camera = rtsp_camera(audio="none")
    hub = Hub()
    pull = RtspPull(hub, "room-8", camera.url, timeout_s=1.0, backoff=Backoff(0.3, 0.3))
    pull.start()
    states = StateLog(pull)
    try:
        await states.wait("live", 10)
        camera.pause()
        await states.wait("failed", 4, "timeout")
        camera.resume()
        await states.wait("live", 10)
    finally:
        await pull.stop()
        camera.resume()
        states.close()
    assert ("failed", "no data for 1 s (timeout)") in states.seen
    assert hub.stream("room-8").epoch == 2


async def test_hung_camera_fails_with_timeout(rtsp_camera: Camera) -> None:
    camera = rtsp_camera(audio="none")
    camera.pause()  # accepts TCP (kernel backlog), never answers DESCRIBE
    hub = Hub()
    pull = RtspPull(hub, "room-5", camera.url, timeout_s=1.0, backoff=Backoff(5.0, 5.0))
    started = time.monotonic()
    pull.start()
    states = StateLog(pull)
    try:
        await states.wait("failed", 5)
        elapsed = time.monotonic() - started
    finally:
        await pull.stop()
        camera.resume()
        states.close()
    # the open timeout (twice timeout_s: several round trips) ends the attempt, the state
    # says so in words, and nothing was published
    timeouts = {"no answer within 2 s (timeout)", "no answer in time (timeout)"}
    assert states.seen[0] == ("connecting", "")
    assert states.seen[1][0] == "failed" and states.seen[1][1] in timeouts, states.seen
    assert hub.stream("room-5").epoch == 0
    assert 0.9 <= elapsed < 3.5  # loosely: about the open timeout, not the retry wait


async def test_wrong_password_says_so_and_hides_it(
    rtsp_camera: Camera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    camera = rtsp_camera(audio="none", user="admin", password=PASSWORD)
    wrong = camera.url.replace(PASSWORD, "Wr0ng-pa55")
    pull = RtspPull(Hub(), "room-6", wrong, timeout_s=2.0, backoff=Backoff(5.0, 5.0))
    pull.start()
    states = StateLog(pull)
    try:
        await states.wait("failed", 5, "unauthorized")
    finally:
        await pull.stop()
        states.close()
    assert "Wr0ng-pa55" not in caplog.text and "Wr0ng-pa55" not in str(states.seen)


async def test_pcma_audio_is_transcoded_with_a_note(
    rtsp_camera: Camera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    camera = rtsp_camera(audio="pcma")
    hub = Hub()
    sub = hub.subscribe("room-7", "test")
    pull = RtspPull(hub, "room-7", camera.url, timeout_s=3.0)
    pull.start()
    try:  # the audio waits for the camera's first sender report (sender_clock.py)
        starts, packets = await collect(sub, 6.0)
    finally:
        await pull.stop()
    assert [t.codec for t in starts[0].tracks] == ["h264", "aac"]
    assert {p.track for p in packets} == {0, 1}
    assert "audio pcma: transcoded from pcma" in caplog.text


# -- a local file, looped in real time --


def make_file(path: Path, seconds: float = 1.0, fps: int = 25) -> None:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.options = {"preset": "ultrafast", "g": str(fps)}
        audio = out.add_stream("aac", rate=48000)
        for i in range(int(seconds * fps)):
            image = np.full((360, 320), (i * 9) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            frame.pts = i
            out.mux(video.encode(frame))
        for i in range(int(seconds * 48000 / 1024)):
            tone = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, i * 1024, Fraction(1, 48000)
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


async def test_file_is_looped_in_real_time(tmp_path: Path) -> None:
    path = tmp_path / "loop.mp4"
    make_file(path)
    hub = Hub()
    sub = hub.subscribe("agent-1", "test")
    pull = RtspPull(hub, "agent-1", str(path))
    pull.start()
    started = time.monotonic()
    try:
        starts, packets = await collect(sub, 2.6)
    finally:
        await pull.stop()
    assert [t.codec for t in starts[0].tracks] == ["h264", "aac"] and len(starts) == 1
    for track in (0, 1):
        dts = [p.dts for p in packets if p.track == track]
        assert all(b > a for a, b in zip(dts, dts[1:])), f"track {track} goes backwards"
    video: list[Packet] = [p for p in packets if p.track == 0]
    span = (video[-1].dts - video[0].dts) / starts[0].tracks[0].timescale
    wall = video[-1].arrival - video[0].arrival
    assert span > 2.0 and abs(span - wall) < 0.2  # paced: media time follows the clock
    assert sum(p.keyframe for p in video) >= 3  # one per loop at least
    assert time.monotonic() - started < 4
