"""Send a viewer's frames on the nominated ICE pair's own socket: RTP headers, SRTP and
UDP in one call per frame (frame_send_c, compiled; frame_send, its plain-Python twin), in
as few syscalls as the kernel allows (UDP GSO: one sendmsg per run of equal-size packets).

Reads aiortc's DTLS and ICE transports' private state (the SRTP session, the nominated
pair): only senders patched by patches/aiortc_fast_sender come here, and that patch checks
the aiortc version it was written for.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

from aioice.ice import StunProtocol
from aiortc.rtcdtlstransport import State

from media_server.patches.aiortc_fast_sender import count_transport_sent
from media_server.webrtc import frame_send
from media_server.webrtc.frame_send import gso_runs

__all__ = ["UdpPath", "gso_runs"]

log = logging.getLogger(__name__)

USE_GSO = True  # benches turn it off to measure what it saves
USE_COMPILED = True

try:
    from media_server.webrtc import frame_send_c
except ImportError:  # not built: the twin sends the same bytes, slower
    frame_send_c = None  # type: ignore[assignment]


def frame_sender(session: Any, sock: socket.socket, addr: tuple[str, int], gso: bool) -> Any:
    """The compiled sender where it is built and can take this session and address, else
    its plain-Python twin."""
    if frame_send_c is not None and USE_COMPILED:
        try:
            return frame_send_c.FrameSender(session, sock, addr, gso)
        except (TypeError, ValueError) as exc:
            log.debug("compiled send path not used: %s", exc)
    return frame_send.FrameSender(session, sock, addr, gso)


class UdpPath:
    """SRTP-protect and send on the nominated ICE pair's own socket, skipping four
    coroutine layers per packet (DTLS transport -> ICE transport -> aioice -> protocol).
    Only for a plain UDP pair (host/srflx); TURN relays keep aiortc's path."""

    def __init__(self, dtls: Any, pair: Any) -> None:
        self.dtls = dtls
        self.transport = pair.protocol.transport
        self.addr = pair.remote_addr
        sock = getattr(self.transport.get_extra_info("socket"), "_sock", None)
        if not isinstance(sock, socket.socket):
            raise ValueError("no socket under this ICE pair's transport")
        gso = USE_GSO and sys.platform == "linux"
        self.out = frame_sender(dtls._tx_srtp, sock, self.addr, gso)
        self.bytes = self.packets = 0

    @classmethod
    def of(cls, dtls: Any) -> UdpPath | None:
        try:
            pair = dtls.transport._connection._nominated.get(1)
        except AttributeError:
            return None  # not aiortc's transports (tests) or its internals changed
        if pair is None or type(pair.protocol) is not StunProtocol:
            return None
        try:
            return cls(dtls, pair)
        except ValueError:
            return None

    @property
    def up(self) -> bool:
        return bool(self.dtls._state == State.CONNECTED)

    @property
    def batches(self) -> int:
        return int(self.out.batches)

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
    ) -> None:
        """Packetize, protect and send one frame, in order. What the socket buffer did not
        take, and everything while asyncio still holds earlier datagrams, goes through the
        transport, which queues it."""
        if self.transport.get_write_buffer_size():
            packets = frame_send.rtp_packets(
                first, payload_type, seq, timestamp, ssrc, extension, payloads, history
            )
            left = [self.dtls._tx_srtp.protect(p) for p in packets]
            size = sum(map(len, left))
        else:
            size, left = self.out.send_frame(
                first, payload_type, seq, timestamp, ssrc, extension, payloads, history
            )
        for data in left:
            self.transport.sendto(data, self.addr)
        self.bytes += size
        self.packets += len(payloads)

    def account(self) -> None:
        """The DTLS transport's counters (getStats) as if its own path had sent them."""
        count_transport_sent(self.dtls, self.bytes, self.packets)
        self.bytes = self.packets = 0
