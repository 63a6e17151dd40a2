"""Annex-B <-> AVCC, SPS parsing and decoder records, checked against what PyAV's libx264 /
libx265 produce and against FFmpeg decoding and muxing the result."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_server import bitstream as bs
from media_server.media import Packet, Track
from tests.media_server.media_check import decode_errors, probe, write_mp4

FPS = 25


def encode(
    codec: str, width: int, height: int, frames: int = 30, options: dict[str, str] | None = None
) -> list[bytes]:
    """Annex-B access units as an encoder without global header emits them."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, FPS), FPS
    ctx.options = options or {"preset": "ultrafast", "bf": "0"}
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    out: list[bytes] = []
    for i in range(frames):
        image = np.full((height * 3 // 2, width), 128, np.uint8)
        image[:height] = np.roll(ramp, i * 8)
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    return out + [bytes(p) for p in ctx.encode(None)]


X265 = {"preset": "ultrafast", "x265-params": "log-level=none:keyint=25:bframes=0"}


@pytest.fixture(scope="module")
def h264_baseline() -> list[bytes]:
    return encode("libx264", 640, 360)


@pytest.fixture(scope="module")
def h264_high() -> list[bytes]:
    return encode("libx264", 854, 480, options={"preset": "veryfast", "bf": "0"})


@pytest.fixture(scope="module")
def h265() -> list[bytes]:
    return encode("libx265", 640, 360, options=X265)


def hub_packets(units: list[bytes], codec: str) -> tuple[Track, list[Packet]]:
    normalizer = bs.AccessUnitNormalizer(codec)
    packets = []
    for i, unit in enumerate(units):
        data, keyframe, _ = normalizer.convert(unit)
        packets.append(Packet(0, i * 3600, i * 3600, keyframe, data))
    info = normalizer.params.sps_info()
    track = Track(
        0,
        "video",
        codec,
        90000,
        normalizer.params.record(),  # type: ignore[arg-type]
        width=info.width,
        height=info.height,
    )
    return track, packets


# -- framing --


def test_split_annexb_3_and_4_byte_start_codes_and_trailing_zeros() -> None:
    data = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x00\x01\x65\xcc\xdd\x00"
    assert [bytes(n) for n in bs.split_annexb(data)] == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]
    assert bs.split_annexb(b"") == [] and bs.split_annexb(b"\x65\xcc") == []


def test_annexb_avcc_round_trip(h264_baseline: list[bytes]) -> None:
    for unit in h264_baseline:
        avcc = bs.annexb_to_avcc(unit)
        nals = [bytes(n) for n in bs.split_annexb(unit)]
        assert [bytes(n) for n in bs.split_avcc(avcc)] == nals
        assert len(avcc) == sum(len(n) + 4 for n in nals)
        assert bs.split_annexb(bs.avcc_to_annexb(avcc)) == bs.split_annexb(unit)


def test_split_avcc_rejects_overruns() -> None:
    with pytest.raises(bs.BitstreamError):
        bs.split_avcc(b"\x00\x00\x00\x09\x65\x00")
    with pytest.raises(bs.BitstreamError):
        bs.split_avcc(b"\x00\x00\x00\x01\x65\x00\x00")


def test_emulation_prevention_is_removed() -> None:
    assert bs.unescape_rbsp(b"\x67\x00\x00\x03\x01\x00\x00\x03\x00\x00\x03") == (
        b"\x67\x00\x00\x01\x00\x00\x00\x00"
    )


# -- SPS --


@pytest.mark.parametrize("width,height", [(320, 240), (854, 480), (1280, 720), (1920, 1080)])
def test_h264_sps_size(width: int, height: int) -> None:
    first = bs.split_annexb(encode("libx264", width, height, frames=1)[0])
    sps = next(n for n in first if bs.nal_type(n, "h264") == bs.H264_SPS)
    info = bs.parse_h264_sps(sps)
    assert (info.width, info.height) == (width, height)


def test_h264_high_profile_fields(h264_high: list[bytes]) -> None:
    sps = next(n for n in bs.split_annexb(h264_high[0]) if bs.nal_type(n, "h264") == 7)
    info = bs.parse_h264_sps(sps)
    assert (info.profile_idc, info.chroma_format_idc, info.bit_depth_luma_minus8) == (100, 1, 0)
    assert (info.width, info.height) == (854, 480)


@pytest.mark.parametrize("width,height", [(640, 360), (1920, 1080)])
def test_h265_sps_size(width: int, height: int) -> None:
    first = bs.split_annexb(encode("libx265", width, height, frames=1, options=X265)[0])
    sps = next(n for n in first if bs.nal_type(n, "h265") == bs.H265_SPS)
    info = bs.parse_h265_sps(sps)
    assert (info.width, info.height, info.chroma_format_idc) == (width, height, 1)
    assert len(info.profile_bytes) == 12


# -- records, checked by FFmpeg --


@pytest.mark.parametrize("fixture", ["h264_baseline", "h264_high", "h265"])
def test_record_decodes_in_mp4(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    units = request.getfixturevalue(fixture)
    codec = "h265" if fixture == "h265" else "h264"
    track, packets = hub_packets(units, codec)
    assert packets[0].keyframe and sum(p.keyframe for p in packets) >= 1
    path = tmp_path / "out.mp4"
    write_mp4(path, (track,), packets)  # in-band parameter sets removed: record only
    video = probe(path)["video"]
    assert (video["width"], video["height"]) == (track.width, track.height)
    assert int(str(video["nb_read_frames"])) == len(units)
    assert decode_errors(path) == ""


def test_avcc_record_matches_ffmpeg(h264_high: list[bytes], tmp_path: Path) -> None:
    """FFmpeg's mp4 muxer builds avcC from an Annex-B stream: ours must be the same."""
    raw = tmp_path / "in.h264"
    raw.write_bytes(b"".join(h264_high))
    mp4 = tmp_path / "ffmpeg.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-r", str(FPS), "-i", str(raw), "-c", "copy", str(mp4)],
        check=True,
        timeout=60,
    )
    with av.open(str(mp4)) as container:
        theirs = bytes(container.streams.video[0].codec_context.extradata)
    track, _ = hub_packets(h264_high, "h264")
    assert track.config == theirs


