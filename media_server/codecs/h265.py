"""H.265: NAL types, the SPS and the hvcC record."""

from __future__ import annotations

from collections.abc import Sequence

from media_server.codecs.bitstream import (
    BitReader,
    BitstreamError,
    Nal,
    SpsInfo,
    record_nal,
    unescape_rbsp,
)

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_IRAP = range(16, 24)  # BLA, IDR, CRA and reserved IRAP types: decoding can start here


def nal_type(nal: Nal) -> int:
    return (nal[0] >> 1) & 0x3F


# -- parameter sets --


def parse_h265_sps(nal: Nal) -> SpsInfo:
    """Size, profile/tier/level and format of an H.265 SPS (ITU-T H.265 7.3.2.2)."""
    rbsp = unescape_rbsp(nal)
    if len(rbsp) < 16 or (rbsp[0] >> 1) & 0x3F != NAL_SPS:
        raise BitstreamError("not an H.265 SPS")
    r = BitReader(rbsp[2:])
    r.bits(4)  # sps_video_parameter_set_id
    sub_layers_minus1 = r.bits(3)
    nesting = r.flag()
    ptl = rbsp[3:15]  # general profile_tier_level: byte aligned, 12 bytes
    r.bits(96)
    _skip_sub_layers(r, sub_layers_minus1)
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


def _skip_sub_layers(r: BitReader, sub_layers_minus1: int) -> None:
    present = [(r.flag(), r.flag()) for _ in range(sub_layers_minus1)]
    if sub_layers_minus1 > 0:
        r.bits(2 * (8 - sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        r.bits((88 if profile_present else 0) + (8 if level_present else 0))


def vps_id(nal: Nal) -> int:
    return (nal[2] >> 4) if len(nal) > 2 else 0


def pps_id(nal: Nal) -> int:
    return BitReader(unescape_rbsp(nal)[2:10]).ue()


# -- the hvcC record --


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
    for kind, nals in ((NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)):
        out += bytes([0x80 | kind]) + len(nals).to_bytes(2, "big")
        for nal in nals:
            out += len(nal).to_bytes(2, "big") + bytes(nal)
    return bytes(out)


def parse_hvcc_record(record: bytes) -> tuple[list[bytes], int]:
    """The NAL units of an hvcC record's arrays (parameter sets, maybe SEI) and its NAL
    length size."""
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
            nal, pos = record_nal(record, pos)
            nals.append(nal)
    return nals, (record[21] & 3) + 1
