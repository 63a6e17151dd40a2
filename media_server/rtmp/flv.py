"""FLV tag payloads (RTMP audio/video messages) <-> the media model, pure functions.

Ingest: parse_video / parse_audio split a message into what it is (sequence header,
frame, end of sequence) and its bytes; video_track / audio_track turn a sequence header
into a Track (width/height from the SPS, rate/channels from the AudioSpecificConfig).
H.264 legacy (codec id 7), H.265 as enhanced RTMP ('hvc1') and as the widespread legacy
codec id 12, AAC (legacy and enhanced 'mp4a').
Play: the tag bytes for a Track and its packets, and onMetaData.
"""

from __future__ import annotations

from dataclasses import dataclass

from media_server.media import Packet, Track
from media_server.rtmp import amf0
from media_server.rtmp.errors import RtmpProtocolError

SEQUENCE_HEADER, FRAME, END_OF_SEQUENCE, INFO = 0, 1, 2, 3

Buffer = bytes | bytearray | memoryview

_LEGACY_VIDEO = {7: "h264", 12: "h265"}
_VIDEO_NAMES = {1: "JPEG", 2: "Sorenson H.263", 3: "Screen video", 4: "On2 VP6",
                5: "On2 VP6 with alpha", 6: "Screen video v2"}
_FOURCC_VIDEO = {b"avc1": "h264", b"hvc1": "h265"}
_AUDIO_NAMES = {0: "linear PCM", 1: "ADPCM", 2: "MP3", 3: "linear PCM LE",
                4: "Nellymoser 16k", 5: "Nellymoser 8k", 6: "Nellymoser", 7: "G.711 A-law",
                8: "G.711 mu-law", 11: "Speex", 14: "MP3 8k", 15: "device specific"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)
_MAX_SPS = 4096


class FlvError(RtmpProtocolError):
    """Malformed FLV tag payload or codec configuration."""


class UnsupportedCodec(FlvError):
    """Well-formed, but a codec we do not carry (the message names it and what to send)."""


@dataclass(slots=True)
class VideoTag:
    codec: str
    kind: int
    keyframe: bool
    cto: int
    data: memoryview


@dataclass(slots=True)
class AudioTag:
    codec: str
    kind: int
    data: memoryview


def _si24(b: Buffer, at: int) -> int:
    value = (b[at] << 16) | (b[at + 1] << 8) | b[at + 2]
    return value - 0x1000000 if value & 0x800000 else value


# -- ingest --

def parse_video(payload: Buffer) -> VideoTag:
    view = memoryview(payload)
    if not len(view):
        raise FlvError("empty video message")
    if view[0] & 0x80:
        return _enhanced_video(view)
    frame_type, codec_id = view[0] >> 4, view[0] & 0x0F
    codec = _LEGACY_VIDEO.get(codec_id)
    if codec is None:
        name = _VIDEO_NAMES.get(codec_id, f"codec id {codec_id}")
        raise UnsupportedCodec(f"unsupported video codec {name}: send H.264 or H.265")
    if frame_type == 5:  # video info / command frame: nothing to carry
        return VideoTag(codec, INFO, False, 0, view[1:])
    if len(view) < 5:
        raise FlvError(f"{codec} video message of {len(view)} bytes is shorter than its "
                       f"5-byte header")
    packet_type = view[1]
    if packet_type > END_OF_SEQUENCE:
        raise FlvError(f"unknown {codec} packet type {packet_type}")
    return VideoTag(codec, packet_type, frame_type in (1, 4), _si24(view, 2), view[5:])


