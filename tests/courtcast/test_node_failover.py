"""A media node dies (issue 18 item 5): its origin leases are taken at once by the node a
publisher moves to, once the dead node's heartbeat is gone; an agent holding a list of
servers moves to the next node; a viewer playing LL-HLS through nginx (upstream failover)
gets new segments again within seconds; a recorder process records the session on through
the move, and the agent's store-and-forward backfill fills the gap it left."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from device_agents.config import load_agent_config
from media_server.access import PlayTokens
from media_server.cluster.nodes import NodeDirectory, publish_urls
from media_server.cluster.origins import SCOPE, OriginBusy, Origins
from recorder.manifest import FILL_HOLE_S, merged, overlap
from storage.redis_server import EmbeddedRedis
from storage.state import StateStore
from tests.courtcast.test_recorder_fleet import eventually, manifest, open_session
from tests.device_agents.helpers import until
from tests.fixtures.cluster import REPO, ProcessCluster, _die_with_parent
from tests.fixtures.nginx_lb import NginxFront, NginxLB

pytestmark = pytest.mark.timeout(90)
FPS = 25  # the agent's test pattern (`test:320x240`)


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
    """Leases of 30 s, heartbeats every 0.5 s, a node dead after 1.5 s of silence: a
    publisher at node B for node A's stream is held for the verdict, A's next beat (refused)
    or A's heartbeat gone (taken at once, long before the lease would run out)."""
    beat_s, timeout_s = 0.5, 1.5
    nodes = {
        name: NodeDirectory(state, name, f"http://{name}", f"{name}:1935", timeout_s)
        for name in ("node-a", "node-b")
    }
    a, b = (
        Origins(state, name, 30.0, nodes[name].silent_for, timeout_s)
        for name in ("node-a", "node-b")
    )
    await nodes["node-a"].heartbeat({})
    await a.claim("court-1")
    with pytest.raises(OriginBusy, match="node-a"):
        await b.claim("court-1")  # not waiting (the heartbeat's renewals): refused at once

    async def beats() -> None:
        while True:
            await asyncio.sleep(beat_s)
            await nodes["node-a"].heartbeat({})

    beating = asyncio.create_task(beats())
    started = time.monotonic()
    with pytest.raises(OriginBusy, match="node-a"):
        await b.claim("court-1", wait=True)  # A beats: a second publisher is refused
    assert time.monotonic() - started < beat_s + 0.4  # at A's next beat
    beating.cancel()
    assert await state.lease_holder(SCOPE, "court-1") == "node-a"

    await asyncio.gather(beating, return_exceptions=True)  # A stops beating (SIGKILL)
    assert await nodes["node-b"].alive("node-a")
    started = time.monotonic()
    await b.claim("court-1", wait=True)  # held until A's heartbeat runs out, then taken
    assert time.monotonic() - started < timeout_s + 0.5  # A beat just before it stopped
    assert await state.lease_holder(SCOPE, "court-1") == "node-b"
    assert b.taken_over == 1 and not await nodes["node-b"].alive("node-a")
    await nodes["node-b"].heartbeat({})
    with pytest.raises(OriginBusy, match="node-b"):
        await a.claim("court-1")  # A back (a paused process): B beats, A does not take it


def test_enrolment_lists_the_nodes_least_loaded_first_at_reachable_hosts() -> None:
    nodes = {
        "node-a": {"url": "http://a.court:8080", "rtmp": "0.0.0.0:1935", "load": {"streams": 9}},
        "node-b": {"url": "http://b.court:8080", "rtmp": "10.0.0.2:1936", "load": {"streams": 1}},
        "node-c": {"url": "http://c.court:8080", "rtmp": "", "load": {"streams": 0}},  # no RTMP
    }
    assert publish_urls(nodes) == ["rtmp://10.0.0.2:1936/live", "rtmp://a.court:1935/live"]


# -- the whole failover, as processes -------------------------------------------------


@dataclass
class Seen:
    """One segment the viewer decoded: when it arrived, its program date-time, which node
    answered the playlist that listed it, how many video frames it held."""

    arrived: float  # time.monotonic()
    pdt: float
    node: str
    frames: int


