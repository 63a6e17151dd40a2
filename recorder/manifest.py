"""The manifest of a recording (DESIGN.md §6): its source of truth, next to its media.

`recordings/{id}/manifest.json` (keys: storage/recording_keys.py) lists the init
segments, every media segment (sequence, wall-clock start, duration, bytes, SHA-256, and
the hash of the previous entry: a chain) and every gap with its cause. The chain starts
from the hash of the header (ids, codecs, inits), so an entry cannot be moved to another
recording or reordered without breaking it.

Hashes are over canonical JSON (sorted keys, no spaces), so anyone can recompute them with
a few lines in any language. Pure code, no I/O.

Backfill (a device agent uploading what it recorded locally during a WAN cut): such a
segment is appended to the chain like any other (next seq, prev = the hash of the entry
before it in the list), so the chain keeps its order of arrival while the entry's `start`
lies back in the gap it fills; `backfilled: true` says so, and the gap gets
`filled_by: "backfill"`. Both fields are left out of the JSON (and of the entry hash) while
they hold their defaults, so manifests written before they existed verify unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from storage.recording_keys import segment_name

FORMAT = "courtcast-recording/1"


class GapCause(StrEnum):
    publisher_lost = "publisher-lost"
    recess = "recess"
    recorder_restart = "recorder-restart"
    recorder_failover = "recorder-failover"  # another recorder of the fleet took it over
    storage_outage = "storage-outage"
    recorder_overload = "recorder-overload"  # the recorder fell behind the hub and skipped
    disk_full = "disk-full"  # the spool's disk was full (ENOSPC) or failed: media dropped
    audio_lost = "audio-lost"  # in audio_gaps: the source's audio stopped, its video went on


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plain(entry: Any) -> dict[str, Any]:
    """A flat dataclass as a dict (asdict deep-copies, too slow to run per checkpoint)."""
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


# fields added after format 1 was in use: written only when set (hashes and bytes unchanged)
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "backfilled": False,
    "filled_by": "",
    "audio_source": "",
    "audio_transcode": "",
}


def stored(entry: Any) -> dict[str, Any]:
    """An entry as written and hashed: plain() without optional fields at their default."""
    body = plain(entry)
    for name, default in OPTIONAL_DEFAULTS.items():
        if name in body and body[name] == default:
            del body[name]
    return body


FILL_TOLERANCE_S = 1.0  # ~ a GOP at each end of a gap (see Manifest.fill_gaps)
FILL_HOLE_S = 0.25  # a hole this short between backfilled segments still counts as covered


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Seconds that [a0, a1) and [b0, b1) share."""
    return max(0.0, min(a1, b1) - max(a0, b0))


def covers(spans: list[tuple[float, float]], lo: float, hi: float) -> bool:
    """Whether the sorted spans cover [lo, hi], holes up to FILL_HOLE_S allowed."""
    reached = lo
    for a, b in spans:
        if reached >= hi:
            break
        if b <= reached:
            continue
        if a > reached + FILL_HOLE_S:
            return False
        reached = b
    return reached >= hi


def merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted spans with the overlapping ones joined."""
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@dataclass(slots=True)
class InitEntry:
    name: str  # "init.mp4", "init-{seq}.mp4" after a codec change, "init-bf{n}.mp4" backfill
    sha256: str
    bytes: int
    codecs: list[str]
    # the camera's own audio codec when the recorded audio is a transcode of it, and how
    audio_source: str = ""  # e.g. "pcma"
    audio_transcode: str = ""  # e.g. "pcma 8000 Hz -> AAC-LC 16000 Hz mono, at ingest"


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
    backfilled: bool = False  # uploaded later by the device agent, its start lies in a gap

    def entry_hash(self) -> str:
        return sha256_hex(canonical(stored(self)))

    @property
    def name(self) -> str:
        return segment_name(self.seq)

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(slots=True)
class Gap:
    start: float
    end: float
    cause: str
    reason: str = ""
    filled_by: str = ""  # "backfill": the device agent uploaded what this gap missed

    @property
    def filled(self) -> bool:
        return bool(self.filled_by)


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
    # stretches where the media went on without the source's audio (cause audio-lost and
    # why); written only when there is one, so older manifests read and verify unchanged
    audio_gaps: list[Gap] = field(default_factory=list)

    # -- the chain --------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """What the chain starts from: who and what was recorded, with which codecs."""
        return {
            "format": FORMAT,
            "recording_id": self.recording_id,
            "stream": self.stream,
            "session": self.session,
            "court": self.court,
            "room": self.room,
            "case_number": self.case_number,
            "opened_at": self.opened_at,
        }

    def genesis(self) -> str:
        return sha256_hex(canonical(self.header()))

    def last_hash(self) -> str:
        if not self.segments:
            return self.genesis()
        cached = getattr(self, "_last", None)
        if cached is None or cached[0] is not self.segments[-1]:
            cached = self._last = (self.segments[-1], self.segments[-1].entry_hash())
        return cached[1]

    def append(
        self,
        *,
        start: float,
        duration: float,
        data_sha256: str,
        size: int,
        init: str,
        media_start: float,
        discontinuity: bool,
        backfilled: bool = False,
        seq: int | None = None,
    ) -> SegmentEntry:
        """The next entry of the chain; seq: the object's number when the writer chose it
        (unique; a backfilled segment may hold a number above the live one being written)."""
        entry = SegmentEntry(
            seq=self.next_seq if seq is None else seq,
            start=round(start, 6),
            duration=round(duration, 6),
            bytes=size,
            sha256=data_sha256,
            init=init,
            media_start=round(media_start, 6),
            discontinuity=discontinuity,
            prev=self.last_hash(),
            backfilled=backfilled,
        )
        self.segments.append(entry)
        return entry

    @property
    def next_seq(self) -> int:
        return max(s.seq for s in self.segments) + 1 if self.segments else 0

    def _last_live(self) -> SegmentEntry | None:
        """The newest segment the recorder wrote (backfilled ones sit on the agent's own
        media timeline, back in a gap)."""
        return next((s for s in reversed(self.segments) if not s.backfilled), None)

    @property
    def media_end(self) -> float:
        """Where the media timeline stands (seconds), so a resumed writer continues it."""
        last = self._last_live()
        return last.media_start + last.duration if last else 0.0

    @property
    def wallclock_end(self) -> float | None:
        last = self._last_live()
        return last.end if last else None

    def open_gaps(self) -> list[Gap]:
        """Gaps nothing has filled yet."""
        return [g for g in self.gaps if not g.filled]

    def fillable_gaps(self) -> list[Gap]:
        """Gaps a device agent's local recording may fill: not a recess (nothing is to be
        recorded then), not filled yet, not empty."""
        return [g for g in self.open_gaps() if g.cause != GapCause.recess and g.end - g.start > 0]

    def backfill_room(self, start: float, end: float) -> float:
        """Seconds of [start, end) that lie in a gap backfill may add to and that no
        backfilled segment covers yet. A gap marked filled still counts: it was marked
        within FILL_TOLERANCE_S of its edges, so the agent's last segment of it (sent in
        the same round) may hold the media of its last moments."""
        spans = merged(sorted((s.start, s.end) for s in self.segments if s.backfilled))
        room = 0.0
        for gap in self.gaps:
            if gap.cause == GapCause.recess or gap.filled_by not in ("", "backfill"):
                continue
            lo, hi = max(start, gap.start), min(end, gap.end)
            room += max(0.0, hi - lo) - sum(overlap(a, b, lo, hi) for a, b in spans)
        return room

    def fill_gaps(self, tolerance_s: float = FILL_TOLERANCE_S) -> list[Gap]:
        """Mark the gaps the backfilled segments now cover as filled; returns them.

        Covered: every moment of [start + tolerance, end - tolerance] lies in a backfilled
        segment (holes up to FILL_HOLE_S allowed), and at least one overlaps the gap. The
        tolerance absorbs the clocks: live segments carry the server's arrival time, the
        agent's segments the agent's capture time, and edges fall on keyframes."""
        spans = sorted((s.start, s.end) for s in self.segments if s.backfilled)
        filled = []
        for gap in self.fillable_gaps():
            if not any(overlap(a, b, gap.start, gap.end) > 0 for a, b in spans):
                continue
            if covers(spans, gap.start + tolerance_s, gap.end - tolerance_s):
                gap.filled_by = "backfill"
                filled.append(gap)
        return filled

    @property
    def duration(self) -> float:
        """Seconds of media. Kept as a running sum: it is read at every checkpoint of a
        recording that may hold thousands of segments."""
        count, last, total = self.__dict__.get("_duration", (0, None, 0.0))
        if count > len(self.segments) or (count and self.segments[count - 1] is not last):
            count, total = 0, 0.0  # the list was replaced or cut: sum again
        for seg in self.segments[count:]:
            total += seg.duration
        self._duration = (len(self.segments), self.segments[-1] if self.segments else None, total)
        return float(total)

    def codecs(self) -> list[str]:
        return self.inits[0].codecs if self.inits else []

    # -- (de)serialising ----------------------------------------------------------------

    def to_dict(self, segments: bool = True) -> dict[str, Any]:
        body = plain(self)
        for name in ("inits", "segments", "gaps", "audio_gaps"):
            body[name] = [stored(e) for e in body[name]] if segments or name != "segments" else []
        if not body["audio_gaps"]:
            del body["audio_gaps"]
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
        cache.extend(
            json.dumps(stored(e), sort_keys=True, separators=(",", ":"))
            for e in self.segments[len(cache) :]
        )
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
            body["audio_gaps"] = [Gap(**g) for g in body.get("audio_gaps", [])]
            return cls(**body)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"manifest is not readable: {exc}") from None
