"""A media node dies (issue 18 item 5): its origin leases are taken at once by the node a
publisher moves to, once the dead node's heartbeat is gone; an agent holding a list of
servers moves to the next node; a viewer playing LL-HLS through nginx (upstream failover)
gets new segments again within seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from media_server.cluster.nodes import NodeDirectory
from media_server.cluster.origins import SCOPE, OriginBusy, Origins
from storage.redis_server import EmbeddedRedis
from storage.state import StateStore

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    server = EmbeddedRedis(tmp_path / "redis")
    await server.start()
    store = StateStore(server.url)
    await store.connect()
    yield store
    await store.close()
    await server.stop()


async def test_a_dead_nodes_origin_is_taken_at_once_a_live_ones_is_not(
    state: StateStore,
) -> None:
    """Leases of 30 s: node B takes node A's stream once A's heartbeat (0.6 s) is gone,
    long before the lease would run out; while A beats, B is refused."""
    nodes = {
        name: NodeDirectory(state, name, f"http://{name}", f"{name}:1935", 0.6)
        for name in ("node-a", "node-b")
    }
    a = Origins(state, "node-a", 30.0, nodes["node-a"].alive)
    b = Origins(state, "node-b", 30.0, nodes["node-b"].alive)
    await nodes["node-a"].heartbeat({})
    await nodes["node-b"].heartbeat({})
    await a.claim("court-1")
    with pytest.raises(OriginBusy, match="node-a"):
        await b.claim("court-1")  # A lives: a second publisher is refused, as ever
    assert await state.lease_holder(SCOPE, "court-1") == "node-a"

    # A stops beating (SIGKILL); B beats on
    deadline = time.monotonic() + 5
    while await nodes["node-b"].alive("node-a"):
        assert time.monotonic() < deadline, "node A's heartbeat did not expire"
        await nodes["node-b"].heartbeat({})
        await asyncio.sleep(0.1)
    await b.claim("court-1")
    assert await state.lease_holder(SCOPE, "court-1") == "node-b"
    assert b.taken_over == 1
    with pytest.raises(OriginBusy, match="node-b"):
        await a.claim("court-1")  # A back (a paused process): B, alive, keeps it
