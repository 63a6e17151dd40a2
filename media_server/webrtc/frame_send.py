"""One viewer's frame out to the wire: RTP headers, NACK history, SRTP, UDP (GSO).

The plain-Python twin of frame_send_c.pyx, byte for byte (tests/media_server/
test_frame_send.py sends the same frames through both and compares the datagrams). The
compiled one runs where setup.py built it and the SRTP session is pylibsrtp's; this one
runs elsewhere (no build, another SRTP object in tests).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from struct import pack
from typing import Any

log = logging.getLogger(__name__)

RTP_HISTORY_SIZE = 128  # aiortc.rtp.RTP_HISTORY_SIZE: its NACK handler reads this dict
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # linux/udp.h; Python 3.11 lacks the name
GSO_MAX_SEGMENTS = 64  # the kernel's limit before 6.x raised it to 128
GSO_MAX_BYTES = 65000  # one UDP datagram of at most 64 KiB before segmentation
GSO_REFUSED = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


def gso_runs(
    sizes: list[int], max_segments: int = GSO_MAX_SEGMENTS, max_bytes: int = GSO_MAX_BYTES
) -> list[tuple[int, int]]:
    """Split packets into [start, end) runs the kernel can segment from one buffer: all of
    a run's packets have its first packet's size, except that the last may be shorter."""
    runs: list[tuple[int, int]] = []
    start = 0
    while start < len(sizes):
        size, end, total = sizes[start], start + 1, sizes[start]
        while (
            end < len(sizes)
            and end - start < max_segments
            and total + sizes[end] <= max_bytes
            and sizes[end] <= size
        ):
            total += sizes[end]
            end += 1
            if sizes[end - 1] < size:
                break  # a shorter packet can only close a run
        runs.append((start, end))
        start = end
    return runs


def rtp_packets(
    first: int,
    payload_type: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    extension: bytes,
    payloads: Sequence[bytes],
    history: dict[int, Any],
) -> list[bytes]:
    """One frame's RTP packets (marker on the last), each also kept in the NACK history."""
    packets = []
    last = len(payloads) - 1
    for i, payload in enumerate(payloads):
        marker = 0x80 if i == last else 0
        data = pack("!BBHLL", first, marker | payload_type, seq, timestamp, ssrc)
        data += extension + payload
        history[seq % RTP_HISTORY_SIZE] = (seq, data)
        packets.append(data)
        seq = (seq + 1) & 0xFFFF
    return packets


class FrameSender:
    """Sends frames to one address on a non-blocking UDP socket, protected by `session`
    (anything with protect(bytes) -> bytes)."""

    def __init__(self, session: Any, sock: socket.socket, addr: tuple[str, int], gso: bool) -> None:
        self.protect = session.protect
        self.sock = sock
        self.addr = addr
        self.gso = gso
        self.batches = 0

    def send_frame(
        self,
        first: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extension: bytes,
        payloads: Sequence[bytes],
        history: dict[int, Any],
    ) -> tuple[int, list[bytes]]:
        """Send one frame; (bytes on the wire, packets left because the socket buffer was
        full: the caller queues them)."""
        packets = rtp_packets(
            first, payload_type, seq, timestamp, ssrc, extension, payloads, history
        )
        wire = [self.protect(p) for p in packets]
        size = sum(map(len, wire))
        for start, end in gso_runs([len(w) for w in wire]):
            sent = self._send_run(wire[start:end])
            if sent < end - start:
                return size, wire[start + sent :]
        return size, []

    def _send_run(self, run: list[bytes]) -> int:
        """How many of the run's packets left (or were lost) before the buffer filled."""
        self.batches += 1
        if len(run) > 1 and self.gso:
            try:
                self.sock.sendmsg(
                    run, [(socket.SOL_UDP, UDP_SEGMENT, pack("=H", len(run[0])))], 0, self.addr
                )
                return len(run)
            except BlockingIOError:
                return 0
            except OSError as exc:
                if exc.errno not in GSO_REFUSED:
                    return len(run)  # e.g. ICMP unreachable reported late: the session ends
                log.info("UDP GSO refused on this path (%s): sending packet by packet", exc)
                self.gso = False
        for i, data in enumerate(run):
            try:
                self.sock.sendto(data, self.addr)
            except BlockingIOError:
                return i
            except OSError:
                pass  # as above
        return len(run)
