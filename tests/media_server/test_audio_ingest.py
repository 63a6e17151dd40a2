"""Audio whatever the source sends: real RTSP cameras (GStreamer) with G.711, G.726, Opus,
L16 and AAC-LATM audio, and ffmpeg publishing FLV over RTMP with G.711, MP3 and Speex, reach
the hub as AAC that decodes to the camera's tone; the stats name every source track and what
became of it. Checked by decoding what the hub carried (PyAV), not by reading our own fields.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from media_server.codecs import aac
from media_server.hub import Hub
from media_server.media import Packet, StreamStart, Track
from media_server.rtmp.server import RtmpServer
from media_server.rtsp.pull import RtspPull
from media_server.source_audio import SourceFrame
from media_server.stats import stream_stats
from tests.fixtures.rtmp import FfmpegRunner, drain
from tests.fixtures.rtsp_camera import RtspCamera
from tests.media_server.media_check import collect, probe, write_mp4
from tests.media_server.test_rtmp_publish import frame, ingest, video_seq

Camera = Callable[..., RtspCamera]
pytestmark = pytest.mark.timeout(60)


def tone(path: Path) -> tuple[float, float]:
    """(seconds, RMS) of the first audio track of a file, decoded with PyAV."""
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray().astype(np.float64) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].codec_context.sample_rate
    if not chunks:
        return 0.0, 0.0
    seconds = sum(c.shape[-1] for c in chunks) / rate  # planar or packed: samples last
    samples = np.concatenate([c.reshape(-1) for c in chunks])
    return seconds, float(np.sqrt(np.mean(samples**2)))


def audio_track(start: StreamStart) -> Track:
    found = [t for t in start.tracks if t.kind == "audio"]
    assert found, f"no audio track in {start.tracks}"
    return found[0]


def test_aac_lc_config_is_what_decoders_read() -> None:
    assert aac.make_asc(16000, 1) == b"\x14\x08"
    assert aac.parse_asc(aac.make_asc(48000, 2)) == aac.parse_asc(b"\x11\x90")


# -- RTSP cameras --


@pytest.mark.parametrize(
    "codec, audio, named",
    [
        ("h264", "pcma", "pcma"),
        ("h264", "pcmu", "pcmu"),
        ("h264", "g726", "g726"),
        ("h264", "opus", "opus"),
        ("h264", "l16", "l16"),
        ("h264", "aac-latm", ""),
        ("h265", "pcma", "pcma"),
    ],
)
async def test_rtsp_camera_audio_reaches_the_hub_as_aac(
    codec: str, audio: str, named: str, rtsp_camera: Camera, tmp_path: Path
) -> None:
    camera = rtsp_camera(codec=codec, audio=audio, size="320x180")
    hub = Hub()
    sub = hub.subscribe("cam", "test", max_packets=10_000)
    pull = RtspPull(hub, "cam", camera.url, timeout_s=3.0)
    pull.start()
    try:
        starts, packets = await collect(sub, 4.0)
        stats = stream_stats(hub.stream("cam"))
    finally:
        await pull.stop()
    track = audio_track(starts[0])
    assert (track.codec, track.source_codec) == ("aac", named)
    assert stats["audio"] and stats["audio"]["codec"] == "aac"
    state = f"transcoded from {named}" if named else "carried"
    assert [(t["kind"], t["state"]) for t in stats["tracks"]] == [
        ("video", "carried"),
        ("audio", state),
    ]
    path = tmp_path / "pulled.mp4"
    write_mp4(path, starts[0].tracks, packets)
    info = probe(path)
    assert info["audio"]["codec_name"] == "aac"
    seconds, rms = tone(path)
    assert seconds >= 2.5 and rms > 0.05, (seconds, rms)  # the camera's tone: volume 0.2


async def test_audio_that_stops_leaves_a_hole_not_a_squeeze(
    rtsp_camera: Camera, tmp_path: Path
) -> None:
    """The camera's audio stops and the video goes on: AAC stops too (no made-up silence,
    no timestamps pulled together), the video keeps coming. The audio stops after the
    camera's first sender reports, which place it (sender_clock.py)."""
    camera = rtsp_camera(audio="pcma", size="320x180", audio_stop_after=5.0)
    hub = Hub()
    sub = hub.subscribe("cam", "test", max_packets=10_000)
    pull = RtspPull(hub, "cam", camera.url, timeout_s=3.0)
    pull.start()
    try:
        starts, packets = await collect(sub, 9.0)
    finally:
        await pull.stop()
    audio = audio_track(starts[0])
    last_audio = max(p.arrival for p in packets if p.track == audio.index)
    last_video = max(p.arrival for p in packets if p.track != audio.index)
    assert last_video - last_audio >= 2.0


# -- RTMP publishers (ffmpeg, FLV) --

RTMP_AUDIO = {
    "pcma": ["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"],
    "pcmu": ["-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1"],
    "mp3": ["-c:a", "libmp3lame", "-ar", "44100", "-b:a", "64k"],
    "speex": ["-c:a", "libspeex", "-ar", "16000", "-ac", "1"],
}


async def publish_flv(ffmpeg: FfmpegRunner, url: str, audio: list[str], seconds: float) -> None:
    rc, _, err = await ffmpeg.run(
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        *audio,
        "-f",
        "flv",
        url,
        timeout=seconds + 20,
    )
    assert rc == 0, err


