"""aiortc's RTCRtpReceiver made to hand its encoded frames to us instead of its decoder.

aiortc's receiver reassembles frames from RTP (jitter buffer, NACK, RTCP reports) and
hands them to a decoder thread through a private queue. A WHIP ingest stores and forwards
what the publisher sent, so that queue is replaced by a FrameTap that gives each encoded
frame to a callback: nothing is decoded.

Written against aiortc 1.16 (a name-mangled attribute): tap_receiver() checks the version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame

from media_server.patches import require_version

SUPPORTED = ("1.16.0",)
WHY = "RTCRtpReceiver's decoder queue, replaced to take frames undecoded"
DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


def check() -> None:
    require_version("aiortc", SUPPORTED, WHY)


class FrameTap:
    """Takes the place of an aiortc receiver's decoder queue.

    put() runs on the event loop (from the receiver's RTP handler); the idle decoder
    thread blocks in get() until the receiver stops, then ends the remote track."""

    def __init__(self, on_frame: Callable[[JitterFrame], None]) -> None:
        self._on_frame = on_frame
        self._done = threading.Event()

    def put(self, task: tuple[object, JitterFrame] | None) -> None:
        if task is None:
            self._done.set()
        else:
            self._on_frame(task[1])

    def get(self) -> None:
        self._done.wait()


def tap_receiver(receiver: RTCRtpReceiver, on_frame: Callable[[JitterFrame], None]) -> None:
    """Give each frame this receiver reassembles to on_frame (on the event loop)."""
    check()
    if not hasattr(receiver, DECODER_QUEUE):
        raise RuntimeError("aiortc internals changed: RTCRtpReceiver has no __decoder_queue")
    setattr(receiver, DECODER_QUEUE, FrameTap(on_frame))
