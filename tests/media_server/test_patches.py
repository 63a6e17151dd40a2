"""Library patches (media_server/patches/): each exercised against the library it patches,
and each guard refusing a version its patch was not written for. One section per library."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc import (
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCStatsReport,
)
from aiortc.codecs.h264 import H264Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack
from av.frame import Frame

from media_server import patches
from media_server.hub import Hub
from media_server.patches import (
    UnsupportedLibraryVersion,
    aiortc_fast_sender,
    aiortc_ice_addresses,
    aiortc_receiver_tap,
)
from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
from media_server.webrtc import udp_path
from media_server.webrtc.ice import IceConfig, new_peer_connection
from media_server.webrtc.rtp_out import RtpOut
from media_server.webrtc.service import WebRTCOptions, WebRTCService

# -- aiortc: the fast sender and the receiver tap (WebRTC) --


class PushedTrack(MediaStreamTrack):
    """A track whose frames are pushed through the RtpOut its patched sender binds."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.out: asyncio.Future[RtpOut] = asyncio.get_running_loop().create_future()

    def bind(self, out: RtpOut) -> None:
        self.out.set_result(out)

    async def recv(self) -> Frame:
        raise MediaStreamError  # never asked: the patched sender does not pull


def prefer_h264(transceiver: RTCRtpTransceiver) -> None:
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/H264"])


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    """Offer/answer over loopback, then wait until both ends are connected."""
    bind_candidate_addresses(offerer, ["127.0.0.1"])
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    bind_candidate_addresses(answerer, ["127.0.0.1"])
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    await until(lambda: offerer.connectionState == answerer.connectionState == "connected")


async def until(ready: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def settles(read: Callable[[], Awaitable[int]], want: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (got := await read()) != want:
        assert time.monotonic() < deadline, f"{got}, not {want}"
        await asyncio.sleep(0.1)


def stats_of(report: RTCStatsReport, kind: str) -> Any:
    return next(s for s in report.values() if s.type == kind)


@pytest.mark.parametrize("compiled", [True, False], ids=["frame_send_c", "frame_send"])
async def test_the_patched_sender_sends_rtp_an_aiortc_receiver_decodes_and_counts(
    compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(udp_path, "USE_COMPILED", compiled)
    sending, receiving = new_peer_connection(IceConfig()), new_peer_connection(IceConfig())
    track = PushedTrack()
    sender = sending.addTrack(track)
    aiortc_fast_sender.install(sender, RtpOut)
    prefer_h264(sending.getTransceivers()[0])
    remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    receiving.on("track", remote.set_result)
    try:
        await connect(sending, receiving)
        out = await asyncio.wait_for(track.out, 10)
        source, encoder, sent = VideoStreamTrack(), H264Encoder(), 0
        for _ in range(10):  # a keyframe, then frames: the jitter buffer releases each
            payloads, timestamp = encoder.encode(await source.recv())  # at 30 fps
            out.send_frame(payloads, timestamp)
            sent += len(payloads)
        picture = await asyncio.wait_for((await remote).recv(), 10)
        assert out._path is not None
        assert type(out._path.out).__module__.endswith("frame_send_c" if compiled else "frame_send")
        assert (picture.width, picture.height) == (640, 480), "decoded by aiortc's receiver"
        assert stats_of(await sender.getStats(), "outbound-rtp").packetsSent == sent
        receiver = receiving.getTransceivers()[0].receiver

        async def received() -> int:
            return int(stats_of(await receiver.getStats(), "inbound-rtp").packetsReceived)

        async def reported() -> int:  # by the Sender Reports aiortc builds from our counters
            stats = (await receiver.getStats()).values()
            return next((s.packetsSent for s in stats if s.type == "remote-outbound-rtp"), 0)

        await settles(received, sent)
        await settles(reported, sent)
    finally:
        await sending.close()
        await receiving.close()


async def test_the_receiver_tap_takes_encoded_frames_and_ends_with_the_receiver() -> None:
    publisher, ingest = new_peer_connection(IceConfig()), new_peer_connection(IceConfig())
    prefer_h264(publisher.addTransceiver(VideoStreamTrack(), direction="sendonly"))
    frames: list[JitterFrame] = []
    tapped = ingest.addTransceiver("video", direction="recvonly")
    prefer_h264(tapped)
    aiortc_receiver_tap.tap_receiver(tapped.receiver, frames.append)
    try:
        await connect(publisher, ingest)
        await until(lambda: len(frames) >= 3)
        first = frames[0].data
        assert first.startswith(b"\x00\x00\x00\x01"), "Annex-B, as aiortc depacketizes it"
        assert first[4] & 0x1F == 7, "the first frame is a keyframe, led by its SPS"
        assert frames[1].timestamp > frames[0].timestamp
    finally:
        await publisher.close()
        await asyncio.wait_for(ingest.close(), 10)  # the idle decoder thread ends too


async def test_the_guards_refuse_an_aiortc_they_were_not_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aiortc_fast_sender.check()  # the installed aiortc is one the patches know
    aiortc_receiver_tap.check()
    aiortc_ice_addresses.check()
    monkeypatch.setattr(patches, "version", lambda package: "9.9.9")
    sender = RTCRtpSender("video", SimpleNamespace(state="new"))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedLibraryVersion, match=r"aiortc 9\.9\.9 .* 1\.16\.0"):
        aiortc_fast_sender.install(sender, RtpOut)
    receiver = RTCRtpReceiver("video", SimpleNamespace(state="new"))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedLibraryVersion, match="decoder queue"):
        aiortc_receiver_tap.tap_receiver(receiver, lambda frame: None)
    with pytest.raises(UnsupportedLibraryVersion, match="RTCIceGatherer"):
        bind_candidate_addresses(RTCPeerConnection(), ["127.0.0.1"])
    with pytest.raises(UnsupportedLibraryVersion):  # at start-up: the media node's service
        WebRTCService(Hub(), IceConfig(), WebRTCOptions())


# -- PyAV: the interrupt clock (RTSP pull's prompt stop) --
# (the imports the other sections do not need are here, so that this one stands alone)

import socket
import threading

import av
import av.container.core
import av.error

from media_server.patches import pyav_interrupt_clock
from media_server.rtsp.pull import RtspPull

# how PyAV reports a call its interrupt callback ended (RTSP's open: as invalid data)
CUT_SHORT = (av.error.ExitError, av.error.InvalidDataError)


class BlockedOpen:
    """av.open of a camera that accepts the connection and never answers, in a thread."""

    def __init__(self, url: str) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._open, args=(url,), daemon=True)
        self.thread.start()

    def _open(self, url: str) -> None:
        try:  # PyAV's own timeouts are far off: only the clock can end this soon
            av.open(url, options={"rtsp_transport": "tcp"}, timeout=(60.0, 60.0)).close()
        except Exception as exc:
            self.error = exc


