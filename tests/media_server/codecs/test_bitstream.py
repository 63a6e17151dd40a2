"""NAL framing (Annex-B <-> AVCC) and RBSP unescaping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_server.codecs.bitstream import (
    BitstreamError,
    annexb_to_avcc,
    avcc_to_annexb,
    nals_to_annexb,
    nals_to_avcc,
    split_annexb,
    split_avcc,
    unescape_rbsp,
)
from tests.media_server.codecs.samples import IDR, P_SLICE, PPS, SPS


def test_split_annexb_3_and_4_byte_start_codes_and_trailing_zeros() -> None:
    data = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x00\x01\x65\xcc\xdd\x00"
    assert [bytes(n) for n in split_annexb(data)] == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]
    assert split_annexb(b"") == [] and split_annexb(b"\x65\xcc") == []


def test_annexb_avcc_round_trip(h264_baseline: list[bytes]) -> None:
    for unit in h264_baseline:
        avcc = annexb_to_avcc(unit)
        nals = [bytes(n) for n in split_annexb(unit)]
        assert [bytes(n) for n in split_avcc(avcc)] == nals
        assert len(avcc) == sum(len(n) + 4 for n in nals)
        assert split_annexb(avcc_to_annexb(avcc)) == split_annexb(unit)


def test_avcc_and_annexb_round_trip() -> None:
    nals = [SPS, PPS, IDR]
    assert [bytes(n) for n in split_avcc(nals_to_avcc(nals))] == nals
    assert split_annexb(nals_to_annexb(nals)) == nals
    three_byte = b"\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + P_SLICE
    assert split_annexb(three_byte) == [SPS, PPS, P_SLICE]


def test_split_avcc_rejects_overruns() -> None:
    with pytest.raises(BitstreamError):
        split_avcc(b"\x00\x00\x00\x09\x65\x00")
    with pytest.raises(BitstreamError):
        split_avcc(b"\x00\x00\x00\x01\x65\x00\x00")


def test_avcc_overrun_is_an_error() -> None:
    with pytest.raises(BitstreamError, match="overruns"):
        split_avcc(b"\x00\x00\x01\x00" + b"\x65" * 10)
    with pytest.raises(BitstreamError, match="trailing"):
        split_avcc(b"\x00\x00\x00\x02\x65\x00\x01")


def test_emulation_prevention_is_removed() -> None:
    assert unescape_rbsp(b"\x67\x00\x00\x03\x01\x00\x00\x03\x00\x00\x03") == (
        b"\x67\x00\x00\x01\x00\x00\x00\x00"
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b[0] != 0), max_size=6))
def test_fuzz_avcc_round_trip(nals: list[bytes]) -> None:
    nals = [n.replace(b"\x00\x00", b"\x00\x00\x03") for n in nals]  # as an encoder escapes
    nals = [n + b"\x80" for n in nals]  # rbsp_stop_one_bit: a NAL never ends in zero
    avcc = nals_to_avcc(nals)
    assert [bytes(n) for n in split_avcc(avcc)] == nals
    assert [bytes(n) for n in split_annexb(avcc_to_annexb(avcc))] == nals
