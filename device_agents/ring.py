"""The agent's local ring on disk (store-and-forward), in the layout of protocol.py:

    {spool}/{stream_id}/init-{n}.mp4      init segment n (codec config)
    {spool}/{stream_id}/seg-{start_ms}.m4s  a closed fMP4 segment, wall-clock start in ms
    {spool}/{stream_id}/index.jsonl       one RingEntry per line, appended after the file

Every file is written to a temporary name and renamed, so a reader (the backfill uploader)
never sees half a segment, and an index line always names a complete file. The ring is
bounded: when all streams together pass max_bytes the oldest segments go (the index keeps
lines of removed files until it is compacted; readers skip them).

Blocking I/O: the methods here are plain functions; the recorder calls the writing ones
in a worker thread. A lock keeps the byte count and eviction right across streams.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from device_agents.protocol import RingEntry

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
_FILE = re.compile(r"^(init-\d+\.mp4|seg-\d+\.m4s|index\.jsonl)$")
_STREAM = re.compile(r"^[a-z0-9_.-]+$")
COMPACT_AFTER = 64  # removed entries before the index is rewritten


@dataclass
class _StreamRing:
    entries: list[RingEntry] = field(default_factory=list)
    removed: int = 0  # index lines naming removed segments
    next_init: int = 0
    inits: dict[str, str] = field(default_factory=dict)  # sha256 -> init name


class Ring:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.evicted = 0
        self._lock = threading.Lock()
        self._streams: dict[str, _StreamRing] = {}
        self._bytes = 0
        root.mkdir(parents=True, exist_ok=True)
        for child in sorted(root.iterdir()):
            if child.is_dir() and _STREAM.match(child.name):
                self._streams[child.name] = self._load(child.name)

    # -- the reading API (backfill) --
    def entries(self, stream_id: str) -> list[RingEntry]:
        """The segments of a stream still on disk, oldest first. (A Ring made on the same
        directory later sees what was there then; share the agent's Ring to see more.)"""
        with self._lock:
            ring = self._streams.get(stream_id)
            return list(ring.entries) if ring is not None else []

    def path(self, stream_id: str, file: str) -> Path:
        """Where a ring file is; ValueError for a name outside the layout."""
        if not _STREAM.match(stream_id) or not _FILE.match(file):
            raise ValueError(f"not a ring file: {stream_id}/{file}")
        return self.root / stream_id / file

    def size_bytes(self) -> int:
        return self._bytes

    def streams(self) -> list[str]:
        with self._lock:
            return sorted(self._streams)

    # -- writing (called from a worker thread) --
    def add_init(self, stream_id: str, data: bytes) -> str:
        """Store an init segment (once per distinct content); its name."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            ring = self._stream(stream_id)
            name = ring.inits.get(digest)
            if name is not None and self.path(stream_id, name).exists():
                return name
            name = f"init-{ring.next_init}.mp4"
            ring.next_init += 1
            _write_atomic(self.path(stream_id, name), data)
            ring.inits[digest] = name
            self._bytes += len(data)
            return name

    def add_segment(
        self,
        stream_id: str,
        init: str,
        start: float,
        duration: float,
        media_start: float,
        data: bytes,
    ) -> RingEntry:
        """Store a closed segment, then its index line; drops the oldest if over."""
        entry = RingEntry(
            file=f"seg-{round(start * 1000)}.m4s",
            init=init,
            start=round(start, 6),
            duration=round(duration, 6),
            media_start=round(media_start, 6),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        with self._lock:
            ring = self._stream(stream_id)
            _write_atomic(self.path(stream_id, entry.file), data)
            with open(self.path(stream_id, INDEX), "a") as index:
                index.write(entry.model_dump_json() + "\n")
            ring.entries.append(entry)
            self._bytes += len(data)
            self._evict()
        return entry

    # -- internals --
    def _stream(self, stream_id: str) -> _StreamRing:
        ring = self._streams.get(stream_id)
        if ring is None:
            self.path(stream_id, INDEX).parent.mkdir(parents=True, exist_ok=True)
            ring = self._streams[stream_id] = _StreamRing()
        return ring

    def _load(self, stream_id: str) -> _StreamRing:
        """What an earlier run left: entries whose files exist, init numbering, size."""
        folder = self.root / stream_id
        ring = _StreamRing()
        for line in _read_lines(folder / INDEX):
            try:
                entry = RingEntry.model_validate_json(line)
            except ValueError:
                continue  # a line cut short by a power loss
            if (folder / entry.file).exists():
                ring.entries.append(entry)
            else:
                ring.removed += 1
        for path in folder.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write a crash interrupted
            elif path.name.startswith(("init-", "seg-")):
                self._bytes += path.stat().st_size
            if match := re.fullmatch(r"init-(\d+)\.mp4", path.name):
                ring.next_init = max(ring.next_init, int(match[1]) + 1)
                ring.inits[hashlib.sha256(path.read_bytes()).hexdigest()] = path.name
        return ring

    def _evict(self) -> None:
        """Remove the oldest segments of any stream until under the limit (lock held)."""
        while self._bytes > self.max_bytes:
            oldest = min(
                ((s, r) for s, r in self._streams.items() if len(r.entries) > 1),
                key=lambda sr: sr[1].entries[0].start,
                default=None,
            )
            if oldest is None:
                return  # one segment per stream left: the limit is too small to honour
            stream_id, ring = oldest
            entry = ring.entries.pop(0)
            self.path(stream_id, entry.file).unlink(missing_ok=True)
            self._bytes -= entry.bytes
            self.evicted += 1
            ring.removed += 1
            self._drop_unused_inits(stream_id, ring)
            if ring.removed >= COMPACT_AFTER:
                self._compact(stream_id, ring)

    def _drop_unused_inits(self, stream_id: str, ring: _StreamRing) -> None:
        used = {e.init for e in ring.entries}
        newest = f"init-{ring.next_init - 1}.mp4"  # the one being recorded with now
        for digest, name in list(ring.inits.items()):
            if name not in used and name != newest:
                path = self.path(stream_id, name)
                if path.exists():
                    self._bytes -= path.stat().st_size
                    path.unlink()
                del ring.inits[digest]

    def _compact(self, stream_id: str, ring: _StreamRing) -> None:
        text = "".join(e.model_dump_json() + "\n" for e in ring.entries)
        _write_atomic(self.path(stream_id, INDEX), text.encode())
        ring.removed = 0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
