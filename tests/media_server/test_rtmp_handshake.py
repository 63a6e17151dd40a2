"""The server side of the RTMP handshake, from bytes."""

import pytest

from media_server.rtmp import handshake
from media_server.rtmp.handshake import HandshakeError


def test_plain_handshake_answer() -> None:
    c1 = bytes(range(256)) * 6
    answer = handshake.server_response(b"\x03" + c1, 1234)
    assert len(answer) == 1 + 2 * 1536
    assert answer[0] == 3
    s1, s2 = answer[1:1537], answer[1537:]
    assert s1[:4] == (1234).to_bytes(4, "big")
    assert s1[4:8] == bytes(4), "zero version: clients skip the digest check"
    assert s2 == c1


@pytest.mark.parametrize(
    "first, words",
    [
        (b"G", "an HTTP request"),
        (b"\x16", "a TLS handshake"),
        (b"\x06", "RTMPE"),
        (b"\x01", "version 1, expected 3"),
    ],
)
def test_wrong_first_byte_is_named(first: bytes, words: str) -> None:
    with pytest.raises(HandshakeError, match=words):
        handshake.server_response(first + bytes(1536), 0)


def test_short_c1() -> None:
    with pytest.raises(HandshakeError, match="expected 1537"):
        handshake.server_response(b"\x03" + bytes(100), 0)
