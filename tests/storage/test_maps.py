"""Field maps and liveness against a real Redis (EmbeddedRedis in tmp_path), in the layout
the control room has always written (cc:device-seen, cc:device-liveness, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.redis_server import EmbeddedRedis
from storage.state import StateStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    server = EmbeddedRedis(tmp_path / "redis")
    await server.start()
    st = StateStore(server.url)
    await st.connect()
    yield st
    await st.close()
    await server.stop()


async def test_field_map_keeps_plain_text(store: StateStore) -> None:
    seen = store.field_map("device-seen")
    assert await seen.get("d1") is None and await seen.all() == {}
    await seen.set("d1", "1700000000.5")
    await seen.set("d2", '{"cam": "up"}')
    assert await seen.get("d1") == "1700000000.5"
    assert await seen.all() == {"d1": "1700000000.5", "d2": '{"cam": "up"}'}
    assert await store.raw.hgetall("cc:device-seen") == await seen.all()  # as stored
    with pytest.raises(ValueError, match="field map"):
        store.field_map("a:b")


async def test_swap_returns_what_was_there(store: StateStore) -> None:
    clock = store.field_map("device-clock")
    assert await clock.swap("d1", "1") is None
    assert await clock.swap("d1", "0") == "1"
    assert await clock.get("d1") == "0"


async def test_liveness_follows_presence_and_changes_once(store: StateStore) -> None:
    liveness = store.liveness("device")
    await liveness.add("d1")
    assert await liveness.get("d1") == "never-seen"
    await store.touch_presence("device", "d1", 0.3)
    assert await liveness.mark_online("d1")
    assert not await liveness.mark_online("d1")  # already online
    assert not await liveness.mark_offline_if_absent("d1")  # still present
    await asyncio.sleep(0.45)
    took = await asyncio.gather(*(liveness.mark_offline_if_absent("d1") for _ in range(6)))
    assert sum(took) == 1  # several watchers, one change
    assert await liveness.all() == {"d1": "offline"}
    assert not await liveness.mark_offline_if_absent("d2")  # never seen: nothing to do
    assert await liveness.mark_online("d1")  # back from offline


async def test_liveness_reads_what_was_written_before(store: StateStore) -> None:
    await store.raw.hset("cc:device-liveness", mapping={"d1": "online", "d2": "never-seen"})
    liveness = store.liveness("device")
    assert await liveness.all() == {"d1": "online", "d2": "never-seen"}
    assert await liveness.mark_offline_if_absent("d1")  # no presence key: offline
    assert await store.raw.hget("cc:device-liveness", "d1") == "offline"
