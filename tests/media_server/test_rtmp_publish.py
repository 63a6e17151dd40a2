"""Publishing: ffmpeg pushes RTMP and the hub must get exactly the timestamps ffmpeg's own
FLV muxer writes for the same input; keys, refusals and busy streams; and the ingest state
machine (track announcement, 32-bit wrap) from bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_server.consumer import QueuedConsumer
from media_server.hub import Hub
from media_server.media import Packet, StreamEnd, StreamStart, Track
from media_server.rtmp import amf0, flv
from media_server.rtmp.chunk import (
    ACKNOWLEDGEMENT,
    COMMAND_AMF0,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkReader,
    Message,
)
from media_server.rtmp.errors import RtmpRefused
from media_server.rtmp.publish import Ingest
from media_server.rtmp.server import RtmpLimits, RtmpServer
from media_server.rtmp.session import split_query_key
from tests.fixtures.rtmp import FfmpegRunner, RawRtmpClient, drain, push_args, wait_for
from tests.media_server.test_rtmp_flv import ASC_48K_MONO, AVCC_320, HVCC_720

Stamps = dict[str, list[tuple[int, int, bool, int]]]


async def reference_stamps(ffmpeg: FfmpegRunner, source: Path, tmp: Path) -> Stamps:
    """Per kind: (dts, pts, keyframe, size) as ffmpeg's FLV muxer writes them, via ffprobe."""
    out = tmp / "reference.flv"
    rc, _, err = await ffmpeg.run(
        "-loglevel", "error", "-y", "-i", str(source), "-c", "copy", "-f", "flv", str(out)
    )
    assert rc == 0, err
    rc, text, err = await ffmpeg.run(
        "-v",
        "error",
        "-show_entries",
        "packet=stream_index,dts,pts,flags,size:stream=index,codec_type",
        "-of",
        "json",
        str(out),
        tool="ffprobe",
    )
    assert rc == 0, err
    info = json.loads(text)
    kinds = {s["index"]: s["codec_type"] for s in info["streams"]}
    stamps: Stamps = {"video": [], "audio": []}
    for p in info["packets"]:
        stamps[kinds[p["stream_index"]]].append(
            (int(p["dts"]), int(p["pts"]), "K" in p["flags"], int(p["size"]))
        )
    return stamps


def hub_stamps(items: list, tracks: tuple[Track, ...]) -> Stamps:
    stamps: Stamps = {"video": [], "audio": []}
    for item in items:
        if isinstance(item, Packet):
            kind = tracks[item.track].kind
            stamps[kind].append(
                (item.dts, item.pts, item.keyframe or kind == "audio", len(item.data))
            )
    return stamps


def rebase(stamps: Stamps, offset: int) -> Stamps:
    return {k: [(d + offset, p + offset, key, n) for d, p, key, n in v] for k, v in stamps.items()}


@pytest.mark.parametrize("clip", ["bf", "nobf"])
async def test_timestamps_match_ffmpeg_flv_exactly(
    clip: str,
    rtmp_server: RtmpServer,
    rtmp_media: dict[str, Path],
    rtmp_ffmpeg: FfmpegRunner,
    tmp_path: Path,
) -> None:
    source = rtmp_media[clip]
    sub = rtmp_server.hub.subscribe("cam1", "test", max_packets=100_000)
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/cam1?key=k"
    rc, _, err = await rtmp_ffmpeg.run(*push_args(source, url))
    assert rc == 0, err
    stream = rtmp_server.hub.stream("cam1")
    await wait_for(lambda: not stream.live)  # StreamEnd is queued when the publication ends
    items = drain(sub)
    assert isinstance(items[-1], StreamEnd)
    starts = [i for i in items if isinstance(i, StreamStart) and i.tracks]
    assert len(starts) == 1, "tracks announced once, before the first packet"
    tracks = starts[0].tracks
    video, audio = tracks
    assert (video.kind, video.codec, video.width, video.height, video.index) == (
        "video",
        "h264",
        320,
        240,
        0,
    )
    assert video.config[0] == 1 and video.timescale == 1000
    assert (audio.kind, audio.codec, audio.sample_rate, audio.channels) == (
        "audio",
        "aac",
        48000,
        1,
    )
    got = hub_stamps(items, tracks)
    want = await reference_stamps(rtmp_ffmpeg, source, tmp_path)
    seconds = 20 if clip == "bf" else 4
    assert len(got["video"]) == 30 * seconds and len(got["audio"]) == len(want["audio"])
    assert len(got["audio"]) > seconds * 46
    offset = want["video"][0][0] - got["video"][0][0]
    assert abs(offset) <= 1000
    assert rebase(got, offset) == want
    if clip == "bf":
        assert any(p != d for d, p, _, _ in got["video"]), "B-frames give pts != dts"