def segments_of(playlist: str) -> tuple[str | None, list[tuple[str, float]]]:
    """The init URI and each complete segment's URI with its program date-time."""
    init, found, pdt, duration = None, [], None, 0.0
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            init = line.split('URI="', 1)[1].split('"', 1)[0]
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line and not line.startswith("#") and pdt is not None:
            found.append((line, pdt))
            pdt += duration
    return init, found


def video_frames(init: bytes, segment: bytes) -> int:
    with av.open(io.BytesIO(init + segment)) as container:
        return sum(1 for _ in container.decode(video=0))


class LbViewer:
    """A plain-HLS player through the load balancer: reloads the playlist every poll_s,
    fetches every segment newer than the newest it has, decodes it. Errors (a node dying
    under a request, a 502 while nginx fails over) are retried at the next reload, as a
    player does."""

    def __init__(self, base: str, stream_id: str, token: str, poll_s: float = 0.25) -> None:
        self.url = f"{base}/live/{stream_id}/"
        self.query = f"?token={token}"  # the playlist passes it on to what it lists
        self.poll_s = poll_s
        self.seen: list[Seen] = []
        self.errors = 0
        self._newest = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lb viewer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                try:
                    await self._reload(http)
                except (httpx.HTTPError, av.error.FFmpegError, AssertionError):
                    self.errors += 1
                await asyncio.sleep(self.poll_s)

    async def _reload(self, http: httpx.AsyncClient) -> None:
        answer = await http.get(self.url + "index.m3u8" + self.query)
        if answer.status_code != 200:
            raise AssertionError(f"playlist: HTTP {answer.status_code}")
        node = answer.headers.get("x-upstream", "?").split(",")[-1].strip()
        init_uri, segments = segments_of(answer.text)
        fresh = [(uri, pdt) for uri, pdt in segments if pdt > self._newest + 0.001]
        if not fresh or init_uri is None:
            return
        init = (await http.get(self.url + init_uri)).raise_for_status().content
        for uri, pdt in fresh:
            data = (await http.get(self.url + uri)).raise_for_status().content
            frames = await asyncio.to_thread(video_frames, init, data)
            self.seen.append(Seen(time.monotonic(), pdt, node, frames))
            self._newest = max(self._newest, pdt)


def enrol_agent(cluster: ProcessCluster, server: str) -> Path:
    """Enrol an agent with a test-pattern source at server (nginx in front of the control
    room and the recorders), as a technician does (`courtcast devices enrol-token`,
    `courtcast agent enroll`); its config."""
    token = cluster.cli("devices", "enrol-token", "--court", "court-x", "--room", "room-f")
    path = cluster.root / "agent.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "courtcast.cli", "agent", "enroll", "--server",
         server, "--token", token.strip(), "--out", str(path),
         "--source", "cam=test:320x240"],
        env=cluster.base_env(), cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return path


def agent_process(cluster: ProcessCluster, config: Path) -> subprocess.Popen[bytes]:
    """`courtcast agent run --config F`, its log in the cluster's root."""
    with open(cluster.root / "agent.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "courtcast.cli", "agent", "run", "--config", str(config)],
            env=cluster.base_env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )


@dataclass
class Failover:
    publisher_move_s: float  # SIGKILL of A -> B holds the stream's origin (publishing there)
    viewer_recovery_s: float  # SIGKILL of A -> the viewer decodes a new segment through nginx
    viewer_errors: int
    killed_at: float = 0.0  # time.time() of the SIGKILL


async def wait_holder(state: StateStore, stream_id: str, node: str, timeout: float) -> float:
    """Wait until node holds the stream's origin lease (its publisher is on it); when."""
    deadline = time.monotonic() + timeout
    while (holder := await state.lease_holder(SCOPE, stream_id)) != node:
        assert time.monotonic() < deadline, f"{stream_id} on {holder}, not {node}"
        await asyncio.sleep(0.05)
    return time.monotonic()


