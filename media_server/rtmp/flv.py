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

from media_server.codecs import aac
from media_server.codecs.bitstream import BitstreamError
from media_server.codecs.h264 import parse_avcc_record, parse_h264_sps
from media_server.codecs.h265 import parse_h265_sps, parse_hvcc_record
from media_server.codecs.video import nal_type
from media_server.media import Packet, Track
from media_server.rtmp import amf0
from media_server.rtmp.errors import RtmpProtocolError

SEQUENCE_HEADER, FRAME, END_OF_SEQUENCE, INFO = 0, 1, 2, 3

Buffer = bytes | bytearray | memoryview

_LEGACY_VIDEO = {7: "h264", 12: "h265"}
LEGACY_VIDEO_IDS = {codec: codec_id for codec_id, codec in _LEGACY_VIDEO.items()}
_VIDEO_NAMES = {
    1: "JPEG",
    2: "Sorenson H.263",
    3: "Screen video",
    4: "On2 VP6",
    5: "On2 VP6 with alpha",
    6: "Screen video v2",
}
_FOURCC_VIDEO = {b"avc1": "h264", b"hvc1": "h265"}
# enhanced RTMP codecs we parse no further: no output here (LL-HLS and recordings' fMP4
# sample entries, WebRTC) carries them yet, so a publisher is told what to send instead
_FOURCC_NAMES = {b"av01": "AV1", b"vp09": "VP9", b"vp08": "VP8", b"vvc1": "H.266/VVC"}
_AUDIO_NAMES = {
    0: "linear PCM",
    1: "ADPCM",
    2: "MP3",
    3: "linear PCM LE",
    4: "Nellymoser 16k",
    5: "Nellymoser 8k",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    11: "Speex",
    14: "MP3 8k",
    15: "device specific",
}


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
    codec: str  # "aac", or a codec ingest transcodes to AAC (pcma, pcmu, mp3, speex, ...)
    kind: int
    data: memoryview
    decoder: str = ""  # of a legacy non-AAC format: PyAV's decoder, rate and channels
    sample_rate: int = 0
    channels: int = 0


# legacy sound formats ingest decodes (-> AAC): id -> (name, PyAV decoder, fixed rate)
_DECODABLE_AUDIO = {
    0: ("pcm", "pcm_s16le", 0),  # "platform endian": little endian in practice
    1: ("adpcm", "adpcm_swf", 0),
    2: ("mp3", "mp3", 0),
    3: ("pcm", "pcm_s16le", 0),
    4: ("nellymoser", "nellymoser", 16000),
    5: ("nellymoser", "nellymoser", 8000),
    6: ("nellymoser", "nellymoser", 0),
    7: ("pcma", "pcm_alaw", 8000),
    8: ("pcmu", "pcm_mulaw", 8000),
    11: ("speex", "speex", 16000),
    14: ("mp3", "mp3", 8000),
}
_SOUND_RATES = (5512, 11025, 22050, 44100)


def audio_codec_name(payload: Buffer) -> str:
    """The codec of an audio message as people name it, for stats and messages."""
    if not len(payload):
        return "unknown"
    fmt = payload[0] >> 4
    if fmt == 10 or (fmt == 9 and bytes(payload[1:5]) == b"mp4a"):
        return "aac"
    if fmt in _DECODABLE_AUDIO:
        return _DECODABLE_AUDIO[fmt][0]
    return _AUDIO_NAMES.get(fmt, f"sound format {fmt}")


def _decodable_audio(view: memoryview, sound_format: int) -> AudioTag:
    """A legacy non-AAC frame: the whole payload after the header byte is the frame."""
    name, decoder, rate = _DECODABLE_AUDIO[sound_format]
    head = view[0]
    if name == "pcm" and not head & 0x02:
        decoder = "pcm_u8"  # 8-bit samples
    channels = 1 + (head & 0x01) if name in ("pcma", "pcmu") or not rate else 1
    return AudioTag(
        name, FRAME, view[1:], decoder, rate or _SOUND_RATES[(head >> 2) & 0x03], channels
    )


def si24(b: Buffer, at: int) -> int:
    """The signed 24-bit big-endian int at b[at] (a composition time offset)."""
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
        raise FlvError(
            f"{codec} video message of {len(view)} bytes is shorter than its 5-byte header"
        )
    packet_type = view[1]
    if packet_type > END_OF_SEQUENCE:
        raise FlvError(f"unknown {codec} packet type {packet_type}")
    return VideoTag(codec, packet_type, frame_type in (1, 4), si24(view, 2), view[5:])


