"""A recording's timeline for /recordings: touching segments join into one recorded
stretch, a gap splits them, and every gap keeps its cause and reason."""

from __future__ import annotations

from recorder.manifest import Gap, GapCause, Manifest
from recorder.timeline import timeline


def manifest(starts: list[float], duration: float = 2.0) -> Manifest:
    m = Manifest(recording_id="r-1", stream="cam", room="Room 1", opened_at=starts[0])
    for n, start in enumerate(starts):
        m.append(
            start=start,
            duration=duration,
            data_sha256="0" * 64,
            size=1,
            init="init.mp4",
            media_start=n * duration,
            discontinuity=False,
        )
    return m


def test_touching_segments_are_one_stretch_and_a_gap_splits_them() -> None:
    m = manifest([100.0, 102.0, 104.001, 112.0, 114.0])
    m.gaps.append(Gap(106.0, 112.0, str(GapCause.publisher_lost), "client closed"))
    line = timeline(m)
    assert line["recorded"] == [[100.0, 106.001], [112.0, 116.0]]
    assert line["gaps"] == [
        {
            "start": 106.0,
            "end": 112.0,
            "cause": "publisher-lost",
            "reason": "client closed",
            "filled_by": "",
        }
    ]
    assert (line["recording"], line["stream"], line["room"]) == ("r-1", "cam", "Room 1")


def test_a_backfilled_segment_fills_its_gap_on_the_timeline() -> None:
    m = manifest([100.0, 108.0])
    m.append(
        start=102.0,
        duration=6.0,
        data_sha256="1" * 64,
        size=1,
        init="init-bf0.mp4",
        media_start=0.0,
        discontinuity=True,
        backfilled=True,
    )
    m.gaps.append(Gap(102.0, 108.0, str(GapCause.storage_outage), filled_by="backfill"))
    line = timeline(m)
    assert line["recorded"] == [[100.0, 110.0]]
    assert line["gaps"][0]["filled_by"] == "backfill"
