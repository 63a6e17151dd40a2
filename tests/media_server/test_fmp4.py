"""fMP4 writer: box layout read back by hand, and real clips (H.264/H.265, AAC/Opus,
B-frames) remuxed into init + fragments and decoded by ffprobe and PyAV."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
import pytest

from media_server import fmp4
from media_server.fmp4 import TrackRun
from media_server.media import Packet, Track
from tests.mediafiles import load_clip, make_clip

VIDEO = Track(0, "video", "h264", 90000, b"\x01\x64\x00\x1f", 640, 360)
AUDIO = Track(1, "audio", "aac", 48000, bytes([0x11, 0x90]))
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 0)


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of the boxes in data[start:end]."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= end, (kind, size)
        yield kind, data[pos + 8 : pos + size]
        pos += size


def find(data: bytes, path: str) -> bytes:
    """Payload of the first box at a path like "moov/trak/mdia/mdhd"."""
    for kind, payload in boxes(data):
        head, _, rest = path.partition("/")
        if kind == head.encode():
            return payload if not rest else find(payload, rest)
    raise KeyError(path)


def test_init_segment_layout() -> None:
    init = fmp4.init_segment((VIDEO, AUDIO))
    assert [k for k, _ in boxes(init)] == [b"ftyp", b"moov"]
    moov = find(init, "moov")
    assert [k for k, _ in boxes(moov)] == [b"mvhd", b"trak", b"trak", b"mvex"]
    track_ids = [struct.unpack_from(">I", p, 4)[0] for k, p in boxes(find(moov, "mvex"))]
    assert track_ids == [1, 2]
    mdhd = find(init, "moov/trak/mdia/mdhd")
    assert struct.unpack_from(">I", mdhd, 12)[0] == 90000
    tkhd = find(init, "moov/trak/tkhd")
    assert struct.unpack_from(">II", tkhd, 76) == (640 << 16, 360 << 16)
    stsd = find(init, "moov/trak/mdia/minf/stbl/stsd")
    assert stsd[8 + 4 : 8 + 8] == b"avc1" and b"avcC\x01\x64\x00\x1f" in stsd


def test_audio_sample_entries() -> None:
    mp4a = fmp4.sample_entry(AUDIO)
    assert mp4a[4:8] == b"mp4a"
    assert struct.unpack_from(">HHxxxxI", mp4a, 8 + 16) == (2, 16, 48000 << 16)
    assert b"\x05\x80\x80\x80\x02\x11\x90" in mp4a  # DecoderSpecificInfo = the ASC
    opus = fmp4.sample_entry(Track(0, "audio", "opus", 48000, OPUS_HEAD))
    assert opus[4:8] == b"Opus" and opus.endswith(
        b"dOps" + bytes([0, 2]) + struct.pack(">HIhB", 312, 48000, 0, 0)
    )


def test_fragment_layout() -> None:
    video = [
        Packet(0, 3000 * k, 3000 * k + 6000 - (k % 3) * 3000, k == 0, bytes([k]) * (10 + k))
        for k in range(4)
    ]
    audio = [Packet(1, 1024 * k, 1024 * k, True, b"a" * 7) for k in range(3)]
    frag = fmp4.fragment(
        7,
        [TrackRun(VIDEO, video, next_dts=12500, dts_offset=100), TrackRun(AUDIO, audio)],
        prft_wallclock=1_700_000_000.5,
    )
    kinds = [k for k, _ in boxes(frag)]
    assert kinds == [b"prft", b"moof", b"mdat"]
    prft = find(frag, "prft")
    ref, ntp, media_time = struct.unpack_from(">IQQ", prft, 4)
    assert (ref, media_time) == (1, 6000 + 100)
    assert ntp == (1_700_000_000 + fmp4.NTP_UNIX_OFFSET) << 32 | (1 << 31)
    moof_start = len(frag) - len(find(frag, "moof")) - 8 - len(find(frag, "mdat")) - 8
    moof = find(frag, "moof")
    assert struct.unpack_from(">I", find(moof, "mfhd"), 4)[0] == 7
    trafs = [p for k, p in boxes(moof) if k == b"traf"]
    assert struct.unpack_from(">Q", find(trafs[0], "tfdt"), 4)[0] == 100
    trun = find(trafs[0], "trun")
    assert trun[0] == 1  # version 1: signed composition offsets
    count, offset = struct.unpack_from(">Ii", trun, 4)
    entries = [struct.unpack_from(">IIIi", trun, 12 + 16 * i) for i in range(count)]
    assert entries == [
        (3000, 10, fmp4.SYNC_SAMPLE, 6000),
        (3000, 11, fmp4.NON_SYNC_SAMPLE, 3000),
        (3000, 12, fmp4.NON_SYNC_SAMPLE, 0),
        (3500, 13, fmp4.NON_SYNC_SAMPLE, 6000),
    ]
    assert frag[moof_start + offset : moof_start + offset + 10] == b"\x00" * 10
    audio_trun = find(trafs[1], "trun")
    a_count, a_offset = struct.unpack_from(">Ii", audio_trun, 4)
    durations = [struct.unpack_from(">I", audio_trun, 12 + 16 * i)[0] for i in range(a_count)]
    assert durations == [1024, 1024, 1024]  # the last keeps the previous duration
    assert frag[moof_start + a_offset : moof_start + a_offset + 21] == b"a" * 21


def test_lone_sample_gets_a_plausible_duration_and_negative_time_is_refused() -> None:
    frag = fmp4.fragment(1, [TrackRun(AUDIO, [Packet(1, 0, 0, True, b"x")])])
    trun = find(frag, "moof/traf/trun")
    assert struct.unpack_from(">I", trun, 12)[0] == 1024
    with pytest.raises(ValueError, match="negative decode time"):
        fmp4.fragment(1, [TrackRun(AUDIO, [Packet(1, -5, -5, True, b"x")])])
    with pytest.raises(ValueError):
        fmp4.fragment(1, [])


def remux(tracks: tuple[Track, ...], packets: list[Packet], part_s: float = 0.5) -> bytes:
    """init + one fragment per part_s of media, every track rebased to start at >= 0."""
    offsets = [-min(p.dts for p in packets if p.track == t.index) for t in tracks]
    out, seq = [fmp4.init_segment(tracks)], 1
    pending: list[Packet] = []
    limit = part_s
    for p in [*packets, None]:
        t = float("inf") if p is None else (p.dts + offsets[p.track]) / tracks[p.track].timescale
        if t >= limit:
            runs = []
            for track in tracks:
                mine = [q for q in pending if q.track == track.index]
                if not mine:
                    continue
                later = [q for q in packets if q.track == track.index and q.dts > mine[-1].dts]
                runs.append(
                    TrackRun(track, mine, later[0].dts if later else None, offsets[track.index])
                )
            out.append(fmp4.fragment(seq, runs, 1_700_000_000.0 + seq))
            seq, pending, limit = seq + 1, [], limit + part_s
        if p is not None:
            pending.append(p)
    return b"".join(out)


def ffprobe_streams(path: Path) -> list[dict]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,nb_read_frames,duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)["streams"]


@pytest.mark.parametrize(
    "video,audio,bframes", [("h264", "aac", 0), ("h264", "opus", 2), ("h265", "aac", 2)]
)
def test_remuxed_clip_decodes(
    tmp_path: Path, video: Literal["h264", "h265"], audio: Literal["aac", "opus"], bframes: int
) -> None:
    clip = make_clip(tmp_path, seconds=3, fps=25, gop=25, bframes=bframes, video=video, audio=audio)
    tracks, packets = load_clip(clip)
    out = tmp_path / "out.mp4"
    out.write_bytes(remux(tracks, packets))
    streams = {s["codec_type"]: s for s in ffprobe_streams(out)}
    assert set(streams) == {"video", "audio"}
    v = streams["video"]
    assert (v["codec_name"], v["width"], v["height"]) == (
        {"h264": "h264", "h265": "hevc"}[video],
        320,
        240,
    )
    assert int(v["nb_read_frames"]) == 75
    assert float(v["duration"]) == pytest.approx(3.0, abs=0.05)
    audio_frames = sum(1 for p in packets if p.track == 1)
    assert int(streams["audio"]["nb_read_frames"]) == audio_frames


def test_b_frames_come_out_in_presentation_order(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, seconds=2, fps=25, gop=25, bframes=3, audio=None)
    tracks, packets = load_clip(clip)
    assert any(p.pts != p.dts for p in packets)
    out = tmp_path / "bframes.mp4"
    out.write_bytes(remux(tracks, packets))
    offset = -min(p.dts for p in packets)
    with av.open(str(out)) as container:
        frame_pts = [f.pts for f in container.decode(video=0)]
    assert frame_pts == sorted(p.pts + offset for p in packets)


@pytest.mark.parametrize("video,types", [("h264", [7, 8]), ("h265", [32, 33, 34])])
def test_parameter_sets_go_in_front_of_keyframes(
    tmp_path: Path, video: Literal["h264", "h265"], types: list[int]
) -> None:
    tracks, _ = load_clip(make_clip(tmp_path, seconds=1, video=video, audio=None))
    prefix = fmp4.parameter_sets(tracks[0])
    nal_types, pos = [], 0
    while pos < len(prefix):
        (size,) = struct.unpack_from(">I", prefix, pos)
        header = prefix[pos + 4]
        nal_types.append(header & 0x1F if video == "h264" else (header >> 1) & 0x3F)
        pos += 4 + size
    assert nal_types == types
    assert fmp4.parameter_sets(AUDIO) == b"" and fmp4.parameter_sets(VIDEO) == b""
    frames = [Packet(0, 0, 0, True, b"K" * 5), Packet(0, 1, 1, False, b"P" * 3)]
    frag = fmp4.fragment(1, [TrackRun(tracks[0], frames, keyframe_prefix=prefix)])
    trun = find(frag, "moof/traf/trun")
    sizes = [struct.unpack_from(">I", trun, 12 + 16 * i + 4)[0] for i in range(2)]
    assert sizes == [len(prefix) + 5, 3]
    assert find(frag, "mdat") == prefix + b"K" * 5 + b"P" * 3
