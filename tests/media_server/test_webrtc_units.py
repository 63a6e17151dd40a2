"""Pure parts of the WebRTC package: a frame's NAL units, the shared payload cache, SDP
offers, timelines, AAC->Opus. No network, no browser. (H.264 bytes, RTP payloads and the
WHIP assembler: tests/media_server/codecs.)"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from media_server.codecs.bitstream import nals_to_avcc
from media_server.codecs.h264 import STAP_A
from media_server.hub import Hub
from media_server.media import Packet, Track
from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
from media_server.source_audio import SOURCE_TRACK, SourceAudio, SourcePacket
from media_server.stats import stream_stats
from media_server.webrtc.audio import OPUS_FRAME, AacOpusCodec, opus_head
from media_server.webrtc.egress import StreamEgress, VideoPayloadCache, frame_nals
from media_server.webrtc.errors import SignalingError
from media_server.webrtc.ice import IceConfig, IceServer, new_peer_connection
from media_server.webrtc.sdp import SdpError, offers_h264, parse_offer
from media_server.webrtc.tracks import EncodedFrame, Timeline, ViewerFeed
from media_server.webrtc.whep import plan_viewer
from media_server.webrtc.whip import plan_publish
from tests.fixtures.clip import load_clip, make_test_clip
from tests.media_server.codecs.samples import AVCC_BASELINE_360, IDR, P_SLICE, PPS, SPS

CHROME_LIKE_OFFER = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103
c=IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 00:11
a=setup:actpass
a=mid:0
a=recvonly
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 00:11
a=setup:actpass
a=mid:1
a=recvonly
a=rtpmap:111 opus/48000/2
"""


def h264_track(config: bytes = AVCC_BASELINE_360) -> Track:
    return Track(0, "video", "h264", 90000, config, 640, 360)


# -- a frame's NAL units and RTP payloads --


def test_keyframes_carry_parameter_sets_from_the_config() -> None:
    key = Packet(0, 0, 0, True, nals_to_avcc([IDR]))
    delta = Packet(0, 1, 1, False, nals_to_avcc([b"\x09\x10", P_SLICE]))  # AUD is dropped
    params = (SPS, PPS)
    assert [bytes(n) for n in frame_nals(key, params)] == [SPS, PPS, IDR]
    assert [bytes(n) for n in frame_nals(delta, params)] == [P_SLICE]
    inband = Packet(0, 0, 0, True, nals_to_avcc([SPS, PPS, IDR]))
    assert [bytes(n) for n in frame_nals(inband, (b"\x67old", b"\x68old"))] == [SPS, PPS, IDR]


def test_payload_cache_computes_once_for_all_viewers() -> None:
    cache = VideoPayloadCache(max_frames=2)
    packets = [
        Packet(0, i, i, i == 0, nals_to_avcc([IDR if i == 0 else P_SLICE])) for i in range(3)
    ]
    first = [cache.payloads(p, (SPS, PPS)) for p in packets]
    again = cache.payloads(packets[2], (SPS, PPS))
    assert again is first[2]
    assert cache.stats.computed == 3 and cache.stats.reused == 1
    cache.payloads(packets[0], (SPS, PPS))  # evicted (max 2): recomputed
    assert cache.stats.computed == 4


# -- SDP offers --


