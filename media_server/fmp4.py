"""Fragmented MP4 (ISO BMFF / CMAF) writing: an init segment and movie fragments.

Pure functions over the media model, no I/O. LL-HLS parts and segments, and the recorder's
keyframe-aligned segments, are built from these. Packets are remuxed: their bytes go to
`mdat` unchanged (AVCC / HVCC length-prefixed video, raw AAC or Opus frames).

Speed matters (every packet of every watched or recorded stream passes here): boxes are
built with struct.pack into lists and joined once per fragment; the per-sample table of a
`trun` is one struct.pack call.
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, sub

from media_server.codecs.aac import rate_and_channels
from media_server.codecs.bitstream import BitstreamError
from media_server.codecs.h264 import parse_avcc_record
from media_server.codecs.h265 import parse_hvcc_record
from media_server.codecs.video import nal_type
from media_server.media import Packet, Track

NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP epoch) to 1970-01-01
_UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = (21 << 10) | (14 << 5) | 4  # ISO-639-2 "und", 5 bits per letter

# sample_flags: sync = depends on no other sample; non-sync = depends, is_non_sync_sample
SYNC_SAMPLE = 0x02000000
NON_SYNC_SAMPLE = 0x01010000

_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
# data-offset, sample duration, size, flags, composition time offset present
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800

# prft flags: the wall-clock is when the sample left the encoder (for us: when it arrived,
# which is the best a remuxer knows).
PRFT_ENCODER_OUTPUT = 1


# -- box primitives --------------------------------------------------------------------


def box(kind: bytes, *payload: bytes) -> bytes:
    """One box: 32-bit size, 4-char type, payload."""
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: a box whose payload starts with version (8 bits) and flags (24 bits)."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# -- init segment ----------------------------------------------------------------------


def init_segment(tracks: Sequence[Track]) -> bytes:
    """ftyp + moov for these tracks: one trak each, track_ID = index + 1, the media
    timescale = the track's timescale, and mvex/trex so fragments may follow."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIIIIH10x", 0, 0, 1000, 0, 0x00010000, 0x0100),
        _UNITY_MATRIX,
        bytes(24),
        struct.pack(">I", len(tracks) + 1),
    )
    traks = [_trak(t) for t in tracks]
    mvex = box(
        b"mvex",
        *(full_box(b"trex", 0, 0, struct.pack(">5I", t.index + 1, 1, 0, 0, 0)) for t in tracks),
    )
    return ftyp + box(b"moov", mvhd, *traks, mvex)


def _trak(track: Track) -> bytes:
    video = track.is_video
    tkhd = full_box(
        b"tkhd",
        0,
        3,  # enabled | in movie
        struct.pack(">IIIII8xhhH2x", 0, 0, track.index + 1, 0, 0, 0, 0, 0 if video else 0x0100),
        _UNITY_MATRIX,
        struct.pack(">II", track.width << 16 if video else 0, track.height << 16 if video else 0),
    )
    mdhd = full_box(
        b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, _LANGUAGE_UND, 0)
    )
    handler, name = (b"vide", b"VideoHandler\0") if video else (b"soun", b"SoundHandler\0")
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name)
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    empty = struct.pack(">I", 0)
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry(track)),
        full_box(b"stts", 0, 0, empty),
        full_box(b"stsc", 0, 0, empty),
        full_box(b"stsz", 0, 0, empty, empty),
        full_box(b"stco", 0, 0, empty),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def sample_entry(track: Track) -> bytes:
    """The stsd entry that tells a decoder the codec and its config."""
    if track.codec == "h264":
        return _visual_entry(b"avc1", track, box(b"avcC", track.config))
    if track.codec == "h265":
        return _visual_entry(b"hvc1", track, box(b"hvcC", track.config))
    if track.codec == "aac":
        rate, channels = rate_and_channels(track.config)
        return _audio_entry(
            b"mp4a", track.sample_rate or rate, track.channels or channels, esds(track.config)
        )
    if track.codec == "opus":
        dops, channels = opus_head_to_dops(track.config)
        return _audio_entry(b"Opus", 48000, track.channels or channels, dops)
    raise ValueError(f"fMP4 cannot carry codec {track.codec!r}")


def _visual_entry(kind: bytes, track: Track, config_box: bytes) -> bytes:
    fields = struct.pack(
        ">6xH2x2x12xHHII4xH32sHh",
        1,  # data_reference_index
        track.width,
        track.height,
        0x00480000,
        0x00480000,  # 72 dpi
        1,  # frame_count
        b"",  # compressorname
        0x0018,
        -1,  # depth, pre_defined
    )
    return box(kind, fields, config_box)


