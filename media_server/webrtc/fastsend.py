"""A lean, synchronous RTP send path for senders whose payloads are computed once per stream.

aiortc's RTCRtpSender._run_rtp pulls each frame from its track (one task wake-up per frame
per viewer), builds an RtpPacket object per packet, reads the wall clock through datetime
per packet and goes down four coroutine layers to the socket per packet. Here a viewer's
frame is sent by a plain call, from whoever has it (the stream's fan-out, the AAC->Opus
transcoder): the header extension block is made once per frame, each packet costs one
struct.pack for its 12-byte header and one SRTP protect, and a frame's packets leave in as
few syscalls as the kernel allows (UDP GSO: one sendmsg per run of equal-size packets).

The sender's own task (run_rtp) only binds an RtpOut to the track and then waits; it sends
only where the fast path cannot (TURN relays, tests), from a queue, in order.

Relies on aiortc 1.16 internals (name-mangled attributes): install() checks for them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
import time
from struct import pack
from typing import Any, Protocol

from aioice.ice import StunProtocol
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions, RtpPacket, wrap_rtx
from aiortc.utils import random32, uint16_add

log = logging.getLogger(__name__)

P = "_RTCRtpSender__"
NEEDED = (
    "rtp_started",
    "rtp_history",
    "rtp_header_extensions_map",
    "mid",
    "track",
    "rtp_exited",
    "ntp_timestamp",
    "rtp_timestamp",
    "octet_count",
    "packet_count",
    "rtx_payload_type",
    "rtx_sequence_number",
)
NTP_TIMESTAMP, RTP_TIMESTAMP = P + "ntp_timestamp", P + "rtp_timestamp"
OCTETS, PACKETS = P + "octet_count", P + "packet_count"

NTP_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
ABS_SEND_SENTINEL = 0xABCDEF  # located once in aiortc's serialized block, then patched
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # linux/udp.h; Python 3.11 lacks the name
GSO_MAX_SEGMENTS = 64  # the kernel's limit before 6.x raised it to 128
GSO_MAX_BYTES = 65000  # one UDP datagram of at most 64 KiB before segmentation
USE_GSO = True  # benches turn it off to measure what it saves
GSO_REFUSED = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


class Bindable(Protocol):
    """The track side: it hands this sender's frames to the RtpOut it is bound to."""

    def bind(self, out: RtpOut) -> None: ...


def install(sender: RTCRtpSender) -> None:
    """Make this sender use the lean path (call before negotiation starts it)."""
    missing = [n for n in NEEDED if not hasattr(sender, P + n)]
    if missing:
        raise RuntimeError(f"aiortc internals changed: RTCRtpSender lacks {missing}")
    sender._run_rtp = lambda codec: run_rtp(sender, codec)  # type: ignore[method-assign]
    sender._retransmit = (  # type: ignore[method-assign,assignment]
        lambda sequence_number: retransmit(sender, sequence_number)
    )


def abs_send_time() -> int:
    """Now as abs-send-time (6.18 fixed-point seconds, 24 bits), without datetime."""
    return int((time.time() + NTP_OFFSET) * 262144) & 0xFFFFFF


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
        for name in ("bytes", "packets"):
            attr = f"_RTCDtlsTransport__tx_{name}"
            setattr(self.dtls, attr, getattr(self.dtls, attr, 0) + getattr(self, name))
        self.bytes = self.packets = 0