@pytest.mark.parametrize(
    "body,reason",
    [
        ("", "must start with 'v=0'"),
        ("hello", "must start with 'v=0'"),
        ("v=0\nthis is not sdp", "not an SDP line"),
        ("v=0\no=- 1 1 IN IP4 0.0.0.0\n", "no media"),
        ("v=0\nm=video\n", "malformed m= line"),
    ],
)
def test_bad_offers_say_why(body: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        parse_offer(body)


def test_offer_codecs_and_ssrcs() -> None:
    offer = parse_offer(CHROME_LIKE_OFFER + "a=ssrc-group:FID 11 12\na=ssrc:11 cname:x\n")
    video, audio = offer.of_kind("video")[0], offer.of_kind("audio")[0]
    assert video.direction == "recvonly" and video.has_ice and video.has_fingerprint
    assert offers_h264(video)
    assert [c.name for c in audio.codecs] == ["opus"]
    assert audio.media_ssrc == 11  # the ssrc lines followed the audio m= line
    vp8_only = CHROME_LIKE_OFFER.replace("a=rtpmap:102 H264/90000", "a=rtpmap:102 VP9/90000")
    assert not offers_h264(parse_offer(vp8_only).of_kind("video")[0])


def test_viewer_plan_refuses_what_a_browser_cannot_play() -> None:
    offer = parse_offer(CHROME_LIKE_OFFER)
    aac = Track(1, "audio", "aac", 48000, b"\x11\x90", sample_rate=48000, channels=2)
    assert plan_viewer("c", (h264_track(), aac), offer).video
    hevc = Track(0, "video", "h265", 90000, b"")
    assert plan_viewer("c", (hevc, aac), offer).rendition  # not a 406: H.264 made from it
    assert not plan_viewer("c", (h264_track(), aac), offer).rendition
    vp8 = Track(0, "video", "vp8", 90000, b"")  # type: ignore[arg-type]
    with pytest.raises(SignalingError, match="VP8") as refused:
        plan_viewer("c", (vp8, aac), offer)
    assert refused.value.status == 406
    no_h264 = parse_offer(CHROME_LIKE_OFFER.replace("H264/90000", "VP9/90000"))
    with pytest.raises(SignalingError, match=r"no H\.264") as refused:
        plan_viewer("c", (h264_track(), aac), no_h264)
    assert refused.value.status == 406
    sending = parse_offer(CHROME_LIKE_OFFER.replace("a=recvonly", "a=sendonly"))
    with pytest.raises(SignalingError, match="recvonly"):
        plan_viewer("c", (h264_track(),), sending)


def test_viewer_plan_takes_the_cameras_audio_codec_when_the_offer_has_it() -> None:
    aac = Track(1, "audio", "aac", 16000, b"\x14\x08", sample_rate=16000, channels=1,
                source_codec="pcma")  # fmt: skip
    opus_only = plan_viewer("c", (h264_track(), aac), parse_offer(CHROME_LIKE_OFFER), [], "pcma")
    assert opus_only.audio and opus_only.audio_codec("pcma") == "opus"  # AAC -> Opus
    g711 = (
        CHROME_LIKE_OFFER.replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8"
        )
        + "a=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\n"
    )
    plan = plan_viewer("c", (h264_track(), aac), parse_offer(g711), [], "pcma")
    assert plan.audio_codecs == ("pcma", "pcmu", "opus") and plan.audio_codec("pcma") == "pcma"
    assert plan.audio_codec("") == "opus"  # nothing beside the hub's audio: Opus from it
    pcmu_only = parse_offer(
        g711.replace("111 0 8", "0")
        .replace("a=rtpmap:111 opus/48000/2\n", "")
        .replace("a=rtpmap:8 PCMA/8000\n", "")
    )
    audio_only = (replace(aac, index=0),)
    assert plan_viewer("c", audio_only, pcmu_only, [], "pcmu").audio
    with pytest.raises(SignalingError, match="PCMA") as refused:
        plan_viewer("c", audio_only, pcmu_only, [], "pcma")
    assert refused.value.status == 406


def test_source_audio_cuts_g711_into_20ms_frames_and_keeps_opus_whole() -> None:
    feed, got = SourceAudio(), []
    feed.attach(got.append)
    feed.push(SourcePacket(SOURCE_TRACK, 800, 800, True, bytes(400), codec="pcma"))
    assert [(len(f.data), f.timestamp) for f in got] == [(160, 800), (160, 960), (80, 1120)]
    got.clear()
    feed.push(SourcePacket(SOURCE_TRACK, 960, 960, True, bytes(400), codec="opus"))
    assert [(len(f.data), f.timestamp) for f in got] == [(400, 960)]
    assert feed.codec == "opus" and feed.frames_in == 2