@pytest.mark.parametrize("how", ["stream name", "tcUrl", "app"])
async def test_key_found_in_stream_name_tcurl_or_app(
    how: str, rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner
) -> None:
    calls: list[tuple[str, str | None, str]] = []

    async def authorize(stream_id: str, key: str | None, action: str, peer: str) -> None:
        calls.append((stream_id, key, action))
        assert peer.startswith("127.0.0.1:")

    server = RtmpServer(Hub(), "127.0.0.1", 0, authorize)
    await server.start()
    base = f"rtmp://127.0.0.1:{server.port}/live"
    try:
        extra = {
            "stream name": [],
            "tcUrl": ["-rtmp_tcurl", f"{base}?key=S3CRET"],
            "app": ["-rtmp_app", "live?key=S3CRET", "-rtmp_playpath", "court7"],
        }[how]
        url = f"{base}/court7?key=S3CRET" if how == "stream name" else f"{base}/court7"
        args = push_args(rtmp_media["nobf"], url)
        rc, _, err = await rtmp_ffmpeg.run(*args[:-1], *extra, args[-1])
        assert rc == 0, err
    finally:
        await server.stop()
    assert calls == [("court7", "S3CRET", "publish")]


def test_split_query_key() -> None:
    assert split_query_key("cam?key=a%2Fb&x=1") == ("cam", "a/b")
    assert split_query_key("cam") == ("cam", None)
    assert split_query_key("live?token=1") == ("live", None)


async def refusing(stream_id: str, key: str | None, action: str, peer: str) -> None:
    if key != "good":
        raise RtmpRefused(f"wrong or missing key for stream {stream_id!r}")


async def test_refused_key_fails_with_reason_and_others_keep_flowing(
    rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner, caplog: pytest.LogCaptureFixture
) -> None:
    server = RtmpServer(Hub(), "127.0.0.1", 0, refusing)
    await server.start()
    base = f"rtmp://127.0.0.1:{server.port}/live"
    try:
        sub = server.hub.subscribe("ok", "test", max_packets=100_000)
        good = await rtmp_ffmpeg.start(
            *push_args(rtmp_media["nobf"], f"{base}/ok?key=good", realtime=True, loop=True)
        )
        await wait_for(lambda: sub.queued > 20)
        with caplog.at_level(logging.INFO, logger="media_server.rtmp"):
            rc, _, err = await rtmp_ffmpeg.run(
                *push_args(rtmp_media["nobf"], f"{base}/secret?key=bad")
            )
        assert rc != 0
        assert "wrong or missing key for stream 'secret'" in err
        assert "publish 'secret' refused: wrong or missing key" in caplog.text
        assert server.stats.refused == 1
        before = sub.queued
        await wait_for(lambda: sub.queued > before + 10)
        assert good.returncode is None and server.hub.find("ok").live  # type: ignore[union-attr]
        assert server.hub.find("secret") is None
    finally:
        await server.stop()


async def test_second_publisher_is_refused_as_busy(
    rtmp_server: RtmpServer, rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner
) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/room1"
    sub = rtmp_server.hub.subscribe("room1", "test", max_packets=100_000)
    first = await rtmp_ffmpeg.start(*push_args(rtmp_media["nobf"], url, realtime=True, loop=True))
    await wait_for(lambda: sub.queued > 20)
    rc, _, err = await rtmp_ffmpeg.run(*push_args(rtmp_media["nobf"], url))
    assert rc != 0 and "already being published" in err
    before = sub.queued
    await wait_for(lambda: sub.queued > before + 10)
    assert first.returncode is None
    assert rtmp_server.stats.publishing == 1 and rtmp_server.stats.refused == 1
    await rtmp_ffmpeg.stop(first)
    await wait_for(lambda: rtmp_server.stats.publishing == 0)
    assert not rtmp_server.hub.find("room1").live  # type: ignore[union-attr]


