"""AMF0 encode/decode (the value format of RTMP commands and metadata), pure functions.

Mapping: number <-> float (ints encode as numbers), boolean <-> bool, string and long
string <-> str, object <-> dict, ECMA array <-> EcmaArray (a dict), strict array <-> list,
null <-> None, undefined <-> UNDEFINED, date -> AmfDate, XML document -> str, typed object
-> TypedObject. Decoding is bounded: nesting depth, counts checked against the bytes left.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from media_server.rtmp.errors import RtmpProtocolError

MAX_DEPTH = 32

NUMBER, BOOLEAN, STRING, OBJECT, MOVIECLIP, NULL, UNDEFINED_MARKER, REFERENCE = range(8)
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING, UNSUPPORTED = range(8, 14)
RECORDSET, XML_DOCUMENT, TYPED_OBJECT, AVMPLUS = range(14, 18)

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class AmfError(RtmpProtocolError):
    """Malformed AMF0."""


class _Undefined:
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


class EcmaArray(dict[str, Any]):
    """An associative array (onMetaData uses one); encodes back as ECMA array."""


class TypedObject(dict[str, Any]):
    """An object with a class name (rare; decoded so that strict clients still parse)."""

    def __init__(self, class_name: str, *args: Any) -> None:
        super().__init__(*args)
        self.class_name = class_name


@dataclass(frozen=True, slots=True)
class AmfDate:
    millis: float
    timezone: int = 0


# -- decode --


class _Reader:
    __slots__ = ("data", "pos", "refs")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.refs: list[Any] = []

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError(
                f"AMF0 value truncated: need {n} bytes at offset {self.pos}, "
                f"have {len(self.data) - self.pos}"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def text(self, n: int) -> str:
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AmfError(f"AMF0 string is not valid UTF-8 at offset {self.pos - n}") from exc

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def decode(data: bytes | bytearray | memoryview) -> list[Any]:
    """All values in data, in order (a command is name, transaction id, then arguments)."""
    reader = _Reader(data)
    values: list[Any] = []
    while reader.left:
        values.append(_value(reader, 0))
    return values


def _value(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AmfError(f"AMF0 nesting deeper than {MAX_DEPTH}")
    marker = r.u8()
    if marker == NUMBER:
        return _DOUBLE.unpack(r.take(8))[0]
    if marker == BOOLEAN:
        return r.u8() != 0
    if marker == STRING:
        return r.text(r.u16())
    if marker in (NULL, UNSUPPORTED):
        return None
    if marker == UNDEFINED_MARKER:
        return UNDEFINED
    if marker in (LONG_STRING, XML_DOCUMENT):
        return r.text(r.u32())
    if marker == DATE:
        millis, tz = _DATE.unpack(r.take(10))
        return AmfDate(millis, tz)
    return _complex(r, marker, depth)


def _complex(r: _Reader, marker: int, depth: int) -> Any:
    if marker == OBJECT:
        return _properties(r, {}, depth)
    if marker == ECMA_ARRAY:
        r.u32()  # a hint only; encoders disagree with it, the end marker decides
        return _properties(r, EcmaArray(), depth)
    if marker == TYPED_OBJECT:
        return _properties(r, TypedObject(r.text(r.u16())), depth)
    if marker == STRICT_ARRAY:
        return _strict_array(r, depth)
    if marker == REFERENCE:
        index = r.u16()
        if index >= len(r.refs):
            raise AmfError(f"AMF0 reference {index} to an object not seen yet")
        return r.refs[index]
    if marker == OBJECT_END:
        raise AmfError("AMF0 object-end marker outside an object")
    if marker == AVMPLUS:
        raise AmfError("AMF3 values are not supported: use objectEncoding 0 (AMF0)")
    raise AmfError(f"unknown AMF0 type marker 0x{marker:02x}")


def _properties(r: _Reader, into: dict[str, Any], depth: int) -> dict[str, Any]:
    r.refs.append(into)
    while True:
        name = r.text(r.u16())
        if not name and r.left and r.data[r.pos] == OBJECT_END:
            r.pos += 1
            return into
        into[name] = _value(r, depth + 1)


def _strict_array(r: _Reader, depth: int) -> list[Any]:
    count = r.u32()
    if count > r.left:  # every value takes at least one byte
        raise AmfError(f"AMF0 strict array claims {count} items, only {r.left} bytes left")
    items: list[Any] = []
    r.refs.append(items)
    for _ in range(count):
        items.append(_value(r, depth + 1))
    return items


# -- encode --


def encode(*values: Any) -> bytes:
    out = bytearray()
    for value in values:
        _encode(out, value, 0)
    return bytes(out)


def _encode(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AmfError(f"AMF0 nesting deeper than {MAX_DEPTH}")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, int(value)))
    elif isinstance(value, (int, float)):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        _encode_string(out, value)
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += _DATE.pack(value.millis, value.timezone)
    elif isinstance(value, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode(out, item, depth + 1)
    elif isinstance(value, dict):
        _encode_dict(out, value, depth)
    else:
        raise AmfError(f"cannot encode {type(value).__name__} as AMF0")


def _encode_string(out: bytearray, value: str) -> None:
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        out.append(LONG_STRING)
        out += _U32.pack(len(raw))
    else:
        out.append(STRING)
        out += _U16.pack(len(raw))
    out += raw


def _encode_dict(out: bytearray, value: dict[Any, Any], depth: int) -> None:
    if isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
    elif isinstance(value, TypedObject):
        out.append(TYPED_OBJECT)
        _key(out, value.class_name)
    else:
        out.append(OBJECT)
    for key, item in value.items():
        _key(out, str(key))
        _encode(out, item, depth + 1)
    out += b"\x00\x00\x09"


def _key(out: bytearray, key: str) -> None:
    raw = key.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise AmfError("AMF0 property name longer than 65535 bytes")
    out += _U16.pack(len(raw))
    out += raw
