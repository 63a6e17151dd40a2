"""RTMP chunk streams as pure state machines over bytes.

ChunkReader: feed() bytes as they arrive, get whole messages back. It applies the two
control messages that change how the following bytes parse (Set Chunk Size, Abort) itself,
and bounds what a hostile peer can make it hold (message size, chunk streams, bytes of
unfinished messages). ChunkWriter: message -> bytes, choosing the smallest header.

This is the hot path of every RTMP publisher (about 70 messages a second each), so setup.py
compiles it with Cython, with the C types of chunk.pxd. It stays plain Python that runs
the same uncompiled (tests/media_server/test_rtmp_chunk_native.py holds the two equal).

Timestamps are 32-bit and wrap; the reader returns them as the peer meant them
(modulo 2**32). A type 3 header starting a new message adds the timestamp field of the
last type 0/1/2 header of that chunk stream, as ffmpeg, librtmp and SRS all do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from media_server.rtmp.errors import RtmpProtocolError

# message types
SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL = 1, 2, 3, 4
WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, SHARED_OBJECT_AMF3, COMMAND_AMF3 = 15, 16, 17
DATA_AMF0, SHARED_OBJECT_AMF0, COMMAND_AMF0, AGGREGATE = 18, 19, 20, 22

TS_MASK = 0xFFFFFFFF
EXTENDED = 0xFFFFFF
DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0xFFFFFF  # a chunk larger than the largest message is pointless
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024 - 1  # the 24-bit length field's own limit
DEFAULT_MAX_STREAMS = 64
DEFAULT_MAX_PENDING = 32 * 1024 * 1024

_U32 = struct.Struct(">I")
_HEADER_SIZE = (11, 7, 3, 0)


class ChunkError(RtmpProtocolError):
    """Malformed or hostile chunk stream."""


@dataclass(slots=True)
class Message:
    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class _InStream:
    __slots__ = ("buf", "extended", "field", "length", "stream_id", "timestamp", "type_id")

    def __init__(self) -> None:
        self.timestamp = 0
        self.field = 0  # timestamp field of the last type 0/1/2 header (extended or not)
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.buf: bytearray | None = None  # the message being assembled


class ChunkReader:
    """Bytes in, messages out. Raises ChunkError on anything malformed or over a bound."""

    def __init__(
        self,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message = max_message
        self.max_streams = max_streams
        self.max_pending = max_pending
        self._data = bytearray()
        self._pos = 0
        self._streams: dict[int, _InStream] = {}
        self._pending = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        self._data += data
        out: list[Message] = []
        while self._chunk(out):
            pass
        if self._pos:
            del self._data[: self._pos]
            self._pos = 0
        return out

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input plus unfinished messages."""
        return len(self._data) - self._pos + self._pending

    def _chunk(self, out: list[Message]) -> bool:
        """Parse one chunk at _pos if all of it is here; False when more bytes are needed."""
        data, pos = self._data, self._pos
        avail = len(data) - pos
        if avail < 1:
            return False
        fmt, csid = data[pos] >> 6, data[pos] & 0x3F
        pos += 1
        if csid < 2:
            need = 1 if csid == 0 else 2
            if avail < 1 + need:
                return False
            csid = 64 + data[pos] + (data[pos + 1] << 8 if need == 2 else 0)
            pos += need
        hsize = _HEADER_SIZE[fmt]
        if len(data) < pos + hsize:
            return False
        st = self._stream(csid, fmt)
        continuing = st.buf is not None
        if continuing and fmt != 3:
            raise ChunkError(
                f"chunk stream {csid}: a new type {fmt} header arrived before "
                f"its previous message was complete"
            )
        field = st.field
        length, type_id, stream_id, extended = st.length, st.type_id, st.stream_id, st.extended
        if fmt < 3:
            # shifts, not int.from_bytes of a slice: no object made, and C when compiled
            field = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
            if fmt < 2:
                length = data[pos + 3] << 16 | data[pos + 4] << 8 | data[pos + 5]
                type_id = data[pos + 6]
                if fmt == 0:  # 32 bits: shifted in a C int it would overflow, so not shifts
                    stream_id = int.from_bytes(data[pos + 7 : pos + 11], "little")
            extended = field == EXTENDED
        pos += hsize
        if extended:
            got = self._extended(pos, field, fmt, continuing)
            if got is None:
                return False
            pos, field = got
        if not continuing:
            self._check_length(csid, length)
        have = len(st.buf) if st.buf is not None else 0
        size = min(self.chunk_size, length - have)
        if len(data) < pos + size:
            return False
        # the whole chunk is here: commit
        if not continuing:
            if fmt == 0:
                st.timestamp = field
            else:
                st.timestamp = (st.timestamp + field) & TS_MASK
            st.field, st.length, st.type_id = field, length, type_id
            st.stream_id, st.extended = stream_id, extended
        if size < length and not continuing and not extended and csid < 64:
            end = self._whole(csid, pos, length)
            if end:  # a multi-chunk message whose chunks are all here, back to back
                self._pos = end
                self._emit(st, csid, self._join(pos, length), out)
                return True
        self._pos = pos + size
        self._take(st, csid, data, pos, size, out)
        return True

    def _whole(self, csid: int, pos: int, length: int) -> int:
        """Where the message starting at pos ends, if all its chunks are here with nothing
        of another chunk stream between them (the usual case); 0 otherwise."""
        data, size = self._data, self.chunk_size
        count = (length - 1) // size  # continuation chunks: 1-byte type 3 headers
        end = pos + length + count
        if len(data) < end:
            return 0
        header = 0xC0 | csid
        for k in range(1, count + 1):
            if data[pos + k * (size + 1) - 1] != header:
                return 0
        return end

    def _join(self, pos: int, length: int) -> bytes:
        """The payload of a message checked by _whole, without its chunk headers."""
        size = self.chunk_size
        step, count = size + 1, (length - 1) // size
        with memoryview(self._data) as view:  # released before feed() resizes the buffer
            parts = [view[at : at + size] for at in range(pos, pos + count * step, step)]
            at = pos + count * step
            parts.append(view[at : at + length - count * size])
            payload = b"".join(parts)
            for part in parts:
                part.release()
        return payload

    def _stream(self, csid: int, fmt: int) -> _InStream:
        st = self._streams.get(csid)
        if st is not None:
            return st
        if fmt > 1:
            raise ChunkError(
                f"chunk stream {csid} starts with a type {fmt} header, which "
                f"refers to a previous message that never came"
            )
        if len(self._streams) >= self.max_streams:
            raise ChunkError(f"more than {self.max_streams} chunk streams opened")
        st = self._streams[csid] = _InStream()
        return st

    def _extended(self, pos: int, field: int, fmt: int, continuing: bool) -> tuple[int, int] | None:
        """Read the 4-byte extended timestamp. In a continuation chunk some encoders leave
        it out: take the bytes only when they repeat the value of the message's header."""
        data = self._data
        if len(data) < pos + 4:
            return None
        value = int.from_bytes(data[pos : pos + 4], "big")
        if fmt < 3 or not continuing:
            return pos + 4, value
        return (pos + 4, field) if value == field else (pos, field)

    def _check_length(self, csid: int, length: int) -> None:
        if length > self.max_message:
            raise ChunkError(
                f"chunk stream {csid}: message of {length} bytes exceeds the "
                f"limit of {self.max_message}"
            )

    def _take(
        self, st: _InStream, csid: int, data: bytearray, pos: int, size: int, out: list[Message]
    ) -> None:
        if st.buf is None:
            if size == st.length:  # the common case: a whole message in one chunk
                with memoryview(data) as view:  # one copy, not two
                    self._emit(st, csid, bytes(view[pos : pos + size]), out)
                return
            st.buf = bytearray()
        if self._pending + size > self.max_pending:
            raise ChunkError(f"more than {self.max_pending} bytes of unfinished messages")
        st.buf += data[pos : pos + size]
        self._pending += size
        if len(st.buf) == st.length:
            payload, st.buf = bytes(st.buf), None  # messages carry bytes, whatever path
            self._pending -= len(payload)
            self._emit(st, csid, payload, out)

    def _emit(self, st: _InStream, csid: int, payload: bytes, out: list[Message]) -> None:
        msg = Message(csid, st.type_id, st.stream_id, st.timestamp, payload)
        if st.stream_id == 0 and msg.type_id in (SET_CHUNK_SIZE, ABORT):
            self._control(msg)
        out.append(msg)

    def _control(self, msg: Message) -> None:
        if len(msg.payload) < 4:
            raise ChunkError(f"control message type {msg.type_id} shorter than 4 bytes")
        value = _U32.unpack_from(msg.payload)[0]
        if msg.type_id == SET_CHUNK_SIZE:
            value &= 0x7FFFFFFF
            if not 1 <= value <= MAX_CHUNK_SIZE:
                raise ChunkError(f"invalid chunk size {value} (allowed 1..{MAX_CHUNK_SIZE})")
            self.chunk_size = value
            return
        st = self._streams.get(value)
        if st is not None and st.buf is not None:
            self._pending -= len(st.buf)
            st.buf = None