async def test_unknown_app_is_rejected(
    rtmp_server: RtmpServer, rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner
) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/vod/x"
    rc, _, err = await rtmp_ffmpeg.run(*push_args(rtmp_media["nobf"], url))
    assert rc != 0 and "unknown application 'vod'" in err


# -- the ingest state machine, from bytes --


def video_seq(config: bytes = AVCC_320) -> bytes:
    return b"\x17\x00\x00\x00\x00" + config


def frame(key: bool, cto: int = 0) -> bytes:
    return bytes((0x17 if key else 0x27, 1)) + (cto & 0xFFFFFF).to_bytes(3, "big") + b"\0\0\0\1x"


def ingest() -> tuple[Ingest, QueuedConsumer]:
    hub = Hub()
    sub = hub.subscribe("s", "test", max_packets=100_000)
    return Ingest(hub.publish("s", (), "test"), "test"), sub


video_frames = st.tuples(
    st.just("video"),
    st.sampled_from([1, 2, 3, 4, 5]),
    st.sampled_from([7, 12]),
    st.sampled_from([1, 2]),
    st.integers(0, 0xFFFFFF),
    st.binary(max_size=6),
)
audio_frames = st.tuples(
    st.just("audio"),
    st.just(10),
    st.sampled_from([0xF, 0xE, 0x2]),
    st.just(1),
    st.just(0),
    st.binary(max_size=6),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(video_frames, audio_frames), max_size=30))
def test_frames_become_the_packets_the_flv_parsers_describe(msgs: list) -> None:
    """on_video and on_audio read the common frames off their first bytes, without making
    a tag: every packet must still be what parse_video / parse_audio make of its message."""
    ing, sub = ingest()
    ing.on_video(0, video_seq(), 0.0)
    ing.on_audio(0, b"\xaf\x00" + ASC_48K_MONO, 0.0)
    expected = []
    for ts, (kind, high, low, packet_type, cto, data) in enumerate(msgs):
        head = bytes((high << 4 | low, packet_type))
        if kind == "video":
            payload = head + cto.to_bytes(3, "big") + data
            ing.on_video(ts, payload, 0.0)
            tag = flv.parse_video(payload)
            if tag.kind == flv.FRAME and tag.codec == "h264" and len(tag.data):
                expected.append((0, ts, ts + tag.cto, tag.keyframe, bytes(tag.data)))
        else:
            payload = head + data
            ing.on_audio(ts, payload, 0.0)
            atag = flv.parse_audio(payload)
            if atag.kind == flv.FRAME and len(atag.data):
                expected.append((1, ts, ts, True, bytes(atag.data)))
    got = [(i.track, i.dts, i.pts, i.keyframe, i.data) for i in drain(sub) if isinstance(i, Packet)]
    assert got == expected
    assert all(type(data) is bytes for *_, data in got)


def test_timestamps_unwrap_across_32_bits() -> None:
    ing, sub = ingest()
    ing.on_video(0, video_seq(), 0.0)
    for ts in (0xFFFFFF00, 0xFFFFFFDF, 0x1E, 0x5D):
        ing.on_video(ts, frame(ts == 0xFFFFFF00, 33), 0.0)
    dts = [(i.dts, i.pts) for i in drain(sub) if isinstance(i, Packet)]
    base = 0xFFFFFF00
    assert dts == [
        (base, base + 33),
        (base + 0xDF, base + 0xDF + 33),
        (base + 0x11E, base + 0x11E + 33),
        (base + 0x15D, base + 0x15D + 33),
    ]


def stamps_with_audio_at(audio_ts: int, audio_arrival: float) -> list[tuple[int, int]]:
    """(track, dts) of a video frame at ts 5000 arriving at t=100 s, then two audio frames
    stamped audio_ts (+21) arriving at audio_arrival (+0.021)."""
    ing, sub = ingest()
    ing.on_video(0, video_seq(), 100.0)
    ing.on_audio(0, b"\xaf\x00" + ASC_48K_MONO, 100.0)
    ing.on_video(5000, frame(True), 100.0)
    ing.on_audio(audio_ts, b"\xaf\x01\x21", audio_arrival)
    ing.on_audio((audio_ts + 21) & 0xFFFFFFFF, b"\xaf\x01\x21", audio_arrival + 0.021)
    return [(i.track, i.dts) for i in drain(sub) if isinstance(i, Packet)]


