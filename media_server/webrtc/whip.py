"""WHIP (RFC 9725): a browser or encoder publishes H.264 + Opus into the hub, undecoded.

aiortc's receiver reassembles frames from RTP (jitter buffer, NACK, RTCP reports); a tap
(patches/aiortc_receiver_tap) gives each encoded frame to the ingest instead of a decoder:
nothing is decoded. The ingest publishes once the first keyframe brings SPS/PPS (the hub's
tracks need the avcC).

Browsers send a keyframe only when asked. HLS segments and recordings can only start on
keyframes and a joining viewer needs one, so the session asks (RTCP PLI) every
keyframe_interval_s, and at once when any subscriber asks the hub
(Stream.request_keyframe: a viewer joining a stream with no cached GOP, a recorder).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterFrame

from media_server.codecs.bitstream import BitstreamError
from media_server.codecs.h264 import H264Assembler, VideoFrame
from media_server.hub import Hub, Publication, StreamBusy
from media_server.media import Packet, Track
from media_server.patches.aiortc_receiver_tap import tap_receiver
from media_server.webrtc.audio import OPUS_RATE, opus_head
from media_server.webrtc.errors import SignalingError
from media_server.webrtc.ice import IceConfig, new_peer_connection
from media_server.webrtc.sdp import (
    Offer,
    SdpError,
    check_webrtc,
    codec_names,
    offers_h264,
    offers_opus,
    parse_offer,
)
from media_server.webrtc.session import PeerSession
from media_server.webrtc.whep import preferred

log = logging.getLogger(__name__)

VIDEO_RATE = 90000
MIN_KEYFRAME_GAP_S = 0.3  # on-demand requests closer than this are merged


class WhipIngest:
    """One publisher's frames into the hub, tracks aligned on arrival time."""

    def __init__(
        self,
        hub: Hub,
        stream_id: str,
        source: str,
        *,
        video: bool,
        audio: bool,
        on_evict: Callable[[str], None],
        on_keyframe_request: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.source = source
        self.video_index = 0 if video else None
        self.audio_index = (1 if video else 0) if audio else None
        self.assembler = H264Assembler()
        self.publication: Publication | None = None
        self.error = ""
        self.frames = 0
        self._on_evict = on_evict
        self._on_keyframe_request = on_keyframe_request
        self._origin: float | None = None
        self._offsets: dict[int, int] = {}

    def on_video(self, frame: JitterFrame) -> None:
        assert self.video_index is not None
        ts = self._aligned(self.video_index, frame.timestamp, VIDEO_RATE)
        try:
            video = self.assembler.push(frame.data)
        except BitstreamError as exc:
            log.info("WHIP %s: unusable H.264 frame dropped: %s", self.stream_id, exc)
            self.assembler.lost()
            return
        if video is None:
            return
        if video.config is not None:
            self._start(video)
        self._push(self.video_index, ts, video.keyframe, video.data)

    def on_audio(self, frame: JitterFrame) -> None:
        assert self.audio_index is not None
        ts = self._aligned(self.audio_index, frame.timestamp, OPUS_RATE)
        if self.publication is None and self.video_index is None:
            self._start(None)
        self._push(self.audio_index, ts, True, frame.data)

    def _aligned(self, track: int, ts: int, rate: int) -> int:
        """Each track's RTP clock starts anywhere: offset both onto one wall-clock origin."""
        offset = self._offsets.get(track)
        if offset is None:
            now = time.time()
            if self._origin is None:
                self._origin = now
            offset = self._offsets[track] = int((now - self._origin) * rate) - ts
        return ts + offset

    def _tracks(self, video: VideoFrame | None) -> tuple[Track, ...]:
        tracks: list[Track] = []
        if video is not None and self.video_index is not None:
            tracks.append(
                Track(
                    self.video_index,
                    "video",
                    "h264",
                    VIDEO_RATE,
                    video.config or b"",
                    width=video.width,
                    height=video.height,
                )
            )
        if self.audio_index is not None:
            tracks.append(
                Track(
                    self.audio_index,
                    "audio",
                    "opus",
                    OPUS_RATE,
                    opus_head(2),
                    sample_rate=OPUS_RATE,
                    channels=2,
                )
            )
        return tuple(tracks)

    def _start(self, video: VideoFrame | None) -> None:
        tracks = self._tracks(video)
        if self.publication is not None:
            self.publication.set_tracks(tracks)  # new SPS/PPS: subscribers restart
            return
        try:
            self.publication = self.hub.publish(
                self.stream_id,
                tracks,
                self.source,
                on_evict=self._on_evict,
                on_keyframe_request=self._on_keyframe_request
                if self.video_index is not None
                else None,
            )
        except StreamBusy as exc:
            self.error = str(exc)
            self._on_evict(str(exc))

    def _push(self, track: int, ts: int, keyframe: bool, data: bytes) -> None:
        if self.publication is not None and self.publication.alive:
            self.publication.push(Packet(track, ts, ts, keyframe, data))
            self.frames += 1

    def close(self, reason: str) -> None:
        if self.publication is not None:
            self.publication.close(reason)


class WhipSession(PeerSession):
    kind = "whip"

    def __init__(
        self,
        stream_id: str,
        pc: RTCPeerConnection,
        ice: IceConfig,
        on_closed: Callable[[PeerSession], None],
        keyframe_interval_s: float,
    ) -> None:
        super().__init__(stream_id, pc, ice, on_closed)
        self.ingest: WhipIngest | None = None
        self.keyframe_interval_s = keyframe_interval_s
        self.keyframe_requests = 0
        self._video: RTCRtpTransceiver | None = None
        self._video_ssrc: int | None = None
        self._last_request = 0.0

    def wire(self, ingest: WhipIngest, offer: Offer) -> None:
        """Receive-only transceivers with codec preferences, made before the offer."""
        self.ingest = ingest
        if ingest.video_index is not None:
            self._video = self.pc.addTransceiver("video", direction="recvonly")
            self._video.setCodecPreferences(preferred("video", "video/h264"))
            tap_receiver(self._video.receiver, ingest.on_video)
            self._video_ssrc = offer.of_kind("video")[0].media_ssrc
        if ingest.audio_index is not None:
            audio = self.pc.addTransceiver("audio", direction="recvonly")
            audio.setCodecPreferences(preferred("audio", "audio/opus"))
            tap_receiver(audio.receiver, ingest.on_audio)

    def on_connected(self) -> None:
        if self._video is not None:
            self.spawn(self._keyframe_clock())

    async def _keyframe_clock(self) -> None:
        while not self.closed:
            await self._send_pli()
            await asyncio.sleep(self.keyframe_interval_s)

    def request_keyframe(self) -> None:
        """A viewer needs a keyframe now (merged with requests just sent)."""
        if self._video is not None and time.monotonic() - self._last_request >= MIN_KEYFRAME_GAP_S:
            self.spawn(self._send_pli())

    async def _send_pli(self) -> None:
        assert self._video is not None
        self._last_request = time.monotonic()
        ssrcs = (
            [self._video_ssrc]
            if self._video_ssrc
            else [s.source for s in self._video.receiver.getSynchronizationSources()]
        )
        for ssrc in ssrcs:
            await self._video.receiver._send_rtcp_pli(ssrc)
        self.keyframe_requests += 1

    def release(self) -> None:
        if self.ingest is not None:
            self.ingest.close(f"WHIP publisher left ({self.end_reason})")


def plan_publish(offer: Offer) -> tuple[bool, bool]:
    """(video, audio) this offer publishes, or why it cannot be taken."""
    for m in offer.media:
        if m.port and m.kind in ("audio", "video") and m.direction not in ("sendonly", "sendrecv"):
            raise SignalingError(
                400,
                f"a WHIP offer sends media, but its {m.kind} section is "
                f"{m.direction}; make the transceiver sendonly",
            )
    videos, audios = offer.of_kind("video"), offer.of_kind("audio")
    if videos and not offers_h264(videos[0]):
        raise SignalingError(
            406,
            f"publish H.264 video (packetization-mode=1, baseline "
            f"profile); the offer has {codec_names(videos[0])}. Video is "
            "stored and forwarded as sent, never transcoded",
        )
    if audios and not offers_opus(audios[0]):
        raise SignalingError(406, f"publish Opus audio; the offer has {codec_names(audios[0])}")
    if not videos and not audios:
        raise SignalingError(400, "the offer publishes neither audio nor video")
    return bool(videos), bool(audios)


class WhipEndpoint:
    """Opens and ends WHIP sessions; one live session per stream."""

    def __init__(self, hub: Hub, ice: IceConfig, *, keyframe_interval_s: float = 2.0) -> None:
        self.hub = hub
        self.ice = ice
        self.keyframe_interval_s = keyframe_interval_s
        self.sessions: dict[str, WhipSession] = {}

    async def open(self, stream_id: str, offer_sdp: str, source: str) -> tuple[WhipSession, str]:
        try:
            offer = parse_offer(offer_sdp)
            check_webrtc(offer)
        except SdpError as exc:
            raise SignalingError(400, f"bad SDP offer: {exc}") from exc
        video, audio = plan_publish(offer)
        self._refuse_if_busy(stream_id)
        session = WhipSession(
            stream_id,
            new_peer_connection(self.ice),
            self.ice,
            self._closed,
            keyframe_interval_s=self.keyframe_interval_s,
        )
        ingest = WhipIngest(
            self.hub,
            stream_id,
            source,
            video=video,
            audio=audio,
            on_evict=lambda reason: session.close_soon(reason),
            on_keyframe_request=session.request_keyframe,
        )
        ok = False
        try:
            session.wire(ingest, offer)
            answer = await session.negotiate(offer_sdp)
            ok = True
        finally:
            if not ok:
                await session.close("negotiation failed")
        self.sessions[session.id] = session
        return session, answer

    def _refuse_if_busy(self, stream_id: str) -> None:
        for other in self.sessions.values():
            if (
                other.stream_id == stream_id
                and not other.closed
                and other.ingest is not None
                and other.ingest.publication is None
            ):
                raise SignalingError(
                    409,
                    f"stream {stream_id!r} has a WHIP publisher "
                    "connecting; DELETE its session first",
                )
        stream = self.hub.find(stream_id)
        pub = stream.publication if stream is not None else None
        if (
            pub is not None
            and pub.alive
            and time.monotonic() - pub.last_packet < self.hub.stale_publisher_s
        ):
            raise SignalingError(
                409, f"stream {stream_id!r} is already being published by {pub.source}"
            )

    def _closed(self, session: PeerSession) -> None:
        self.sessions.pop(session.id, None)

    def find(self, stream_id: str, session_id: str) -> WhipSession | None:
        session = self.sessions.get(session_id)
        return session if session is not None and session.stream_id == stream_id else None

    async def close_stream(self, stream_id: str, reason: str) -> None:
        for session in list(self.sessions.values()):
            if session.stream_id == stream_id:
                await session.close(reason)

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await session.close("server shutting down")
