"""The public replay of a finished broadcast (issue 16, item 4): HLS VOD of the broadcast
camera's recording, without what the public never saw live.

What the public never saw: every stretch the broadcast showed its slate. A cut or a recess
throws away what the delayed rendition held (media captured in the last `delay_s`,
media_server/hls/delayed.py) and keeps nothing until the resume, so each such stretch runs
from `delay_s` before the cut (or recess) to its resume (or the close). A segment of the
recording that overlaps one is left out whole (segments start on keyframes, and a part of
one cannot be served), and the next one kept starts a discontinuity.

The replay is the public's copy, with its own retention (recorder.public_replay_days from
the close): once past it, every replay URL answers 404 and the public list says no replay;
the recording, which is evidence, is untouched. Pure functions here; the routes are in
recorder/replay_http.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

from recorder.manifest import Manifest, SegmentEntry
from recorder.playback import render
from recorder.sessions import TrialSession

PAUSES = {"cut": "broadcast-resume", "recess": "resume"}  # a pause -> the event ending it
SLACK_S = 0.5  # the rendition cuts a moment before the cut is stored: widen the window


def replay_url(session_id: str) -> str:
    """Where the replay of a finished public session plays (the `hls` of the public list)."""
    return f"/public/{session_id}/replay/index.m3u8"


def hidden_windows(session: TrialSession) -> list[tuple[float, float]]:
    """Capture-time stretches [from, to) the broadcast replaced with its slate, in order;
    `to` is math.inf while one still lasts."""
    windows: list[tuple[float, float]] = []
    paused: set[str] = set()
    start = 0.0
    for event in sorted(session.events, key=lambda e: float(e["at"])):
        kind, at = str(event["event"]), float(event["at"])
        if kind in PAUSES:
            if not paused:
                start = at - session.delay_s - SLACK_S
            paused.add(kind)
        elif kind in PAUSES.values() or kind == "close":
            paused -= {p for p, end in PAUSES.items() if kind in (end, "close")}
            if not paused and start:
                windows.append((start, at))
                start = 0.0
    if paused:
        windows.append((start, math.inf))
    return windows


def expired(session: TrialSession, keep_days: float, now: float) -> bool:
    """Whether the public replay of a closed session is past its retention."""
    closed = session.closed_at if session.closed_at is not None else now
    return now >= closed + keep_days * 86400


@dataclass(frozen=True)
class Replay:
    """The segments of one recording the public may replay, in wall-clock order."""

    recording_id: str
    segments: list[SegmentEntry]
    closed: bool  # the recording is closed: the list no longer grows

    @cached_property
    def names(self) -> dict[str, str]:
        """Object name -> its strong ETag, for every object the playlist names."""
        names = {s.name: f'"{s.sha256[:32]}"' for s in self.segments}
        for init in {s.init for s in self.segments}:
            names[init] = f'"{self.recording_id}/{init}"'
        return names

    def playlist(self) -> str:
        return render(self.segments, vod=True)


def make_replay(manifest: Manifest, windows: list[tuple[float, float]]) -> Replay:
    """The recording's segments outside every window; a discontinuity after each hole."""
    kept: list[SegmentEntry] = []
    dropped = False
    for seg in sorted(manifest.segments, key=lambda s: s.start):
        if any(seg.start < hi and seg.end > lo for lo, hi in windows):
            dropped = True
            continue
        kept.append(replace(seg, discontinuity=True) if dropped and kept else seg)
        dropped = False
    return Replay(manifest.recording_id, kept, manifest.state == "closed")