async def test_a_source_audio_viewer_gets_the_frames_as_sent_and_ends_on_a_new_codec() -> None:
    hub = Hub()
    aac = Track(1, "audio", "aac", 16000, b"\x14\x08", sample_rate=16000, channels=1,
                source_codec="pcma")  # fmt: skip
    pub = hub.publish("c", (h264_track(), aac), "test")
    pub.push_source_audio(SourcePacket(SOURCE_TRACK, 0, 0, True, bytes(160), codec="pcma"))
    stream, ended = hub.stream("c"), []
    egress = StreamEgress(hub, "c")
    feed = ViewerFeed(hub, egress, video=False, audio=True, on_ended=ended.append,
                      source_audio=stream.source_audio)  # fmt: skip
    assert feed.audio_codec == "pcma" and feed.audio_track is not None
    feed.start()
    await _until(lambda: bool(hub.stream("c").subscribers))
    await asyncio.sleep(0.05)  # the fan-out has handed the viewer the stream's start
    pub.push_source_audio(SourcePacket(SOURCE_TRACK, 160, 160, True, b"\xd5" * 160, codec="pcma"))
    sent = await asyncio.wait_for(feed.audio_track.recv(), 1)
    assert isinstance(sent, EncodedFrame) and sent.payloads == [b"\xd5" * 160]
    assert not egress.audio.listeners, "no AAC -> Opus for this viewer"
    pub.set_tracks((h264_track(), replace(aac, source_codec="pcmu")))
    await _until(lambda: bool(ended))
    assert "pcmu, not pcma" in ended[0]
    assert not stream.source_audio.listeners


def test_b_frames_get_a_rendition() -> None:
    offer = parse_offer(CHROME_LIKE_OFFER)
    in_order = [Packet(0, i, i, i == 0, b"") for i in range(3)]
    reordered = [
        Packet(0, 0, 0, True, b""),
        Packet(0, 1, 3, False, b""),
        Packet(0, 2, 1, False, b""),
        Packet(0, 3, 2, False, b""),
    ]
    assert not plan_viewer("c", (h264_track(),), offer, in_order).rendition
    assert plan_viewer("c", (h264_track(),), offer, reordered).rendition
    # a GOP of one keyframe already tells: with B-frames it is shown after it is decoded
    assert plan_viewer("c", (h264_track(),), offer, [Packet(0, 0, 2, True, b"")]).rendition


def test_publish_plan_wants_sendonly_h264_and_opus() -> None:
    offer = parse_offer(CHROME_LIKE_OFFER.replace("a=recvonly", "a=sendonly"))
    assert plan_publish(offer) == (True, True)
    with pytest.raises(SignalingError, match="sendonly"):
        plan_publish(parse_offer(CHROME_LIKE_OFFER))
    vp8 = CHROME_LIKE_OFFER.replace("a=recvonly", "a=sendonly").replace("H264/", "VP9/")
    with pytest.raises(SignalingError, match=r"publish H\.264"):
        plan_publish(parse_offer(vp8))


def test_ice_config_uses_no_public_stun_unless_told() -> None:
    closed = IceConfig(host_addresses=["10.1.2.3"])
    assert closed.rtc_configuration().iceServers == []
    assert closed.candidate_addresses() == ["10.1.2.3", "127.0.0.1"]
    assert IceConfig(host_addresses=["10.1.2.3"], include_loopback=False).candidate_addresses() == [
        "10.1.2.3"
    ]
    relayed = IceConfig(
        servers=[IceServer(urls=["turn:10.0.0.9:3478"], username="u", credential="p")]
    )
    (server,) = relayed.rtc_configuration().iceServers or []
    assert server.urls == ["turn:10.0.0.9:3478"] and server.credential == "p"


async def test_candidates_come_from_the_configured_addresses() -> None:
    pc = new_peer_connection(IceConfig())
    pc.addTransceiver("video", direction="recvonly")
    bind_candidate_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    candidates = [
        line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
    ]
    await pc.close()
    assert candidates and all(" 127.0.0.1 " in c and "typ host" in c for c in candidates)