def _enhanced_video(view: memoryview) -> VideoTag:
    if len(view) < 5:
        raise FlvError("enhanced RTMP video message shorter than its 5-byte header")
    frame_type, packet_type = (view[0] >> 4) & 0x07, view[0] & 0x0F
    fourcc = bytes(view[1:5])
    codec = _FOURCC_VIDEO.get(fourcc)
    if codec is None:
        raise UnsupportedCodec(f"unsupported video codec {fourcc.decode('latin-1')!r}: "
                               f"send H.264 or H.265")
    keyframe = frame_type in (1, 4)
    if frame_type == 5 or packet_type in (4, 5):  # command frame, metadata, TS config
        return VideoTag(codec, INFO, False, 0, view[5:])
    if packet_type == 0:
        return VideoTag(codec, SEQUENCE_HEADER, keyframe, 0, view[5:])
    if packet_type == 1:
        if len(view) < 8:
            raise FlvError("enhanced RTMP coded frame shorter than its 8-byte header")
        return VideoTag(codec, FRAME, keyframe, _si24(view, 5), view[8:])
    if packet_type == 2:
        return VideoTag(codec, END_OF_SEQUENCE, False, 0, view[5:])
    if packet_type == 3:
        return VideoTag(codec, FRAME, keyframe, 0, view[5:])
    raise UnsupportedCodec(f"enhanced RTMP video packet type {packet_type} (multitrack or "
                           f"ModEx) is not supported: send one plain track")


def parse_audio(payload: Buffer) -> AudioTag:
    view = memoryview(payload)
    if not len(view):
        raise FlvError("empty audio message")
    sound_format = view[0] >> 4
    if sound_format == 9:
        return _enhanced_audio(view)
    if sound_format != 10:
        name = _AUDIO_NAMES.get(sound_format, f"sound format {sound_format}")
        raise UnsupportedCodec(f"unsupported audio codec {name}: send AAC")
    if len(view) < 2:
        raise FlvError("AAC audio message shorter than its 2-byte header")
    if view[1] > 1:
        raise FlvError(f"unknown AAC packet type {view[1]}")
    return AudioTag("aac", SEQUENCE_HEADER if view[1] == 0 else FRAME, view[2:])


def _enhanced_audio(view: memoryview) -> AudioTag:
    if len(view) < 5:
        raise FlvError("enhanced RTMP audio message shorter than its 5-byte header")
    packet_type, fourcc = view[0] & 0x0F, bytes(view[1:5])
    if fourcc != b"mp4a":
        raise UnsupportedCodec(f"unsupported audio codec {fourcc.decode('latin-1')!r} on "
                               f"RTMP: send AAC")
    if packet_type == 0:
        return AudioTag("aac", SEQUENCE_HEADER, view[5:])
    if packet_type == 1:
        return AudioTag("aac", FRAME, view[5:])
    if packet_type == 2:
        return AudioTag("aac", END_OF_SEQUENCE, view[5:])
    return AudioTag("aac", INFO, view[5:])


def video_track(index: int, codec: str, config: bytes) -> Track:
    """A video Track from a sequence header; FlvError if the record is unusable."""
    if codec == "h264":
        width, height = _avc_size(config)
    else:
        width, height = _hevc_size(config)
    return Track(index=index, kind="video", codec=codec,  # type: ignore[arg-type]
                 timescale=1000, config=config, width=width, height=height)


def audio_track(index: int, config: bytes) -> Track:
    rate, channels = parse_asc(config)
    return Track(index=index, kind="audio", codec="aac", timescale=1000, config=config,
                 sample_rate=rate, channels=channels)


# -- codec configuration records --