def test_hvcc_record_round_trips(h265: list[bytes]) -> None:
    track, _ = hub_packets(h265, "h265")
    nals, length_size = bs.parse_hvcc_record(track.config)
    assert length_size == 4
    assert [bs.nal_type(n, "h265") for n in nals] == [bs.H265_VPS, bs.H265_SPS, bs.H265_PPS]
    first = [bytes(n) for n in bs.split_annexb(h265[0])][:3]
    assert nals == first


# -- the normalizer --


def test_normalizer_drops_aud_and_flags_keyframes() -> None:
    units = encode(
        "libx264",
        320,
        240,
        frames=30,
        options={"preset": "ultrafast", "bf": "0", "g": "10", "x264-params": "aud=1"},
    )
    normalizer = bs.AccessUnitNormalizer("h264")
    flags = []
    for unit in units:
        assert bs.nal_type(bs.split_annexb(unit)[0], "h264") == bs.H264_AUD
        data, keyframe, _ = normalizer.convert(unit)
        assert bs.H264_AUD not in [bs.nal_type(n, "h264") for n in bs.split_avcc(data)]
        flags.append(keyframe)
    assert [i for i, key in enumerate(flags) if key] == [0, 10, 20]


def test_normalizer_reports_new_parameter_sets() -> None:
    normalizer = bs.AccessUnitNormalizer("h264")
    small = encode("libx264", 320, 240, frames=2)
    large = encode("libx264", 640, 480, frames=2)
    assert normalizer.convert(small[0])[2] is True
    assert normalizer.convert(small[0])[2] is False  # the same SPS again
    assert normalizer.convert(large[0])[2] is True
    assert normalizer.params.sps_info().width == 640


def test_normalizer_passes_avcc_through_and_relengths(h264_baseline: list[bytes]) -> None:
    track, packets = hub_packets(h264_baseline, "h264")
    four = bs.AccessUnitNormalizer("h264", track.config)
    assert four.params.complete and four.length_size == 4
    assert four.convert(packets[1].data)[0] is packets[1].data  # no copy
    two_record = track.config[:4] + bytes([0xFC | 1]) + track.config[5:]
    two = bs.AccessUnitNormalizer("h264", two_record)
    nals = bs.split_avcc(packets[1].data)
    short = b"".join(len(n).to_bytes(2, "big") + bytes(n) for n in nals)
    assert two.convert(short)[0] == packets[1].data


def test_normalizer_refuses_other_codecs() -> None:
    with pytest.raises(bs.BitstreamError):
        bs.AccessUnitNormalizer("vp8")


# -- fuzz: malformed input raises BitstreamError, nothing else --


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["h264", "h265"]))
def test_fuzz_parsers_raise_only_bitstream_error(data: bytes, codec: str) -> None:
    for call in (
        lambda: bs.AccessUnitNormalizer(codec).convert(data),
        lambda: bs.AccessUnitNormalizer(codec, b"\x01" + data),
        lambda: bs.split_avcc(data),
        lambda: bs.parse_h264_sps(b"\x67" + data),
        lambda: bs.parse_h265_sps(b"\x42\x01" + data),
        lambda: bs.parse_avcc_record(data),
        lambda: bs.parse_hvcc_record(data),
    ):
        try:
            call()
        except bs.BitstreamError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b[0] != 0), max_size=6))
def test_fuzz_avcc_round_trip(nals: list[bytes]) -> None:
    nals = [n.replace(b"\x00\x00", b"\x00\x00\x03") for n in nals]  # as an encoder escapes
    nals = [n + b"\x80" for n in nals]  # rbsp_stop_one_bit: a NAL never ends in zero
    avcc = bs.nals_to_avcc(nals)
    assert [bytes(n) for n in bs.split_avcc(avcc)] == nals
    assert [bytes(n) for n in bs.split_annexb(bs.avcc_to_annexb(avcc))] == nals
