"""H.265 SPS parsing and the hvcC record, checked against what PyAV's libx265 produces."""

from __future__ import annotations

import pytest

from media_server.codecs.bitstream import split_annexb
from media_server.codecs.h265 import (
    NAL_PPS,
    NAL_SPS,
    NAL_VPS,
    nal_type,
    parse_h265_sps,
    parse_hvcc_record,
)
from tests.media_server.codecs.samples import X265, encode, hub_packets


@pytest.mark.parametrize("width,height", [(640, 360), (1920, 1080)])
def test_h265_sps_size(width: int, height: int) -> None:
    first = split_annexb(encode("libx265", width, height, frames=1, options=X265)[0])
    sps = next(n for n in first if nal_type(n) == NAL_SPS)
    info = parse_h265_sps(sps)
    assert (info.width, info.height, info.chroma_format_idc) == (width, height, 1)
    assert len(info.profile_bytes) == 12


def test_hvcc_record_round_trips(h265: list[bytes]) -> None:
    track, _ = hub_packets(h265, "h265")
    nals, length_size = parse_hvcc_record(track.config)
    assert length_size == 4
    assert [nal_type(n) for n in nals] == [NAL_VPS, NAL_SPS, NAL_PPS]
    first = [bytes(n) for n in split_annexb(h265[0])][:3]
    assert nals == first