def test_the_interrupt_clock_ends_a_blocked_pyav_open_at_once() -> None:
    clock = pyav_interrupt_clock.install()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; no answer
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x"
        stopped, other = BlockedOpen(url), BlockedOpen(url)
        try:
            time.sleep(0.5)  # both are waiting for the camera's answer now
            assert stopped.thread.is_alive() and other.thread.is_alive()
            started = time.monotonic()
            clock.interrupt(stopped.thread)
            stopped.thread.join(5)
            elapsed = time.monotonic() - started
            assert not stopped.thread.is_alive()
            assert isinstance(stopped.error, CUT_SHORT), stopped.error
            time.sleep(0.3)
            assert other.thread.is_alive(), "a thread not being stopped sees the real clock"
        finally:
            clock.interrupt(other.thread)
            other.thread.join(5)
            clock.release(stopped.thread)
            clock.release(other.thread)
    assert isinstance(other.error, CUT_SHORT), other.error
    assert clock.monotonic is time.monotonic  # nobody stopped: the real clock, no frame
    assert elapsed < 1.0  # loosely: FFmpeg polls the callback about every 0.1 s


async def test_the_pyav_guard_refuses_a_version_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pyav_interrupt_clock.check()  # the installed PyAV is one the patch knows
    monkeypatch.setattr(patches, "version", lambda package: "99.0.0")
    with pytest.raises(UnsupportedLibraryVersion, match=r"av 99\.0\.0 .* 18\.1\.0"):
        pyav_interrupt_clock.install()
    pull = RtspPull(Hub(), "cam", "rtsp://camera/x")
    with pytest.raises(UnsupportedLibraryVersion, match="time module"):  # at start-up
        pull.start()
    assert pull.state.state == "idle" and pull._thread is None  # nothing was started


def test_the_pyav_patch_refuses_internals_it_does_not_know(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(vars(av.container.core), "time", object())
    with pytest.raises(RuntimeError, match="PyAV internals changed"):
        pyav_interrupt_clock.install()
