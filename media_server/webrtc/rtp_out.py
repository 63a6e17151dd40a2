"""One viewer's RTP stream, sent by a plain call from whoever has the frame.

aiortc's sender pulls each frame from its track (one task wake-up per frame per viewer),
builds an RtpPacket object per packet, reads the wall clock through datetime per packet
and goes down four coroutine layers to the socket per packet. Here a viewer's frame is
sent by a plain call, from whoever has it (the stream's fan-out, the AAC->Opus
transcoder): the header extension block is made once per frame, and the frame goes to
udp_path.UdpPath, which writes each packet's 12-byte header, protects it and sends the
frame's packets in as few syscalls as the kernel allows, in one compiled call where
setup.py built frame_send_c.

The sender's own task, replaced by patches/aiortc_fast_sender, only binds an RtpOut to the
track and then waits; it sends only where the fast path cannot (TURN relays, tests), from
a queue, in order.
"""

from __future__ import annotations

import asyncio
import time
from struct import pack
from typing import Any

from aiortc import RTCRtpSender
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions
from aiortc.utils import random32

from media_server.patches import aiortc_fast_sender as internals
from media_server.webrtc.frame_send import RTP_HISTORY_SIZE as HISTORY
from media_server.webrtc.frame_send import rtp_packets
from media_server.webrtc.udp_path import UdpPath

if HISTORY != RTP_HISTORY_SIZE:  # frame_send (and its compiled twin) fill aiortc's history
    raise ImportError(f"aiortc's RTP history holds {RTP_HISTORY_SIZE} packets, not {HISTORY}")

ABS_SEND_SENTINEL = 0xABCDEF  # located once in aiortc's serialized block, then patched


def abs_send_time() -> int:
    """Now as abs-send-time (6.18 fixed-point seconds, 24 bits), without datetime."""
    return int((time.time() + internals.NTP_OFFSET) * 262144) & 0xFFFFFF


class RtpOut:
    """One sender's RTP stream: sequence numbers, timestamps, NACK history, the socket."""

    def __init__(self, sender: RTCRtpSender, payload_type: int) -> None:
        self.sender = sender
        self.payload_type = payload_type
        self.ssrc = internals.ssrc(sender)
        self.seq = random_sequence_number()
        self.origin = random32()
        self.history: dict[int, Any] = internals.rtp_history(sender)
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
        values.mid = internals.mid(self.sender)
        values.abs_send_time = send_time
        profile, value = internals.extensions_map(self.sender).set(values)
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
        path = self._path
        if path is None:
            path = self._path = UdpPath.of(self.sender.transport)
        if path is None:
            packets = rtp_packets(
                first,
                self.payload_type,
                self.seq,
                timestamp,
                self.ssrc,
                extension,
                payloads,
                self.history,
            )
            for data in packets:
                self._slow.put_nowait(data)
        elif path.up:
            path.send_frame(
                first,
                self.payload_type,
                self.seq,
                timestamp,
                self.ssrc,
                extension,
                payloads,
                self.history,
            )
            path.account()
        # else: DTLS is closing; the session ends, the frame is dropped like aiortc does
        self.seq = (self.seq + len(payloads)) & 0xFFFF
        self.frames += 1
        internals.count_sent(self.sender, timestamp, sum(map(len, payloads)), len(payloads))

    def stop(self) -> None:
        self._slow.put_nowait(None)

    async def run(self) -> None:
        """Send what the fast path could not, in order, until stopped."""
        while (data := await self._slow.get()) is not None:
            await internals.send_rtp(self.sender, data)
