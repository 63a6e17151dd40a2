"""The local spool of one recording: what is not yet safe in the object store.

Layout under `<spool>/<recording_id>/`:
    manifest.json       the last manifest checkpoint (kept during a storage outage)
    init-file-<name>    an init segment waiting for upload
    seg-<n>.m4s         a segment's bytes: its parts appended as each closes while it is
                        open (LL-HLS part, <= 1 s), all of it once it is closed
    journal             a line per event, appended and flushed (to the kernel):
                          o <n> <meta json>         segment n opened (start, media start,
                                                    init, discontinuity)
                          p <n> <end> <duration>    a part of n is in seg-<n>.m4s up to end
                          c <n> <meta json>         n closed: seg-<n>.m4s holds all of it
                          d <n>                     n uploaded and listed, or dropped

Replaying the journal tells what a killed writer left: closed segments to upload, open
ones (their parts up to their last `p` line), and nothing of the done ones. A part counts
only once its line follows its bytes; a half-written last line is ignored. Other files are
written whole then renamed, so a kill -9 leaves them whole or absent. No fsync: a killed
process loses nothing the kernel already has; a power cut may lose the last second or so.

Why a journal and spares: creating a file, and deleting one full of fresh data, are the
costly part of spooling, far more than writing a segment's bytes (bench/RESULTS.md,
Recorder: profile and fixes). A journal line per event instead of an index and a
metadata file per segment, and an uploaded segment's file renamed to `spare-<n>` and
written over by a later segment (truncated to its length when it closes), make it no file
created or deleted per segment in the steady state (there were three created and
deleted, and a fourth when a closing segment was written again). Past
JOURNAL_COMPACT_BYTES the journal is rewritten with only what is still pending, so a long
trial's restart replays little.

A write that fails (a full disk: ENOSPC) raises OSError and leaves the spool as it was:
a journal line is written whole or cut off again, an atomic file is whole or absent, and
a part's bytes count only once its line is written. The caller drops what it could not
spool (recorder/recording.py: a `disk-full` gap).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

JOURNAL = "journal"
JOURNAL_COMPACT_BYTES = 1 << 20
# uploaded segment files kept to be written over by the next segments; a manifest
# checkpoint lets go of up to 3 segments at once (recorder/checkpoints.py)
SPARES = 4


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not keep half a file
        raise
    os.replace(tmp, path)


def write_all(f: IO[bytes], data: bytes) -> None:
    """All of data at the end of an unbuffered file, or none of it: a failed or short
    write (a full disk) is cut off again and raises OSError, so the next write follows
    whole lines."""
    start = f.tell()
    try:
        done = 0
        while done < len(data):
            n = f.write(data[done:])
            if not n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f.name)
            done += n
    except OSError:
        with contextlib.suppress(OSError):
            f.truncate(start)
            f.seek(start)
        raise


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


@dataclass(slots=True)
class _Entry:
    """A segment the journal says is pending: open (parts up to end) or closed."""

    meta: dict[str, Any]
    closed: bool = False
    end: int = 0
    duration: float = 0.0

    def lines(self, seq: int) -> str:
        """Its state as journal lines (compaction)."""
        if self.closed:
            return f"c {seq} {json.dumps(self.meta)}\n"
        text = f"o {seq} {json.dumps(self.meta)}\n"
        return text + (f"p {seq} {self.end} {self.duration}\n" if self.end else "")


def replay(text: str) -> dict[int, _Entry]:
    """The pending segments a journal describes."""
    entries: dict[int, _Entry] = {}
    lines = text.split("\n")[:-1]  # a last line without its newline was cut short
    for line in lines:
        kind, _, rest = line.partition(" ")
        seq_text, _, body = rest.partition(" ")
        try:
            seq = int(seq_text)
            if kind == "o":
                entries[seq] = _Entry(json.loads(body))
            elif kind == "p" and seq in entries:
                end, duration = body.split()
                entries[seq].end = int(end)
                entries[seq].duration += float(duration)
            elif kind == "c":
                entries[seq] = _Entry(json.loads(body), closed=True)
            elif kind == "d":
                entries.pop(seq, None)
        except ValueError:
            break  # a damaged line: what follows it cannot be trusted either
    return entries


class SpoolMeter:
    """Bytes in a spool root, shared by its recordings (counted, never rescanned), and
    whether its disk takes writes."""

    def __init__(self) -> None:
        self.used = 0
        self._measured: set[Path] = set()
        # a write that failed (a full disk), as a person should read it; None once a
        # recording's next segment is spooled again
        self.error: str | None = None
        self.alerted = 0.0  # monotonic: when the last disk-full alert was raised

    def measure(self, root: Path) -> None:
        if root not in self._measured and root.exists():
            self.used += sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        self._measured.add(root)


class Spool:
    def __init__(self, root: Path, recording_id: str, meter: SpoolMeter | None = None) -> None:
        self.dir = root / recording_id
        self.meter = meter or SpoolMeter()
        self.meter.measure(root)
        self._made = self._make_dir(quiet=True)
        try:
            self._entries = replay((self.dir / JOURNAL).read_text())
        except FileNotFoundError:
            self._entries = {}
        self._media: dict[int, IO[bytes]] = {}  # the open segments' files
        self._spares = sorted(self.dir.glob("spare-*"))
        self._journal: IO[bytes] | None = None  # opened at the first event
        # once a local copy exists it is kept current (it must never be older than the store's)
        self.has_manifest = (self.dir / "manifest.json").exists()

    def _make_dir(self, quiet: bool = False) -> bool:
        """Its directory; on a full disk (mkdir needs a block), made by the first write
        that finds space (quiet: not yet: a recording starts all the same)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            if not quiet:
                raise
            return False
        return True

    def _writable(self, name: str) -> Path:
        """The path of a file to write in the spool's directory, made if it is not yet."""
        if not self._made:
            self._made = self._make_dir()
        return self.dir / name

    # -- the journal --
    def _log(self, line: str) -> None:
        if self._journal is None:
            self._journal = self._open_journal()
        write_all(self._journal, line.encode())  # unbuffered: a kill -9 keeps it

    def _open_journal(self) -> IO[bytes]:
        return open(self._writable(JOURNAL), "ab", buffering=0)  # kept open

    def _compact(self) -> None:
        if self._journal is None or self._journal.tell() < JOURNAL_COMPACT_BYTES:
            return
        self._journal.close()
        text = "".join(e.lines(seq) for seq, e in sorted(self._entries.items()))
        try:
            write_atomic(self.dir / JOURNAL, text.encode())
        finally:  # a full disk: the long journal goes on, compacted later
            self._journal = self._open_journal()

    # -- manifest checkpoint --
    def save_manifest(self, data: bytes) -> None:
        write_atomic(self._writable("manifest.json"), data)
        self.has_manifest = True

    def forget_manifest(self) -> None:
        (self.dir / "manifest.json").unlink(missing_ok=True)
        self.has_manifest = False

    def load_manifest(self) -> bytes | None:
        try:
            return (self.dir / "manifest.json").read_bytes()
        except FileNotFoundError:
            return None

    # -- inits --
    def put_init(self, name: str, data: bytes) -> Path:
        path = self._writable(f"init-file-{name}")
        write_atomic(path, data)
        return path

    def pending_inits(self) -> list[Path]:
        return sorted(self.dir.glob("init-file-*"))

    # -- closed segments --
    def put_segment(self, seq: int, data: bytes, meta: dict[str, Any]) -> PendingSegment:
        """A closed segment: its file as the parts left it when it holds exactly `data`
        (every part was spooled), else written anew."""
        path = self._writable(f"seg-{seq}.m4s")
        media = self._media.pop(seq, None)
        spooled = 0
        if media is not None:
            spooled = media.tell()
            media.truncate()  # a spare's old bytes past the end
            media.close()
        if spooled != len(data):
            write_atomic(path, data)
            self.meter.used += len(data) - spooled
        self._entries[seq] = _Entry(meta, closed=True)
        self._log(f"c {seq} {json.dumps(meta)}\n")
        return PendingSegment(seq, path, meta)

    def close_segment(self, seq: int, meta: dict[str, Any]) -> PendingSegment:
        """An open segment whose every part was put: closed as its file holds it."""
        media = self._media.pop(seq)
        media.truncate()  # a spare's old bytes past the end
        media.close()
        self._entries[seq] = _Entry(meta, closed=True)
        self._log(f"c {seq} {json.dumps(meta)}\n")
        return PendingSegment(seq, self.dir / f"seg-{seq}.m4s", meta)

    def pending_segments(self) -> list[PendingSegment]:
        found = [
            PendingSegment(seq, self.dir / f"seg-{seq}.m4s", e.meta)
            for seq, e in self._entries.items()
            if e.closed
        ]
        return sorted((p for p in found if p.path.exists()), key=lambda p: p.seq)

    def done(self, pending: PendingSegment) -> None:
        self._forget(pending.seq)

    def _forget(self, seq: int) -> None:
        path = self.dir / f"seg-{seq}.m4s"
        with contextlib.suppress(FileNotFoundError):
            self.meter.used -= path.stat().st_size
            if len(self._spares) < SPARES:
                spare = self.dir / f"spare-{seq}"
                os.replace(path, spare)
                self._spares.append(spare)
        path.unlink(missing_ok=True)
        if self._entries.pop(seq, None) is not None:
            # on a full disk the line may not be written: a restart then finds the segment
            # listed in the manifest, or its file gone (recorder/recovery.py)
            with contextlib.suppress(OSError):
                self._log(f"d {seq}\n")
                self._compact()

    # -- the open segment's parts --
    def open_segment(self, seq: int, meta: dict[str, Any]) -> None:
        path = self._writable(f"seg-{seq}.m4s")
        # unbuffered: a part is one write, and a failed one holds no bytes in a buffer
        if self._spares:
            os.replace(self._spares.pop(), path)
            self._media[seq] = open(path, "r+b", buffering=0)  # noqa: SIM115 - kept open
        else:
            self._media[seq] = open(path, "wb", buffering=0)  # noqa: SIM115 - kept open
        self._entries[seq] = _Entry(meta)
        self._log(f"o {seq} {json.dumps(meta)}\n")

    def put_part(self, seq: int, data: bytes, duration: float) -> None:
        media, entry = self._media[seq], self._entries[seq]
        start = media.tell()
        write_all(media, data)  # its bytes before its line
        try:
            self._log(f"p {seq} {media.tell()} {duration}\n")
        except OSError:
            media.truncate(start)
            media.seek(start)
            raise
        entry.end = media.tell()
        entry.duration += duration
        self.meter.used += len(data)

    def open_segments(self) -> list[OpenSegment]:
        """Segments a killed writer left open: the parts whose journal line was written."""
        found = []
        for seq, entry in sorted(self._entries.items()):
            if entry.closed or seq in self._media:
                continue
            data = b""
            with contextlib.suppress(FileNotFoundError):
                data = (self.dir / f"seg-{seq}.m4s").read_bytes()[: entry.end]
            found.append(OpenSegment(seq, entry.meta, [data] if data else [], entry.duration))
        return found

    def open_meta(self, seq: int) -> dict[str, Any]:
        return dict(self._entries[seq].meta)

    def drop_open(self, seq: int) -> None:
        media = self._media.pop(seq, None)
        if media is not None:
            media.close()
        self._forget(seq)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())

    def remove(self) -> None:
        for seq in list(self._media):
            self.drop_open(seq)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        shutil.rmtree(self.dir, ignore_errors=True)
