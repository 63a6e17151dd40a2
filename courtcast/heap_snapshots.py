"""Heap snapshots on demand, to find what grows in a long run (bench/ingest_hls.py
--heap-diff).

A courtcast process started with PYTHONTRACEMALLOC=1 (Python's own switch: it traces every
allocation, at a cost in CPU) writes a tracemalloc snapshot to
`<data_dir>/heap/<unix ms>.snap` on each SIGUSR2. Without tracing nothing is installed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import tracemalloc
from pathlib import Path

log = logging.getLogger(__name__)


def install(data_dir: Path) -> None:
    if not tracemalloc.is_tracing():
        return
    loop = asyncio.get_running_loop()
    folder = data_dir / "heap"
    folder.mkdir(parents=True, exist_ok=True)
    loop.add_signal_handler(signal.SIGUSR2, lambda: _take(folder))
    log.info("tracemalloc is on: SIGUSR2 writes a heap snapshot to %s", folder)


def _take(folder: Path) -> None:
    # on the loop, on purpose: a snapshot of a heap that changes under it is worth less
    # than the second or so the loop stops (a diagnostic run only)
    path = folder / f"{int(time.time() * 1000)}.snap"
    tmp = path.with_suffix(".tmp")
    tracemalloc.take_snapshot().dump(str(tmp))
    tmp.rename(path)  # whole or absent to whoever waits for it
    log.info("heap snapshot: %s", path)
