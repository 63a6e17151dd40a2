"""FLV tag payloads from bytes: sequence headers to Tracks (sizes from real x264/x265
parameter sets), frames with composition time, enhanced RTMP, and the tags we build for
players parse back to what they carry."""

import pytest

from media_server.media import Packet, Track
from media_server.rtmp import amf0, flv
from media_server.rtmp.flv import FlvError, UnsupportedCodec

# avcC records written by x264: 320x240 High, 1920x1080 Baseline (cropped from 1088)
AVCC_320 = bytes.fromhex(
    "0164000dffe100196764000dacd94141fb0110000003001000000303c0f142996001000468ef8fcbfdf8f800"
)
AVCC_1080 = bytes.fromhex(
    "0142c028ffe100196742c028da01e0089f97011000000300100000030320f1832a01000468ce0fc8"
)
# hvcC written by x265 for 1280x720 (VPS, SPS, PPS)
HVCC_720 = bytes.fromhex(
    "0101600000009000000000005df000fcfdf8f800000f03200001001840010c01ffff0160000003009000"
    "0003000003005d959409210001002b42010101600000030090000003000003005da00280802d16595952"
    "930bc05a02000003000200000300321022000100064401c073c189"
)
ASC_48K_MONO = bytes.fromhex("1188")
ASC_44K_STEREO = bytes.fromhex("1210")


def test_avc_sequence_header_to_track() -> None:
    tag = flv.parse_video(b"\x17\x00\x00\x00\x00" + AVCC_320)
    assert (tag.codec, tag.kind, tag.keyframe) == ("h264", flv.SEQUENCE_HEADER, True)
    track = flv.video_track(0, tag.codec, bytes(tag.data))
    assert (track.codec, track.width, track.height, track.timescale) == ("h264", 320, 240, 1000)
    assert track.config == AVCC_320


def test_sps_cropping_gives_1080_not_1088() -> None:
    assert flv.video_track(0, "h264", AVCC_1080).height == 1080


def test_hevc_sps_size() -> None:
    track = flv.video_track(0, "h265", HVCC_720)
    assert (track.width, track.height) == (1280, 720)


def test_avc_frame_with_negative_composition_time() -> None:
    tag = flv.parse_video(b"\x27\x01\xff\xff\xdf" + b"\x00\x00\x00\x02ab")
    assert (tag.kind, tag.keyframe, tag.cto, bytes(tag.data)) == (
        flv.FRAME,
        False,
        -33,
        b"\x00\x00\x00\x02ab",
    )


def test_legacy_codec_id_12_is_hevc() -> None:
    tag = flv.parse_video(b"\x1c\x01\x00\x00\x43nal")
    assert (tag.codec, tag.keyframe, tag.cto) == ("h265", True, 67)


def test_enhanced_rtmp_hevc() -> None:
    seq = flv.parse_video(b"\x90hvc1" + HVCC_720)
    assert (seq.codec, seq.kind, bytes(seq.data)) == ("h265", flv.SEQUENCE_HEADER, HVCC_720)
    frame = flv.parse_video(b"\x91hvc1\x00\x00\x21data")
    assert (frame.kind, frame.keyframe, frame.cto, bytes(frame.data)) == (
        flv.FRAME,
        True,
        33,
        b"data",
    )
    framex = flv.parse_video(b"\xa3hvc1data")
    assert (framex.kind, framex.keyframe, framex.cto) == (flv.FRAME, False, 0)
    assert flv.parse_video(b"\x94hvc1meta").kind == flv.INFO


def test_aac_tags() -> None:
    seq = flv.parse_audio(b"\xaf\x00" + ASC_48K_MONO)
    assert seq.kind == flv.SEQUENCE_HEADER
    track = flv.audio_track(1, bytes(seq.data))
    assert (track.sample_rate, track.channels, track.index) == (48000, 1, 1)
    assert flv.parse_asc(ASC_44K_STEREO) == (44100, 2)
    frame = flv.parse_audio(b"\xaf\x01\x21\x10")
    assert (frame.kind, bytes(frame.data)) == (flv.FRAME, b"\x21\x10")
    assert flv.parse_audio(b"\x91mp4a\x21").kind == flv.FRAME


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"\x22\x00", "Sorenson H.263"),
        (b"\x14\x00", "VP6"),
        (b"\x91av01\x00\x00\x00", r"AV1 \('av01'\).*send H.264 or H.265"),
        (b"\x90vp09\x00", r"VP9 \('vp09'\)"),
        (b"\x91abcd\x00\x00\x00", "'abcd'"),
        (b"\x96hvc1", "multitrack"),
    ],
)
def test_unsupported_video_codecs_are_named(payload: bytes, words: str) -> None:
    with pytest.raises(UnsupportedCodec, match=words):
        flv.parse_video(payload)


@pytest.mark.parametrize(
    "payload, words", [(b"\xff\x00", "device specific"), (b"\x90Opus", "'Opus'")]
)
def test_unsupported_audio_codecs_say_send_aac(payload: bytes, words: str) -> None:
    with pytest.raises(UnsupportedCodec, match=f"{words}.*send AAC"):
        flv.parse_audio(payload)
    assert words.strip("'") in flv.audio_codec_name(payload) or payload[0] >> 4 == 9


