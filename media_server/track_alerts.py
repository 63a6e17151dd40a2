"""A track a source sends that reaches no output (a stream's stats say "dropped: why")
raises one alert, not one per stats tick: the first time it is seen dropped, and again
only after it was carried in between. A source reconnecting with the same dropped track
(a flaky camera) does not raise it again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from media_server.hub import Stream
from media_server.media import SourceTrack

KIND = "track-dropped"


def describe(stream_id: str, track: SourceTrack) -> tuple[str, dict[str, Any]]:
    """The alert's message and fields for one dropped track."""
    reason = track.state.removeprefix("dropped:").strip()
    message = (
        f"stream {stream_id}: the source's {track.kind} track ({track.codec}) is dropped: "
        f"{reason}; it is in no output and no recording"
    )
    return message, {
        "stream": stream_id,
        "track": track.kind,
        "codec": track.codec,
        "reason": reason,
    }


class DroppedTracks:
    """Which dropped tracks were already told, per stream."""

    def __init__(self) -> None:
        self._told: dict[str, frozenset[SourceTrack]] = {}

    def new(self, streams: Iterable[Stream]) -> list[tuple[str, SourceTrack]]:
        """(stream id, track) for each track dropped now that was not told yet."""
        out: list[tuple[str, SourceTrack]] = []
        seen: set[str] = set()
        for stream in streams:
            seen.add(stream.id)
            if not stream.live or not stream.source_tracks:
                continue  # between publications the last ones stand
            dropped = frozenset(t for t in stream.source_tracks if t.dropped)
            told = self._told.get(stream.id, frozenset())
            out.extend((stream.id, t) for t in stream.source_tracks if t in dropped - told)
            self._told[stream.id] = dropped
        for gone in set(self._told) - seen:
            del self._told[gone]
        return out

    def retry(self, stream_id: str, track: SourceTrack) -> None:
        """Telling it failed (Redis away): tell it at the next look."""
        told = self._told.get(stream_id)
        if told is not None:
            self._told[stream_id] = told - {track}