def _audio_entry(kind: bytes, sample_rate: int, channels: int, config_box: bytes) -> bytes:
    rate = sample_rate if sample_rate <= 0xFFFF else 0  # 16.16 cannot say more
    fields = struct.pack(">6xH8xHH4xI", 1, channels or 2, 16, rate << 16)
    return box(kind, fields, config_box)


def _descriptor(tag: int, *payload: bytes) -> bytes:
    """An MPEG-4 descriptor: tag, size in 7-bit groups (4 bytes, what most writers use)."""
    body = b"".join(payload)
    n = len(body)
    size = bytes(
        [0x80 | (n >> 21) & 0x7F, 0x80 | (n >> 14) & 0x7F, 0x80 | (n >> 7) & 0x7F, n & 0x7F]
    )
    return bytes([tag]) + size + body


def esds(asc: bytes) -> bytes:
    """ES descriptor box carrying an AudioSpecificConfig (MPEG-4 audio, object type 0x40)."""
    decoder_config = _descriptor(
        4,
        struct.pack(">BB3xII", 0x40, (0x05 << 2) | 1, 0, 0),  # audio stream, no bitrates
        _descriptor(5, asc),
    )
    es = _descriptor(3, struct.pack(">HB", 0, 0), decoder_config, _descriptor(6, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def opus_head_to_dops(head: bytes) -> tuple[bytes, int]:
    """The dOps box (big-endian) from an OpusHead (little-endian, RFC 7845), and the
    channel count."""
    if len(head) < 19 or head[:8] != b"OpusHead":
        raise ValueError("Opus track config is not an OpusHead")
    channels, pre_skip, rate, gain, family = struct.unpack_from("<BHIhB", head, 9)
    body = struct.pack(">BBHIhB", 0, channels, pre_skip, rate, gain, family)
    if family != 0:
        body += head[19 : 21 + channels]  # stream count, coupled count, mapping
    return box(b"dOps", body), channels


# -- fragments -------------------------------------------------------------------------


@dataclass(slots=True)
class TrackRun:
    """The samples of one track in one fragment.

    Sample durations come from the next sample's dts; the last sample uses next_dts (the
    dts of the packet that follows the run) if known, else the previous sample's duration,
    else default_duration. dts_offset is added to every dts (a writer that rebases a
    timeline after a discontinuity); packets are not copied or changed. keyframe_prefix
    (see `parameter_sets`) is written before every keyframe's data.
    """

    track: Track
    packets: Sequence[Packet]
    next_dts: int | None = None
    dts_offset: int = 0
    default_duration: int = 0
    keyframe_prefix: bytes = b""
    _keyframes: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    # a fragment is built per LL-HLS part, from every packet of it: the per-sample columns
    # are made with map() and slices, C loops, rather than a Python loop per sample

    def data(self) -> list[bytes]:
        """The sample bytes in mdat order."""
        data = list(map(_DATA, self.packets))
        if self.keyframe_prefix:
            for i in reversed(self.keyframes()):
                data.insert(i, self.keyframe_prefix)
        return data

    def sizes(self) -> list[int]:
        sizes = list(map(len, map(_DATA, self.packets)))
        if self.keyframe_prefix:
            for i in self.keyframes():
                sizes[i] += len(self.keyframe_prefix)
        return sizes

    def keyframes(self) -> list[int]:
        """Indexes of the keyframes among the packets (found once: a fragment asks for
        them up to three times, for sizes, flags and data)."""
        if self._keyframes is None:
            self._keyframes = list(
                itertools.compress(itertools.count(), map(_KEYFRAME, self.packets))
            )
        return self._keyframes


_DTS, _PTS, _DATA = attrgetter("dts"), attrgetter("pts"), attrgetter("data")
_KEYFRAME = attrgetter("keyframe")


@functools.lru_cache(maxsize=512)
def _trun_table(count: int) -> struct.Struct:
    return struct.Struct(">" + "IIIi" * count)


def _durations(run: TrackRun) -> list[int]:
    dts = list(map(_DTS, run.packets))
    durations = list(map(sub, dts[1:], dts))
    if run.next_dts is not None:
        durations.append(run.next_dts - dts[-1])
    elif durations:
        durations.append(durations[-1])
    else:  # a lone sample with nothing after it: the only case that needs a guess
        durations.append(run.default_duration or guess_duration(run.track))
    return durations


def _trun_entries(run: TrackRun) -> bytes:
    packets = run.packets
    durations = _durations(run)
    count = len(packets)
    # four columns interleaved by slice assignment: C loops, not a Python one per sample
    values: list[int] = [0] * (4 * count)
    values[0::4] = durations
    values[1::4] = run.sizes()
    if run.track.is_video:
        flags = [NON_SYNC_SAMPLE] * count
        for i in run.keyframes():
            flags[i] = SYNC_SAMPLE
        values[2::4] = flags
    else:
        values[2::4] = [SYNC_SAMPLE] * count
    values[3::4] = list(map(sub, map(_PTS, packets), map(_DTS, packets)))
    return _trun_table(count).pack(*values)


def guess_duration(track: Track) -> int:
    """A plausible duration for a lone sample: an AAC frame (1024 samples), 20 ms of Opus,
    a 30 fps video frame."""
    ts = track.timescale
    if track.codec == "aac":
        rate = track.sample_rate or rate_and_channels(track.config)[0] or 48000
        return max(1, round(ts * 1024 / rate))
    if track.codec == "opus":
        return max(1, ts // 50)
    return max(1, ts // 30)


_TRAF_FIXED = 8 + 16 + 20 + 20  # traf header, tfhd, tfdt (v1), trun header + count + offset


def fragment(
    sequence_number: int,
    samples_by_track: Mapping[int, TrackRun] | Iterable[TrackRun],
    prft_wallclock: float | None = None,
) -> bytes:
    """One movie fragment: [prft] moof (mfhd, a traf per non-empty run) and one mdat.

    trun is version 1 (signed composition offsets), with per-sample duration, size, flags
    (sync / non-sync) and composition offset. prft_wallclock (UNIX seconds) is the
    wall-clock of the first sample of the first run; the prft box maps it to that sample's
    presentation time.
    """
    runs = list(
        samples_by_track.values() if isinstance(samples_by_track, Mapping) else samples_by_track
    )
    runs = [r for r in runs if r.packets]
    if not runs:
        raise ValueError("a fragment needs at least one sample")
    moof_size = 8 + 16 + sum(_TRAF_FIXED + 16 * len(r.packets) for r in runs)
    offset = moof_size + 8  # first byte of the first run's data, from the start of moof
    trafs: list[bytes] = []
    data: list[bytes] = []
    for run in runs:
        trafs.append(_traf(run, offset))
        run_data = run.data()
        offset += sum(map(len, run_data))
        data += run_data
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number & 0xFFFFFFFF))
    moof = box(b"moof", mfhd, *trafs)
    mdat_header = struct.pack(">I4s", 8 + sum(map(len, data)), b"mdat")
    head = [] if prft_wallclock is None else [prft(runs[0], prft_wallclock)]
    return b"".join([*head, moof, mdat_header, *data])


def _traf(run: TrackRun, data_offset: int) -> bytes:
    track_id = run.track.index + 1
    count = len(run.packets)
    tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", track_id))
    base = run.packets[0].dts + run.dts_offset
    if base < 0:
        raise ValueError(f"track {track_id}: negative decode time {base}; rebase with dts_offset")
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", base))
    trun = full_box(
        b"trun", 1, _TRUN_FLAGS, struct.pack(">Ii", count, data_offset), _trun_entries(run)
    )
    return box(b"traf", tfhd, tfdt, trun)


def parameter_sets(track: Track) -> bytes:
    """The codec config's parameter sets (SPS/PPS, or VPS/SPS/PPS) as 4-byte length-prefixed
    NAL units, to put in front of keyframes.

    A player that ignores a changed init segment (FFmpeg's HLS demuxer skips a second moov)
    still switches to new parameters after a publisher restart when keyframes carry them.
    Empty for audio or an unreadable config. Not the encoder's SEI an hvcC may also carry:
    it is large and no decoder needs it again.
    """
    try:
        if track.codec == "h264":
            nals, _ = parse_avcc_record(track.config)
        elif track.codec == "h265":
            nals = [
                n for n in parse_hvcc_record(track.config)[0] if nal_type(n, "h265") in (32, 33, 34)
            ]  # VPS, SPS, PPS
        else:
            return b""
    except BitstreamError:
        return b""
    return b"".join(struct.pack(">I", len(n)) + n for n in nals)


def ntp_timestamp(wallclock: float) -> int:
    """64-bit NTP time (seconds since 1900 in 32.32 fixed point) of a UNIX time."""
    return round((wallclock + NTP_UNIX_OFFSET) * (1 << 32))


def prft(run: TrackRun, wallclock: float) -> bytes:
    """Producer reference time: wall-clock of the run's first sample at its presentation
    time, so a player or the recorder can tell real time from media time."""
    first = run.packets[0]
    media_time = first.pts + run.dts_offset
    return full_box(
        b"prft",
        1,
        PRFT_ENCODER_OUTPUT,
        struct.pack(">IQQ", run.track.index + 1, ntp_timestamp(wallclock), max(media_time, 0)),
    )
