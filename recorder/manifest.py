"""The manifest of a recording (DESIGN.md §6): its source of truth, next to its media.

`recordings/{id}/manifest.json` lists the init segments, every media segment (sequence,
wall-clock start, duration, bytes, SHA-256, and the hash of the previous entry: a chain)
and every gap with its cause. The chain starts from the hash of the header (ids, codecs,
inits), so an entry cannot be moved to another recording or reordered without breaking it.

Hashes are over canonical JSON (sorted keys, no spaces), so anyone can recompute them with
a few lines in any language. Pure code, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

FORMAT = "courtcast-recording/1"


class GapCause(StrEnum):
    publisher_lost = "publisher-lost"
    recess = "recess"
    recorder_restart = "recorder-restart"
    storage_outage = "storage-outage"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plain(entry: Any) -> dict[str, Any]:
    """A flat dataclass as a dict (asdict deep-copies, too slow to run per checkpoint)."""
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


def segment_key(recording_id: str, seq: int) -> str:
    return f"recordings/{recording_id}/seg-{seq}.m4s"


def object_prefix(recording_id: str) -> str:
    return f"recordings/{recording_id}/"


@dataclass(slots=True)
class InitEntry:
    name: str  # "init.mp4", or "init-{seq}.mp4" after a codec change
    sha256: str
    bytes: int
    codecs: list[str]


@dataclass(slots=True)
class SegmentEntry:
    seq: int
    start: float  # wall-clock (UNIX seconds) of the first sample
    duration: float
    bytes: int
    sha256: str
    init: str
    media_start: float  # seconds on the recording's media timeline (tfdt)
    discontinuity: bool
    prev: str  # entry_hash of the previous entry (the header hash for the first)

    def entry_hash(self) -> str:
        return sha256_hex(canonical(plain(self)))

    @property
    def name(self) -> str:
        return f"seg-{self.seq}.m4s"

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(slots=True)
class Gap:
    start: float
    end: float
    cause: str
    reason: str = ""


@dataclass
class Manifest:
    recording_id: str
    stream: str
    session: str = ""
    court: str = ""
    room: str = ""
    case_number: str = ""
    stream_class: str = ""
    public: bool = False  # a public trial: its replay may be watched by anyone
    opened_at: float = 0.0
    closed_at: float | None = None
    state: str = "recording"  # "recording" | "closed"
    signing_key_id: str = ""
    inits: list[InitEntry] = field(default_factory=list)
    segments: list[SegmentEntry] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    # -- the chain --------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """What the chain starts from: who and what was recorded, with which codecs."""
        return {"format": FORMAT, "recording_id": self.recording_id, "stream": self.stream,
                "session": self.session, "court": self.court, "room": self.room,
                "case_number": self.case_number, "opened_at": self.opened_at}

    def genesis(self) -> str:
        return sha256_hex(canonical(self.header()))

    def last_hash(self) -> str:
        if not self.segments:
            return self.genesis()
        cached = getattr(self, "_last", None)
        if cached is None or cached[0] is not self.segments[-1]:
            cached = self._last = (self.segments[-1], self.segments[-1].entry_hash())
        return cached[1]

    def append(self, *, start: float, duration: float, data_sha256: str, size: int,
               init: str, media_start: float, discontinuity: bool) -> SegmentEntry:
        entry = SegmentEntry(seq=self.next_seq, start=round(start, 6),
                             duration=round(duration, 6), bytes=size, sha256=data_sha256,
                             init=init, media_start=round(media_start, 6),
                             discontinuity=discontinuity, prev=self.last_hash())
        self.segments.append(entry)
        return entry

    @property
    def next_seq(self) -> int:
        return self.segments[-1].seq + 1 if self.segments else 0

    @property
    def media_end(self) -> float:
        """Where the media timeline stands (seconds), so a resumed writer continues it."""
        last = self.segments[-1] if self.segments else None
        return last.media_start + last.duration if last else 0.0

    @property
    def wallclock_end(self) -> float | None:
        return self.segments[-1].end if self.segments else None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def codecs(self) -> list[str]:
        return self.inits[0].codecs if self.inits else []

    # -- (de)serialising ----------------------------------------------------------------

    def to_dict(self, segments: bool = True) -> dict[str, Any]:
        body = plain(self)
        for name in ("inits", "segments", "gaps"):
            body[name] = [plain(e) for e in body[name]] if segments or name != "segments" else []
        body["format"] = FORMAT
        return body

    def to_bytes(self) -> bytes:
        """The stored form: compact JSON, sorted keys, a segment per line (the signature
        covers these exact bytes).

        Checkpoints rewrite it every few seconds for hours, so each segment entry is
        serialised once and cached; only the rest is serialised again.
        """
        body = self.to_dict(segments=False)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        # a string value cannot hold this literal unescaped, so it is the segments key
        marker = '"segments":[]'
        assert text.count(marker) == 1
        cache: list[str] = self.__dict__.setdefault("_segment_json", [])
        if len(cache) > len(self.segments):
            cache.clear()
        cache.extend(json.dumps(plain(e), sort_keys=True, separators=(",", ":"))
                     for e in self.segments[len(cache):])
        entries = ",\n".join(cache)
        return text.replace(marker, f'"segments":[\n{entries}]').encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            if body.pop("format", None) != FORMAT:
                raise ValueError(f"not a {FORMAT} manifest")
            body["inits"] = [InitEntry(**i) for i in body.get("inits", [])]
            body["segments"] = [SegmentEntry(**s) for s in body.get("segments", [])]
            body["gaps"] = [Gap(**g) for g in body.get("gaps", [])]
            return cls(**body)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"manifest is not readable: {exc}") from None
