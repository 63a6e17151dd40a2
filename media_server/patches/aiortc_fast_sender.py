"""aiortc's RTCRtpSender made to send frames pushed to it instead of pulling them.

aiortc's sender runs a task per sender that pulls each frame from its track, encodes it
and sends it packet by packet (RTCRtpSender._run_rtp). A WHEP viewer's frames are already
encoded, and computed once per stream, so that task is replaced: it hands the track an
output (webrtc/rtp_out.RtpOut) through which whoever has a frame sends it at once, and
waits for it to end. The output keeps the sender's private state up to date, through the
functions here: the RTP history (which holds the sent bytes, so the NACK handler
`_retransmit` is replaced to resend from it) and the counters aiortc's RTCP loop reads for
Sender Reports and getStats (the DTLS transport's ones too).

Written against aiortc 1.16 (name-mangled attributes): install() checks the version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCDtlsTransport, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensionsMap, RtpPacket, wrap_rtx
from aiortc.utils import uint16_add

from media_server.patches import require_version

log = logging.getLogger(__name__)

SUPPORTED = ("1.16.0",)
WHY = "RTCRtpSender's send loop, retransmission and Sender Report counters"
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


class Output(Protocol):
    """One sender's RTP stream: the track sends through it; run() ends when it stops."""

    async def run(self) -> None: ...


OutputFactory = Callable[[RTCRtpSender, int], Output]  # (sender, payload type)


def check() -> None:
    require_version("aiortc", SUPPORTED, WHY)


def install(sender: RTCRtpSender, output: OutputFactory) -> None:
    """Make this sender send through `output(sender, payload_type)`, bound to its track
    (call before negotiation starts it)."""
    check()
    missing = [n for n in NEEDED if not hasattr(sender, P + n)]
    if missing:
        raise RuntimeError(f"aiortc internals changed: RTCRtpSender lacks {missing}")
    sender._run_rtp = lambda codec: run_rtp(sender, codec, output)  # type: ignore[method-assign]
    sender._retransmit = (  # type: ignore[method-assign]
        lambda sequence_number: retransmit(sender, sequence_number)
    )


async def run_rtp(
    sender: RTCRtpSender, codec: RTCRtpCodecParameters, output: OutputFactory
) -> None:
    """The sender's RTP task: bind an output to the track, then wait until it ends."""
    getattr(sender, P + "rtp_started").set()
    out = output(sender, codec.payloadType or 0)
    track: Any = getattr(sender, P + "track")
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
    """What aiortc's own task does on its way out (stop() waits for rtp_exited)."""
    track = getattr(sender, P + "track")
    if track:
        track.stop()
        setattr(sender, P + "track", None)
    getattr(sender, P + "rtp_exited").set()


async def retransmit(sender: RTCRtpSender, sequence_number: int) -> None:
    """Resend a packet a viewer reported lost (NACK), over RTX when negotiated."""
    entry = rtp_history(sender).get(sequence_number % RTP_HISTORY_SIZE)
    if not entry or entry[0] != sequence_number:
        return
    ext_map = extensions_map(sender)
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
    await send_rtp(sender, data)


# -- the sender's private state, as the output reads and keeps it --
def ssrc(sender: RTCRtpSender) -> int:
    return int(sender._ssrc)


def rtp_history(sender: RTCRtpSender) -> dict[int, Any]:
    """seq % RTP_HISTORY_SIZE -> (seq, packet bytes): what retransmit() resends from."""
    history: dict[int, Any] = getattr(sender, P + "rtp_history")
    return history


def mid(sender: RTCRtpSender) -> str | None:
    value: str | None = getattr(sender, P + "mid")
    return value


def extensions_map(sender: RTCRtpSender) -> HeaderExtensionsMap:
    ext_map: HeaderExtensionsMap = getattr(sender, P + "rtp_header_extensions_map")
    return ext_map


def count_sent(sender: RTCRtpSender, rtp_timestamp: int, octets: int, packets: int) -> None:
    """A frame sent: what aiortc's RTCP loop reads for Sender Reports and getStats."""
    setattr(sender, NTP_TIMESTAMP, int((time.time() + NTP_OFFSET) * (1 << 32)))
    setattr(sender, RTP_TIMESTAMP, rtp_timestamp)
    setattr(sender, OCTETS, getattr(sender, OCTETS) + octets)
    setattr(sender, PACKETS, getattr(sender, PACKETS) + packets)


def count_transport_sent(dtls: RTCDtlsTransport, octets: int, packets: int) -> None:
    """The DTLS transport's counters (getStats), for packets sent past its own path."""
    for name, sent in (("bytes", octets), ("packets", packets)):
        attr = f"_RTCDtlsTransport__tx_{name}"
        setattr(dtls, attr, getattr(dtls, attr, 0) + sent)


async def send_rtp(sender: RTCRtpSender, data: bytes) -> None:
    """Send one packet down aiortc's own path (SRTP, ICE; TURN relays too)."""
    await sender.transport._send_rtp(data)