async def stats_after(hub: Hub, stream: str, seconds: float) -> dict[str, Any]:
    await asyncio.sleep(seconds)
    return stream_stats(hub.stream(stream))


@pytest.mark.parametrize("named", sorted(RTMP_AUDIO))
async def test_rtmp_audio_reaches_the_hub_as_aac(
    named: str, rtmp_server: RtmpServer, rtmp_ffmpeg: FfmpegRunner, tmp_path: Path
) -> None:
    sub = rtmp_server.hub.subscribe("room", "test", max_packets=10_000)
    as_sent: list[SourceFrame] = []  # what a WebRTC viewer taking the codec would get
    rtmp_server.hub.stream("room").source_audio.attach(as_sent.append)
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/room"
    task = asyncio.create_task(publish_flv(rtmp_ffmpeg, url, RTMP_AUDIO[named], 4.0))
    snapshot = asyncio.create_task(stats_after(rtmp_server.hub, "room", 2.5))
    starts, packets = await collect(sub, 8.0)
    stats = await snapshot
    await task
    with_audio = [s for s in starts if any(t.kind == "audio" for t in s.tracks)]
    track = audio_track(with_audio[-1])
    assert (track.codec, track.source_codec) == ("aac", named)
    assert [(t["kind"], t["codec"], t["state"]) for t in stats["tracks"]] == [
        ("video", "h264", "carried"),
        ("audio", named, f"transcoded from {named}"),
    ]
    path = tmp_path / "published.mp4"
    write_mp4(path, with_audio[-1].tracks, [p for p in packets if p.track < 2])
    seconds, rms = tone(path)
    assert seconds >= 3.0 and rms > 0.05, (seconds, rms)  # ffmpeg's sine: amplitude 1/8
    if named not in ("pcma", "pcmu"):
        assert not as_sent, "only G.711 goes to WebRTC as it is"
        return
    assert {f.codec for f in as_sent} == {named}
    assert max(len(f.data) for f in as_sent) == 160  # 20 ms frames
    # 8 kHz timestamps, each frame where the last one ended (FLV's: to the millisecond)
    gaps = {b.timestamp - a.timestamp - len(a.data) for a, b in itertools.pairwise(as_sent)}
    assert max(map(abs, gaps)) <= 8, gaps
    seconds, rms = g711_tone(named, b"".join(f.data for f in as_sent))
    assert seconds >= 3.0 and rms > 0.05, (seconds, rms)


def g711_tone(codec: str, data: bytes) -> tuple[float, float]:
    """(seconds, RMS) of raw 8 kHz G.711 bytes."""
    decoder: Any = av.CodecContext.create("pcm_alaw" if codec == "pcma" else "pcm_mulaw", "r")
    decoder.sample_rate, decoder.layout = 8000, "mono"
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in decoder.decode(av.Packet(data))])
    return len(samples) / 8000, float(np.sqrt(np.mean((samples / 32768.0) ** 2)))


def test_stats_list_source_tracks_even_without_a_publisher() -> None:
    hub = Hub()
    stats = stream_stats(hub.stream("idle"))
    assert stats["tracks"] == [] and stats["audio"] is None


def test_undecodable_audio_is_listed_as_dropped_with_its_reason() -> None:
    """A track nothing can decode (here FLV's "device specific" sound format) keeps the
    video and says why the audio is gone, in the stats."""
    ing, sub = ingest()
    ing.on_video(0, video_seq(), 0.0)
    ing.on_audio(0, b"\xff\x00\x00", 0.0)
    ing.on_video(0, frame(True), 0.0)
    tracks = stream_stats(ing.publication.stream)["tracks"]
    assert tracks[0] == {"kind": "video", "codec": "h264", "state": "carried"}
    assert tracks[1]["kind"] == "audio" and tracks[1]["state"].startswith("dropped: ")
    assert "device specific" in tracks[1]["state"]
    assert [i.track for i in drain(sub) if isinstance(i, Packet)] == [0]


@pytest.mark.parametrize(
    "trusted, said, named",
    [(True, "pcma", "pcma"), (False, "pcma", ""), (True, "<script>", ""), (True, 8.0, "")],
)
def test_a_transcode_announced_upstream_is_believed_from_a_trusted_publisher_only(
    trusted: bool, said: Any, named: str
) -> None:
    """A courtcast agent sends the camera's codec in onMetaData (audiosourcecodec) with
    the AAC it made; the server names it only when the publisher's key was checked, and
    only a codec-like name."""
    from media_server.rtmp import amf0, flv
    from media_server.rtmp.publish import Ingest

    hub = Hub()
    ing = Ingest(hub.publish("s", (), "test"), "test", trusted)
    meta = amf0.decode(flv.metadata((audio_track_of(said),)))
    ing.on_metadata(meta)
    ing.on_audio(0, b"\xaf\x00" + aac.make_asc(8000, 1), 0.0)
    [track] = ing.tracks
    assert (track.codec, track.source_codec) == ("aac", named)
    state = f"transcoded from {named}" if named else "carried"
    assert stream_stats(ing.publication.stream)["tracks"] == [
        {"kind": "audio", "codec": "aac", "state": state}
    ]


def audio_track_of(source_codec: Any) -> Track:
    """An AAC track whose metadata announces `source_codec` (any AMF value, as a peer may)."""
    track = Track(1, "audio", "aac", 8000, aac.make_asc(8000, 1), sample_rate=8000, channels=1)
    return replace(track, source_codec=source_codec)
