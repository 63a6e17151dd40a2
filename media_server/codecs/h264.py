"""H.264: NAL types, the SPS, the avcC record, RTP payloads (RFC 6184) and the assembly of
depacketized frames into the hub's form.

RTP carries bare NAL units in packetization-mode 1: small ones (parameter sets, SEI)
together in one STAP-A, large ones split into FU-A fragments, the rest one per packet.
aiortc's jitter buffer hands a receiver whole access units in Annex-B form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from media_server.codecs.bitstream import (
    BitReader,
    BitstreamError,
    Nal,
    SpsInfo,
    nals_to_avcc,
    record_nal,
    split_annexb,
    unescape_rbsp,
)

NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

# profiles whose SPS carries chroma format and bit depth (ITU-T H.264 7.3.2.1.1)
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# profiles whose avcC carries the chroma / bit-depth extension (ISO 14496-15 5.3.3.1.2)
_AVCC_EXT_PROFILES = frozenset({100, 110, 122, 144})


def nal_type(nal: Nal) -> int:
    return nal[0] & 0x1F


# -- parameter sets --


def parse_h264_sps(nal: Nal) -> SpsInfo:
    """Size, profile and format of an H.264 SPS NAL unit (ITU-T H.264 7.3.2.1.1)."""
    rbsp = unescape_rbsp(nal)
    if len(rbsp) < 4 or rbsp[0] & 0x1F != NAL_SPS:
        raise BitstreamError("not an H.264 SPS")
    r = BitReader(rbsp[1:])
    profile_idc, _, level_idc = r.bits(8), r.bits(8), r.bits(8)
    sps_id = r.ue()
    chroma, separate_planes, depth_luma, depth_chroma = 1, False, 0, 0
    if profile_idc in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            separate_planes = r.flag()
        depth_luma, depth_chroma = r.ue(), r.ue()
        r.bits(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():
            _skip_scaling_matrices(r, 12 if chroma == 3 else 8)
    r.ue()  # log2_max_frame_num_minus4
    _skip_poc(r)
    r.ue()  # max_num_ref_frames
    r.bits(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs, height_units = r.ue() + 1, r.ue() + 1
    frame_mbs_only = r.bits(1)
    if not frame_mbs_only:
        r.bits(1)  # mb_adaptive_frame_field_flag
    r.bits(1)  # direct_8x8_inference_flag
    crop = (r.ue(), r.ue(), r.ue(), r.ue()) if r.flag() else (0, 0, 0, 0)
    crop_x, crop_y = _crop_units(0 if separate_planes else chroma, frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise BitstreamError(f"SPS gives an impossible size {width}x{height}")
    return SpsInfo(
        sps_id, width, height, chroma, depth_luma, depth_chroma, profile_idc, level_idc, rbsp[1:4]
    )


def _skip_scaling_matrices(r: BitReader, count: int) -> None:
    for i in range(count):
        if r.flag():
            last = nxt = 8
            for _ in range(16 if i < 6 else 64):
                if nxt:
                    nxt = (last + r.se() + 256) % 256
                last = nxt or last


def _skip_poc(r: BitReader) -> None:
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.bits(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()


def _crop_units(chroma_array_type: int, frame_mbs_only: int) -> tuple[int, int]:
    if chroma_array_type == 0:
        return 1, 2 - frame_mbs_only
    sub_width = 1 if chroma_array_type == 3 else 2
    sub_height = 2 if chroma_array_type == 1 else 1
    return sub_width, sub_height * (2 - frame_mbs_only)


def pps_id(nal: Nal) -> int:
    return BitReader(unescape_rbsp(nal)[1:9]).ue()


def profile_level_id(sps: bytes) -> str:
    """The SDP profile-level-id (6 hex digits) an SPS announces."""
    return sps[1:4].hex()


# -- the avcC record --


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


def parse_avcc_record(record: bytes) -> tuple[list[bytes], int]:
    """The parameter sets of an avcC record (SPS first, then PPS) and its NAL length size."""
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
            nal, pos = record_nal(record, pos)
            nals.append(nal)
    return nals, (record[4] & 3) + 1


# -- RTP payloads (RFC 6184, packetization-mode 1) --

MAX_PAYLOAD = 1200  # RTP payload bytes; leaves room for headers, SRTP and a VPN/tunnel
STAP_A = 24
FU_A = 28


def h264_payloads(
    nals: Sequence[bytes | memoryview], max_payload: int = MAX_PAYLOAD
) -> list[bytes]:
    """The RTP payloads carrying these NAL units of one access unit, in order; the sender
    adds headers (and sets the marker bit on the last one)."""
    payloads: list[bytes] = []
    group: list[bytes | memoryview] = []
    group_size = 1  # STAP-A header
    for nal in nals:
        if not len(nal):
            continue
        if len(nal) > max_payload:
            _flush(group, payloads)
            group, group_size = [], 1
            payloads.extend(fu_a(nal, max_payload))
            continue
        if group and group_size + 2 + len(nal) > max_payload:
            _flush(group, payloads)
            group, group_size = [], 1
        group.append(nal)
        group_size += 2 + len(nal)
    _flush(group, payloads)
    return payloads


def _flush(group: list[bytes | memoryview], payloads: list[bytes]) -> None:
    if len(group) == 1:
        payloads.append(bytes(group[0]))
    elif group:
        payloads.append(stap_a(group))


def stap_a(nals: Sequence[bytes | memoryview]) -> bytes:
    """One aggregation packet: F is OR-ed, NRI is the highest of its units."""
    f = 0
    nri = 0
    for nal in nals:
        f |= nal[0] & 0x80
        nri = max(nri, nal[0] & 0x60)
    parts = [bytes([f | nri | STAP_A])]
    for nal in nals:
        parts.append(len(nal).to_bytes(2, "big"))
        parts.append(bytes(nal))
    return b"".join(parts)


def fu_a(nal: bytes | memoryview, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Fragments of one NAL unit: all of one size but the last, which is at most one byte
    per fragment shorter (so no tiny last packet, and UDP GSO can send them in one go)."""
    header = nal[0]
    indicator = bytes([(header & 0xE0) | FU_A])
    kind = header & 0x1F
    body = memoryview(nal)[1:]
    room = max_payload - 2
    count = -(-len(body) // room)
    size = -(-len(body) // count)
    out: list[bytes] = []
    for i, pos in enumerate(range(0, len(body), size)):
        fu_header = kind | (0x80 if i == 0 else 0) | (0x40 if pos + size >= len(body) else 0)
        out.append(indicator + bytes([fu_header]) + body[pos : pos + size].tobytes())
    return out


# -- depacketized frames -> the hub's form (WHIP ingest) --


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One frame for the hub; config is set when it starts a new avcC (a keyframe)."""

    data: bytes
    keyframe: bool
    config: bytes | None = None
    width: int = 0
    height: int = 0


class H264Assembler:
    """Turns depacketized Annex-B access units (parameter sets in-band) into AVCC frames
    plus avcC changes.

    Browsers change resolution while their bandwidth estimate ramps up, each time sending
    a new SPS with an IDR: a changed SPS/PPS yields a new avcC. Frames before the first
    SPS/PPS and IDR cannot be decoded by anyone and are dropped."""

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.config: bytes | None = None
        self.width = self.height = 0
        self.dropped = 0
        self._waiting_key = True
        self._config_sets: tuple[bytes | None, bytes | None] = (None, None)

    def push(self, annexb: bytes) -> VideoFrame | None:
        """The hub's frame for one access unit, or None; BitstreamError if it is unusable."""
        nals = split_annexb(annexb)
        for nal in nals:
            if nal_type(nal) == NAL_SPS:
                self.sps = bytes(nal)
            elif nal_type(nal) == NAL_PPS:
                self.pps = bytes(nal)
        slices = [n for n in nals if nal_type(n) not in (NAL_SPS, NAL_PPS, NAL_AUD)]
        if not slices:
            return None
        keyframe = any(nal_type(n) == NAL_IDR for n in slices)
        changed = self._config_changed() if keyframe else None
        if self.config is None or (self._waiting_key and not keyframe):
            self.dropped += 1
            return None
        self._waiting_key = False
        return VideoFrame(nals_to_avcc(slices), keyframe, changed, self.width, self.height)

    def _config_changed(self) -> bytes | None:
        sets = (self.sps, self.pps)
        if self.sps is None or self.pps is None or sets == self._config_sets:
            return None
        self.config = avcc_record([self.sps], [self.pps])
        info = parse_h264_sps(self.sps)  # avcc_record parsed it: cannot fail here
        self.width, self.height = info.width, info.height
        self._config_sets = sets
        return self.config

    def lost(self) -> None:
        """Frames were lost: send nothing until the next keyframe."""
        self._waiting_key = True
