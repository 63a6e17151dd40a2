"""AAC: the AudioSpecificConfig (ISO 14496-3 1.6.2.1), the Track.config of an AAC track."""

from __future__ import annotations

from dataclasses import dataclass

from media_server.codecs.bitstream import BitReader, BitstreamError

SAMPLE_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    object_type: int
    sample_rate: int
    channels: int  # 0: given by a program config element


def parse_asc(config: bytes | memoryview) -> AudioSpecificConfig:
    """The fields of an AudioSpecificConfig a container needs; BitstreamError if unusable."""
    b = BitReader(bytes(config[:16]))
    object_type = b.bits(5)
    if object_type == 31:
        object_type = 32 + b.bits(6)
    if object_type == 0:
        raise BitstreamError("audio object type 0 is invalid")
    index = b.bits(4)
    if index == 15:
        rate = b.bits(24)
    elif index < len(SAMPLE_RATES):
        rate = SAMPLE_RATES[index]
    else:
        raise BitstreamError(f"reserved sampling frequency index {index}")
    channels = b.bits(4)
    if not 0 < rate <= 192000:
        raise BitstreamError(f"impossible sample rate {rate}")
    return AudioSpecificConfig(object_type, rate, channels)


def rate_and_channels(config: bytes | memoryview) -> tuple[int, int]:
    """(sample rate, channels) of an AudioSpecificConfig, (0, 0) if unusable: for writers
    that fall back to the track's own fields."""
    try:
        asc = parse_asc(config)
    except BitstreamError:
        return 0, 0
    return asc.sample_rate, asc.channels


def make_asc(sample_rate: int, channels: int) -> bytes:
    """The 2-byte AudioSpecificConfig of AAC-LC (object type 2) at a standard rate."""
    index = SAMPLE_RATES.index(sample_rate)
    return ((2 << 11) | (index << 7) | (channels << 3)).to_bytes(2, "big")