def test_clocks_that_start_apart_are_joined_by_arrival() -> None:
    # a cheap encoder: audio stamped from 0 (or its uptime) while video says 5 s
    assert stamps_with_audio_at(10, 100.010) == [(0, 5000), (1, 5010), (1, 5031)]
    assert stamps_with_audio_at(0xFFFFFFF0, 100.010) == [(0, 5000), (1, 5010), (1, 5031)]
    assert stamps_with_audio_at(905_000, 100.5) == [(0, 5000), (1, 5500), (1, 5521)]


def test_offsets_an_encoder_can_mean_are_kept() -> None:
    # audio that starts 2 s after the video and arrives 2 s later: the stamps are right
    assert stamps_with_audio_at(7000, 102.0) == [(0, 5000), (1, 7000), (1, 7021)]
    # x264 lookahead: video arrives late, up to ~2 s after audio of the same time
    assert stamps_with_audio_at(7000, 100.0) == [(0, 5000), (1, 7000), (1, 7021)]


def test_tracks_announced_when_metadata_promises_are_kept() -> None:
    ing, sub = ingest()
    ing.on_metadata(["@setDataFrame", "onMetaData", {"videocodecid": 7.0, "audiocodecid": 10.0}])
    ing.on_video(0, video_seq(), 0.0)
    assert not ing.announced
    ing.on_audio(0, b"\xaf\x00" + ASC_48K_MONO, 0.0)
    assert ing.announced
    assert [t.kind for t in ing.tracks] == ["video", "audio"]
    ing.on_video(0, video_seq(), 0.0)  # the same header again: no restart
    starts = [i for i in drain(sub) if isinstance(i, StreamStart)]
    assert [len(s.tracks) for s in starts] == [0, 2]


def test_changed_sequence_header_restarts_subscribers() -> None:
    ing, sub = ingest()
    ing.on_video(0, video_seq(), 0.0)
    ing.on_video(0, frame(True), 0.0)
    ing.on_video(40, b"\x1c\x00\x00\x00\x00" + HVCC_720, 0.0)
    starts = [i for i in drain(sub) if isinstance(i, StreamStart)]
    assert [(s.tracks[0].codec, s.tracks[0].width) for s in starts if s.tracks] == [
        ("h264", 320),
        ("h265", 1280),
    ]


def test_frames_before_any_sequence_header_are_dropped() -> None:
    ing, sub = ingest()
    ing.on_video(0, frame(True), 0.0)
    assert ing.frames_without_config == 1 and not ing.announced
    assert not [i for i in drain(sub) if isinstance(i, Packet)]


def test_unsupported_audio_keeps_the_video(caplog: pytest.LogCaptureFixture) -> None:
    ing, sub = ingest()
    ing.on_video(0, video_seq(), 0.0)
    with caplog.at_level(logging.WARNING):
        ing.on_audio(0, b"\xff\xff\xfb", 0.0)
        ing.on_audio(20, b"\xff\xff\xfb", 0.0)
    ing.on_video(0, frame(True), 0.0)
    text = "audio dropped: unsupported audio codec device specific: send AAC"
    assert caplog.text.count(text) == 1
    assert [i.track for i in drain(sub) if isinstance(i, Packet)] == [0]


async def test_idle_connection_is_dropped() -> None:
    server = RtmpServer(Hub(), "127.0.0.1", 0, limits=RtmpLimits(idle_timeout=0.3))
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x03" + bytes(1536))
        assert len(await reader.readexactly(1 + 2 * 1536)) == 3073
        writer.write(bytes(1536))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
    finally:
        await server.stop()


