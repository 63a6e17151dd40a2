"""The parts of LL-HLS windows kept in files instead of memory (issue 19: memory per stream).

A window holds ~14 s of media per stream (6 closed 2 s segments and the open one): at
2 Mbit/s about 3.7 MB, most of a node's memory per stream. Each part is written, as it
closes, into its segment's file at its offset, and its bytes in memory are let go once
the next part is written; requests read it back from the page cache. nginx-rtmp serves
HLS from files the same way. The files are scratch: no fsync, and a killed process's are
removed by the next.

A window's files are a ring of `slots` files (the window's segments and the open one, plus
one), segment n in file n % slots: a segment's file is written over once it left the window,
never deleted and created again. Freeing a file's fresh pages and allocating new ones cost
more than the write itself (the spool found the same, recorder/spool.py).

One writer thread per node takes the writes in order, so the event loop does no file
writes and no wake-up per part: the loop queues (path, offset, part) and the thread clears
the bytes of the part written before it (the newest part stays: every LL-HLS player asks
for it at once, so those reads come from memory). A part whose write failed (a full disk)
keeps its bytes in memory, where the window bounds them; so does every part while the
writer is behind by more than MAX_QUEUED writes. Reads stay on the loop: a pread of a
part written a moment ago comes from the page cache.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from media_server.hls.segmenter import Part, Segment

log = logging.getLogger(__name__)

MAX_QUEUED = 4096  # writes waiting for the thread (~10 s of 200 streams' parts)
LOG_EVERY_S = 60.0  # a failing disk is logged at most this often


@dataclass(slots=True)
class _Write:
    window: WindowSpill
    path: Path
    offset: int
    part: Part


@dataclass(slots=True)
class _Remove:
    path: Path


@dataclass(slots=True)
class _SegmentFile:
    """Where each part of one segment sits in its file: (offset, length) by part index."""

    path: Path
    spans: list[tuple[int, int]] = field(default_factory=list)
    size: int = 0


class WindowFiles:
    """One process's directory of window files, `<root>/<pid>/`, and the thread that
    writes them."""

    def __init__(self, root: Path) -> None:
        _remove_dead_processes(root)
        self.dir = root / str(os.getpid())
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.dir.mkdir(parents=True)
        except OSError as exc:  # e.g. a full disk: made by the first write that can
            log.error("hls: cannot make %s (%s); windows stay in memory until it can be", root, exc)
        self.failures = 0  # part writes that failed (the parts stayed in memory)
        self._names = itertools.count()
        self._queue: queue.SimpleQueue[_Write | _Remove | None] = queue.SimpleQueue()
        self._logged = 0.0
        self._made: set[Path] = set()  # window directories made (by the thread)
        self._thread = threading.Thread(target=self._run, name="hls-files", daemon=True)
        self._thread.start()

    def window(self, name: str, slots: int) -> WindowSpill:
        """The files of a window that holds at most slots - 1 segments at once."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]
        return WindowSpill(self, self.dir / f"{next(self._names)}-{safe}", slots)

    def submit(self, job: _Write | _Remove) -> bool:
        if isinstance(job, _Write) and self._queue.qsize() > MAX_QUEUED:
            return False
        self._queue.put(job)
        return True

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                if isinstance(job, _Write):
                    self._write(job)
                else:
                    self._made.discard(job.path)
                    shutil.rmtree(job.path, ignore_errors=True)
            except OSError as exc:
                self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY_S:
            self._logged = now
            log.error(
                "hls: cannot write the live window to %s (%s); parts stay in memory "
                "(%d writes failed so far)",
                self.dir,
                exc,
                self.failures,
            )

    def _write(self, job: _Write) -> None:
        folder = job.path.parent
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        _write_at(job.path, job.offset, job.part.data)
        # on disk now. The window's newest part keeps its bytes: it is the one LL-HLS
        # players ask for right now. The part written before it lets go of them (an
        # attribute store: a reader on the loop sees the bytes, or b"" and reads the file).
        held, job.window.held = job.window.held, job.part
        if held is not None:
            held.data = b""


def _write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)


def _remove_dead_processes(root: Path) -> None:
    """Remove what killed processes left (their pid's directory)."""
    if not root.is_dir():
        return
    for child in list(root.iterdir()):
        if child.name.isdigit() and not _alive(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WindowSpill:
    """The files of one window: a directory, a ring of files in it."""

    def __init__(self, files: WindowFiles, directory: Path, slots: int) -> None:
        self._files = files
        self._dir = directory
        self._slots = slots
        self._segments: dict[int, _SegmentFile] = {}
        self.held: Part | None = None  # the newest part written (the thread's business)

    def part_closed(self, seg: Segment) -> None:
        """Queue the segment's newest part for its file."""
        part = seg.parts[-1]
        f = self._segments.get(seg.msn)
        if f is None:
            path = self._dir / f"{seg.msn % self._slots}.m4s"
            f = self._segments[seg.msn] = _SegmentFile(path)
        if part.index != len(f.spans):
            return  # not the next part of this file (cannot happen): stays in memory
        offset = f.size
        f.spans.append((offset, len(part.data)))
        f.size += len(part.data)
        self._files.submit(_Write(self, f.path, offset, part))

    def keep_from(self, msn: int) -> None:
        """Forget segments older than msn (out of the window): their files are free."""
        for old in [k for k in self._segments if k < msn]:
            del self._segments[old]

    def part_bytes(self, part: Part) -> bytes | None:
        data = part.data
        if data:
            return data
        f = self._segments.get(part.msn)
        if f is None or part.index >= len(f.spans):
            return None
        return _pread(f.path, *f.spans[part.index])

    def segment_bytes(self, seg: Segment) -> bytes | None:
        f = self._segments.get(seg.msn)
        if f is not None and len(f.spans) == len(seg.parts) and not any(p.data for p in seg.parts):
            return _pread(f.path, 0, f.size)  # all in the file: one read
        chunks = [self.part_bytes(p) for p in seg.parts]
        return None if any(c is None for c in chunks) else b"".join(c or b"" for c in chunks)

    def close(self) -> None:
        self._segments.clear()
        self._files.submit(_Remove(self._dir))


def _pread(path: Path, offset: int, length: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        log.warning("hls: window file %s: %s", path, exc)
        return None
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    return data if len(data) == length else None
