"""AMF0 from bytes: what clients send, what we answer, what hostile input gets."""

import struct

import pytest

from media_server.rtmp import amf0
from media_server.rtmp.amf0 import AmfDate, AmfError, EcmaArray, TypedObject


def s(text: str) -> bytes:
    return struct.pack(">H", len(text)) + text.encode()


def test_result_bytes_exact() -> None:
    assert amf0.encode("_result", 1, None) == (
        b"\x02" + s("_result") + b"\x00" + struct.pack(">d", 1.0) + b"\x05"
    )


def test_connect_command_as_ffmpeg_sends_it() -> None:
    raw = (
        b"\x02"
        + s("connect")
        + b"\x00"
        + struct.pack(">d", 1.0)
        + b"\x03"
        + s("app")
        + b"\x02"
        + s("live")
        + s("type")
        + b"\x02"
        + s("nonprivate")
        + s("flashVer")
        + b"\x02"
        + s("FMLE/3.0 (compatible; Lavf59.27.100)")
        + s("tcUrl")
        + b"\x02"
        + s("rtmp://127.0.0.1:1935/live")
        + b"\x00\x00\x09"
    )
    name, txid, obj = amf0.decode(raw)
    assert (name, txid) == ("connect", 1.0)
    assert obj == {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; Lavf59.27.100)",
        "tcUrl": "rtmp://127.0.0.1:1935/live",
    }


def test_round_trip_of_every_type() -> None:
    values = [
        "x" * 70000,
        "",
        0.5,
        -3,
        True,
        False,
        None,
        amf0.UNDEFINED,
        {"a": [1.0, "b", {"c": None}]},
        EcmaArray(width=320.0, height=240.0),
        AmfDate(1.7e12, 0),
        TypedObject("flex.Thing", {"k": 1.0}),
        [],
    ]
    decoded = amf0.decode(amf0.encode(*values))
    assert decoded[0] == "x" * 70000
    assert decoded[1:8] == ["", 0.5, -3.0, True, False, None, amf0.UNDEFINED]
    assert decoded[8] == {"a": [1.0, "b", {"c": None}]}
    assert isinstance(decoded[9], EcmaArray) and decoded[9] == {"width": 320.0, "height": 240.0}
    assert decoded[10] == AmfDate(1.7e12, 0)
    assert isinstance(decoded[11], TypedObject) and decoded[11].class_name == "flex.Thing"
    assert decoded[12] == []


def test_ecma_array_count_is_only_a_hint() -> None:
    raw = b"\x08" + struct.pack(">I", 99) + s("duration") + b"\x00" + bytes(8) + b"\x00\x00\x09"
    assert amf0.decode(raw) == [{"duration": 0.0}]


def test_reference_to_an_earlier_object() -> None:
    raw = b"\x03" + s("a") + b"\x02" + s("b") + b"\x00\x00\x09" + b"\x07\x00\x00"
    first, second = amf0.decode(raw)
    assert second is first


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\x02\x00\x05ab", "truncated"),
        (b"\x00\x01\x02", "truncated"),
        (b"\x03" + s("a"), "truncated"),
        (b"\x42", "unknown AMF0 type"),
        (b"\x11\x0a", "AMF3"),
        (b"\x09", "object-end"),
        (b"\x07\x00\x03", "reference"),
        (b"\x02\x00\x02\xff\xfe", "UTF-8"),
        (b"\x0a\xff\xff\xff\xff\x05", "strict array"),
        (b"\x0a\x00\x00\x00\x01" * 40 + b"\x05", "nesting"),
    ],
)
def test_malformed_input_gets_a_clear_error(raw: bytes, words: str) -> None:
    with pytest.raises(AmfError, match=words):
        amf0.decode(raw)


def test_cannot_encode_foreign_types() -> None:
    with pytest.raises(AmfError, match="cannot encode"):
        amf0.encode(object())