def test_opus_head() -> None:
    head = opus_head(2)
    assert head[:8] == b"OpusHead" and head[9] == 2 and len(head) == 19


# -- timelines and the viewer feed --


def test_timeline_stays_continuous_over_restarts() -> None:
    line = Timeline(3000)
    assert [line.map(t) for t in (9000, 12000)] == [0, 3000]
    line.restart()
    assert line.map(500) == 6000  # a new publication starts right after
    assert line.map(500) == 9000  # never repeats or goes back


async def test_viewer_starts_from_the_cached_gop_squeezed_to_the_live_edge() -> None:
    hub = Hub()
    pub = hub.publish("c", (h264_track(),), "test")
    for i in range(4):
        pub.push(Packet(0, i * 3000, i * 3000, i == 1, nals_to_avcc([IDR if i == 1 else P_SLICE])))
    egress = StreamEgress(hub, "c")
    feed = ViewerFeed(hub, egress, video=True, audio=False, name="t")
    assert feed.video_track is not None
    feed.start()
    got = [await feed.video_track.recv() for _ in range(3)]
    assert all(isinstance(f, EncodedFrame) for f in got)
    assert [f.timestamp for f in got] == [0, 1, 2]  # type: ignore[attr-defined]
    pub.push(Packet(0, 4 * 3000, 4 * 3000, False, nals_to_avcc([P_SLICE])))
    live = await feed.video_track.recv()
    assert live.timestamp == 2 + 3000  # type: ignore[attr-defined]
    assert got[0].payloads[0][0] & 0x1F == STAP_A  # type: ignore[attr-defined]
    feed.close()
    assert not hub.stream("c").subscribers


async def test_viewers_share_one_subscription_and_a_late_one_misses_nothing() -> None:
    hub = Hub()
    pub = hub.publish("c", (h264_track(),), "test")
    pub.push(Packet(0, 0, 0, True, nals_to_avcc([IDR])))
    pub.push(Packet(0, 3000, 3000, False, nals_to_avcc([P_SLICE])))
    egress = StreamEgress(hub, "c")
    first = ViewerFeed(hub, egress, video=True, audio=False, name="a")
    second = ViewerFeed(hub, egress, video=True, audio=False, name="b")
    first.start()
    pub.push(Packet(0, 6000, 6000, False, nals_to_avcc([P_SLICE])))  # queued, not yet handed out
    second.start()  # joins between: hands it to the first viewer, then starts at the GOP
    pub.push(Packet(0, 9000, 9000, False, nals_to_avcc([P_SLICE])))
    await _until(lambda: first.stats.video_frames == 4 and second.stats.video_frames == 4)
    await asyncio.sleep(0.05)
    assert (first.stats.video_frames, second.stats.video_frames) == (4, 4), "none twice"
    assert len(hub.stream("c").subscribers) == 1
    assert stream_stats(hub.stream("c"))["viewers"] == 2, "stats count viewers, not outputs"
    first.close()
    assert len(hub.stream("c").subscribers) == 1
    assert stream_stats(hub.stream("c"))["viewers"] == 1
    second.close()
    assert not hub.stream("c").subscribers


async def test_viewer_without_cached_keyframe_asks_for_one_and_waits() -> None:
    hub = Hub()
    asked: list[str] = []
    pub = hub.publish("c", (h264_track(),), "test")
    feed = ViewerFeed(
        hub, StreamEgress(hub, "c"), video=True, audio=False, request_keyframe=asked.append
    )
    assert feed.video_track is not None
    feed.start()
    await _until(lambda: bool(hub.stream("c").subscribers))
    pub.push(Packet(0, 0, 0, False, nals_to_avcc([P_SLICE])))
    pub.push(Packet(0, 3000, 3000, True, nals_to_avcc([IDR])))
    frame = await feed.video_track.recv()
    assert asked == ["c"] and feed.stats.waited_for_key == 1
    assert frame.timestamp == 0  # type: ignore[attr-defined]
    feed.close()


