"""A camera's G.711 or Opus reaches WebRTC viewers as the camera sent it: an RTSP GStreamer
camera played over WHEP by aiortc (the negotiated codec, no AAC->Opus transcoder, the
tone decoded) and by Chromium (PCMA received, samples rising)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from media_server.rtsp.pull import RtspPull
from media_server.webrtc.sdp import parse_offer
from tests.fixtures.rtsp_camera import RtspCamera
from tests.media_server.test_webrtc_browser import PAGE, open_page
from tests.media_server.test_webrtc_http import LiveServer, frames, open_viewer

Camera = Callable[..., RtspCamera]
pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer({}, page=PAGE).start()
    yield live
    live.stop()


def _until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start_pull(server: LiveServer, stream_id: str, camera: RtspCamera) -> RtspPull:
    async def start() -> RtspPull:
        pull = RtspPull(server.hub, stream_id, camera.url, timeout_s=3.0)
        pull.start()
        return pull

    pull = server.call(start())
    stream = server.hub.stream(stream_id)
    # live, with video and audio flowing (the camera's own audio arrives with its AAC)
    _until(lambda: stream.live and len(stream.tracks) == 2 and stream.stats.packets > 50)
    return pull


def answered_audio(answer: str) -> list[str]:
    """The audio codecs of an SDP answer, as 'NAME/rate'."""
    audio = parse_offer(answer).of_kind("audio")
    assert audio, answer
    return [f"{c.name}/{c.clock_rate}" for c in audio[0].codecs]


def rms(audio_frames: list[Any]) -> float:
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in audio_frames])
    return float(np.sqrt(np.mean((samples.astype(np.float64) / 32768) ** 2)))


@pytest.mark.parametrize(
    "audio, answered, rate", [("pcma", "PCMA/8000", 8000), ("opus", "opus/48000", 48000)]
)
async def test_aiortc_viewer_gets_the_cameras_audio_untranscoded(
    audio: str, answered: str, rate: int, server: LiveServer, rtsp_camera: Camera
) -> None:
    stream_id = f"cam-{audio}"
    camera = rtsp_camera(codec="h264", audio=audio, size="320x180")
    pull = start_pull(server, stream_id, camera)
    try:
        # aiortc offers opus, PCMU and PCMA: the answer names the camera's codec alone
        viewer = await open_viewer(server.url, stream_id)
        assert viewer.response.status_code == 201, viewer.response.text
        assert answered_audio(viewer.response.text) == [answered]
        received = await frames(viewer.track("audio"), 100, timeout=15)
        assert {f.sample_rate for f in received} == {rate}
        level = rms(received[50:])  # past the jitter buffer's start
        assert level > 0.05, f"silence: RMS {level:.3f}"  # the camera's tone: volume 0.2
        assert server.service is not None
        egress = server.service.whep.egresses.get(stream_id)
        assert egress is not None
        assert not egress.audio.listeners and egress.audio.frames_out == 0, "AAC->Opus ran"
        assert len(server.hub.stream(stream_id).source_audio.listeners) == 1
        assert server.hub.stream(stream_id).tracks[1].codec == "aac"  # HLS, recordings
        print(f"\n{audio} camera over WHEP as sent: {answered}, RMS {level:.2f}")
        await viewer.close()
        _until(lambda: not server.hub.stream(stream_id).source_audio.listeners)
    finally:
        server.call(pull.stop())


AUDIO = "rtpStats().then(s => s['inbound-rtp:audio'])"


def audio_stats(page: Any, timeout: float = 15.0) -> dict[str, Any]:
    """The page's inbound audio stats, once samples have been received."""
    deadline = time.monotonic() + timeout
    while not ((stats := page.evaluate(AUDIO)) and stats.get("samples")):
        assert time.monotonic() < deadline, f"no audio samples received: {stats}"
        time.sleep(0.1)
    return dict(stats)


def test_chromium_receives_a_pcma_camera_as_pcma(
    chromium_browser: Any, server: LiveServer, rtsp_camera: Camera
) -> None:
    camera = rtsp_camera(codec="h264", audio="pcma", size="320x180")
    pull = start_pull(server, "cam-chromium", camera)
    try:
        page = open_page(chromium_browser, server)
        answer = page.evaluate("whepPlay('/whep/cam-chromium')")
        assert answer["status"] == 201, answer["text"]
        first = audio_stats(page)
        time.sleep(1.0)
        last = audio_stats(page)
        assert last["codec"] == "audio/PCMA", last
        gained = last["samples"] - first["samples"]
        assert gained > 6_000, f"{gained} samples received in 1 s"  # 8 kHz, as sent
        page.wait_for_function("window.loudness > 0.01", timeout=5_000)
        assert server.service is not None
        egress = server.service.whep.egresses.get("cam-chromium")
        assert egress is not None and not egress.audio.listeners
        assert egress.audio.frames_out == 0, "AAC->Opus ran"
        print(f"\nPCMA camera in Chromium: {gained} samples/s, {last['packets']} packets")
        assert page.evaluate(f"hangUp('{answer['location']}')") == 200
        page.close()
    finally:
        server.call(pull.stop())
