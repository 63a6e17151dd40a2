"""H.264 / H.265 bitstream plumbing: pure functions over bytes, no I/O.

Cameras send Annex-B (start codes, parameter sets in-band or in the SDP); the hub keeps
AVCC/HVCC (4-byte length prefixes) with the parameter sets in an avcC/hvcC record, the
form MP4, FLV and RTMP carry. This module converts between the two, builds the records and
reads the few SPS fields a record and a stream listing need (size, profile, level).

Everything raises BitstreamError (a ValueError) on malformed input, never anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Nal = bytes | memoryview

H264_IDR = 5
H264_SEI = 6
H264_SPS = 7
H264_PPS = 8
H264_AUD = 9
H265_VPS = 32
H265_SPS = 33
H265_PPS = 34
H265_AUD = 35
H265_IRAP = range(16, 24)  # BLA, IDR, CRA and reserved IRAP types: decoding can start here

# profiles whose SPS carries chroma format and bit depth (ITU-T H.264 7.3.2.1.1)
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# profiles whose avcC carries the chroma / bit-depth extension (ISO 14496-15 5.3.3.1.2)
_AVCC_EXT_PROFILES = frozenset({100, 110, 122, 144})


class BitstreamError(ValueError):
    """The bytes are not the H.264/H.265 structure they claim to be."""


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
    """The NAL units of a length-prefixed buffer (AVCC/HVCC)."""
    view = memoryview(data)
    nals: list[memoryview] = []
    pos = 0
    while pos < len(view):
        if pos + length_size > len(view):
            raise BitstreamError(f"truncated NAL length at byte {pos}")
        size = int.from_bytes(view[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(view):
            raise BitstreamError(f"NAL of {size} bytes at byte {pos} overruns the buffer")
        nals.append(view[pos : pos + size])
        pos += size
    return nals


def nals_to_avcc(nals: Iterable[Nal]) -> bytes:
    """NAL units joined with 4-byte big-endian length prefixes."""
    parts: list[Nal] = []
    for nal in nals:
        parts.append(len(nal).to_bytes(4, "big"))
        parts.append(nal)
    return b"".join(parts)


def nals_to_annexb(nals: Iterable[Nal]) -> bytes:
    parts: list[Nal] = []
    for nal in nals:
        parts.append(b"\x00\x00\x00\x01")
        parts.append(nal)
    return b"".join(parts)


def annexb_to_avcc(data: bytes | memoryview) -> bytes:
    return nals_to_avcc(split_annexb(data))


def avcc_to_annexb(data: bytes | memoryview, length_size: int = 4) -> bytes:
    return nals_to_annexb(split_avcc(data, length_size))


def nal_type(nal: Nal, codec: str) -> int:
    if not nal:
        raise BitstreamError("empty NAL unit")
    return (nal[0] >> 1) & 0x3F if codec == "h265" else nal[0] & 0x1F


def is_random_access(nal: Nal, codec: str) -> bool:
    """An IDR (H.264) or IRAP (H.265) slice: a decoder can start here."""
    kind = nal_type(nal, codec)
    return kind in H265_IRAP if codec == "h265" else kind == H264_IDR


# -- SPS parsing --


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


def parse_h264_sps(nal: Nal) -> SpsInfo:
    """Size, profile and format of an H.264 SPS NAL unit (ITU-T H.264 7.3.2.1.1)."""
    rbsp = unescape_rbsp(nal)
    if len(rbsp) < 4 or rbsp[0] & 0x1F != H264_SPS:
        raise BitstreamError("not an H.264 SPS")
    r = BitReader(rbsp[1:])
    profile_idc, _, level_idc = r.bits(8), r.bits(8), r.bits(8)
    sps_id = r.ue()
    chroma, separate_planes, depth_luma, depth_chroma = 1, False, 0, 0
    if profile_idc in _H264_HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            separate_planes = r.flag()
        depth_luma, depth_chroma = r.ue(), r.ue()
        r.bits(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():
            _skip_h264_scaling_matrices(r, 12 if chroma == 3 else 8)
    r.ue()  # log2_max_frame_num_minus4
    _skip_h264_poc(r)
    r.ue()  # max_num_ref_frames
    r.bits(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs, height_units = r.ue() + 1, r.ue() + 1
    frame_mbs_only = r.bits(1)
    if not frame_mbs_only:
        r.bits(1)  # mb_adaptive_frame_field_flag
    r.bits(1)  # direct_8x8_inference_flag
    crop = (r.ue(), r.ue(), r.ue(), r.ue()) if r.flag() else (0, 0, 0, 0)
    crop_x, crop_y = _h264_crop_units(0 if separate_planes else chroma, frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise BitstreamError(f"SPS gives an impossible size {width}x{height}")
    return SpsInfo(
        sps_id, width, height, chroma, depth_luma, depth_chroma, profile_idc, level_idc, rbsp[1:4]
    )


def _skip_h264_scaling_matrices(r: BitReader, count: int) -> None:
    for i in range(count):
        if r.flag():
            last = nxt = 8
            for _ in range(16 if i < 6 else 64):
                if nxt:
                    nxt = (last + r.se() + 256) % 256
                last = nxt or last


def _skip_h264_poc(r: BitReader) -> None:
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.bits(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()


def _h264_crop_units(chroma_array_type: int, frame_mbs_only: int) -> tuple[int, int]:
    if chroma_array_type == 0:
        return 1, 2 - frame_mbs_only
    sub_width = 1 if chroma_array_type == 3 else 2
    sub_height = 2 if chroma_array_type == 1 else 1
    return sub_width, sub_height * (2 - frame_mbs_only)


def parse_h265_sps(nal: Nal) -> SpsInfo:
    """Size, profile/tier/level and format of an H.265 SPS (ITU-T H.265 7.3.2.2)."""
    rbsp = unescape_rbsp(nal)
    if len(rbsp) < 16 or (rbsp[0] >> 1) & 0x3F != H265_SPS:
        raise BitstreamError("not an H.265 SPS")
    r = BitReader(rbsp[2:])
    r.bits(4)  # sps_video_parameter_set_id
    sub_layers_minus1 = r.bits(3)
    nesting = r.flag()
    ptl = rbsp[3:15]  # general profile_tier_level: byte aligned, 12 bytes
    r.bits(96)
    _skip_h265_sub_layers(r, sub_layers_minus1)
    sps_id = r.ue()
    chroma = r.ue()
    separate_planes = r.flag() if chroma == 3 else False
    width, height = r.ue(), r.ue()
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma in (1, 2) and not separate_planes else 1
        sub_h = 2 if chroma == 1 and not separate_planes else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    depth_luma, depth_chroma = r.ue(), r.ue()
    if width <= 0 or height <= 0:
        raise BitstreamError(f"SPS gives an impossible size {width}x{height}")
    return SpsInfo(
        sps_id,
        width,
        height,
        chroma,
        depth_luma,
        depth_chroma,
        ptl[0] & 0x1F,
        ptl[11],
        ptl,
        sub_layers_minus1 + 1,
        nesting,
    )


def _skip_h265_sub_layers(r: BitReader, sub_layers_minus1: int) -> None:
    present = [(r.flag(), r.flag()) for _ in range(sub_layers_minus1)]
    if sub_layers_minus1 > 0:
        r.bits(2 * (8 - sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        r.bits((88 if profile_present else 0) + (8 if level_present else 0))


def _pps_id(nal: Nal, codec: str) -> int:
    return BitReader(unescape_rbsp(nal)[2 if codec == "h265" else 1 :][:8]).ue()


# -- decoder configuration records --


def avcc_record(sps: Sequence[Nal], pps: Sequence[Nal]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO 14496-15 5.3.3.1) with 4-byte NAL lengths."""
    if not sps or not pps:
        raise BitstreamError("an avcC record needs at least one SPS and one PPS")
    info = parse_h264_sps(sps[0])
    out = bytearray([1, *info.profile_bytes, 0xFF, 0xE0 | len(sps)])
    for nal in sps:
        out += len(nal).to_bytes(2, "big") + bytes(nal)
    out.append(len(pps))
    for nal in pps:
        out += len(nal).to_bytes(2, "big") + bytes(nal)
    if info.profile_idc in _AVCC_EXT_PROFILES:
        out += bytes(
            [
                0xFC | info.chroma_format_idc,
                0xF8 | info.bit_depth_luma_minus8,
                0xF8 | info.bit_depth_chroma_minus8,
                0,
            ]
        )
    return bytes(out)


