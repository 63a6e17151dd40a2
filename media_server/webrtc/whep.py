"""WHEP: a browser (or any WebRTC client) plays a hub stream, H.264 forwarded unchanged;
a stream browsers cannot take as it is (H.265, B-frames) is played from the camera's H.264
sub stream or from a rendition made for WebRTC viewers (rendition.py). Audio is the
camera's own G.711 or Opus, untouched, when the offer takes that codec (source_audio.py),
otherwise Opus (the hub's, or made from its AAC once per stream: audio.py).

The transceivers carrying the stream are made, with their codec preferences, BEFORE the
offer is applied: aiortc then answers H.264 for video (otherwise it may pick VP8 and send
H.264 bytes as VP8, which a browser decodes to nothing, silently).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from media_server.hub import Hub, Stream
from media_server.media import Packet, Track, video_track
from media_server.source_audio import WEBRTC_CLOCKS, SourceAudio
from media_server.webrtc.egress import EgressRegistry, StreamEgress
from media_server.webrtc.errors import SignalingError
from media_server.webrtc.ice import IceConfig, new_peer_connection
from media_server.webrtc.rendition import (
    SUB_SUFFIX,
    Renditions,
    can_render,
    has_b_frames,
    plays_as_is,
)
from media_server.webrtc.sdp import (
    Offer,
    SdpError,
    check_webrtc,
    codec_names,
    offers_audio,
    offers_h264,
    parse_offer,
)
from media_server.webrtc.session import PeerSession
from media_server.webrtc.tracks import (
    FeedTrack,
    ViewerFeed,
    use_prepacketized,
)

log = logging.getLogger(__name__)

TRACKS_WAIT_S = 3.0


@dataclass(frozen=True)
class ViewerPlan:
    """What this viewer gets: video (H.264 as is, or a rendition) and/or audio (Opus, or
    the camera's own codec when the offer takes it)."""

    video: bool
    audio: bool
    rendition: bool = False  # the video as browsers take it: see rendition.py
    audio_codecs: tuple[str, ...] = ("opus",)  # what the offer takes of WEBRTC_CLOCKS

    def audio_codec(self, source_audio: str) -> str:
        """The codec to send: the camera's as it is if the offer takes it, else Opus
        ("" when neither)."""
        if source_audio and source_audio in self.audio_codecs:
            return source_audio
        return "opus" if "opus" in self.audio_codecs else ""


def plan_viewer(
    stream_id: str,
    tracks: tuple[Track, ...],
    offer: Offer,
    gop: list[Packet] | None = None,
    source_audio: str = "",
) -> ViewerPlan:
    """Match a stream's tracks to what the offer can receive, or say why not.
    source_audio: the codec of the camera's own audio beside the hub's (source_audio.py)."""
    video = video_track(tracks)
    audio = next((t for t in tracks if not t.is_video), None)
    gop = gop or []
    for m in offer.media:
        if m.port and m.kind in ("audio", "video") and m.direction not in ("recvonly", "sendrecv"):
            raise SignalingError(
                400,
                f"a WHEP offer receives media, but its {m.kind} section "
                f"is {m.direction}; make the transceiver recvonly",
            )
    offered_video = offer.of_kind("video")
    offered_audio = offer.of_kind("audio")
    if video is not None and not can_render(video.codec) and offered_video:
        raise SignalingError(
            406,
            f"stream {stream_id!r} carries {video.codec.upper()} video, "
            "from which no H.264 for WebRTC viewers can be made; "
            f"watch it over HLS: /live/{stream_id}/index.m3u8",
        )
    want_video = video is not None and bool(offered_video)
    if want_video and not any(offers_h264(m) for m in offered_video):
        raise SignalingError(
            406,
            "the offer has no H.264 (packetization-mode=1, baseline "
            f"profile) but only {codec_names(offered_video[0])}; "
            f"stream {stream_id!r} is forwarded as H.264, never "
            "transcoded: use a browser with H.264 WebRTC support",
        )
    takes = tuple(c for c in WEBRTC_CLOCKS if any(offers_audio(m, c) for m in offered_audio))
    plan = ViewerPlan(False, False, audio_codecs=takes)
    want_audio = audio is not None and bool(plan.audio_codec(source_audio))
    if not want_video and not want_audio:
        has = ", ".join(f"{t.kind} {t.codec}" for t in tracks) or "no tracks yet"
        raise SignalingError(
            406,
            f"nothing in the offer can play stream {stream_id!r} "
            f"({has}); offer H.264 video and/or Opus audio"
            + (f" (or {source_audio.upper()})" if source_audio else ""),
        )
    rendition = (
        want_video
        and video is not None
        and (video.codec != "h264" or has_b_frames(gop, video.index))
    )
    return ViewerPlan(want_video, want_audio, rendition, takes)


def preferred(kind: str, mime: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities of this codec, plus RTX so lost packets are resent."""
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in codecs if c.mimeType.lower() in (mime, f"{kind}/rtx")]


class WhepSession(PeerSession):
    kind = "whep"

    def __init__(
        self,
        stream_id: str,
        pc: RTCPeerConnection,
        ice: IceConfig,
        on_closed: Callable[[PeerSession], None],
    ) -> None:
        super().__init__(stream_id, pc, ice, on_closed)
        self.feed: ViewerFeed | None = None
        self.egress: StreamEgress | None = None
        self._registry: EgressRegistry | None = None

    def attach(self, feed: ViewerFeed, egress: StreamEgress, registry: EgressRegistry) -> None:
        self.feed, self.egress, self._registry = feed, egress, registry

    def add_track(self, track: FeedTrack, mime: str, shared: bool) -> RTCRtpTransceiver:
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(preferred(track.kind, mime))
        if shared:
            use_prepacketized(transceiver.sender)
        return transceiver

    def release(self) -> None:
        if self.feed is not None:
            self.feed.close()
        if self.egress is not None and self._registry is not None:
            self._registry.release(self.egress)
            self.egress = None


async def _tracks_known(stream: Stream, timeout_s: float = TRACKS_WAIT_S) -> None:
    """A publisher announces its tracks a moment after it starts (RTMP: at the sequence
    headers); a viewer arriving in between waits for them rather than being refused."""
    deadline = time.monotonic() + timeout_s
    while stream.live and not stream.tracks and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


class WhepEndpoint:
    """Opens and ends WHEP sessions over a hub."""

    def __init__(
        self,
        hub: Hub,
        ice: IceConfig,
        *,
        shared_packetization: bool = True,
        request_keyframe: Callable[[str], None] | None = None,
    ) -> None:
        self.hub = hub
        self.ice = ice
        self.shared = shared_packetization
        self.request_keyframe = request_keyframe or self._hub_keyframe
        self.egresses = EgressRegistry(hub)
        self.renditions = Renditions(hub)
        self.sessions: dict[str, WhepSession] = {}

    async def open(
        self, stream_id: str, offer_sdp: str, viewer: str = ""
    ) -> tuple[WhepSession, str]:
        try:
            offer = parse_offer(offer_sdp)
            check_webrtc(offer)
        except SdpError as exc:
            raise SignalingError(400, f"bad SDP offer: {exc}") from exc
        stream = self.hub.find(stream_id)
        if stream is None or not stream.live:
            raise SignalingError(404, f"stream {stream_id!r} is not live")
        await _tracks_known(stream)
        plan = plan_viewer(stream_id, stream.tracks, offer, stream.gop(), stream.source_audio.codec)
        session = WhepSession(stream_id, new_peer_connection(self.ice), self.ice, self._closed)
        ok = False
        try:
            self._wire(session, plan, viewer)
            answer = await session.negotiate(offer_sdp)
            ok = True
        finally:
            if not ok:
                await session.close("negotiation failed")
        self.sessions[session.id] = session
        return session, answer

    def _wire(self, session: WhepSession, plan: ViewerPlan, viewer: str) -> None:
        registry, source, request_keyframe = self.egresses, session.stream_id, self.request_keyframe
        if plan.rendition and plays_as_is(self.hub, source + SUB_SUFFIX):
            source += SUB_SUFFIX  # the camera's H.264 sub stream: nothing to transcode
        elif plan.rendition:
            registry, request_keyframe = self.renditions, self.renditions.request_keyframe
        source_audio = self._source_audio(source)
        codec = plan.audio_codec(source_audio.codec) if plan.audio else ""
        egress = registry.acquire(source)
        feed = ViewerFeed(
            registry.hub,
            egress,
            video=plan.video,
            audio=bool(codec),
            shared=self.shared,
            name=f"whep {session.id} {viewer}".strip(),
            request_keyframe=request_keyframe,
            on_ended=lambda reason: session.close_soon(reason),
            source_audio=source_audio if codec and codec == source_audio.codec else None,
        )
        session.attach(feed, egress, registry)
        if feed.video_track is not None:
            session.add_track(feed.video_track, "video/h264", self.shared)
        if feed.audio_track is not None:
            session.add_track(feed.audio_track, f"audio/{codec}", self.shared)

    def _source_audio(self, stream_id: str) -> SourceAudio:
        """The camera's own audio of the stream the viewer's media comes from (a
        rendition's is its source stream's)."""
        stream = self.hub.find(stream_id)
        return stream.source_audio if stream is not None else SourceAudio()

    def _hub_keyframe(self, stream_id: str) -> None:
        """Whatever the ingest: the hub passes the request on if it can be asked."""
        stream = self.hub.find(stream_id)
        if stream is not None:
            stream.request_keyframe()

    def _closed(self, session: PeerSession) -> None:
        self.sessions.pop(session.id, None)

    def find(self, stream_id: str, session_id: str) -> WhepSession | None:
        session = self.sessions.get(session_id)
        return session if session is not None and session.stream_id == stream_id else None

    def viewers(self, stream_id: str) -> int:
        return sum(1 for s in self.sessions.values() if s.stream_id == stream_id)

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await session.close("server shutting down")
        self.renditions.stop_all()