def _enhanced_video(view: memoryview) -> VideoTag:
    if len(view) < 5:
        raise FlvError("enhanced RTMP video message shorter than its 5-byte header")
    frame_type, packet_type = (view[0] >> 4) & 0x07, view[0] & 0x0F
    fourcc = bytes(view[1:5])
    codec = _FOURCC_VIDEO.get(fourcc)
    if codec is None:
        tag = fourcc.decode("latin-1")
        name = f"{_FOURCC_NAMES[fourcc]} ({tag!r})" if fourcc in _FOURCC_NAMES else repr(tag)
        raise UnsupportedCodec(
            f"unsupported video codec {name}: LL-HLS, recordings and WebRTC here take "
            "H.264 or H.265 only; send H.264 or H.265"
        )
    keyframe = frame_type in (1, 4)
    if frame_type == 5 or packet_type in (4, 5):  # command frame, metadata, TS config
        return VideoTag(codec, INFO, False, 0, view[5:])
    if packet_type == 0:
        return VideoTag(codec, SEQUENCE_HEADER, keyframe, 0, view[5:])
    if packet_type == 1:
        if len(view) < 8:
            raise FlvError("enhanced RTMP coded frame shorter than its 8-byte header")
        return VideoTag(codec, FRAME, keyframe, si24(view, 5), view[8:])
    if packet_type == 2:
        return VideoTag(codec, END_OF_SEQUENCE, False, 0, view[5:])
    if packet_type == 3:
        return VideoTag(codec, FRAME, keyframe, 0, view[5:])
    raise UnsupportedCodec(
        f"enhanced RTMP video packet type {packet_type} (multitrack or "
        f"ModEx) is not supported: send one plain track"
    )


def parse_audio(payload: Buffer) -> AudioTag:
    view = memoryview(payload)
    if not len(view):
        raise FlvError("empty audio message")
    sound_format = view[0] >> 4
    if sound_format == 9:
        return _enhanced_audio(view)
    if sound_format in _DECODABLE_AUDIO:
        return _decodable_audio(view, sound_format)
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
        raise UnsupportedCodec(
            f"unsupported audio codec {fourcc.decode('latin-1')!r} on RTMP: send AAC"
        )
    if packet_type == 0:
        return AudioTag("aac", SEQUENCE_HEADER, view[5:])
    if packet_type == 1:
        return AudioTag("aac", FRAME, view[5:])
    if packet_type == 2:
        return AudioTag("aac", END_OF_SEQUENCE, view[5:])
    return AudioTag("aac", INFO, view[5:])


def video_track(index: int, codec: str, config: bytes) -> Track:
    """A video Track from a sequence header; FlvError if the record is unusable."""
    width, height = _video_size(codec, config)
    return Track(
        index=index,
        kind="video",
        codec=codec,  # type: ignore[arg-type]
        timescale=1000,
        config=config,
        width=width,
        height=height,
    )


def audio_track(index: int, config: bytes) -> Track:
    rate, channels = parse_asc(config)
    return Track(
        index=index,
        kind="audio",
        codec="aac",
        timescale=1000,
        config=config,
        sample_rate=rate,
        channels=channels,
    )


# -- codec configuration records --


def _video_size(codec: str, config: bytes) -> tuple[int, int]:
    """Picture size from the SPS inside an avcC / hvcC sequence header."""
    try:
        if codec == "h264":
            nals, length_size = parse_avcc_record(config)
        else:
            nals, length_size = parse_hvcc_record(config)
        if length_size != 4:
            raise UnsupportedCodec(
                f"{codec.upper()} with {length_size}-byte NAL lengths is not supported: "
                "use 4-byte lengths (every common encoder does)"
            )
        sps = next((n for n in nals if nal_type(n, codec) == _SPS_TYPE[codec]), None)
        if sps is None:
            raise FlvError(f"{codec} sequence header carries no SPS")
        info = parse_h264_sps(sps) if codec == "h264" else parse_h265_sps(sps)
    except BitstreamError as exc:
        raise FlvError(f"{codec} sequence header: {exc}") from None
    return _checked_size(info.width, info.height)


_SPS_TYPE = {"h264": 7, "h265": 33}


def _checked_size(width: int, height: int) -> tuple[int, int]:
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise FlvError(f"parameter set gives an impossible picture size {width}x{height}")
    return width, height


def parse_asc(config: bytes) -> tuple[int, int]:
    """(sample rate, channels) of an AudioSpecificConfig; channels 0 = given by a PCE."""
    try:
        asc = aac.parse_asc(config)
    except BitstreamError as exc:
        raise FlvError(f"AudioSpecificConfig: {exc}") from None
    return asc.sample_rate, asc.channels


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
        out.append((type_id, (timestamp + ts - base) & 0xFFFFFFFF, view[pos + 11 : end]))
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
            info.update(
                width=float(track.width), height=float(track.height), videocodecid=float(codec_id)
            )
        elif track.codec == "aac":
            info.update(
                audiocodecid=10.0,
                audiosamplerate=float(track.sample_rate),
                audiochannels=float(track.channels),
                stereo=track.channels == 2,
            )
            if track.source_codec:  # the AAC is a transcode: name the camera's codec
                info["audiosourcecodec"] = track.source_codec
    info["encoder"] = "courtcast"
    return amf0.encode("onMetaData", info)
