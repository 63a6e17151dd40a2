"""SRTP-protect and send a frame's RTP packets on the nominated ICE pair's own socket, in
as few syscalls as the kernel allows (UDP GSO: one sendmsg per run of equal-size packets).

Reads aiortc's DTLS and ICE transports' private state (the SRTP session, the nominated
pair): only senders patched by patches/aiortc_fast_sender come here, and that patch checks
the aiortc version it was written for.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from struct import pack
from typing import Any

from aioice.ice import StunProtocol
from aiortc.rtcdtlstransport import State

from media_server.patches.aiortc_fast_sender import count_transport_sent

log = logging.getLogger(__name__)

UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # linux/udp.h; Python 3.11 lacks the name
GSO_MAX_SEGMENTS = 64  # the kernel's limit before 6.x raised it to 128
GSO_MAX_BYTES = 65000  # one UDP datagram of at most 64 KiB before segmentation
USE_GSO = True  # benches turn it off to measure what it saves
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


class UdpPath:
    """SRTP-protect and send on the nominated ICE pair's own socket, skipping four
    coroutine layers per packet (DTLS transport -> ICE transport -> aioice -> protocol).
    Only for a plain UDP pair (host/srflx); TURN relays keep aiortc's path."""

    def __init__(self, dtls: Any, pair: Any) -> None:
        self.dtls = dtls
        self.protect = dtls._tx_srtp.protect
        transport = pair.protocol.transport
        self.sendto = transport.sendto
        self.addr = pair.remote_addr
        raw = getattr(transport.get_extra_info("socket"), "_sock", None)
        self.sock: socket.socket | None = raw if USE_GSO and sys.platform == "linux" else None
        self.bytes = self.packets = self.batches = 0

    @classmethod
    def of(cls, dtls: Any) -> UdpPath | None:
        try:
            pair = dtls.transport._connection._nominated.get(1)
        except AttributeError:
            return None  # not aiortc's transports (tests) or its internals changed
        if pair is None or type(pair.protocol) is not StunProtocol:
            return None
        return cls(dtls, pair)

    @property
    def up(self) -> bool:
        return bool(self.dtls._state == State.CONNECTED)

    def send(self, packets: list[bytes]) -> None:
        """Protect and send one frame's packets, in order."""
        protect = self.protect
        wire = [protect(p) for p in packets]
        self.bytes += sum(map(len, wire))
        self.packets += len(wire)
        if self.sock is None or len(wire) == 1:
            for data in wire:
                self.sendto(data, self.addr)
            return
        for start, end in gso_runs([len(w) for w in wire]):
            self._send_run(wire[start:end])

    def _send_run(self, run: list[bytes]) -> None:
        self.batches += 1
        if len(run) == 1 or self.sock is None:
            for data in run:
                self.sendto(data, self.addr)
            return
        try:
            self.sock.sendmsg(
                run, [(socket.SOL_UDP, UDP_SEGMENT, pack("=H", len(run[0])))], 0, self.addr
            )
        except BlockingIOError:
            pass  # socket buffer full: lost like on the wire; NACK/RTX may repair
        except OSError as exc:
            if exc.errno not in GSO_REFUSED:
                return  # e.g. ICMP unreachable reported late: the session ends elsewhere
            log.info("UDP GSO refused on this path (%s): sending packet by packet", exc)
            self.sock = None
            for data in run:
                self.sendto(data, self.addr)

    def account(self) -> None:
        """The DTLS transport's counters (getStats) as if its own path had sent them."""
        count_transport_sent(self.dtls, self.bytes, self.packets)
        self.bytes = self.packets = 0
