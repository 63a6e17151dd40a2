"""Manifest.backfill_room: what a backfilled segment may still add to a gap."""

from __future__ import annotations

from recorder.manifest import Gap, Manifest


def test_backfill_room_is_the_part_of_a_gap_no_backfilled_segment_covers() -> None:
    m = Manifest(recording_id="r", stream="s", opened_at=100.0)
    m.gaps = [Gap(104.0, 108.0, "publisher-lost"), Gap(120.0, 130.0, "recess")]
    for at in (103.0, 105.0):  # [103, 107): the first reaches back over the gap's start
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
    assert m.fill_gaps() == [m.gaps[0]]  # within a second of its end: marked filled
    # the agent's next segment still adds the gap's last second; a copy adds nothing
    assert abs(m.backfill_room(107.0, 109.0) - 1.0) < 1e-9
    assert m.backfill_room(105.0, 107.0) == 0.0
    assert m.backfill_room(100.0, 104.0) == 0.0  # live media there
    assert m.backfill_room(121.0, 123.0) == 0.0  # a recess records nothing