async def test_b_frames_arriving_later_end_the_viewer() -> None:
    hub = Hub()
    pub = hub.publish("c", (h264_track(),), "test")
    ended: list[str] = []
    feed = ViewerFeed(hub, StreamEgress(hub, "c"), video=True, audio=False, on_ended=ended.append)
    feed.start()
    await _until(lambda: bool(hub.stream("c").subscribers))
    for dts, pts in ((0, 0), (3000, 9000), (6000, 3000)):
        pub.push(Packet(0, dts, pts, dts == 0, nals_to_avcc([IDR if dts == 0 else P_SLICE])))
    await _until(lambda: bool(ended))
    assert "B-frames" in ended[0]


async def test_h265_publication_ends_the_viewer() -> None:
    hub = Hub()
    pub = hub.publish("c", (h264_track(),), "test")
    ended: list[str] = []
    feed = ViewerFeed(hub, StreamEgress(hub, "c"), video=True, audio=False, on_ended=ended.append)
    feed.start()
    await _until(lambda: bool(hub.stream("c").subscribers))
    pub.set_tracks((Track(0, "video", "h265", 90000, b""),))
    await _until(lambda: bool(ended))
    assert "H265" in ended[0]


async def _until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# -- AAC -> Opus --


def test_aac_to_opus_costs_little(tmp_path: Path) -> None:
    clip = load_clip(make_test_clip(tmp_path / "tone.mp4", seconds=3, width=160, height=90))
    aac = next(t for t in clip.tracks if t.codec == "aac")
    packets = [p for p in clip.packets if p.track == aac.index]
    codec = AacOpusCodec(aac)
    start = time.process_time()
    frames = codec.transcode(packets)
    cpu = time.process_time() - start
    seconds = len(packets) * 1024 / aac.sample_rate
    assert len(frames) >= int(seconds * 50) - 3  # 20 ms frames, minus codec delay
    assert [b.timestamp - a.timestamp for a, b in itertools.pairwise(frames)] == [OPUS_FRAME] * (
        len(frames) - 1
    )
    print(
        f"\nAAC->Opus: {cpu * 1000 / seconds:.1f} ms CPU per audio second "
        f"({len(frames)} Opus frames from {len(packets)} AAC frames)"
    )
    assert cpu / seconds < 0.2


class FakeDtls:
    """Collects what a sender hands to SRTP."""

    state = "new"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


async def test_lean_send_path_writes_what_aiortc_parses_and_resends_over_rtx() -> None:
    from aiortc import RTCRtpSender
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import RtpPacket, unwrap_rtx

    from media_server.patches import aiortc_fast_sender
    from media_server.webrtc import rtp_out

    dtls = FakeDtls()
    sender = RTCRtpSender("video", dtls)  # type: ignore[arg-type]
    aiortc_fast_sender.install(sender, rtp_out.RtpOut)
    ext_map = getattr(sender, aiortc_fast_sender.P + "rtp_header_extensions_map")
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=2, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ]
        )
    )
    setattr(sender, aiortc_fast_sender.P + "mid", "0")
    out = rtp_out.RtpOut(sender, 102)
    out.seq, out.origin = 65534, 0
    payloads = [b"\x7c\x85" + b"a" * 50, b"\x7c\x05" + b"b" * 50, b"\x7c\x45" + b"c" * 7]
    out.send_frame(payloads, 123456)
    out.stop()
    await out.run()  # no UDP pair here: the frame went through aiortc's own path, in order
    assert out.seq == 1, "sequence numbers wrap at 16 bits"
    packets = [RtpPacket.parse(d, ext_map) for d in dtls.sent]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0]
    assert [p.marker for p in packets] == [0, 0, 1]
    assert {(p.timestamp, p.ssrc, p.payload_type, p.extensions.mid) for p in packets} == {
        (123456, sender._ssrc, 102, "0")
    }
    assert [p.payload for p in packets] == payloads
    sent_at = packets[0].extensions.abs_send_time
    assert sent_at is not None
    assert abs(sent_at - rtp_out.abs_send_time()) < 262144 // 10, "abs-send-time is now"
    setattr(sender, aiortc_fast_sender.P + "rtx_payload_type", 103)
    await sender._retransmit(65535)
    rtx = RtpPacket.parse(dtls.sent[-1], ext_map)
    assert rtx.payload_type == 103 and rtx.ssrc == sender._rtx_ssrc
    assert unwrap_rtx(rtx, 102, sender._ssrc).payload == payloads[1]
    await sender._retransmit(7)  # not in the history: nothing sent
    assert len(dtls.sent) == 4


