"""Fewer, larger reads from a publisher: the kernel holds its bytes until ~20 ms worth.

An ffmpeg publisher's bytes arrive in about 110 small writes a second (a chunk header, an
audio frame, a slice of a video frame), and every read costs an epoll wake-up, a recv and
a call into Python whatever its size; that fixed cost was a large share of the server's
CPU (bench/RESULTS.md, "publishers read in batches"). SO_RCVLOWAT makes a TCP
socket readable only once that many bytes wait in it: the kernel does the batching, with
no timer or syscall per read (one setsockopt per tick at most).

The low-water mark follows the publisher's rate, BATCH_S worth of it, so bytes wait under
it until the next frame or a few audio frames lift them over: about one frame interval
(measured by bench/rtmp_read_delay.py, figures in bench/RESULTS.md), which LL-HLS (parts
of 0.5 s) does not notice, and a WebRTC viewer would: while a real-time subscriber watches
the stream, nothing is held back.

- each tick sets it to BATCH_S worth of what the last tick read, at most MAX_BYTES;
- a tick that read nothing sets it back to 1 byte, so bytes left under the mark (a
  publisher that went quiet, or waits for the answer to a small command) are read within
  two ticks;
- under MIN_BYTES (audio-only and other slow publishers) batching is not worth it;
- a tick that finds a real-time subscriber on the stream (Stream.realtime) sets it to 1.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

BATCH_S = 0.02  # the delay aimed at, under a frame interval at 25-30 fps
TICK_S = 0.25
MIN_BYTES = 2048
MAX_BYTES = 16 * 1024
_STEP = 512  # marks are rounded to this, so a steady rate does not setsockopt every tick


def low_water_mark(bytes_in_tick: int, tick_s: float = TICK_S) -> int:
    """The SO_RCVLOWAT for a publisher that sent bytes_in_tick in the last tick."""
    mark = int(bytes_in_tick / tick_s * BATCH_S) // _STEP * _STEP
    return min(mark, MAX_BYTES) if mark >= MIN_BYTES else 1


class ReadBatching:
    """Keeps one connection's SO_RCVLOWAT in step with its rate until stopped."""

    def __init__(
        self,
        transport: asyncio.Transport,
        received: Callable[[], int],
        may_hold: Callable[[], bool],
    ) -> None:
        self._socket = transport.get_extra_info("socket")
        self._received = received  # what the connection has read so far
        self._may_hold = may_hold  # False while a real-time viewer watches
        self._last = received()
        self.mark = 1
        self._timer: asyncio.TimerHandle | None = None
        if self._socket is not None and hasattr(socket, "SO_RCVLOWAT"):
            self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    def stop(self) -> None:
        """Back to plain reads (the publication ended; commands follow)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._set(1)

    def _tick(self) -> None:
        now = self._received()
        self._set(low_water_mark(now - self._last) if self._may_hold() else 1)
        self._last = now
        if self._timer is not None:
            self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    def _set(self, mark: int) -> None:
        if mark == self.mark:
            return
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
        except OSError as exc:  # closed under us, or a socket that has no such option
            log.debug("SO_RCVLOWAT %d: %s; reading without batching", mark, exc)
            self._timer = None  # _tick does not re-arm
            return
        self.mark = mark
