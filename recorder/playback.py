"""Playback of a recording: an HLS playlist over the stored segments, and wall-clock times.

Every segment carries its program date-time, so a player shows (and several players of one
session align on) the courtroom's clock; gaps are discontinuities.

Segments play in wall-clock order, not in the manifest's order: a backfilled segment (sent
later by a device agent) is listed in the chain after the live ones, but plays in its gap,
with a discontinuity on each side and the EXT-X-MAP of the agent's init.

Which playlist a player gets:
- a closed recording: VOD (ENDLIST), every segment in wall-clock order, backfill in its gaps;
- an open recording: an EVENT playlist that grows, of the live segments only, in the order
  the recorder wrote them. An EVENT playlist may only be appended to (RFC 8216 6.2.1: the
  server must not change or delete any part of it), and a player following it keeps what
  it loaded; a backfilled segment arriving during the trial belongs in the middle, so it
  is left out of the EVENT playlist rather than inserted there. It is in the snapshot and,
  once the recording is closed, in the VOD playlist (a player still following the EVENT
  playlist at the close then reloads a VOD one; only a recording backfilled while open
  differs there from its EVENT playlist);
- a snapshot (`snapshot=1`), or a stretch with an end (`to`), of an open recording: VOD of
  what is stored now, backfill included, in wall-clock order. It does not grow: ask again
  for a newer one.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from recorder.manifest import Manifest, SegmentEntry


class TimeError(ValueError):
    """A time the user gave that cannot be read or lies outside the recording."""


def program_date_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        parsed = datetime.fromisoformat(text)  # 3.11 reads a "Z" zone itself
    except ValueError:
        raise TimeError(
            f"time {text!r}: use ISO 8601 (2026-11-22T09:30:00Z), UNIX seconds, "
            "or +SECONDS from the recording's start"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def select(manifest: Manifest, start: float | None, end: float | None) -> list[SegmentEntry]:
    """The segments covering [start, end): from the one holding start (its keyframe is at
    or before start) to the last that begins before end."""
    return [
        s
        for s in manifest.segments
        if (start is None or s.end > start) and (end is None or s.start < end)
    ]


def playlist(
    manifest: Manifest,
    start: float | None = None,
    end: float | None = None,
    query: str = "",
    snapshot: bool = False,
) -> str:
    """The playlist of [start, end) a player gets (the module's docstring says which)."""
    segments = select(manifest, start, end)
    if manifest.state != "closed" and not snapshot and end is None:
        # the manifest's order, not wall-clock: what the recorder appended, appended
        return render([s for s in segments if not s.backfilled], query, vod=False)
    return render(sorted(segments, key=lambda s: s.start), query, vod=True)  # stable sort


def render(segments: list[SegmentEntry], query: str = "", vod: bool = True) -> str:
    """The playlist of these segments, in this order."""
    suffix = f"?{query}" if query else ""
    target = max((math.ceil(s.duration) for s in segments), default=1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if vod else 'EVENT'}",
    ]
    init = None
    prev: SegmentEntry | None = None
    for seg in segments:
        if prev is not None and _discontinuous(prev, seg):
            lines.append("#EXT-X-DISCONTINUITY")
        prev = seg
        if seg.init != init:
            lines.append(f'#EXT-X-MAP:URI="{seg.init}{suffix}"')
            init = seg.init
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(seg.start)}")
        lines.append(f"#EXTINF:{seg.duration:.3f},")
        lines.append(f"{seg.name}{suffix}")
    if vod:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _discontinuous(prev: SegmentEntry, seg: SegmentEntry) -> bool:
    """Whether seg does not continue prev's media timeline: a discontinuity the recorder
    wrote, a switch between live and backfilled media, or backfilled runs that do not join
    (each agent run has its own timeline). Every backfilled entry is marked discontinuous
    (it arrived alone), so between two of them the media timeline decides."""
    if prev.backfilled != seg.backfilled:
        return True
    if not seg.backfilled:
        return seg.discontinuity
    joined = abs(prev.media_start + prev.duration - seg.media_start) <= 0.05
    return prev.init != seg.init or not joined