def test_gso_runs_are_equal_sizes_closed_by_at_most_one_shorter_packet() -> None:
    from media_server.webrtc.udp_path import gso_runs

    assert gso_runs([]) == []
    assert gso_runs([100]) == [(0, 1)]
    assert gso_runs([40, 1200, 1200, 1199, 1200, 1200]) == [(0, 1), (1, 4), (4, 6)]
    assert gso_runs([1200] * 5, max_segments=2) == [(0, 2), (2, 4), (4, 5)]
    assert gso_runs([1000] * 5, max_bytes=3000) == [(0, 3), (3, 5)]
    assert gso_runs([500, 900]) == [(0, 1), (1, 2)], "a longer packet starts a new run"


class FakeSrtp:
    def protect(self, data: bytes) -> bytes:
        return data + b"T" * 10  # an auth tag's worth


async def test_udp_path_sends_a_frame_in_few_syscalls_and_the_viewer_gets_every_packet() -> None:
    import socket
    from types import SimpleNamespace

    from aiortc.rtcdtlstransport import State

    from media_server.webrtc.udp_path import UdpPath

    loop = asyncio.get_running_loop()
    viewer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    viewer.bind(("127.0.0.1", 0))
    viewer.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        dtls = SimpleNamespace(_tx_srtp=FakeSrtp(), _state=State.CONNECTED)
        pair = SimpleNamespace(
            protocol=SimpleNamespace(transport=transport), remote_addr=viewer.getsockname()
        )
        path = UdpPath(dtls, pair)
        frame = [b"s" * 30] + [bytes([i]) * 1200 for i in range(6)] + [b"z" * 1190]
        history: dict[int, tuple[int, bytes]] = {}
        path.send_frame(0x80, 96, 7, 9000, 1, b"", frame, history)
        got = []
        while len(got) < len(frame):
            got.append(await loop.sock_recv(viewer, 2048))
        packets = [history[7 + i][1] for i in range(len(frame))]
        assert [p[12:] for p in packets] == frame
        assert got == [p + b"T" * 10 for p in packets], "in order, each its own datagram"
        assert path.packets == len(frame)
        assert path.batches == 2, "GSO: STAP-A, then FU-As"
    finally:
        transport.close()
        viewer.close()


async def test_keyframe_requests_reach_a_whip_publisher_through_the_hub() -> None:
    from media_server.codecs.h264 import VideoFrame
    from media_server.webrtc.whep import WhepEndpoint
    from media_server.webrtc.whip import WhipIngest

    hub = Hub()
    asked: list[str] = []
    ingest = WhipIngest(
        hub,
        "cam",
        "whip test",
        video=True,
        audio=False,
        on_evict=lambda reason: None,
        on_keyframe_request=lambda: asked.append("pli"),
    )
    ingest._start(VideoFrame(b"", True, h264_track().config, 64, 64))
    assert hub.stream("cam").live
    WhepEndpoint(hub, IceConfig()).request_keyframe("cam")  # what a joining viewer calls
    assert asked == ["pli"]
    ingest.close("done")
    WhepEndpoint(hub, IceConfig()).request_keyframe("cam")
    assert asked == ["pli"], "no publisher, nobody asked"
