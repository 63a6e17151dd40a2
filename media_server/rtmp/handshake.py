"""The RTMP handshake, server side (the plain variant every client accepts when the
server's S1 carries a zero version: ffmpeg, OBS/librtmp, nginx-rtmp relays).

C0 (1 byte version) + C1 (1536 bytes) in; S0 + S1 + S2 out; C2 (1536 bytes) in, not
checked: clients differ in what they echo and nothing depends on it.
"""

from __future__ import annotations

import os
import struct

from media_server.rtmp.errors import RtmpProtocolError

VERSION = 3
PACKET_SIZE = 1536
C0C1_SIZE = 1 + PACKET_SIZE


class HandshakeError(RtmpProtocolError):
    """Not an RTMP client, or one asking for something we do not speak."""


def check_c0(version: int) -> None:
    if version == VERSION:
        return
    if version in (6, 8, 9):
        raise HandshakeError(
            f"encrypted RTMP (RTMPE, version {version}) is not supported: use plain rtmp://"
        )
    if version == 0x16:
        raise HandshakeError(
            "not an RTMP client: a TLS handshake (rtmps:// is not served on this port)"
        )
    if version in (ord("G"), ord("P"), ord("H"), ord("O")):
        raise HandshakeError("not an RTMP client: an HTTP request sent to the RTMP port")
    raise HandshakeError(f"not an RTMP client (handshake version {version}, expected 3)")


def server_response(c0c1: bytes, uptime_ms: int) -> bytes:
    """S0 + S1 + S2 for a received C0 + C1."""
    if len(c0c1) != C0C1_SIZE:
        raise HandshakeError(f"handshake C0+C1 of {len(c0c1)} bytes, expected {C0C1_SIZE}")
    check_c0(c0c1[0])
    s1 = struct.pack(">II", uptime_ms & 0xFFFFFFFF, 0) + os.urandom(PACKET_SIZE - 8)
    # S2 echoes C1 whole: librtmp (OBS) compares all 1536 bytes, others only the random part
    return bytes((VERSION,)) + s1 + c0c1[1:]