class _Bits:
    """MSB-first bit reader over an RBSP; reading past the end is a FlvError."""

    __slots__ = ("value", "nbits", "pos")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.nbits = len(data) * 8
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self.nbits:
            raise FlvError("parameter set truncated")
        self.pos += n
        return (self.value >> (self.nbits - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise FlvError("parameter set has an oversized Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """Drop emulation-prevention bytes (00 00 03 -> 00 00)."""
    out = bytearray()
    zeros = 0
    for byte in nal[:_MAX_SPS]:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _avc_size(config: bytes) -> tuple[int, int]:
    if len(config) < 8 or config[0] != 1:
        raise FlvError("AVC sequence header is not an avcC record (version 1)")
    nal_length = (config[4] & 3) + 1
    if nal_length != 4:
        raise UnsupportedCodec(f"H.264 with {nal_length}-byte NAL lengths is not supported: "
                               f"use 4-byte lengths (every common encoder does)")
    if not config[5] & 0x1F:
        raise FlvError("avcC record carries no SPS")
    sps_len = int.from_bytes(config[6:8], "big")
    sps = config[8:8 + sps_len]
    if len(sps) != sps_len or sps_len < 4:
        raise FlvError("avcC record: SPS truncated")
    return _h264_sps_size(_rbsp(sps[1:]))


_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def _h264_sps_size(rbsp: bytes) -> tuple[int, int]:
    b = _Bits(rbsp)
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    b.ue()  # sps id
    chroma, separate = 1, 0
    if profile in _HIGH_PROFILES:
        chroma = b.ue()
        if chroma > 3:
            raise FlvError(f"H.264 SPS: invalid chroma_format_idc {chroma}")
        if chroma == 3:
            separate = b.u(1)
        b.ue()
        b.ue()  # bit depths
        b.u(1)
        if b.u(1):  # scaling matrices present
            for i in range(12 if chroma == 3 else 8):
                if b.u(1):
                    _skip_scaling_list(b, 16 if i < 6 else 64)
    b.ue()  # log2_max_frame_num
    _skip_poc(b)
    b.ue()
    b.u(1)  # max refs, gaps allowed
    width_mbs, height_units = b.ue() + 1, b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)
    crop = (b.ue(), b.ue(), b.ue(), b.ue()) if b.u(1) else (0, 0, 0, 0)
    array_type = 0 if separate else chroma
    unit_x = 1 if array_type in (0, 3) else 2
    unit_y = (2 if array_type == 1 else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    return _checked_size(width, height)


def _skip_scaling_list(b: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + b.se() + 256) % 256
        last = nxt or last


def _skip_poc(b: _Bits) -> None:
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        cycle = b.ue()
        if cycle > 255:
            raise FlvError("H.264 SPS: num_ref_frames_in_pic_order_cnt_cycle over 255")
        for _ in range(cycle):
            b.se()


def _checked_size(width: int, height: int) -> tuple[int, int]:
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise FlvError(f"parameter set gives an impossible picture size {width}x{height}")
    return width, height


def _hevc_size(config: bytes) -> tuple[int, int]:
    if len(config) < 23 or config[0] > 1:
        raise FlvError("HEVC sequence header is not an hvcC record")
    nal_length = (config[21] & 3) + 1
    if nal_length != 4:
        raise UnsupportedCodec(f"H.265 with {nal_length}-byte NAL lengths is not supported: "
                               f"use 4-byte lengths")
    pos = 23
    for _ in range(config[22]):
        if pos + 3 > len(config):
            break
        nal_type, count = config[pos] & 0x3F, int.from_bytes(config[pos + 1:pos + 3], "big")
        pos += 3
        for _ in range(count):
            size = int.from_bytes(config[pos:pos + 2], "big")
            nal = config[pos + 2:pos + 2 + size]
            if len(nal) != size or pos + 2 > len(config):
                raise FlvError("hvcC record: NAL unit truncated")
            if nal_type == 33:
                return _hevc_sps_size(_rbsp(nal[2:]))
            pos += 2 + size
    raise FlvError("hvcC record carries no SPS")


def _hevc_sps_size(rbsp: bytes) -> tuple[int, int]:
    b = _Bits(rbsp)
    b.u(4)
    sub_layers = b.u(3)
    b.u(1)
    _skip_profile_tier_level(b, sub_layers)
    b.ue()  # sps id
    chroma = b.ue()
    if chroma > 3:
        raise FlvError(f"H.265 SPS: invalid chroma_format_idc {chroma}")
    separate = b.u(1) if chroma == 3 else 0
    width, height = b.ue(), b.ue()
    if b.u(1):  # conformance window
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        array_type = 0 if separate else chroma
        sub_w = 2 if array_type in (1, 2) else 1
        sub_h = 2 if array_type == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    return _checked_size(width, height)


def _skip_profile_tier_level(b: _Bits, sub_layers: int) -> None:
    b.u(32)
    b.u(32)
    b.u(32)  # general profile, tier, flags, level: 96 bits
    flags = [(b.u(1), b.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        for _ in range(sub_layers, 8):
            b.u(2)
    for profile_present, level_present in flags:
        if profile_present:
            b.u(32)
            b.u(32)
            b.u(24)
        if level_present:
            b.u(8)


def parse_asc(config: bytes) -> tuple[int, int]:
    """(sample rate, channels) of an AudioSpecificConfig; channels 0 = given by a PCE."""
    b = _Bits(bytes(config[:16]))
    object_type = b.u(5)
    if object_type == 31:
        object_type = 32 + b.u(6)
    if object_type == 0:
        raise FlvError("AudioSpecificConfig: audio object type 0 is invalid")
    index = b.u(4)
    if index == 15:
        rate = b.u(24)
    elif index < len(_AAC_RATES):
        rate = _AAC_RATES[index]
    else:
        raise FlvError(f"AudioSpecificConfig: reserved sampling frequency index {index}")
    channels = b.u(4)
    if not 0 < rate <= 192000:
        raise FlvError(f"AudioSpecificConfig: impossible sample rate {rate}")
    return rate, channels


# -- aggregate messages --

def split_aggregate(payload: Buffer, timestamp: int) -> list[tuple[int, int, memoryview]]:
    """The (type, timestamp, body) of each FLV-tag-shaped sub-message; timestamps are
    shifted so the first sub-message has the aggregate message's own timestamp."""
    view = memoryview(payload)
    out: list[tuple[int, int, memoryview]] = []
    pos, base = 0, None
    while pos < len(view):
        if pos + 11 > len(view):
            raise FlvError("aggregate message: sub-message header truncated")
        type_id = view[pos]
        size = (view[pos + 1] << 16) | (view[pos + 2] << 8) | view[pos + 3]
        ts = (view[pos + 7] << 24) | (view[pos + 4] << 16) | (view[pos + 5] << 8) | view[pos + 6]
        end = pos + 11 + size
        if end + 4 > len(view):
            raise FlvError("aggregate message: sub-message body truncated")
        base = ts if base is None else base
        out.append((type_id, (timestamp + ts - base) & 0xFFFFFFFF, view[pos + 11:end]))
        pos = end + 4  # back pointer
    return out


# -- play --

def _fourcc(track: Track) -> bytes:
    return b"hvc1" if track.codec == "h265" else b"avc1"


def video_config_tag(track: Track) -> bytes:
    if track.codec == "h264":
        return b"\x17\x00\x00\x00\x00" + track.config
    return bytes((0x80 | 0x10,)) + _fourcc(track) + track.config


def video_frame_prefix(track: Track, packet: Packet, cto_ms: int) -> bytes:
    """Tag header to put before the frame bytes (which go out unchanged)."""
    frame_type = 1 if packet.keyframe else 2
    cto = (cto_ms & 0xFFFFFF).to_bytes(3, "big")
    if track.codec == "h264":
        return bytes(((frame_type << 4) | 7, 1)) + cto
    return bytes((0x80 | (frame_type << 4) | 1,)) + _fourcc(track) + cto


def audio_config_tag(track: Track) -> bytes:
    return b"\xaf\x00" + track.config


AAC_FRAME_PREFIX = b"\xaf\x01"


def metadata(tracks: tuple[Track, ...]) -> bytes:
    """onMetaData for players, from the tracks we actually send."""
    info = amf0.EcmaArray(duration=0.0)
    for track in tracks:
        if track.codec in ("h264", "h265"):
            codec_id = 7 if track.codec == "h264" else int.from_bytes(b"hvc1", "big")
            info.update(width=float(track.width), height=float(track.height),
                        videocodecid=float(codec_id))
        elif track.codec == "aac":
            info.update(audiocodecid=10.0, audiosamplerate=float(track.sample_rate),
                        audiochannels=float(track.channels), stereo=track.channels == 2)
    info["encoder"] = "courtcast"
    return amf0.encode("onMetaData", info)
