"""The local spool of one recording: what is not yet safe in the object store.

Layout under `<spool>/<recording_id>/`:
    manifest.json             the last manifest checkpoint (what is uploaded)
    init-file-<name>          an init segment waiting for upload
    seg-<n>.m4s + seg-<n>.json  a closed segment waiting for upload, and its metadata
    open-<n>/segment.json     the segment being written: start, media start, init
    open-<n>/part-<i>.m4s     its parts, each written as it closes (LL-HLS part, <= 1 s)
    open-<n>/parts.jsonl      one line per part written (duration), after its data

Files are written then renamed, so a kill -9 leaves whole files or none. No fsync: a killed
process loses nothing the kernel already has; a power cut may lose the last second or so.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


class Spool:
    def __init__(self, root: Path, recording_id: str) -> None:
        self.dir = root / recording_id
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- manifest checkpoint --
    def save_manifest(self, data: bytes) -> None:
        write_atomic(self.dir / "manifest.json", data)

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
        path = self.dir / f"seg-{seq}.m4s"
        write_atomic(path, data)
        write_atomic(self.dir / f"seg-{seq}.json", json.dumps(meta).encode())
        shutil.rmtree(self.dir / f"open-{seq}", ignore_errors=True)
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
        pending.path.unlink(missing_ok=True)
        (self.dir / f"seg-{pending.seq}.json").unlink(missing_ok=True)

    # -- the open segment's parts --
    def open_segment(self, seq: int, meta: dict[str, Any]) -> None:
        folder = self.dir / f"open-{seq}"
        folder.mkdir(exist_ok=True)
        write_atomic(folder / "segment.json", json.dumps(meta).encode())

    def put_part(self, seq: int, index: int, data: bytes, duration: float) -> None:
        folder = self.dir / f"open-{seq}"
        write_atomic(folder / f"part-{index}.m4s", data)
        with open(folder / "parts.jsonl", "a") as f:
            f.write(json.dumps({"index": index, "duration": duration}) + "\n")

    def open_segments(self) -> list[OpenSegment]:
        """Segments a killed writer left open: their parts that were written whole."""
        found = []
        for folder in self.dir.glob("open-*"):
            meta_path = folder / "segment.json"
            if not meta_path.exists():
                continue
            parts: list[bytes] = []
            duration = 0.0
            lines = (folder / "parts.jsonl").read_text().splitlines() if (
                folder / "parts.jsonl").exists() else []
            for line in lines:
                try:
                    entry = json.loads(line)
                    parts.append((folder / f"part-{entry['index']}.m4s").read_bytes())
                except (ValueError, KeyError, FileNotFoundError):
                    break  # a half-written last line: the part before it is the last whole
                duration += float(entry["duration"])
            seq = int(folder.name.removeprefix("open-"))
            found.append(OpenSegment(seq, json.loads(meta_path.read_bytes()), parts, duration))
        return sorted(found, key=lambda o: o.seq)

    def drop_open(self, seq: int) -> None:
        shutil.rmtree(self.dir / f"open-{seq}", ignore_errors=True)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