class RtpOut:
    """One sender's RTP stream: sequence numbers, timestamps, NACK history, the socket."""

    def __init__(self, sender: RTCRtpSender, payload_type: int) -> None:
        self.sender = sender
        self.payload_type = payload_type
        self.ssrc = sender._ssrc
        self.seq = random_sequence_number()
        self.origin = random32()
        self.history: dict[int, Any] = getattr(sender, P + "rtp_history")
        self.frames = 0
        self._template = self._extension_template()
        self._path: UdpPath | None = None
        self._slow: asyncio.Queue[bytes | None] = asyncio.Queue()

    def _extension_template(self) -> tuple[bytes, bytes] | bytes | None:
        """aiortc's header extension block (MID, abs-send-time) split around the 3 bytes
        of abs-send-time, so a frame only patches them in; bytes: the block has no time;
        None: aiortc's layout is not what we expect, build the block per frame."""
        block = self._extension_block(ABS_SEND_SENTINEL)
        mark = ABS_SEND_SENTINEL.to_bytes(3, "big")
        at = block.find(mark)
        if at >= 0 and block.rfind(mark) == at:
            return block[:at], block[at + 3 :]
        return block if block == self._extension_block(0) else None

    def _extension_block(self, send_time: int) -> bytes:
        values = HeaderExtensions()
        values.mid = getattr(self.sender, P + "mid")
        values.abs_send_time = send_time
        profile, value = getattr(self.sender, P + "rtp_header_extensions_map").set(values)
        return pack("!HH", profile, len(value) >> 2) + value if value else b""

    def _extension(self) -> bytes:
        template = self._template
        if isinstance(template, tuple):
            return template[0] + abs_send_time().to_bytes(3, "big") + template[1]
        return template if template is not None else self._extension_block(abs_send_time())

    def send_frame(self, payloads: list[bytes], timestamp: int) -> None:
        """RTP-packetize (headers only: payloads are shared) and send one frame now."""
        extension = self._extension()
        first = 0x90 if extension else 0x80
        timestamp = (self.origin + timestamp) & 0xFFFFFFFF
        seq, ssrc, history, last = self.seq, self.ssrc, self.history, len(payloads) - 1
        packets = []
        for i, payload in enumerate(payloads):
            data = (
                pack(
                    "!BBHLL",
                    first,
                    (0x80 if i == last else 0) | self.payload_type,
                    seq,
                    timestamp,
                    ssrc,
                )
                + extension
                + payload
            )
            history[seq % RTP_HISTORY_SIZE] = (seq, data)
            packets.append(data)
            seq = (seq + 1) & 0xFFFF
        self.seq = seq
        self._send(packets)
        self._count(payloads, timestamp)

    def _send(self, packets: list[bytes]) -> None:
        path = self._path
        if path is None:
            path = self._path = UdpPath.of(self.sender.transport)
        if path is None:
            for data in packets:
                self._slow.put_nowait(data)
        elif path.up:
            path.send(packets)
            path.account()
        # else: DTLS is closing; the session ends, the frame is dropped like aiortc does

    def _count(self, payloads: list[bytes], timestamp: int) -> None:
        """What aiortc's RTCP loop reads for Sender Reports."""
        sender = self.sender
        self.frames += 1
        setattr(sender, NTP_TIMESTAMP, int((time.time() + NTP_OFFSET) * (1 << 32)))
        setattr(sender, RTP_TIMESTAMP, timestamp)
        setattr(sender, OCTETS, getattr(sender, OCTETS) + sum(map(len, payloads)))
        setattr(sender, PACKETS, getattr(sender, PACKETS) + len(payloads))

    def stop(self) -> None:
        self._slow.put_nowait(None)

    async def run(self) -> None:
        """Send what the fast path could not, in order, until stopped."""
        while (data := await self._slow.get()) is not None:
            await self.sender.transport._send_rtp(data)


async def run_rtp(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
    getattr(sender, P + "rtp_started").set()
    out = RtpOut(sender, codec.payloadType or 0)
    track: Bindable | None = getattr(sender, P + "track")
    try:
        if track is None or not hasattr(track, "bind"):
            raise RuntimeError("a lean sender needs a track that takes an RtpOut")
        track.bind(out)
        await out.run()
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        log.exception("RTP send path failed")
    _finish(sender)


def _finish(sender: RTCRtpSender) -> None:
    track = getattr(sender, P + "track")
    if track:
        track.stop()
        setattr(sender, P + "track", None)
    getattr(sender, P + "rtp_exited").set()


async def retransmit(sender: RTCRtpSender, sequence_number: int) -> None:
    """Resend a packet a viewer reported lost (NACK), over RTX when negotiated."""
    entry = getattr(sender, P + "rtp_history").get(sequence_number % RTP_HISTORY_SIZE)
    if not entry or entry[0] != sequence_number:
        return
    ext_map = getattr(sender, P + "rtp_header_extensions_map")
    data: bytes = entry[1]
    rtx_type = getattr(sender, P + "rtx_payload_type")
    if rtx_type is not None:
        rtx_seq = getattr(sender, P + "rtx_sequence_number")
        packet = wrap_rtx(
            RtpPacket.parse(data, ext_map),
            payload_type=rtx_type,
            sequence_number=rtx_seq,
            ssrc=sender._rtx_ssrc,
        )
        setattr(sender, P + "rtx_sequence_number", uint16_add(rtx_seq, 1))
        data = packet.serialize(ext_map)
    await sender.transport._send_rtp(data)