def hvcc_record(vps: Sequence[Nal], sps: Sequence[Nal], pps: Sequence[Nal]) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO 14496-15 8.3.3.1) with 4-byte NAL lengths."""
    if not vps or not sps or not pps:
        raise BitstreamError("an hvcC record needs a VPS, an SPS and a PPS")
    info = parse_h265_sps(sps[0])
    out = bytearray([1, *info.profile_bytes])
    out += bytes(
        [
            0xF0,
            0x00,
            0xFC,
            0xFC | info.chroma_format_idc,
            0xF8 | info.bit_depth_luma_minus8,
            0xF8 | info.bit_depth_chroma_minus8,
            0x00,
            0x00,
        ]
    )  # min_spatial_segmentation, parallelism, avgFrameRate 0
    out.append((info.max_sub_layers & 7) << 3 | int(info.temporal_id_nesting) << 2 | 3)
    out.append(3)
    for kind, nals in ((H265_VPS, vps), (H265_SPS, sps), (H265_PPS, pps)):
        out += bytes([0x80 | kind]) + len(nals).to_bytes(2, "big")
        for nal in nals:
            out += len(nal).to_bytes(2, "big") + bytes(nal)
    return bytes(out)


def parse_avcc_record(record: bytes) -> tuple[list[bytes], int]:
    """The parameter-set NAL units of an avcC record and its NAL length size."""
    if len(record) < 7 or record[0] != 1:
        raise BitstreamError("not an avcC record")
    nals: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS then PPS
        if pos >= len(record):
            raise BitstreamError("avcC record ends before its PPS")
        count = record[pos] & count_mask
        pos += 1
        for _ in range(count):
            nal, pos = _take16(record, pos)
            nals.append(nal)
    return nals, (record[4] & 3) + 1


def parse_hvcc_record(record: bytes) -> tuple[list[bytes], int]:
    """The parameter-set NAL units of an hvcC record and its NAL length size."""
    if len(record) < 23 or record[0] != 1:
        raise BitstreamError("not an hvcC record")
    nals: list[bytes] = []
    pos = 23
    for _ in range(record[22]):
        if pos + 3 > len(record):
            raise BitstreamError("hvcC array header overruns the record")
        count = int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            nal, pos = _take16(record, pos)
            nals.append(nal)
    return nals, (record[21] & 3) + 1


def _take16(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf):
        raise BitstreamError("record ends inside a NAL length")
    size = int.from_bytes(buf[pos : pos + 2], "big")
    if size == 0 or pos + 2 + size > len(buf):
        raise BitstreamError("record NAL overruns the record")
    return bytes(buf[pos + 2 : pos + 2 + size]), pos + 2 + size


# -- stateful: what a source sends -> what the hub keeps --


@dataclass
class ParameterSets:
    """The latest VPS/SPS/PPS of a stream, by id, and the record built from them."""

    codec: str
    vps: dict[int, bytes] = field(default_factory=dict)
    sps: dict[int, bytes] = field(default_factory=dict)
    pps: dict[int, bytes] = field(default_factory=dict)

    def update(self, nals: Iterable[Nal]) -> bool:
        """Remember the parameter sets among nals; True if any is new or changed."""
        changed = False
        for nal in nals:
            table, key = self._slot(nal)
            if table is not None and table.get(key) != nal:
                table[key] = bytes(nal)
                changed = True
        return changed

    def _slot(self, nal: Nal) -> tuple[dict[int, bytes] | None, int]:
        kind = nal_type(nal, self.codec)
        if self.codec == "h265":
            if kind == H265_VPS:
                return self.vps, (nal[2] >> 4) if len(nal) > 2 else 0
            if kind == H265_SPS:
                return self.sps, parse_h265_sps(nal).sps_id
            if kind == H265_PPS:
                return self.pps, _pps_id(nal, self.codec)
        elif kind == H264_SPS:
            return self.sps, parse_h264_sps(nal).sps_id
        elif kind == H264_PPS:
            return self.pps, _pps_id(nal, self.codec)
        return None, 0

    @property
    def complete(self) -> bool:
        return bool(self.sps and self.pps and (self.vps or self.codec != "h265"))

    def record(self) -> bytes:
        ordered = [[t[k] for k in sorted(t)] for t in (self.vps, self.sps, self.pps)]
        if self.codec == "h265":
            return hvcc_record(*ordered)
        return avcc_record(ordered[1], ordered[2])

    def sps_info(self) -> SpsInfo:
        first = self.sps[min(self.sps)]
        return parse_h265_sps(first) if self.codec == "h265" else parse_h264_sps(first)


class AccessUnitNormalizer:
    """Turns a source's video access units (Annex-B, or AVCC with any length size) into
    the hub's form: 4-byte AVCC without access-unit delimiters. Parameter sets stay
    in-band (decoders joining mid-stream like them) and are tracked for the record."""

    def __init__(self, codec: str, extradata: bytes = b"") -> None:
        if codec not in ("h264", "h265"):
            raise BitstreamError(f"unsupported video codec {codec!r}")
        self.codec = codec
        self.params = ParameterSets(codec)
        self.length_size = 0  # 0: Annex-B
        self._aud = H265_AUD if codec == "h265" else H264_AUD
        if extradata[:1] == b"\x01":
            parse = parse_hvcc_record if codec == "h265" else parse_avcc_record
            nals, self.length_size = parse(extradata)
            self.params.update(nals)
        elif extradata:
            self.params.update(split_annexb(extradata))

    def convert(self, data: bytes | memoryview) -> tuple[bytes, bool, bool]:
        """(AVCC bytes, random access point?, parameter sets changed?)."""
        if self.length_size:
            nals = split_avcc(data, self.length_size)
        else:
            nals = split_annexb(data)
        kept = [n for n in nals if nal_type(n, self.codec) != self._aud]
        keyframe = any(is_random_access(n, self.codec) for n in kept)
        changed = self.params.update(kept)
        if self.length_size == 4 and len(kept) == len(nals):
            return bytes(data), keyframe, changed  # already in the hub's form
        return nals_to_avcc(kept), keyframe, changed