async def test_acknowledgements_ping_and_connect_answer(rtmp_server: RtmpServer) -> None:
    client = await RawRtmpClient.connect(rtmp_server.port)
    try:
        await client.handshake()
        client.command(0, "connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
        client.writer.write(
            client.chunks.message(2, WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", 3000))
        )
        client.writer.write(
            client.chunks.message(2, USER_CONTROL, 0, 0, struct.pack(">HI", 6, 1234))
        )
        client.command(0, "createStream", 2.0, None)
        client.command(1, "publish", 0.0, None, "acked", "live")
        client.writer.write(
            client.chunks.message(6, VIDEO, 1, 0, b"\x17\x00\x00\x00\x00" + AVCC_320)
        )
        for i in range(3):
            client.writer.write(
                client.chunks.message(6, VIDEO, 1, 33 * i, bytes(1500), b"\x17\x01\x00\x00\x00")
            )
        reader, got = ChunkReader(), list[Message]()
        while not any(m.type_id == ACKNOWLEDGEMENT for m in got):
            got += reader.feed(await asyncio.wait_for(client.reader.read(65536), 5))
    finally:
        await client.close()
    kinds = [m.type_id for m in got]
    assert kinds[:3] == [WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH, SET_CHUNK_SIZE]
    commands = [amf0.decode(m.payload) for m in got if m.type_id == COMMAND_AMF0]
    assert commands[0][0] == "_result" and commands[0][3]["code"] == (
        "NetConnection.Connect.Success"
    )
    assert ["_result", 2.0, None, 1.0] in commands
    assert any(c[0] == "onStatus" and c[3]["code"] == "NetStream.Publish.Start" for c in commands)
    pong = [m.payload for m in got if m.type_id == USER_CONTROL and m.payload[:2] == b"\0\7"]
    assert pong == [struct.pack(">HI", 7, 1234)]
    ack = next(m for m in got if m.type_id == ACKNOWLEDGEMENT)
    assert struct.unpack(">I", ack.payload)[0] >= 3000


async def _publish_at_once(port: int, stream: str, frames: int) -> RawRtmpClient:
    """Handshake, then connect .. publish and the first frames in one write, as a client
    that does not wait for NetStream.Publish.Start would send them."""
    client = await RawRtmpClient.connect(port)
    await client.handshake()
    client.command(0, "connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
    client.command(0, "createStream", 2.0, None)
    client.command(1, "publish", 0.0, None, stream, "live")
    client.writer.write(client.chunks.message(6, VIDEO, 1, 0, b"\x17\x00\x00\x00\x00" + AVCC_320))
    for i in range(frames):
        client.writer.write(
            client.chunks.message(6, VIDEO, 1, 33 * i, bytes(300), b"\x17\x01\x00\x00\x00")
        )
    await client.writer.drain()
    return client


async def test_media_behind_a_slow_publish_check_waits_for_it() -> None:
    """Media parsed in data_received must not overtake the publish command before it."""

    async def slow_authorize(stream_id: str, key: str | None, action: str, peer: str) -> None:
        await asyncio.sleep(0.2)

    hub = Hub()
    sub = hub.subscribe("eager", "test")
    server = RtmpServer(hub, "127.0.0.1", 0, authorize=slow_authorize)
    await server.start()
    try:
        client = await _publish_at_once(server.port, "eager", 5)
        packets: list[Packet] = []

        def five() -> bool:
            packets.extend(i for i in drain(sub) if isinstance(i, Packet))
            return len(packets) >= 5

        with contextlib.suppress(TimeoutError):
            await wait_for(five, 5)
        await client.close()
    finally:
        await server.stop()
    # every frame sent behind the publish is kept, in order: none was parsed before the
    # publication existed (it would have been dropped)
    assert [(p.dts, p.keyframe, p.data) for p in packets] == [
        (33 * i, True, bytes(300)) for i in range(5)
    ]


async def test_silent_publisher_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub()
    server = RtmpServer(hub, "127.0.0.1", 0, limits=RtmpLimits(publish_timeout=0.3))
    await server.start()
    try:
        with caplog.at_level(logging.INFO):
            client = await _publish_at_once(server.port, "quiet", 1)
            await wait_for(lambda: (s := hub.find("quiet")) is not None and s.live)
            assert await asyncio.wait_for(client.reader.read(), 5) is not None
            await wait_for(lambda: not hub.find("quiet").live)  # type: ignore[union-attr]
        assert "closed: timed out (publishing)" in caplog.text
        await client.close()
    finally:
        await server.stop()
