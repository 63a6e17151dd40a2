"""Recording leases of a recorder fleet (recorder/leases.py) on a real Redis: one writer per
key, a higher epoch per grant, fair shares, and fencing of a writer whose lease passed."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from recorder.index import RecordingIndex
from recorder.leases import SEQS_PER_EPOCH, FencedIndex, FencedStore, FenceLost, RecordingLeases
from recorder.manifest import Gap, GapCause, Manifest
from recorder.orphans import adopt
from recorder.recording import RecorderOptions
from recorder.signing import Signer
from storage.objects import ObjectNotFound, ObjectStore, open_object_store
from storage.state import StateStore
from tests.recorder.test_recording import record_clip

KEYS = [("cam-1", "s1"), ("cam-2", "s1")]


async def test_two_recorders_split_the_keys_and_never_share_one(state: StateStore) -> None:
    a, b = RecordingLeases(state, "rec-a.1", 5.0), RecordingLeases(state, "rec-b.1", 5.0)
    await a.announce()
    await b.announce()
    took_a, took_b = await asyncio.gather(a.claim(KEYS), b.claim(KEYS))
    assert len(took_a) == len(took_b) == 1
    assert {g.key for g in took_a} | {g.key for g in took_b} == set(KEYS)
    # a second round takes nothing more: each holds its share, the other key is held
    assert await a.claim(KEYS) == [] and await b.claim(KEYS) == []


async def test_a_lease_that_ran_out_passes_with_a_higher_epoch(state: StateStore) -> None:
    old = RecordingLeases(state, "rec-a.1", 0.3)
    (first,) = await old.claim(KEYS[:1])
    assert first.epoch == 1 and first.first_seq == 0
    new = RecordingLeases(state, "rec-b.1", 5.0)
    assert await new.claim(KEYS[:1]) == []  # held
    await asyncio.sleep(0.4)  # the old holder was paused past its lease
    (second,) = await new.claim(KEYS[:1])
    assert second.epoch == 2 and second.first_seq == SEQS_PER_EPOCH
    assert [g.value for g in await old.renew()] == [first.value]  # it learns it lost
    assert not old.held
    with pytest.raises(FenceLost):
        await old.check(first)
    await new.check(second)


async def test_a_fenced_out_writer_writes_neither_index_nor_objects(
    state: StateStore, tmp_path: Path
) -> None:
    store = open_object_store("disk", root=tmp_path / "o", signing_secret=secrets.token_bytes(32))
    manifest = Manifest(recording_id="cam-1-x", stream="cam-1", session="s1")
    old = RecordingLeases(state, "rec-a.1", 0.3)
    (grant,) = await old.claim(KEYS[:1])
    await FencedIndex(state, grant).put(manifest, "rec-a")
    await FencedStore(store, old, grant).put("recordings/cam-1-x/seg-0.m4s", b"a")
    await asyncio.sleep(0.4)
    new = RecordingLeases(state, "rec-b.1", 5.0)
    (taken,) = await new.claim(KEYS[:1])
    await FencedIndex(state, taken).put(manifest, "rec-b")
    grant.expires += 60  # as if its own clock had not noticed: Redis must refuse
    with pytest.raises(FenceLost):
        await FencedIndex(state, grant).put(manifest, "rec-a")
    with pytest.raises(FenceLost):
        await FencedStore(store, old, grant).put("recordings/cam-1-x/seg-1.m4s", b"late")
    record = await RecordingIndex(state).get("cam-1-x")
    assert record is not None and record["node"] == "rec-b"
    with pytest.raises(ObjectNotFound):
        await store.get("recordings/cam-1-x/seg-1.m4s")


def test_backfill_may_fill_a_recorder_failover_gap() -> None:
    manifest = Manifest(recording_id="r", stream="cam-1")
    gap = Gap(100.0, 110.0, str(GapCause.recorder_failover), "recorder-failover")
    manifest.gaps.append(gap)
    assert manifest.fillable_gaps() == [gap]
    assert manifest.backfill_room(100.0, 110.0) == pytest.approx(10.0)


@pytest.mark.parametrize("objects", ["disk"], indirect=True)
async def test_a_takeover_lists_the_segments_its_last_writer_stored_unlisted(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    """Killed between a segment's upload and its checkpoint: the segment is in the store,
    not in the manifest; the next writer reads it and lists it (else verify fails: extra)."""
    recorded = await record_clip(tmp_path, objects, index, signer, options)
    left = Manifest.from_bytes(recorded.to_bytes())
    left.segments = left.segments[:-2]  # uploaded, never listed
    assert await adopt(objects, left, SEQS_PER_EPOCH) == 2
    for got, want in zip(left.segments[-2:], recorded.segments[-2:], strict=True):
        assert (got.seq, got.sha256, got.bytes, got.init) == (
            want.seq,
            want.sha256,
            want.bytes,
            want.init,
        )
        assert got.duration == pytest.approx(want.duration, abs=0.05)
        assert got.media_start == pytest.approx(want.media_start, abs=0.05)
        assert got.start == pytest.approx(want.start, abs=0.1)
    assert left.segments[-1].prev == left.segments[-2].entry_hash()
    assert await adopt(objects, left, SEQS_PER_EPOCH) == 0  # nothing more to list
