"""Playback of a recording: an HLS playlist over the stored segments, and wall-clock times.

Every segment carries its program date-time, so a player shows (and several players of one
session align on) the courtroom's clock; gaps are discontinuities; a closed recording is
VOD (ENDLIST), an open one an EVENT playlist that grows.

Segments play in wall-clock order, not in the manifest's order: a backfilled segment (sent
later by a device agent) is listed in the chain after the live ones, but plays in its gap,
with a discontinuity on each side and the EXT-X-MAP of the agent's init.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from recorder.manifest import Manifest, SegmentEntry


class TimeError(ValueError):
    """A time the user gave that cannot be read or lies outside the recording."""


def program_date_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_time(text: str, base: float) -> float:
    """A UNIX time, an ISO 8601 time (no zone: UTC), or +SECONDS from base."""
    text = text.strip()
    try:
        if text.startswith("+"):
            return base + float(text[1:])
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeError(f"time {text!r}: use ISO 8601 (2026-11-22T09:30:00Z), UNIX seconds, "
                        "or +SECONDS from the recording's start") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def select(manifest: Manifest, start: float | None, end: float | None) -> list[SegmentEntry]:
    """The segments covering [start, end): from the one holding start (its keyframe is at
    or before start) to the last that begins before end."""
    return [s for s in manifest.segments
            if (start is None or s.end > start) and (end is None or s.start < end)]


def render(manifest: Manifest, segments: list[SegmentEntry], query: str = "") -> str:
    suffix = f"?{query}" if query else ""
    closed = manifest.state == "closed"
    target = max((math.ceil(s.duration) for s in segments), default=1)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS",
             f"#EXT-X-PLAYLIST-TYPE:{'VOD' if closed else 'EVENT'}"]
    init = None
    prev: SegmentEntry | None = None
    for seg in sorted(segments, key=lambda s: s.start):  # stable: live order kept
        if prev is not None and _discontinuous(prev, seg):
            lines.append("#EXT-X-DISCONTINUITY")
        prev = seg
        if seg.init != init:
            lines.append(f'#EXT-X-MAP:URI="{seg.init}{suffix}"')
            init = seg.init
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(seg.start)}")
        lines.append(f"#EXTINF:{seg.duration:.3f},")
        lines.append(f"{seg.name}{suffix}")
    if closed:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _discontinuous(prev: SegmentEntry, seg: SegmentEntry) -> bool:
    """Whether seg does not continue prev's media timeline: a discontinuity the recorder
    wrote, a switch between live and backfilled media, or backfilled runs that do not join
    (each agent run has its own timeline)."""
    if seg.discontinuity or prev.backfilled != seg.backfilled:
        return True
    joined = abs(prev.media_start + prev.duration - seg.media_start) <= 0.05
    return seg.backfilled and (prev.init != seg.init or not joined)
