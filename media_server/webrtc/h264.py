"""H.264 bitstream helpers: NAL units in AVCC and Annex-B form, avcC records, SPS facts.

Pure functions over bytes, no I/O. The hub carries AVCC (4-byte length prefixes) with the
parameter sets in the track's avcC; RTP carries bare NAL units; browsers' depayloaded
frames come as Annex-B (start codes). These convert between the three.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

START_CODE = b"\x00\x00\x00\x01"


class H264Error(ValueError):
    """Bytes that are not the H.264 they claim to be."""


def nal_type(nal: bytes | memoryview) -> int:
    return nal[0] & 0x1F


def avcc_nals(data: bytes | memoryview, length_size: int = 4) -> list[memoryview]:
    """Split a length-prefixed access unit into NAL units (views, no copies)."""
    view = memoryview(data)
    nals: list[memoryview] = []
    pos, end = 0, len(view)
    while pos + length_size <= end:
        size = int.from_bytes(view[pos : pos + length_size], "big")
        pos += length_size
        if size == 0:
            continue
        if pos + size > end:
            raise H264Error(f"NAL unit of {size} bytes overruns its {end}-byte access unit")
        nals.append(view[pos : pos + size])
        pos += size
    if pos != end:
        raise H264Error(f"{end - pos} trailing bytes after the last NAL unit")
    return nals


def annexb_nals(data: bytes) -> list[bytes]:
    """Split an Annex-B stream at its start codes (3 or 4 bytes) into NAL units."""
    nals: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        start += 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt == -1 else nxt
        # a 4-byte start code or trailing_zero_8bits belong to no NAL unit
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            nals.append(data[start:end])
        start = nxt
    return nals


def to_avcc(nals: Iterable[bytes | memoryview]) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + bytes(n) for n in nals)


def to_annexb(nals: Iterable[bytes | memoryview]) -> bytes:
    return b"".join(START_CODE + bytes(n) for n in nals)


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """The content of an AVCDecoderConfigurationRecord (avcC)."""

    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    length_size: int = 4

    @property
    def parameter_sets(self) -> tuple[bytes, ...]:
        return self.sps + self.pps


def parse_avcc_config(record: bytes) -> AvcConfig:
    """Parse an avcC record (ISO/IEC 14496-15 5.3.3.1)."""
    if len(record) < 7 or record[0] != 1:
        raise H264Error("not an avcC record (configurationVersion must be 1)")
    length_size = (record[4] & 0x03) + 1
    pos = 5
    sps, pos = _read_sets(record, pos, record[5] & 0x1F, 1)
    if pos >= len(record):
        raise H264Error("avcC record ends before its PPS count")
    pps, pos = _read_sets(record, pos + 1, record[pos], 0)
    return AvcConfig(tuple(sps), tuple(pps), length_size)


def _read_sets(record: bytes, pos: int, count: int, skip: int) -> tuple[list[bytes], int]:
    pos += skip
    sets: list[bytes] = []
    for _ in range(count):
        if pos + 2 > len(record):
            raise H264Error("avcC record truncated in a parameter set length")
        size = int.from_bytes(record[pos : pos + 2], "big")
        pos += 2
        if pos + size > len(record) or size == 0:
            raise H264Error("avcC record truncated in a parameter set")
        sets.append(record[pos : pos + size])
        pos += size
    return sets, pos


def build_avcc_config(sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """An avcC record for these parameter sets (4-byte NAL lengths)."""
    if not sps or not pps:
        raise H264Error("an avcC record needs at least one SPS and one PPS")
    first = sps[0]
    if len(first) < 4:
        raise H264Error("SPS too short")
    out = bytearray([1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)])
    for s in sps:
        out += len(s).to_bytes(2, "big") + s
    out.append(len(pps))
    for p in pps:
        out += len(p).to_bytes(2, "big") + p
    return bytes(out)


def profile_level_id(sps: bytes) -> str:
    """The SDP profile-level-id (6 hex digits) an SPS announces."""
    return sps[1:4].hex()


class _BitReader:
    """Exp-Golomb reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise H264Error("SPS ends early")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def unescape_rbsp(nal: bytes) -> bytes:
    """Drop emulation prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00") if b"\x00\x00\x03" in nal else nal


HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def sps_dimensions(sps: bytes) -> tuple[int, int]:
    """Display width and height (after cropping) an SPS describes."""
    r = _BitReader(unescape_rbsp(sps[1:]))
    profile = r.bits(8)
    r.bits(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in HIGH_PROFILES:
        chroma_format = r.ue()
        if chroma_format == 3:
            r.bit()
        r.ue(), r.ue(), r.bit()  # bit depths, qpprime bypass
        if r.bit():  # seq_scaling_matrix_present
            for i in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit(), r.se(), r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue(), r.bit()  # max_num_ref_frames, gaps_allowed
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()  # direct_8x8_inference
    width, height = width_mbs * 16, height_units * 16 * (2 - frame_mbs_only)
    if r.bit():  # frame_cropping
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        crop_x = 1 if chroma_format in (0, 3) else 2
        crop_y = (1 if chroma_format in (0, 2, 3) else 2) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return width, height


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last
