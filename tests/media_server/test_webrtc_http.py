"""WHEP/WHIP over real HTTP (uvicorn on 127.0.0.1) with aiortc as the client: media arrives
and decodes, every refusal has the right status and a readable reason, and the server
keeps serving after each. The server (hub, clip publishers, router) runs in a thread with
its own event loop, so sync browser tests (test_webrtc_browser.py) can use it too."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from core.web.assets import mount_assets
from media_server.hub import Hub
from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
from media_server.webrtc import IceConfig, WebRTCOptions, make_webrtc_router
from media_server.webrtc.ice import new_peer_connection
from media_server.webrtc.service import WebRTCService
from tests.fixtures.clip import ClipPublisher, load_clip, make_test_clip

T = TypeVar("T")
PUBLISH_KEY = "secret-key"
PRIVATE = "closed-hearing"
SDP = {"Content-Type": "application/sdp"}


class LiveServer:
    """uvicorn + hub + test streams in a thread; `call` runs a coroutine on its loop."""

    def __init__(
        self, clips: dict[str, Path], page: str = "", options: WebRTCOptions | None = None
    ) -> None:
        self.clips = clips
        self.page = page
        self.options = options or WebRTCOptions()
        self.hub = Hub()
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.service: WebRTCService | None = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webrtc-test-server", daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        assert self._ready.wait(20), "test server did not start"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        app = self._app()
        publishers = [
            asyncio.create_task(ClipPublisher(self.hub, sid, load_clip(path)).run())
            for sid, path in self.clips.items()
        ]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self.loop.call_later(0.3, self._ready.set)
        await self._server.serve(sockets=[self.sock])
        for task in publishers:
            task.cancel()
        await asyncio.gather(*publishers, return_exceptions=True)

    def _app(self) -> FastAPI:
        app = FastAPI()
        router = make_webrtc_router(
            self.hub,
            authorize_play,
            authorize_publish,
            IceConfig(host_addresses=["127.0.0.1"]),
            self.options,
        )
        self.service = router.webrtc  # type: ignore[attr-defined]
        app.include_router(router)
        mount_assets(app)  # the /arraignment page's modules and styles

        @app.get("/test/page")
        async def page() -> HTMLResponse:
            return HTMLResponse(self.page)

        return app


async def authorize_play(request: Request, stream_id: str) -> None:
    """As the control room would: private streams (a closed hearing, arraignments) refused."""
    if stream_id == PRIVATE or stream_id.startswith("arraignment-"):
        raise HTTPException(403, f"stream {stream_id!r} is private: sign in first")


async def authorize_publish(request: Request, stream_id: str, bearer: str | None) -> None:
    if bearer is None:
        raise HTTPException(
            401,
            "publishing needs Authorization: Bearer <stream key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if bearer != PUBLISH_KEY:
        raise HTTPException(403, f"wrong key for stream {stream_id!r}")


@pytest.fixture(scope="session")
def webrtc_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """court1: H.264 baseline 640x360 + AAC; hevc1: H.265 320x240 (no browser takes it as is)."""
    base = tmp_path_factory.mktemp("webrtc-clips")
    return {
        "court1": make_test_clip(base / "court1.mp4", seconds=4),
        "hevc1": make_test_clip(
            base / "hevc1.mp4", seconds=2, width=320, height=240, video_codec="libx265", audio=False
        ),
    }


@pytest.fixture(scope="module")
def webrtc_server(webrtc_clips: dict[str, Path]) -> Iterator[LiveServer]:
    server = LiveServer(webrtc_clips).start()
    yield server
    server.stop()


# -- an aiortc WHEP client --


class Viewer:
    def __init__(self, pc: RTCPeerConnection, response: httpx.Response) -> None:
        self.pc = pc
        self.response = response

    def track(self, kind: str) -> MediaStreamTrack:
        return next(t.receiver.track for t in self.pc.getTransceivers() if t.kind == kind)

    async def close(self) -> None:
        await self.pc.close()


async def open_viewer(
    base: str,
    stream_id: str,
    *,
    kinds: tuple[str, ...] = ("video", "audio"),
    video_mime: str | None = None,
) -> Viewer:
    pc = new_peer_connection(IceConfig())
    for kind in kinds:
        transceiver = pc.addTransceiver(kind, direction="recvonly")
        if kind == "video" and video_mime:
            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType == video_mime])
    bind_candidate_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post(
            f"/whep/{stream_id}", content=pc.localDescription.sdp, headers=SDP
        )
    if response.status_code == 201:
        await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
    return Viewer(pc, response)


async def frames(track: MediaStreamTrack, count: int, timeout: float = 8.0) -> list[Any]:
    async def take() -> list[Any]:
        return [await track.recv() for _ in range(count)]

    return await asyncio.wait_for(take(), timeout)


# -- tests --


async def test_aiortc_viewer_decodes_the_stream_as_sent(webrtc_server: LiveServer) -> None:
    started = time.monotonic()
    viewer = await open_viewer(webrtc_server.url, "court1")
    assert viewer.response.status_code == 201, viewer.response.text
    assert viewer.response.headers["content-type"].startswith("application/sdp")
    location = viewer.response.headers["location"]
    assert location.startswith("/whep/court1/")
    assert "H264/90000" in viewer.response.text and "a=end-of-candidates" in viewer.response.text
    assert "127.0.0.1" in viewer.response.text and "stun" not in viewer.response.text.lower()
    video = await frames(viewer.track("video"), 30)
    first_frame_s = time.monotonic() - started
    audio = await frames(viewer.track("audio"), 10)
    assert (video[-1].width, video[-1].height) == (640, 360)
    assert audio[0].sample_rate == 48000
    print(f"\naiortc viewer: 30 decoded frames {first_frame_s * 1000:.0f} ms after the POST")
    async with httpx.AsyncClient(base_url=webrtc_server.url) as client:
        assert (await client.delete(location)).status_code == 200
        assert (await client.delete(location)).status_code == 404
    await viewer.close()


async def test_viewers_share_one_packetization_and_one_transcoder(
    webrtc_server: LiveServer,
) -> None:
    viewers = [await open_viewer(webrtc_server.url, "court1") for _ in range(3)]
    assert all(v.response.status_code == 201 for v in viewers)
    for v in viewers:
        await frames(v.track("video"), 40)
        await frames(v.track("audio"), 5)
    service = webrtc_server.service
    assert service is not None
    egress = service.whep.egresses.get("court1")
    assert egress is not None and egress.viewers == 3
    stats = egress.video.stats
    assert stats.reused >= stats.computed, f"payloads not shared: {stats}"
    assert len(egress.audio.listeners) == 3, "one AAC->Opus transcoder for all viewers"
    print(
        f"\nshared packetization: {stats.computed} frames packetized, {stats.reused} reused; "
        f"AAC->Opus {egress.audio.frames_out} frames, {egress.audio.cpu_s * 1000:.0f} ms CPU"
    )
    for v in viewers:
        await v.close()
    await _until(lambda: service.whep.egresses.get("court1") is None, 10)


async def test_per_viewer_pass_through_mode_also_plays(webrtc_clips: dict[str, Path]) -> None:
    server = await asyncio.to_thread(
        lambda: LiveServer(
            {"court1": webrtc_clips["court1"]}, options=WebRTCOptions(shared_packetization=False)
        ).start()
    )
    try:
        viewer = await open_viewer(server.url, "court1", kinds=("video",))
        assert viewer.response.status_code == 201, viewer.response.text
        video = await frames(viewer.track("video"), 20)
        assert video[-1].width == 640
        await viewer.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_session_limit_is_503_with_a_reason_and_frees_on_hang_up(
    webrtc_clips: dict[str, Path],
) -> None:
    server = await asyncio.to_thread(
        lambda: LiveServer(
            {"court1": webrtc_clips["court1"]},
            options=WebRTCOptions(max_sessions=2, staff_reserve=0),
        ).start()
    )
    try:
        first = await open_viewer(server.url, "court1", kinds=("video",))
        second = await open_viewer(server.url, "court1", kinds=("video",))
        assert first.response.status_code == second.response.status_code == 201
        third = await open_viewer(server.url, "court1", kinds=("video",))
        assert third.response.status_code == 503
        assert third.response.headers["retry-after"] == "10"
        detail = third.response.json()["detail"]
        assert "limit of 2 WebRTC sessions" in detail and "/live/court1/index.m3u8" in detail
        await third.close()
        await first.close()  # hang up without DELETE: the session ends with its connection
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.delete(first.response.headers["location"])
        again = await open_viewer(server.url, "court1", kinds=("video",))
        assert again.response.status_code == 201, again.response.text
        await frames(again.track("video"), 5)
        for viewer in (second, again):
            await viewer.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_rtmp_publisher_plays_over_whep(
    webrtc_server: LiveServer, webrtc_clips: dict[str, Path]
) -> None:
    """ffmpeg -> RTMP (millisecond timestamps, AVCC) -> hub -> WHEP: same bytes, decodable;
    and the RTMP reads are not batched while a WebRTC viewer watches (read_batching.py)."""
    from media_server.rtmp.server import RtmpServer

    async def start_rtmp() -> RtmpServer:
        server = RtmpServer(webrtc_server.hub, "127.0.0.1", 0)
        await server.start()
        return server

    rtmp = webrtc_server.call(start_rtmp())
    ffmpeg = await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(webrtc_clips["court1"]),
        "-c",
        "copy",
        "-f",
        "flv",
        f"rtmp://127.0.0.1:{rtmp.port}/live/rtmp1",
    )
    try:
        await _until(lambda: (s := webrtc_server.hub.find("rtmp1")) is not None and s.live, 10)
        stream = webrtc_server.hub.stream("rtmp1")
        (publisher,) = rtmp._connections
        await _until(lambda: publisher.batching is not None and publisher.batching.mark > 1, 5)
        viewer = await open_viewer(webrtc_server.url, "rtmp1")
        assert viewer.response.status_code == 201, viewer.response.text
        video = await frames(viewer.track("video"), 20)
        audio = await frames(viewer.track("audio"), 10)
        assert video[-1].width == 640 and audio[-1].sample_rate == 48000
        assert stream.realtime
        await _until(lambda: publisher.batching is not None and publisher.batching.mark == 1, 2)
        await viewer.close()
        await _until(lambda: not stream.realtime, 10)
    finally:
        ffmpeg.kill()
        await ffmpeg.wait()
        webrtc_server.call(rtmp.stop())


@pytest.mark.parametrize(
    "stream_id,body,headers,status,reason",
    [
        ("nosuch", None, SDP, 404, "not live"),
        ("court1", "this is not SDP", SDP, 400, "must start with 'v=0'"),
        (
            "court1",
            "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=rtpmap:96 H264/90000\n",
            SDP,
            400,
            "no ICE credentials",
        ),
        ("court1", None, {"Content-Type": "text/plain"}, 415, "application/sdp"),
        (PRIVATE, None, SDP, 403, "private"),
    ],
)
async def test_whep_refusals_are_readable(
    webrtc_server: LiveServer,
    stream_id: str,
    body: str | None,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    offer = body if body is not None else await _offer()
    async with httpx.AsyncClient(base_url=webrtc_server.url) as client:
        response = await client.post(f"/whep/{stream_id}", content=offer, headers=headers)
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]


async def test_h265_stream_is_played_as_an_h264_rendition(webrtc_server: LiveServer) -> None:
    """No browser takes H.265 over WebRTC: the viewer gets H.264 made from it (once per
    stream), not a 406; the hub stream itself stays H.265."""
    viewer = await open_viewer(webrtc_server.url, "hevc1", kinds=("video",))
    assert viewer.response.status_code == 201, viewer.response.text
    assert "H264/90000" in viewer.response.text
    video = await frames(viewer.track("video"), 20)
    assert (video[-1].width, video[-1].height) == (320, 240)  # never scaled up
    assert webrtc_server.hub.stream("hevc1").tracks[0].codec == "h265"
    await viewer.close()


async def test_offer_without_h264_is_refused_with_406(webrtc_server: LiveServer) -> None:
    viewer = await open_viewer(
        webrtc_server.url, "court1", kinds=("video",), video_mime="video/VP8"
    )
    assert viewer.response.status_code == 406
    assert "no H.264" in viewer.response.json()["detail"]
    await viewer.close()


async def test_whip_needs_the_right_bearer_key(webrtc_server: LiveServer) -> None:
    offer = await _offer(direction="sendonly")
    async with httpx.AsyncClient(base_url=webrtc_server.url) as client:
        missing = await client.post("/whip/cam9", content=offer, headers=SDP)
        wrong = await client.post(
            "/whip/cam9", content=offer, headers={**SDP, "Authorization": "Bearer nope"}
        )
        viewer_offer = await client.post(
            "/whip/cam9",
            content=await _offer(),
            headers={**SDP, "Authorization": f"Bearer {PUBLISH_KEY}"},
        )
    assert missing.status_code == 401 and "Bearer" in missing.json()["detail"]
    assert wrong.status_code == 403 and "wrong key" in wrong.json()["detail"]
    assert viewer_offer.status_code == 400 and "sendonly" in viewer_offer.json()["detail"]


async def test_patch_is_405_and_unknown_sessions_404(webrtc_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=webrtc_server.url) as client:
        patch = await client.patch(
            "/whep/court1/abc",
            content="a=end-of-candidates",
            headers={"Content-Type": "application/trickle-ice-sdpfrag"},
        )
        delete = await client.delete("/whip/court1/abc")
        options = await client.options("/whep/court1")
    assert patch.status_code == 405 and patch.headers["allow"] == "DELETE"
    assert "trickle ICE" in patch.json()["detail"]
    assert delete.status_code == 404
    assert options.headers["accept-post"] == "application/sdp"


async def test_server_keeps_serving_after_refusals(webrtc_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=webrtc_server.url) as client:
        for body in (b"v=0\n\x00\x01", b"v=0\nm=audio x\n", b"v" * 70000, b"v=0\n\xff\xfe"):
            response = await client.post("/whep/court1", content=body, headers=SDP)
            assert response.status_code in (400, 413), response.text
            assert response.json()["detail"]
    viewer = await open_viewer(webrtc_server.url, "court1", kinds=("video",))
    assert viewer.response.status_code == 201
    assert len(await frames(viewer.track("video"), 5)) == 5
    await viewer.close()


async def _offer(direction: str = "recvonly") -> str:
    pc = new_peer_connection(IceConfig())
    pc.addTransceiver("video", direction=direction)
    bind_candidate_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def _until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