async def kill_and_watch(
    cluster: ProcessCluster, lb: NginxLB, stream_id: str, agent: subprocess.Popen[bytes]
) -> Failover:
    """Node A publishing (the agent on it), a viewer through lb: SIGKILL A, time the move
    and the viewer's first new segment. Used by the test and bench/node_failover.py."""
    a, b = cluster.processes["node-a"], cluster.processes["node-b"]
    state = StateStore(cluster.redis.url)
    await state.connect()
    viewer = LbViewer(lb.url, stream_id, play_token(cluster, stream_id))
    try:
        await wait_holder(state, stream_id, "node-a", 30)
        viewer.start()
        await until(lambda: len(viewer.seen) >= 2, 30, "the viewer playing through nginx")
        assert all(s.node.endswith(f":{a.http_port}") for s in viewer.seen), viewer.seen
        before = len(viewer.seen)
        killed, killed_at = time.monotonic(), time.time()
        await asyncio.to_thread(cluster.kill, "node-a")
        moved = await wait_holder(state, stream_id, "node-b", 20)
        await until(lambda: len(viewer.seen) > before, 20, "a new segment through nginx")
        first = viewer.seen[before]
        assert first.frames > 0 and first.node.endswith(f":{b.http_port}"), first
        assert agent.poll() is None, "the agent died"
        return Failover(moved - killed, first.arrived - killed, viewer.errors, killed_at)
    finally:
        await viewer.stop()
        await state.close()


def start_scene(
    cluster: ProcessCluster, stack: contextlib.ExitStack
) -> tuple[str, subprocess.Popen[bytes]]:
    """Nodes A and B, a control room, a recorder, nginx in front of them all (the
    production config; stopped with stack), an agent enrolled through it and running: it
    was given both nodes (A first: neither carries a stream yet, so by name) and nginx as
    its server (control link and backfill). Its stream id (room-f's trial stream), and it."""
    roles = [("media-server", "node-a"), ("media-server", "node-b")]
    roles += [("control-room", "control-1"), ("recorder", "rec-1")]
    started = [cluster.start(role, name, wait=False) for role, name in roles]
    a, b, control, recorder = started
    front = NginxFront(
        cluster.root,
        {
            "media": [a.http_port, b.http_port],
            "recorders": [recorder.http_port],
            "control": [control.http_port],
        },
    )
    for process in started:  # they start together: quicker on a busy box
        cluster.wait_ready(process)
    stack.enter_context(front)
    path = enrol_agent(cluster, front.url)
    config = load_agent_config(path)
    assert config.media_servers == [f"{n.rtmp_url}/live" for n in (a, b)], config
    return config.sources["cam"].main.stream_id, agent_process(cluster, path)


def play_token(cluster: ProcessCluster, stream_id: str) -> str:
    """A signed play token, as the control room hands an operator (the stream is a trial's,
    never public)."""
    return PlayTokens(cluster.signing_secret.encode(), 3600).make(stream_id)


def recording_of(cluster: ProcessCluster, stream_id: str) -> dict[str, Any] | None:
    rows = json.loads(cluster.cli("recordings", "list", "--stream", stream_id, "--json"))
    return rows[0] if rows else None


