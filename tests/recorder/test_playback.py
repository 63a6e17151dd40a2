"""Which playlist a recording gets (recorder/playback.py): an open recording's EVENT
playlist only ever grows at its end (backfilled segments are left out of it), a snapshot
or a closed recording is VOD in wall-clock order with the backfill in its gap."""

from __future__ import annotations

from recorder.manifest import Gap, Manifest
from recorder.playback import playlist


def live(m: Manifest, at: float, discontinuity: bool = False) -> None:
    m.append(
        start=at,
        duration=2.0,
        data_sha256="x",
        size=1,
        init="init.mp4",
        media_start=at - 100.0,
        discontinuity=discontinuity,
    )


def backfilled(m: Manifest, at: float) -> None:
    m.append(
        start=at,
        duration=2.0,
        data_sha256="x",
        size=1,
        init="init-bf0.mp4",
        media_start=at,
        discontinuity=True,
        backfilled=True,
    )


def names(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("seg-")]


def open_recording() -> Manifest:
    """Live 100-104, a cut 104-108, live again from 108 (open)."""
    m = Manifest(recording_id="r", stream="s", opened_at=100.0)
    live(m, 100.0)
    live(m, 102.0)
    m.gaps.append(Gap(104.0, 108.0, "publisher-lost"))
    live(m, 108.0, discontinuity=True)
    return m


def test_event_playlist_only_grows_while_backfill_arrives() -> None:
    m = open_recording()
    before = playlist(m)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in before and "ENDLIST" not in before
    backfilled(m, 104.0)
    backfilled(m, 106.0)
    live(m, 110.0)
    after = playlist(m)
    # what a following player loaded is unchanged; the new live segment is appended
    assert after.startswith(before)
    assert names(after) == ["seg-0.m4s", "seg-1.m4s", "seg-2.m4s", "seg-5.m4s"]
    assert "init-bf0" not in after and after.count("#EXT-X-DISCONTINUITY") == 1


def test_snapshot_and_closed_recording_play_backfill_in_its_gap() -> None:
    m = open_recording()
    backfilled(m, 104.0)
    backfilled(m, 106.0)
    snapshot = playlist(m, snapshot=True)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in snapshot and snapshot.rstrip().endswith("ENDLIST")
    in_order = ["seg-0.m4s", "seg-1.m4s", "seg-3.m4s", "seg-4.m4s", "seg-2.m4s"]
    assert names(snapshot) == in_order
    assert snapshot.count('#EXT-X-MAP:URI="init-bf0.mp4"') == 1
    assert snapshot.count("#EXT-X-DISCONTINUITY") == 2
    # a stretch with an end is a fixed thing: VOD too, even while open
    stretch = playlist(m, 103.0, 107.0)
    assert names(stretch) == ["seg-1.m4s", "seg-3.m4s", "seg-4.m4s"]
    assert stretch.rstrip().endswith("ENDLIST")
    m.state = "closed"
    assert playlist(m) == snapshot


def test_event_playlist_from_a_time_grows_too() -> None:
    m = open_recording()
    text = playlist(m, start=103.0)
    assert "EVENT" in text and names(text) == ["seg-1.m4s", "seg-2.m4s"]