# -- writer --


class _OutStream:
    __slots__ = ("field", "length", "relative", "stream_id", "timestamp", "type_id")

    def __init__(
        self, timestamp: int, field: int, length: int, type_id: int, stream_id: int, relative: bool
    ) -> None:
        self.timestamp, self.field, self.length = timestamp, field, length
        self.type_id, self.stream_id, self.relative = type_id, stream_id, relative


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    rest = csid - 64
    return bytes(((fmt << 6) | 1, rest & 0xFF, rest >> 8))


class ChunkWriter:
    """Messages -> chunk bytes. Never sends a type 3 header right after a type 0 one for a
    new message: readers disagree on what that means."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}

    def message(
        self,
        csid: int,
        type_id: int,
        stream_id: int,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
        prefix: bytes = b"",
    ) -> bytes:
        """The chunks of one message whose payload is prefix + payload (the prefix lets a
        caller put a tag header before frame bytes without copying them twice)."""
        if not 2 <= csid <= 65599:
            raise ValueError(f"chunk stream id {csid} out of range")
        length = len(prefix) + len(payload)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes is too large for RTMP")
        fmt, field = self._header_kind(csid, type_id, stream_id, timestamp & TS_MASK, length)
        parts: list[bytes | memoryview] = [
            self._header(fmt, csid, field, length, type_id, stream_id)
        ]
        self._chunk_parts(parts, csid, field, prefix, memoryview(payload))
        return b"".join(parts)

    def _header_kind(
        self, csid: int, type_id: int, stream_id: int, ts: int, length: int
    ) -> tuple[int, int]:
        prev = self._streams.get(csid)
        delta = (ts - prev.timestamp) & TS_MASK if prev is not None else 0
        if prev is None or prev.stream_id != stream_id or delta >= 0x80000000:
            fmt, field, relative = 0, ts, False
        elif prev.length != length or prev.type_id != type_id:
            fmt, field, relative = 1, delta, True
        elif prev.relative and prev.field == delta:
            fmt, field, relative = 3, delta, True
        else:
            fmt, field, relative = 2, delta, True
        self._streams[csid] = _OutStream(ts, field, length, type_id, stream_id, relative)
        return fmt, field

    @staticmethod
    def _header(
        fmt: int, csid: int, field: int, length: int, type_id: int, stream_id: int
    ) -> bytes:
        head = bytearray(_basic_header(fmt, csid))
        ts_field = min(field, EXTENDED)
        if fmt < 3:
            head += ts_field.to_bytes(3, "big")
            if fmt < 2:
                head += length.to_bytes(3, "big")
                head.append(type_id)
                if fmt == 0:
                    head += stream_id.to_bytes(4, "little")
        if field >= EXTENDED:
            head += _U32.pack(field)
        return bytes(head)

    def _chunk_parts(
        self,
        parts: list[bytes | memoryview],
        csid: int,
        field: int,
        prefix: bytes,
        payload: memoryview,
    ) -> None:
        size = self.chunk_size
        cont = _basic_header(3, csid)
        if field >= EXTENDED:
            cont += _U32.pack(field)
        room = size
        if prefix:
            parts.append(prefix[:size])
            if len(prefix) > size:  # only tiny prefixes are expected; keep it simple
                payload = memoryview(bytes(prefix[size:]) + bytes(payload))
            room = max(size - len(prefix), 0)
            if room == 0 and len(payload):
                parts.append(cont)
                room = size
        parts.append(payload[:room])
        for off in range(room, len(payload), size):
            parts.append(cont)
            parts.append(payload[off : off + size])
