"""A recording's timeline, for people: the stretches it holds media for and the gaps
between them with their causes, drawn by /recordings as a bar per camera.

Segments follow one another with sub-millisecond slack; stretches join those that touch
(within JOIN_S), so a bar has a handful of spans however many segments the trial has.
Pure code, no I/O.
"""

from __future__ import annotations

from typing import Any

from recorder.manifest import Manifest, merged

JOIN_S = 0.5  # less than any gap the recorder writes (a keyframe interval at least)


def recorded_spans(manifest: Manifest) -> list[tuple[float, float]]:
    """[start, end) of the wall-clock stretches with media, in order, backfill included."""
    spans = sorted((s.start, s.end) for s in manifest.segments)
    joined = merged([(a, b + JOIN_S) for a, b in spans])
    return [(round(a, 3), round(b - JOIN_S, 3)) for a, b in joined]


def timeline(manifest: Manifest) -> dict[str, Any]:
    """What the page draws: the recording's span, its recorded stretches and its gaps."""
    return {
        "recording": manifest.recording_id,
        "stream": manifest.stream,
        "session": manifest.session,
        "court": manifest.court,
        "room": manifest.room,
        "state": manifest.state,
        "opened_at": manifest.opened_at,
        "closed_at": manifest.closed_at,
        "recorded": [list(span) for span in recorded_spans(manifest)],
        "gaps": [
            {
                "start": g.start,
                "end": g.end,
                "cause": g.cause,
                "reason": g.reason,
                "filled_by": g.filled_by,
            }
            for g in manifest.gaps
        ],
    }