@pytest.mark.parametrize(
    "head, name, decoder, rate, channels",
    [
        (0x72, "pcma", "pcm_alaw", 8000, 1),  # G.711 is 8 kHz whatever the rate bits say
        (0x82, "pcmu", "pcm_mulaw", 8000, 1),
        (0x2F, "mp3", "mp3", 44100, 2),
        (0xB2, "speex", "speex", 16000, 1),
        (0x3A, "pcm", "pcm_s16le", 22050, 1),
        (0x38, "pcm", "pcm_u8", 22050, 1),
    ],
)
def test_legacy_audio_is_a_frame_to_transcode(
    head: int, name: str, decoder: str, rate: int, channels: int
) -> None:
    tag = flv.parse_audio(bytes((head,)) + b"\x01\x02")
    assert (tag.codec, tag.kind, bytes(tag.data)) == (name, flv.FRAME, b"\x01\x02")
    assert (tag.decoder, tag.sample_rate, tag.channels) == (decoder, rate, channels)
    assert flv.audio_codec_name(bytes((head,))) == name


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: flv.parse_video(b""), "empty"),
        (lambda: flv.parse_video(b"\x17\x01\x00"), "shorter than its 5-byte header"),
        (lambda: flv.parse_video(b"\x17\x07\x00\x00\x00"), "unknown h264 packet type"),
        (lambda: flv.parse_video(b"\x91hvc1\x00"), "shorter than its 8-byte header"),
        (lambda: flv.parse_audio(b"\xaf"), "shorter than its 2-byte header"),
        (lambda: flv.video_track(0, "h264", b"\x00" * 10), "not an avcC"),
        (lambda: flv.video_track(0, "h264", AVCC_320[:20]), "overruns the record"),
        (
            lambda: flv.video_track(0, "h264", AVCC_320[:4] + b"\xfd" + AVCC_320[5:]),
            "2-byte NAL lengths",
        ),
        (lambda: flv.video_track(0, "h265", HVCC_720[:23]), "overruns the record"),
        (lambda: flv.video_track(0, "h265", HVCC_720[:22] + b"\x00"), "no SPS"),
        (lambda: flv.parse_asc(b"\x00\x00"), "object type 0"),
        (lambda: flv.parse_asc(b"\x17\x08"), "reserved sampling frequency"),
        (lambda: flv.parse_asc(b"\x12"), "truncated"),
    ],
)
def test_malformed_payloads(call: object, words: str) -> None:
    with pytest.raises(FlvError, match=words):
        call()  # type: ignore[operator]


def test_aggregate_message_split() -> None:
    def sub(type_id: int, ts: int, body: bytes) -> bytes:
        head = (
            bytes((type_id,))
            + len(body).to_bytes(3, "big")
            + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes((ts >> 24,))
            + b"\x00\x00\x00"
        )
        return head + body + (11 + len(body)).to_bytes(4, "big")

    payload = sub(9, 5000, b"\x17\x01\x00\x00\x00v") + sub(8, 5021, b"\xaf\x01a")
    parts = flv.split_aggregate(payload, 100)
    assert [(t, ts, bytes(b)) for t, ts, b in parts] == [
        (9, 100, b"\x17\x01\x00\x00\x00v"),
        (8, 121, b"\xaf\x01a"),
    ]
    with pytest.raises(FlvError, match="truncated"):
        flv.split_aggregate(payload[:-3], 0)


# -- play side: what we build parses back --


def test_play_tags_round_trip_h264() -> None:
    track = flv.video_track(0, "h264", AVCC_320)
    seq = flv.parse_video(flv.video_config_tag(track))
    assert (seq.kind, bytes(seq.data)) == (flv.SEQUENCE_HEADER, AVCC_320)
    packet = Packet(0, 1000, 1067, False, b"\x00\x00\x00\x01x")
    tag = flv.parse_video(flv.video_frame_prefix(track, packet, -33) + packet.data)
    assert (tag.codec, tag.keyframe, tag.cto, bytes(tag.data)) == ("h264", False, -33, packet.data)


def test_play_tags_round_trip_hevc_enhanced() -> None:
    track = flv.video_track(0, "h265", HVCC_720)
    assert flv.video_config_tag(track)[1:5] == b"hvc1"
    assert flv.parse_video(flv.video_config_tag(track)).kind == flv.SEQUENCE_HEADER
    packet = Packet(0, 0, 67, True, b"nal")
    tag = flv.parse_video(flv.video_frame_prefix(track, packet, 67) + packet.data)
    assert (tag.codec, tag.keyframe, tag.cto) == ("h265", True, 67)


def test_metadata_describes_the_tracks() -> None:
    tracks = (
        flv.video_track(0, "h264", AVCC_320),
        flv.audio_track(1, ASC_44K_STEREO),
        Track(2, "audio", "opus", 48000, b""),
    )
    name, info = amf0.decode(flv.metadata(tracks))
    assert name == "onMetaData"
    assert info["width"] == 320 and info["height"] == 240 and info["videocodecid"] == 7
    assert info["audiocodecid"] == 10 and info["audiosamplerate"] == 44100
    assert info["stereo"] is True