async def settle(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """tests/courtcast/test_recorder_fleet.eventually, off the event loop (it runs the CLI)."""
    return await asyncio.to_thread(eventually, check, timeout, what)


def live_segments_since(cluster: ProcessCluster, rid: str, since: float) -> int:
    segments = manifest(cluster, rid)["segments"]
    return sum(not s.get("backfilled") and s["start"] >= since for s in segments)


def closed_and_filled(cluster: ProcessCluster, rid: str) -> dict[str, Any] | None:
    found = manifest(cluster, rid)
    done = found["state"] == "closed" and all(g.get("filled_by") for g in found["gaps"])
    return found if done else None


def clip_frames(cluster: ProcessCluster, rid: str, start: float, end: float, out: Path) -> int:
    """`courtcast recordings export` of [start, end] (wall clock), decoded: its frames."""
    cluster.cli("recordings", "export", rid, "--from", f"{start:.3f}", "--to", f"{end:.3f}",
                "-o", str(out))  # fmt: skip
    with av.open(str(out)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_a_killed_node_the_agent_moves_the_viewer_plays_on_the_recording_is_complete(
    process_cluster: ProcessCluster, nginx_lb: Any, tmp_path: Path
) -> None:
    cluster = process_cluster
    with contextlib.ExitStack() as stack:
        stream_id, agent = start_scene(cluster, stack)
        stack.callback(agent.wait, 10)
        stack.callback(agent.terminate)
        nodes = [cluster.processes[n] for n in ("node-a", "node-b")]
        session = await asyncio.to_thread(open_session, cluster)  # room-f, case F-1
        rid = await settle(
            lambda: (r := recording_of(cluster, stream_id)) and r["id"], 20, "a recording"
        )
        await settle(lambda: live_segments_since(cluster, rid, 0) >= 2, 30, "2 segments")
        lb = nginx_lb([n.http_port for n in nodes], backup_last=True)
        result = await kill_and_watch(cluster, lb, stream_id, agent)
        # the few seconds the issue asks: node_timeout_s (3 s) + the agent's next try +
        # B's first 2 s segment; generous for a loaded 2-core box (bench: p50/p95)
        assert result.publisher_move_s < 12, result
        assert result.viewer_recovery_s < 20, result
        assert "taken over from node node-a" in nodes[1].log_tail(200)

        summary = await recorded_through(cluster, rid, session, result, tmp_path)
        print(f"\nnode failover: {summary}")


async def recorded_through(
    cluster: ProcessCluster, rid: str, session: str, result: Failover, tmp_path: Path
) -> str:
    """The session's recording, after the move: the recorder pulls the stream from node B
    now, the agent's backfill fills the gap the move left (shorter than the move by up to
    a GOP: the agent publishes again from its cached keyframe), the closed recording
    verifies complete and plays through the gap. What was measured, in words."""
    await settle(
        lambda: live_segments_since(cluster, rid, result.killed_at) >= 2, 30, "recorded on B"
    )
    # one recorder: the agent may fill the gap while the recording is open (it goes
    # through the writer's upload queue); behind several, one that does not write it
    # answers 503 and the agent retries, after the close at the latest
    await asyncio.to_thread(cluster.cli, "sessions", "close", session)
    found = await settle(lambda: closed_and_filled(cluster, rid), 40, "every gap filled")
    filled_s = time.time() - result.killed_at  # at most: the CLI polls the manifest
    verified = await asyncio.to_thread(cluster.cli, "recordings", "verify", rid, "--json")
    report = json.loads(verified)
    assert report["ok"] and report["complete"] and not report["remaining_gaps"], report
    moving = (result.killed_at, result.killed_at + result.publisher_move_s)
    gap = max(found["gaps"], key=lambda g: overlap(g["start"], g["end"], *moving))
    assert overlap(gap["start"], gap["end"], *moving) > 0, (found["gaps"], result)
    assert gap["cause"] == "publisher-lost" and gap["filled_by"] == "backfill", gap
    backfilled = sorted(
        (s["start"], s["start"] + s["duration"]) for s in found["segments"] if s.get("backfilled")
    )
    covered = sum(overlap(a, b, gap["start"], gap["end"]) for a, b in merged(backfilled))
    # the whole gap, not only what the server's edge tolerance asks (FILL_TOLERANCE_S)
    assert covered >= gap["end"] - gap["start"] - FILL_HOLE_S, (covered, gap, backfilled)
    # the recording plays through the move: 3 s either side of the gap, no time missing
    start, end = gap["start"] - 3, gap["end"] + 3
    clip = tmp_path / "around-the-gap.mp4"
    frames = await asyncio.to_thread(clip_frames, cluster, rid, start, end, clip)
    assert frames >= (end - start - 0.5) * FPS, (frames, end - start)
    return (
        f"publisher move {result.publisher_move_s:.1f} s, gap {gap['end'] - gap['start']:.1f} s "
        f"({covered:.1f} s of it backfilled), {len(backfilled)} segments backfilled in all, "
        f"every gap filled within {filled_s:.1f} s of the kill, {frames} frames in the "
        f"{end - start:.1f} s around it"
    )
