"""The spool's journal and spare files (recorder/spool.py): what a killed writer left is
read back exactly, a spare's old bytes never leak into a segment, compaction keeps only
what is pending, a full disk leaves whole journal lines."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from recorder import spool as spool_module
from recorder.spool import JOURNAL, Spool, replay
from tests.recorder.conftest import fill


def test_a_killed_writer_leaves_closed_and_open_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "r1")
    spool.open_segment(0, {"start": 1.0})
    spool.put_part(0, b"a" * 10, 0.5)
    spool.put_part(0, b"b" * 10, 0.5)
    spool.put_segment(0, b"a" * 10 + b"b" * 10, {"start": 1.0, "duration": 1.0})
    spool.open_segment(1, {"start": 2.0})
    spool.put_part(1, b"c" * 7, 0.5)
    with open(tmp_path / "r1" / JOURNAL, "ab") as journal:
        journal.write(b"p 1 99")  # killed while writing a line: it does not count
    again = Spool(tmp_path, "r1")
    [closed] = again.pending_segments()
    assert closed.seq == 0 and closed.meta["duration"] == 1.0
    assert closed.path.read_bytes() == b"a" * 10 + b"b" * 10
    [left] = again.open_segments()
    assert (left.seq, left.parts, left.duration, left.meta) == (1, [b"c" * 7], 0.5, {"start": 2.0})


def test_spares_are_written_over_and_cut_to_length(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "r1")
    spool.open_segment(0, {})
    spool.put_part(0, b"x" * 100, 1.0)
    spool.done(spool.put_segment(0, b"x" * 100, {}))
    assert [p.name for p in (tmp_path / "r1").glob("spare-*")] == ["spare-0"]
    spool.open_segment(1, {})  # takes the spare: no new file
    assert not list((tmp_path / "r1").glob("spare-*"))
    spool.put_part(1, b"y" * 30, 1.0)
    pending = spool.close_segment(1, {})
    assert pending.path.read_bytes() == b"y" * 30
    spool.open_segment(2, {})  # a fresh file (no spare left) for a kill mid-segment
    spool.put_part(2, b"z" * 5, 0.5)
    assert Spool(tmp_path, "r1").open_segments()[0].parts == [b"z" * 5]


def test_compaction_keeps_only_what_is_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "JOURNAL_COMPACT_BYTES", 500)
    spool = Spool(tmp_path, "r1")
    for seq in range(40):
        spool.open_segment(seq, {"start": float(seq)})
        spool.put_part(seq, b"p" * 8, 1.0)
        pending = spool.put_segment(seq, b"p" * 8, {"start": float(seq), "duration": 1.0})
        if seq != 7:
            spool.done(pending)
    spool.open_segment(40, {"start": 40.0})
    spool.put_part(40, b"q" * 3, 0.25)
    journal = (tmp_path / "r1" / JOURNAL).read_text()
    assert len(journal) < 800
    entries = replay(journal)
    assert sorted(entries) == [7, 40] and entries[7].closed and entries[40].end == 3
    assert [p.seq for p in Spool(tmp_path, "r1").pending_segments()] == [7]


def test_a_full_disk_leaves_the_spool_as_it_was(small_disk: Path) -> None:
    """Writes that fail with ENOSPC are cut back: the journal keeps whole lines and a
    segment's file its spooled parts, so what comes once space returns replays."""
    spool = Spool(small_disk, "r1")
    spool.open_segment(0, {"start": 0.0})
    spool.put_part(0, b"a" * 1000, 0.5)
    filler = fill(small_disk, leave=0)
    with pytest.raises(OSError):
        spool.put_part(0, b"b" * 100_000, 0.5)
    with pytest.raises(OSError):  # a journal line longer than the space left
        spool.open_segment(1, {"start": 1.0, "note": "n" * 100_000})
    spool.drop_open(1)
    filler.unlink()
    spool.put_part(0, b"c" * 1000, 0.5)
    spool.close_segment(0, {"start": 0.0, "duration": 1.0})
    journal = (small_disk / "r1" / JOURNAL).read_text()
    assert all(len(line) < 1000 for line in journal.splitlines()), "a cut line was kept"
    again = Spool(small_disk, "r1")
    [closed] = again.pending_segments()
    assert (closed.seq, closed.meta) == (0, {"start": 0.0, "duration": 1.0})
    assert closed.path.read_bytes() == b"a" * 1000 + b"c" * 1000
    assert [s.seq for s in again.open_segments() if s.parts] == []


def test_a_spool_opened_on_a_full_disk_is_made_by_its_first_write(small_ext4: Path) -> None:
    """A recording starting while the disk is full (mkdir needs a block on ext4) starts:
    its spool's writes fail with ENOSPC until there is space, then it is made."""
    filler = fill(small_ext4, leave=0)
    for n in range(1000):  # the last blocks, down to none
        try:
            (small_ext4 / f"small-{n}").write_bytes(b"x")
        except OSError:
            break
    spool = Spool(small_ext4 / "spool", "r1")
    with pytest.raises(OSError) as refused:
        spool.open_segment(0, {"start": 0.0})
    assert refused.value.errno == errno.ENOSPC
    filler.unlink()
    spool.open_segment(0, {"start": 0.0})
    spool.put_part(0, b"a" * 100, 0.5)
    spool.close_segment(0, {"start": 0.0, "duration": 0.5})
    [closed] = Spool(small_ext4 / "spool", "r1").pending_segments()
    assert closed.path.read_bytes() == b"a" * 100
