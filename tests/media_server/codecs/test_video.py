"""Decoder records checked by FFmpeg decoding and muxing what the hub keeps, the access-unit
normalizer, and fuzzing: malformed input raises BitstreamError, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_server.codecs import aac, h264, h265
from media_server.codecs.bitstream import BitstreamError, split_annexb, split_avcc
from media_server.codecs.video import AccessUnitNormalizer, nal_type
from tests.media_server.codecs.samples import encode, hub_packets
from tests.media_server.media_check import decode_errors, probe, write_mp4

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


# -- the normalizer --


def test_normalizer_drops_aud_and_flags_keyframes() -> None:
    units = encode(
        "libx264",
        320,
        240,
        frames=30,
        options={"preset": "ultrafast", "bf": "0", "g": "10", "x264-params": "aud=1"},
    )
    normalizer = AccessUnitNormalizer("h264")
    flags = []
    for unit in units:
        assert nal_type(split_annexb(unit)[0], "h264") == h264.NAL_AUD
        data, keyframe, _ = normalizer.convert(unit)
        assert h264.NAL_AUD not in [nal_type(n, "h264") for n in split_avcc(data)]
        flags.append(keyframe)
    assert [i for i, key in enumerate(flags) if key] == [0, 10, 20]


def test_normalizer_reports_new_parameter_sets() -> None:
    normalizer = AccessUnitNormalizer("h264")
    small = encode("libx264", 320, 240, frames=2)
    large = encode("libx264", 640, 480, frames=2)
    assert normalizer.convert(small[0])[2] is True
    assert normalizer.convert(small[0])[2] is False  # the same SPS again
    assert normalizer.convert(large[0])[2] is True
    assert normalizer.params.sps_info().width == 640


def test_normalizer_passes_avcc_through_and_relengths(h264_baseline: list[bytes]) -> None:
    track, packets = hub_packets(h264_baseline, "h264")
    four = AccessUnitNormalizer("h264", track.config)
    assert four.params.complete and four.length_size == 4
    assert four.convert(packets[1].data)[0] is packets[1].data  # no copy
    two_record = track.config[:4] + bytes([0xFC | 1]) + track.config[5:]
    two = AccessUnitNormalizer("h264", two_record)
    nals = split_avcc(packets[1].data)
    short = b"".join(len(n).to_bytes(2, "big") + bytes(n) for n in nals)
    assert two.convert(short)[0] == packets[1].data


def test_normalizer_refuses_other_codecs() -> None:
    with pytest.raises(BitstreamError):
        AccessUnitNormalizer("vp8")


# -- fuzz: malformed input raises BitstreamError, nothing else --


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["h264", "h265"]))
def test_fuzz_parsers_raise_only_bitstream_error(data: bytes, codec: str) -> None:
    for call in (
        lambda: AccessUnitNormalizer(codec).convert(data),
        lambda: AccessUnitNormalizer(codec, b"\x01" + data),
        lambda: split_avcc(data),
        lambda: h264.parse_h264_sps(b"\x67" + data),
        lambda: h265.parse_h265_sps(b"\x42\x01" + data),
        lambda: h264.parse_avcc_record(data),
        lambda: h265.parse_hvcc_record(data),
        lambda: h264.H264Assembler().push(b"\x00\x00\x01\x67" + data),
        lambda: aac.parse_asc(data),
    ):
        try:
            call()
        except BitstreamError:
            pass
