"""Chunk streams from hand-made bytes: every header type, extended and wrapping
timestamps, chunk size changes, abort, and the bounds hostile peers run into."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_server.rtmp.chunk import (
    ABORT,
    AUDIO,
    SET_CHUNK_SIZE,
    VIDEO,
    ChunkError,
    ChunkReader,
    ChunkWriter,
)


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


def chunk(
    fmt: int,
    csid: int,
    ts: int = 0,
    length: int = 0,
    type_id: int = 0,
    msid: int = 0,
    body: bytes = b"",
    ext: int | None = None,
) -> bytes:
    out = basic(fmt, csid)
    field = 0xFFFFFF if ext is not None else ts
    if fmt < 3:
        out += field.to_bytes(3, "big")
    if fmt < 2:
        out += length.to_bytes(3, "big") + bytes((type_id,))
    if fmt == 0:
        out += msid.to_bytes(4, "little")
    if ext is not None:
        out += struct.pack(">I", ext)
    return out + body


def feed_bytewise(reader: ChunkReader, data: bytes) -> list:
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    return out


def stamps(msgs: list) -> list[int]:
    return [m.timestamp for m in msgs]


def test_type0_message_in_one_chunk() -> None:
    [msg] = ChunkReader().feed(chunk(0, 6, 1000, 4, VIDEO, 1, b"abcd"))
    assert (msg.csid, msg.type_id, msg.stream_id, msg.timestamp, bytes(msg.payload)) == (
        6,
        VIDEO,
        1,
        1000,
        b"abcd",
    )


def test_message_split_over_type3_chunks() -> None:
    body = bytes(range(256)) + b"xyz"
    data = (
        chunk(0, 4, 5, len(body), AUDIO, 1, body[:128])
        + chunk(3, 4, body=body[128:256])
        + chunk(3, 4, body=body[256:])
    )
    assert [bytes(m.payload) for m in feed_bytewise(ChunkReader(), data)] == [body]
    # all chunks in one read: assembled in one go (the fast path), same message
    [msg] = ChunkReader().feed(data + chunk(3, 4, body=body[:128]))[:1]
    assert (msg.timestamp, bytes(msg.payload)) == (5, body)


def test_spec_example_type2_then_type3_reuse_the_delta() -> None:
    data = (
        chunk(0, 3, 1000, 4, AUDIO, 1, b"aaaa")
        + chunk(2, 3, 20, body=b"bbbb")
        + chunk(3, 3, body=b"cccc")
        + chunk(3, 3, body=b"dddd")
    )
    assert stamps(ChunkReader().feed(data)) == [1000, 1020, 1040, 1060]


def test_type3_after_type0_adds_the_type0_field_like_ffmpeg_writes_it() -> None:
    # ffmpeg sends a type 3 header when the delta equals the last header's field: after
    # a type 0 at 33 ms the next frame at 66 ms goes out as type 3
    data = chunk(0, 6, 33, 2, VIDEO, 1, b"v1") + chunk(3, 6, body=b"v2")
    assert stamps(ChunkReader().feed(data)) == [33, 66]


def test_type1_changes_length_and_type() -> None:
    data = chunk(0, 5, 100, 2, AUDIO, 1, b"aa") + chunk(1, 5, 7, 3, VIDEO, body=b"vvv")
    msgs = ChunkReader().feed(data)
    assert [(m.timestamp, m.type_id, m.stream_id, bytes(m.payload)) for m in msgs] == [
        (100, AUDIO, 1, b"aa"),
        (107, VIDEO, 1, b"vvv"),
    ]


def test_extended_timestamp_in_every_chunk_of_a_message() -> None:
    body = bytes(200)
    ts = 0x12345678
    data = chunk(0, 6, length=200, type_id=VIDEO, msid=1, body=body[:128], ext=ts) + chunk(
        3, 6, body=body[128:], ext=ts
    )
    [msg] = feed_bytewise(ChunkReader(), data)
    assert msg.timestamp == ts and bytes(msg.payload) == body


def test_continuation_without_the_extended_timestamp_is_tolerated() -> None:
    body = bytes(range(200))
    data = chunk(0, 6, length=200, type_id=VIDEO, msid=1, body=body[:128], ext=0x01000000) + chunk(
        3, 6, body=body[128:]
    )
    [msg] = ChunkReader().feed(data)
    assert bytes(msg.payload) == body


def test_type3_new_message_reads_its_extended_delta() -> None:
    data = (
        chunk(0, 6, length=1, type_id=VIDEO, msid=1, body=b"a", ext=0x01000000)
        + chunk(2, 6, length=1, body=b"b", ext=0x01000001)
        + chunk(3, 6, body=b"c", ext=0x01000001)
    )
    assert stamps(ChunkReader().feed(data)) == [0x01000000, 0x02000001, 0x03000002]


def test_32_bit_timestamps_wrap() -> None:
    data = chunk(0, 6, length=1, type_id=VIDEO, msid=1, body=b"a", ext=0xFFFFFFF0) + chunk(
        2, 6, 0x20, body=b"b"
    )
    assert stamps(ChunkReader().feed(data)) == [0xFFFFFFF0, 0x10]


def test_set_chunk_size_applies_to_the_rest_of_the_same_read() -> None:
    body = bytes(range(200))
    data = chunk(0, 2, 0, 4, SET_CHUNK_SIZE, 0, struct.pack(">I", 4096)) + chunk(
        0, 6, 0, 200, VIDEO, 1, body
    )
    reader = ChunkReader()
    msgs = reader.feed(data)
    assert reader.chunk_size == 4096
    assert [m.type_id for m in msgs] == [SET_CHUNK_SIZE, VIDEO]
    assert bytes(msgs[1].payload) == body


def test_abort_drops_the_unfinished_message() -> None:
    reader = ChunkReader()
    partial = chunk(0, 6, 0, 300, VIDEO, 1, bytes(128))
    abort = chunk(0, 2, 0, 4, ABORT, 0, struct.pack(">I", 6))
    fresh = chunk(0, 6, 10, 2, VIDEO, 1, b"ok")
    msgs = reader.feed(partial + abort + fresh)
    assert [bytes(m.payload) for m in msgs if m.type_id == VIDEO] == [b"ok"]
    assert reader.buffered == 0


def test_interleaved_chunk_streams() -> None:
    video, audio = bytes(range(200)), b"A" * 130
    data = (
        chunk(0, 6, 0, 200, VIDEO, 1, video[:128])
        + chunk(0, 4, 0, 130, AUDIO, 1, audio[:128])
        + chunk(3, 6, body=video[128:])
        + chunk(3, 4, body=audio[128:])
    )
    msgs = ChunkReader().feed(data)
    assert [(m.type_id, bytes(m.payload)) for m in msgs] == [(VIDEO, video), (AUDIO, audio)]


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
def test_chunk_stream_id_encodings(csid: int) -> None:
    [msg] = ChunkReader().feed(chunk(0, csid, 0, 1, VIDEO, 1, b"x"))
    assert msg.csid == csid


# -- bounds and malformed input --


def test_message_over_the_limit_is_refused_before_its_bytes_arrive() -> None:
    with pytest.raises(ChunkError, match="exceeds the limit"):
        ChunkReader(max_message=1000).feed(chunk(0, 6, 0, 1001, VIDEO, 1))


def test_too_many_chunk_streams() -> None:
    data = b"".join(chunk(0, csid, 0, 1, VIDEO, 1, b"x") for csid in range(2, 20))
    with pytest.raises(ChunkError, match="chunk streams"):
        ChunkReader(max_streams=8).feed(data)


def test_unfinished_messages_are_bounded() -> None:
    data = b"".join(chunk(0, csid, 0, 100_000, VIDEO, 1, bytes(128)) for csid in range(2, 12))
    with pytest.raises(ChunkError, match="unfinished"):
        ChunkReader(max_pending=1000).feed(data)


@pytest.mark.parametrize(
    "data, words",
    [
        (chunk(0, 2, 0, 4, SET_CHUNK_SIZE, 0, bytes(4)), "invalid chunk size"),
        (chunk(0, 2, 0, 2, SET_CHUNK_SIZE, 0, bytes(2)), "shorter than 4"),
        (chunk(2, 6, 5, body=b"x"), "starts with a type 2"),
        (chunk(3, 6, body=b"x"), "starts with a type 3"),
        (
            chunk(0, 6, 0, 300, VIDEO, 1, bytes(128)) + chunk(0, 6, 0, 1, VIDEO, 1, b"x"),
            "before its previous message",
        ),
    ],
)
def test_malformed_chunks(data: bytes, words: str) -> None:
    with pytest.raises(ChunkError, match=words):
        ChunkReader().feed(data)


# -- writer --


def test_writer_header_choice() -> None:
    writer = ChunkWriter(4096)
    first = writer.message(6, VIDEO, 1, 0, b"aaaa")
    second = writer.message(6, VIDEO, 1, 33, b"bbbb")  # same length: type 2
    third = writer.message(6, VIDEO, 1, 66, b"cccc")  # same delta after a type 2: type 3
    fourth = writer.message(6, VIDEO, 1, 99, b"ddddd")  # new length: type 1
    back = writer.message(6, VIDEO, 1, 10, b"eeeee")  # backwards: type 0
    assert [m[0] >> 6 for m in (first, second, third, fourth, back)] == [0, 2, 3, 1, 0]
    assert len(third) == 1 + 4


def test_writer_never_sends_type3_right_after_type0() -> None:
    writer = ChunkWriter()
    writer.message(6, VIDEO, 1, 33, b"aa")
    assert writer.message(6, VIDEO, 1, 66, b"bb")[0] >> 6 == 2


def written(msgs: list, chunk_size: int) -> bytes:
    """What ChunkWriter makes of (csid, type, stream id, timestamp, body, prefix) messages,
    after a Set Chunk Size when chunk_size is not the default."""
    writer = ChunkWriter()
    data = b""
    if chunk_size != 128:
        data += writer.message(2, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", chunk_size))
        writer.chunk_size = chunk_size
    for csid, type_id, msid, ts, body, prefix in msgs:
        data += writer.message(csid, type_id, msid, ts, body, prefix)
    return data


messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 5, 6, 7, 70, 400]),
        st.sampled_from([AUDIO, VIDEO, 18, 20]),
        st.integers(0, 3),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=700),
        st.binary(max_size=6),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    msgs=messages,
    chunk_size=st.sampled_from([1, 7, 128, 4096]),
    cuts=st.lists(st.integers(1, 300), max_size=30),
)
def test_writer_reader_round_trip(msgs: list, chunk_size: int, cuts: list[int]) -> None:
    reader = ChunkReader()
    data = written(msgs, chunk_size)
    got, pos = [], 0
    for cut in cuts:
        got += reader.feed(data[pos : pos + cut])
        pos += cut
    got += reader.feed(data[pos:])
    got = [m for m in got if m.type_id != SET_CHUNK_SIZE]
    assert [(m.csid, m.type_id, m.stream_id, m.timestamp, bytes(m.payload)) for m in got] == [
        (c, t, s, ts, p + b) for c, t, s, ts, b, p in msgs
    ]
    assert reader.buffered == 0
