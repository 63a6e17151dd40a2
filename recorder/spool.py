"""The local spool of one recording: what is not yet safe in the object store.

Layout under `<spool>/<recording_id>/`:
    manifest.json             the last manifest checkpoint (what is uploaded)
    init-file-<name>          an init segment waiting for upload
    seg-<n>.m4s + seg-<n>.json  a closed segment waiting for upload, and its metadata
    open-<n>.m4s              the segment being written: its parts, appended as each closes
                              (LL-HLS part, <= 1 s); renamed seg-<n>.m4s when it closes
    open-<n>.parts            its metadata (start, media start, init) as a first JSON line,
                              then a line per part appended: "<end offset> <duration>"

Whole files are written then renamed, so a kill -9 leaves them whole or absent; the open
segment's parts are appended, and a part counts only once its line follows its bytes. No
fsync: a killed process loses nothing the kernel already has; a power cut may lose the
last second or so. Files stay open while a segment is written, and few are created: file
creation is the costly part of spooling (about 1 ms each on an overlay file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass(slots=True)
class PendingSegment:
    seq: int
    path: Path
    meta: dict[str, Any]  # start, duration, init, media_start, discontinuity


@dataclass(slots=True)
class OpenSegment:
    seq: int
    meta: dict[str, Any]
    parts: list[bytes]
    duration: float


class SpoolMeter:
    """Bytes in a spool root, shared by its recordings (counted, never rescanned)."""

    def __init__(self) -> None:
        self.used = 0
        self._measured: set[Path] = set()

    def measure(self, root: Path) -> None:
        if root not in self._measured and root.exists():
            self.used += sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        self._measured.add(root)


class Spool:
    def __init__(self, root: Path, recording_id: str, meter: SpoolMeter | None = None) -> None:
        self.dir = root / recording_id
        self.meter = meter or SpoolMeter()
        self.meter.measure(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._open: dict[int, tuple[IO[bytes], IO[str]]] = {}
        # once a local copy exists it is kept current (it must never be older than the store's)
        self.has_manifest = (self.dir / "manifest.json").exists()

    # -- manifest checkpoint --
    def save_manifest(self, data: bytes) -> None:
        write_atomic(self.dir / "manifest.json", data)
        self.has_manifest = True

    def load_manifest(self) -> bytes | None:
        try:
            return (self.dir / "manifest.json").read_bytes()
        except FileNotFoundError:
            return None

    # -- inits --
    def put_init(self, name: str, data: bytes) -> Path:
        path = self.dir / f"init-file-{name}"
        write_atomic(path, data)
        return path

    def pending_inits(self) -> list[Path]:
        return sorted(self.dir.glob("init-file-*"))

    # -- closed segments --
    def put_segment(self, seq: int, data: bytes, meta: dict[str, Any]) -> PendingSegment:
        """A closed segment: the open file renamed when it holds exactly `data` (every part
        was spooled), else written anew."""
        path = self.dir / f"seg-{seq}.m4s"
        handles = self._open.pop(seq, None)
        spooled = 0
        if handles is not None:
            spooled = handles[0].tell()
            for handle in handles:
                handle.close()
        if spooled == len(data):
            os.replace(self.dir / f"open-{seq}.m4s", path)
        else:
            write_atomic(path, data)
            self.meter.used += len(data) - spooled
        write_atomic(self.dir / f"seg-{seq}.json", json.dumps(meta).encode())
        self.drop_open(seq)
        return PendingSegment(seq, path, meta)

    def pending_segments(self) -> list[PendingSegment]:
        found = []
        for meta_path in self.dir.glob("seg-*.json"):
            seq = int(meta_path.stem.removeprefix("seg-"))
            path = self.dir / f"seg-{seq}.m4s"
            if path.exists():
                found.append(PendingSegment(seq, path, json.loads(meta_path.read_bytes())))
        return sorted(found, key=lambda p: p.seq)

    def done(self, pending: PendingSegment) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.meter.used -= pending.path.stat().st_size
        pending.path.unlink(missing_ok=True)
        (self.dir / f"seg-{pending.seq}.json").unlink(missing_ok=True)

    # -- the open segment's parts --
    def open_segment(self, seq: int, meta: dict[str, Any]) -> None:
        index = open(self.dir / f"open-{seq}.parts", "w")
        index.write(json.dumps(meta) + "\n")
        self._open[seq] = (open(self.dir / f"open-{seq}.m4s", "wb"), index)

    def put_part(self, seq: int, data: bytes, duration: float) -> None:
        media, index = self._open[seq]
        media.write(data)
        media.flush()  # to the kernel: a kill -9 keeps it
        index.write(f"{media.tell()} {duration}\n")
        index.flush()
        self.meter.used += len(data)

    def open_segments(self) -> list[OpenSegment]:
        """Segments a killed writer left open: the parts whose index line was written."""
        found = []
        for index_path in self.dir.glob("open-*.parts"):
            seq = int(index_path.stem.removeprefix("open-"))
            lines = index_path.read_text().splitlines()
            try:
                meta = json.loads(lines[0])
            except (IndexError, ValueError):
                continue  # killed before the segment's first line: nothing of it is kept
            end, duration = 0, 0.0
            for line in lines[1:]:
                fields = line.split()
                if len(fields) != 2:
                    break  # a half-written last line: the part before it is the last
                end, duration = int(fields[0]), duration + float(fields[1])
            data = b""
            with contextlib.suppress(FileNotFoundError):
                data = (self.dir / f"open-{seq}.m4s").read_bytes()[:end]
            found.append(OpenSegment(seq, meta, [data] if data else [], duration))
        return sorted(found, key=lambda o: o.seq)

    def open_meta(self, seq: int) -> dict[str, Any]:
        with open(self.dir / f"open-{seq}.parts") as f:
            return dict(json.loads(f.readline()))

    def drop_open(self, seq: int) -> None:
        for handle in self._open.pop(seq, ()):
            handle.close()
        path = self.dir / f"open-{seq}.m4s"
        with contextlib.suppress(FileNotFoundError):
            self.meter.used -= path.stat().st_size
        for suffix in ("m4s", "parts"):
            (self.dir / f"open-{seq}.{suffix}").unlink(missing_ok=True)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())

    def remove(self) -> None:
        for seq in list(self._open):
            self.drop_open(seq)
        shutil.rmtree(self.dir, ignore_errors=True)
