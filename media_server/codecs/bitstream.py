"""Bitstream plumbing H.264 and H.265 share: NAL framing, RBSP, bit reading.

Cameras and browsers send Annex-B (start codes); the hub, MP4, FLV and RTMP carry AVCC
(length prefixes, 4 bytes in the hub) with the parameter sets in a decoder record. The
splitters return views into the buffer they are given: no copies on the per-packet path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Nal = bytes | memoryview


class BitstreamError(ValueError):
    """The bytes are not the codec structure they claim to be."""


# -- Annex-B and length-prefixed framing --


def split_annexb(data: bytes | memoryview) -> list[memoryview]:
    """The NAL units of an Annex-B buffer (start codes and trailing zeros removed)."""
    buf = bytes(data) if isinstance(data, memoryview) else data
    view = memoryview(buf)
    nals: list[memoryview] = []
    start = buf.find(b"\x00\x00\x01")
    if start < 0:
        return nals
    start += 3
    while True:
        nxt = buf.find(b"\x00\x00\x01", start)
        end = len(buf) if nxt < 0 else nxt
        stop = end
        while stop > start and buf[stop - 1] == 0:
            stop -= 1  # the zero of a 4-byte start code, or trailing_zero_8bits
        if stop > start:
            nals.append(view[start:stop])
        if nxt < 0:
            return nals
        start = nxt + 3


def split_avcc(data: bytes | memoryview, length_size: int = 4) -> list[memoryview]:
    """The NAL units of a length-prefixed buffer (AVCC/HVCC); empty ones are skipped."""
    view = memoryview(data)
    nals: list[memoryview] = []
    pos, end = 0, len(view)
    while pos + length_size <= end:
        size = int.from_bytes(view[pos : pos + length_size], "big")
        pos += length_size
        if size == 0:
            continue  # carries nothing; some muxers write them
        if pos + size > end:
            raise BitstreamError(f"NAL unit of {size} bytes overruns its {end}-byte access unit")
        nals.append(view[pos : pos + size])
        pos += size
    if pos != end:
        raise BitstreamError(f"{end - pos} trailing bytes after the last NAL unit")
    return nals


def nals_to_avcc(nals: Iterable[Nal]) -> bytes:
    """NAL units joined with 4-byte big-endian length prefixes."""
    parts: list[Nal] = []
    for nal in nals:
        parts.append(len(nal).to_bytes(4, "big"))
        parts.append(nal)
    return b"".join(parts)


def nals_to_annexb(nals: Iterable[Nal]) -> bytes:
    """NAL units joined with 4-byte start codes."""
    parts: list[Nal] = []
    for nal in nals:
        parts.append(b"\x00\x00\x00\x01")
        parts.append(nal)
    return b"".join(parts)


def annexb_to_avcc(data: bytes | memoryview) -> bytes:
    return nals_to_avcc(split_annexb(data))


def avcc_to_annexb(data: bytes | memoryview, length_size: int = 4) -> bytes:
    return nals_to_annexb(split_avcc(data, length_size))


def record_nal(record: bytes, pos: int) -> tuple[bytes, int]:
    """The NAL unit at pos in a decoder record (16-bit length prefix) and the position
    after it."""
    if pos + 2 > len(record):
        raise BitstreamError("record ends inside a NAL length")
    size = int.from_bytes(record[pos : pos + 2], "big")
    if size == 0 or pos + 2 + size > len(record):
        raise BitstreamError("record NAL overruns the record")
    return bytes(record[pos + 2 : pos + 2 + size]), pos + 2 + size


# -- parameter sets --


def unescape_rbsp(nal: Nal) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    return bytes(nal).replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    """MSB-first bit reader with exp-Golomb codes, enough for parameter sets."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self.pos = 0

    def bits(self, count: int) -> int:
        if self.pos + count > self._bits:
            raise BitstreamError("truncated: the bits end early")
        self.pos += count
        return (self._value >> (self._bits - self.pos)) & ((1 << count) - 1)

    def flag(self) -> bool:
        return self.bits(1) == 1

    def ue(self) -> int:
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What a decoder record and a stream listing need from an SPS."""

    sps_id: int
    width: int
    height: int
    chroma_format_idc: int
    bit_depth_luma_minus8: int
    bit_depth_chroma_minus8: int
    profile_idc: int
    level_idc: int
    # H.264: profile_idc, constraint flags, level_idc; H.265: the 12 general PTL bytes
    profile_bytes: bytes = b""
    max_sub_layers: int = 1
    temporal_id_nesting: bool = True
