"""Manifest.backfill_room: what a backfilled segment may still add to a gap; gap causes
of the signed format."""

from __future__ import annotations

from pathlib import Path

from recorder.manifest import Gap, GapCause, Manifest
from recorder.manifest_store import read_manifest, save_manifest
from recorder.signing import Signer
from recorder.verify import verify_recording
from storage.objects import open_object_store


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


async def test_a_recorder_overload_gap_is_of_the_format_and_verifies(tmp_path: Path) -> None:
    store = open_object_store("disk", root=tmp_path / "objects", signing_secret=b"s" * 32)
    signer = Signer.for_data_dir(tmp_path / "data")
    m = Manifest(recording_id="r1", stream="s", opened_at=100.0, state="closed")
    m.gaps = [Gap(100.0, 104.0, GapCause.recorder_overload, "12 packets skipped")]
    await save_manifest(store.put, m, signer)
    report = await verify_recording(store, "r1", signer.public)
    assert report.ok and report.signed, report.summary()
    [gap] = (await read_manifest(store, "r1")).gaps
    assert gap.cause == "recorder-overload" == GapCause.recorder_overload
    await store.close()
