"""Test helpers: what the hub carried, written to MP4 with PyAV (no re-encode) and checked
by decoding it with ffprobe."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.stream

from media_server.codecs.bitstream import nals_to_avcc, split_avcc
from media_server.codecs.video import nal_type
from media_server.consumer import QueuedConsumer
from media_server.hls.segmenter import Segmenter
from media_server.media import Packet, StreamEnd, StreamStart, Track

MUX_CODECS = {"h264": "h264", "h265": "hevc", "aac": "aac"}
PARAMETER_SETS = {7, 8, 32, 33, 34}  # H.264 SPS/PPS, H.265 VPS/SPS/PPS


async def collect(sub: QueuedConsumer, seconds: float) -> tuple[list[StreamStart], list[Packet]]:
    """Everything a subscriber gets for `seconds`."""
    starts: list[StreamStart] = []
    packets: list[Packet] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            item = await asyncio.wait_for(sub.get(), left)
        except TimeoutError:
            break
        if isinstance(item, StreamStart):
            starts.append(item)
        elif isinstance(item, Packet):
            packets.append(item)
        elif isinstance(item, StreamEnd):
            break
    return starts, packets


def write_mp4(path: Path, tracks: tuple[Track, ...], packets: list[Packet]) -> None:
    """Mux hub packets into an MP4 (no re-encode) with each track's config as the
    stream's extradata.

    PyAV has no public setter for a muxed stream's extradata, so each stream gets an
    encoder context, opened (never fed) and then given the track's config; the muxer
    copies it from there. (FFmpeg's mp4 muxer ignores new-extradata side data for H.264
    and would take the first packet for the record.) In-band parameter sets are left
    out, so the file decodes only if the avcC/hvcC record is right."""
    out = av.open(str(path), "w")
    streams = {t.index: _mux_stream(out, t) for t in tracks}
    by_track: dict[int, list[Packet]] = {}
    for packet in packets:
        by_track.setdefault(packet.track, []).append(packet)
    for packet in packets:
        track = tracks[packet.track]
        out_packet = av.Packet(_without_parameter_sets(packet.data, track))
        out_packet.stream = streams[packet.track]
        out_packet.time_base = Fraction(1, track.timescale)
        out_packet.dts, out_packet.pts = packet.dts, packet.pts
        out_packet.duration = _duration(by_track[packet.track], packet)
        out_packet.is_keyframe = packet.keyframe
        out.mux(out_packet)
    out.close()


def _mux_stream(out: av.container.OutputContainer, track: Track) -> av.stream.Stream:
    stream = out.add_stream(
        MUX_CODECS[track.codec], rate=None if track.is_video else track.sample_rate
    )
    ctx = stream.codec_context
    if track.is_video:
        ctx.width, ctx.height, ctx.pix_fmt = track.width, track.height, "yuv420p"
        ctx.time_base = Fraction(1, track.timescale)
        ctx.options = (
            {"preset": "ultrafast", "x265-params": "log-level=none"}
            if track.codec == "h265"
            else {"preset": "ultrafast"}
        )
    else:
        ctx.layout = "stereo" if track.channels == 2 else "mono"
    ctx.open()
    ctx.extradata = track.config
    stream.time_base = Fraction(1, track.timescale)
    return stream


def _without_parameter_sets(data: bytes, track: Track) -> bytes:
    if not track.is_video:
        return data
    nals = [n for n in split_avcc(data) if nal_type(n, track.codec) not in PARAMETER_SETS]
    return nals_to_avcc(nals)


def _duration(same: list[Packet], packet: Packet) -> int:
    i = same.index(packet)  # packets are few in tests: obvious beats fast
    if i + 1 < len(same):
        return same[i + 1].dts - packet.dts
    return same[i].dts - same[i - 1].dts if i else 1


def probe(path: Path) -> dict[str, dict[str, object]]:
    """ffprobe's view of a file after decoding every frame: streams by codec type."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,codec_tag_string,width,height,nb_read_frames,sample_rate,"
            "channels,duration,start_time"
            ":format=duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    info = json.loads(result.stdout)
    streams = {s["codec_type"]: s for s in info["streams"]}
    streams["format"] = info.get("format", {})
    return streams


def decode_errors(path: Path) -> str:
    """What ffmpeg complains about while decoding the whole file ('' when clean)."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stderr.strip()


def write_ll_hls(segmenter: Segmenter, path: Path) -> Path:
    """What an LL-HLS player of the whole window gets, as one file: the first segment's
    init segment, then every complete segment and the parts of the open one."""
    segments = list(segmenter.segments)
    if segmenter.open is not None:
        segments.append(segmenter.open)
    assert segments, "LL-HLS made no segment"
    init = segmenter.inits[segments[0].init_id]
    path.write_bytes(init + b"".join(s.data() for s in segments))
    return path
