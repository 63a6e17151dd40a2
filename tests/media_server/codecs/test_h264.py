"""H.264: SPS parsing and the avcC record (checked against libx264 and FFmpeg), RTP
payloads (checked by aiortc's depayloader) and the assembly of depacketized frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest
from aiortc.codecs.h264 import h264_depayload

from media_server.codecs.bitstream import (
    BitstreamError,
    nals_to_annexb,
    split_annexb,
    split_avcc,
)
from media_server.codecs.h264 import (
    FU_A,
    NAL_PPS,
    NAL_SPS,
    STAP_A,
    H264Assembler,
    avcc_record,
    h264_payloads,
    nal_type,
    parse_avcc_record,
    parse_h264_sps,
    profile_level_id,
)
from tests.media_server.codecs.samples import (
    AVCC_BASELINE_360,
    AVCC_HIGH_720,
    FPS,
    IDR,
    P_SLICE,
    PPS,
    SPS,
    encode,
    hub_packets,
)

# -- SPS --


@pytest.mark.parametrize("width,height", [(320, 240), (854, 480), (1280, 720), (1920, 1080)])
def test_h264_sps_size(width: int, height: int) -> None:
    first = split_annexb(encode("libx264", width, height, frames=1)[0])
    sps = next(n for n in first if nal_type(n) == NAL_SPS)
    info = parse_h264_sps(sps)
    assert (info.width, info.height) == (width, height)


def test_h264_high_profile_fields(h264_high: list[bytes]) -> None:
    sps = next(n for n in split_annexb(h264_high[0]) if nal_type(n) == 7)
    info = parse_h264_sps(sps)
    assert (info.profile_idc, info.chroma_format_idc, info.bit_depth_luma_minus8) == (100, 1, 0)
    assert (info.width, info.height) == (854, 480)


# -- the avcC record --


def test_avcc_config_parse_build_and_sps_facts() -> None:
    nals, length_size = parse_avcc_record(AVCC_BASELINE_360)
    assert length_size == 4 and [nal_type(n) for n in nals] == [NAL_SPS, NAL_PPS]
    assert avcc_record(nals[:1], nals[1:]) == AVCC_BASELINE_360
    info = parse_h264_sps(nals[0])
    assert (info.width, info.height) == (640, 360)
    assert profile_level_id(nals[0]) == "42c01e"
    high, _ = parse_avcc_record(AVCC_HIGH_720)
    assert avcc_record(high[:1], high[1:]) == AVCC_HIGH_720, "with the High profile extension"
    info = parse_h264_sps(high[0])
    assert (info.width, info.height) == (1280, 720)
    with pytest.raises(BitstreamError):
        parse_avcc_record(b"\x02\x00")
    with pytest.raises(BitstreamError):
        parse_avcc_record(AVCC_BASELINE_360[:12])


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


# -- RTP payloads --


def reassemble(payloads: list[bytes]) -> bytes:
    return b"".join(h264_depayload(p) for p in payloads)


def test_payloads_aggregate_small_units_and_fragment_large_ones() -> None:
    payloads = h264_payloads([SPS, PPS, IDR], max_payload=1200)
    assert payloads[0][0] & 0x1F == STAP_A
    assert all(p[0] & 0x1F == FU_A for p in payloads[1:])
    assert max(len(p) for p in payloads) <= 1200
    sizes = [len(p) for p in payloads[1:]]
    assert len(set(sizes[:-1])) == 1, "fragments share one size (UDP GSO sends them at once)"
    assert 0 <= sizes[0] - sizes[-1] < len(sizes), "and the last is not a tiny one"
    assert split_annexb(reassemble(payloads)) == [SPS, PPS, IDR]


def test_payload_of_a_single_small_unit_is_the_unit() -> None:
    assert h264_payloads([P_SLICE]) == [P_SLICE]


# -- depacketized frames (WHIP) --


def test_assembler_waits_for_parameter_sets_and_a_keyframe() -> None:
    asm = H264Assembler()
    assert asm.push(nals_to_annexb([P_SLICE])) is None
    first = asm.push(nals_to_annexb([b"\x09\xf0", SPS, PPS, IDR]))
    assert first is not None and first.keyframe and first.config == AVCC_BASELINE_360
    assert (first.width, first.height) == (640, 360)
    assert [bytes(n) for n in split_avcc(first.data)] == [IDR]
    delta = asm.push(nals_to_annexb([P_SLICE]))
    assert delta is not None and not delta.keyframe and delta.config is None
    again = asm.push(nals_to_annexb([SPS, PPS, IDR]))
    assert again is not None and again.config is None, "same SPS/PPS: no new config"
    (high_sps, _), _ = parse_avcc_record(AVCC_HIGH_720)
    changed = asm.push(nals_to_annexb([high_sps, PPS, IDR]))
    assert changed is not None and changed.config is not None and changed.width == 1280
    asm.lost()
    assert asm.push(nals_to_annexb([P_SLICE])) is None
    assert asm.dropped == 2
