"""The compiled per-viewer send path (frame_send_c) and its plain-Python twin (frame_send)
put the same bytes on the wire and in the NACK history, and what they send is SRTP a
receiver with the same key decrypts to the RTP packets built."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pylibsrtp import Policy, Session

from media_server.webrtc import frame_send

KEY = bytes(range(30))  # AES-128 key + 14-byte salt
SSRC = 0x11223344
EXTENSION = b"\xbe\xde\x00\x02\x10\x30\x22\x12\x34\x56\x00\x00"  # MID "0", abs-send-time

# (payloads, seq, timestamp): STAP-A then equal FU-As closed by a shorter one, a long
# keyframe (more than one GSO run), one Opus-sized packet, sequence numbers wrapping
FRAMES: list[tuple[list[bytes], int, int]] = [
    (
        [b"\x78" + b"s" * 30] + [bytes([0x7C, i]) * 600 for i in range(6)] + [b"z" * 1190],
        65530,
        9000,
    ),
    ([os.urandom(1200) for _ in range(70)] + [os.urandom(77)], 3, 12000),
    ([os.urandom(120)], 74, 0xFFFFFFFF),
]


GCM = Policy.SRTP_PROFILE_AEAD_AES_128_GCM  # what aiortc and Chromium negotiate
CM = Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def outbound(profile: int = CM) -> Session:
    return Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))


def compiled() -> type[Any]:
    try:
        from media_server.webrtc import frame_send_c
    except ImportError:
        pytest.fail("frame_send_c is not built (python setup.py build_ext --inplace)")
    return frame_send_c.FrameSender  # type: ignore[no-any-return]


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    viewer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    viewer.bind(("127.0.0.1", 0))
    viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    viewer.settimeout(2)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    yield viewer, server
    viewer.close()
    server.close()


def send_all(  # type: ignore[no-untyped-def]
    sender_type: type[Any], server: socket.socket, viewer: socket.socket, gso: bool, profile: int
):
    sender = sender_type(outbound(profile), server, viewer.getsockname(), gso)
    history: dict[int, Any] = {}
    sizes, datagrams = [], []
    for payloads, seq, ts in FRAMES:
        size, left = sender.send_frame(0x90, 102, seq, ts, SSRC, EXTENSION, payloads, history)
        assert left == [], "a 1 MiB buffer takes every packet"
        sizes.append(size)
        datagrams += [viewer.recv(2048) for _ in payloads]
    return sizes, datagrams, history, sender.batches


@pytest.mark.parametrize("profile", [GCM, CM], ids=["aes-gcm", "aes-cm-sha1"])
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "sendto"])
def test_compiled_and_python_send_the_same_bytes(
    sockets: tuple[socket.socket, socket.socket], gso: bool, profile: int
) -> None:
    viewer, server = sockets
    py = send_all(frame_send.FrameSender, server, viewer, gso, profile)
    c = send_all(compiled(), server, viewer, gso, profile)
    assert c[1] == py[1], "the same datagrams, in the same order"
    assert c[0] == py[0], "the same bytes counted per frame"
    assert sum(c[0]) == sum(map(len, c[1]))
    assert c[2] == py[2], "the same NACK history"
    assert c[3] == py[3], "the same syscall batching"
    # a receiver decrypts each to the RTP packet built, marker on each frame's last
    inbound = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    plain = [inbound.unprotect(d) for d in c[1]]
    expected: list[bytes] = []
    for payloads, seq, ts in FRAMES:
        expected += frame_send.rtp_packets(0x90, 102, seq, ts, SSRC, EXTENSION, payloads, {})
    assert plain == expected
    assert [p[1] >> 7 for p in plain[:9]] == [0] * 7 + [1, 0]
    assert len(c[1]) == sum(len(f[0]) for f in FRAMES)


def test_compiled_sender_takes_only_a_pylibsrtp_session(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    viewer, server = sockets
    with pytest.raises(TypeError):
        compiled()(object(), server, viewer.getsockname(), True)
    with pytest.raises(ValueError, match="not an IP address"):
        compiled()(outbound(), server, ("viewer.example", 9), True)
    with pytest.raises(ValueError, match="too long"):
        compiled()(outbound(), server, viewer.getsockname(), True).send_frame(
            0x80, 96, 0, 0, 1, b"", [b"x" * 1400], {}
        )
