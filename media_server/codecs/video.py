"""What H.264 and H.265 share above the bitstream: NAL types by codec name, a stream's
parameter sets, and the normalizer that puts a source's access units in the hub's form
(4-byte AVCC, parameter sets in an avcC/hvcC record)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from media_server.codecs import h264, h265
from media_server.codecs.bitstream import (
    BitstreamError,
    Nal,
    SpsInfo,
    nals_to_avcc,
    split_annexb,
    split_avcc,
)


def nal_type(nal: Nal, codec: str) -> int:
    if not nal:
        raise BitstreamError("empty NAL unit")
    return h265.nal_type(nal) if codec == "h265" else h264.nal_type(nal)


def is_random_access(nal: Nal, codec: str) -> bool:
    """An IDR (H.264) or IRAP (H.265) slice: a decoder can start here."""
    kind = nal_type(nal, codec)
    return kind in h265.NAL_IRAP if codec == "h265" else kind == h264.NAL_IDR


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
        if self.codec == "h265":
            kind = h265.nal_type(nal)
            if kind == h265.NAL_VPS:
                return self.vps, h265.vps_id(nal)
            if kind == h265.NAL_SPS:
                return self.sps, h265.parse_h265_sps(nal).sps_id
            if kind == h265.NAL_PPS:
                return self.pps, h265.pps_id(nal)
            return None, 0
        kind = h264.nal_type(nal)
        if kind == h264.NAL_SPS:
            return self.sps, h264.parse_h264_sps(nal).sps_id
        if kind == h264.NAL_PPS:
            return self.pps, h264.pps_id(nal)
        return None, 0

    @property
    def complete(self) -> bool:
        return bool(self.sps and self.pps and (self.vps or self.codec != "h265"))

    def record(self) -> bytes:
        ordered = [[t[k] for k in sorted(t)] for t in (self.vps, self.sps, self.pps)]
        if self.codec == "h265":
            return h265.hvcc_record(*ordered)
        return h264.avcc_record(ordered[1], ordered[2])

    def sps_info(self) -> SpsInfo:
        first = self.sps[min(self.sps)]
        if self.codec == "h265":
            return h265.parse_h265_sps(first)
        return h264.parse_h264_sps(first)


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
        self._nal_type: Callable[[Nal], int] = h265.nal_type if codec == "h265" else h264.nal_type
        self._aud = h265.NAL_AUD if codec == "h265" else h264.NAL_AUD
        if extradata[:1] == b"\x01":
            parse = h265.parse_hvcc_record if codec == "h265" else h264.parse_avcc_record
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
        kept = [n for n in nals if self._nal_type(n) != self._aud]
        keyframe = any(is_random_access(n, self.codec) for n in kept)
        changed = self.params.update(kept)
        if self.length_size == 4 and len(kept) == len(nals):
            return bytes(data), keyframe, changed  # already in the hub's form
        return nals_to_avcc(kept), keyframe, changed
