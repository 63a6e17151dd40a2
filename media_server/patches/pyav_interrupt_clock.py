"""PyAV's clock swapped, so that stopping a pull aborts a call blocked on a hung camera.

PyAV's interrupt callback (av/container/core.py, polled by FFmpeg while it waits on a
socket) asks its module's `time.monotonic()` whether the open/read timeout has passed,
and PyAV offers no other hook. Installed as that module's `time`, InterruptClock answers
"much later" to the threads being stopped, so their call ends with ExitError now instead
of after the timeout; every other thread sees the real clock.

Written against PyAV 18.1 (a module global of a compiled module): install() checks the
version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import av.container.core

from media_server.patches import require_version

SUPPORTED = ("18.1.0",)
WHY = "av.container.core's time module, swapped so a stopped pull's blocked call ends"


class InterruptClock:
    """The `time` module, but for the threads being stopped, monotonic() jumps ahead.

    FFmpeg calls the interrupt callback several times per packet, each under the GIL
    (bench/RESULTS.md, "Device agent"): while no thread is being stopped, `monotonic` is
    time.monotonic itself, with no Python frame per call.
    """

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()  # objects, not idents: never reused
        self._jump = 0.0
        self._lock = threading.Lock()
        self.monotonic: Callable[[], float] = time.monotonic

    def _stopping_monotonic(self) -> float:
        now = time.monotonic()
        if self._threads and threading.current_thread() in self._threads:
            self._jump += 1e6  # keeps growing: a timeout restarted after the stop also fires
            return now + self._jump
        return now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def interrupt(self, thread: threading.Thread) -> None:
        """End the PyAV call `thread` is blocked in (and any it makes next)."""
        with self._lock:
            self._threads.add(thread)
            self.monotonic = self._stopping_monotonic

    def release(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.discard(thread)
            if not self._threads:
                self.monotonic = time.monotonic


CLOCK = InterruptClock()


def check() -> None:
    require_version("av", SUPPORTED, WHY)


def install() -> InterruptClock:
    """Put CLOCK in PyAV's place (once; later calls find it there) and return it."""
    check()
    names = vars(av.container.core)  # `time` is a global the stub does not declare
    current = names.get("time")
    if current is not CLOCK:
        if current is not time:
            raise RuntimeError("PyAV internals changed: av.container.core has no `time`")
        names["time"] = CLOCK
    return CLOCK
