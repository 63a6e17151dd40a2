"""Two media nodes on one Redis (DESIGN.md §9, media_server/cluster): a stream published to
node A is played from node B through one on-demand relay, decoded; a second publisher of it
on B is refused while A holds it; B drops the relay once its viewers leave; A's origin
lease goes with A."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import presence
from courtcast.platform import Platform
from media_server.cluster.link import NodeTokens
from media_server.cluster.origins import SCOPE
from media_server.streams import StreamClass
from storage.redis_server import EmbeddedRedis
from tests.courtcast.test_platform import (
    base_url,
    define,
    media_role,
    record_hls,
    run,
    scrape,
    start_platform,
    wait_live,
)
from tests.media_server.test_webrtc_http import frames, open_viewer
from tests.mediafiles import make_clip
from tests.netutil import free_port

pytestmark = pytest.mark.timeout(90)

SECRET = "a-cluster-wide-test-key-of-40-characters!"
CLUSTER = {
    "cluster.enabled": True,
    "cluster.heartbeat_s": 0.5,
    "cluster.lease_s": 3.0,
    "cluster.relay_idle_s": 1.0,
    # above the first playlist's wait for a segment (4 s): a shorter one drops the output
    # under that waiting request (a 503)
    "hls.idle_timeout_s": 4.5,
    "security.url_signing_secret": SECRET,
}


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, **extra: Any) -> AsyncIterator[tuple[Platform, Platform]]:
    """Nodes A and B on one Redis server of their own (neither node's embedded one)."""
    redis = EmbeddedRedis(tmp_path / "redis")
    await redis.start()
    started: list[Platform] = []
    try:
        for name in ("a", "b"):
            overrides = {**CLUSTER, "node.name": f"node-{name}", "state.redis_url": redis.url}
            started.append(await start_platform(tmp_path / name, **overrides, **extra))
        yield started[0], started[1]
    finally:
        for node in reversed(started):
            await node.stop()  # a second stop (a test stopped it) does nothing
        await redis.stop()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Platform, Platform]]:
    async with two_nodes(tmp_path) as both:
        yield both


def relayed_to(node: Platform, stream_id: str) -> list[str]:
    """The relay links the origin node serves for a stream (one per pulling node)."""
    stream = media_role(node).hub.find(stream_id)
    subs = stream.subscribers if stream is not None else []
    return [sub.name for sub in subs if sub.name.startswith("relay to ")]


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


def push_loop(clip: Path, url: str) -> asyncio.Task[tuple[int, str]]:
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re"]
    args += ["-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "flv", url]
    return asyncio.create_task(run(*args, timeout=80))


async def test_node_b_plays_node_a_stream_through_one_relay(
    nodes: tuple[Platform, Platform], tmp_path: Path
) -> None:
    a, b = nodes
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25, size=(320, 240))
    key = await define(a, "court-a", stream_class=StreamClass.conference, public=True)
    publisher = push_loop(
        clip, f"rtmp://127.0.0.1:{media_role(a).rtmp_port}/live/court-a?key={key}"
    )
    viewers: list[Any] = []
    try:
        await wait_live(a, "court-a")
        state = media_role(a).storage.state
        assert await state.lease_holder(SCOPE, "court-a") == "node-a"
        assert set(await state.present(presence.MEDIA_NODE)) == {"node-a", "node-b"}
        assert media_role(b).hub.find("court-a") is None  # nothing pulled before a viewer

        # a second publisher of the id on B is refused while A holds it
        code, log = await run(
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip),
            "-c", "copy", "-f", "flv",
            f"rtmp://127.0.0.1:{media_role(b).rtmp_port}/live/court-a?key={key}",
            timeout=30,
        )  # fmt: skip
        assert code != 0, log
        assert media_role(b).rtmp.stats.refused == 1
        async with httpx.AsyncClient(base_url=base_url(b), timeout=10) as http:
            whip = await http.post(
                "/whip/court-a",
                content="v=0\r\n",
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
            )
        assert whip.status_code == 409 and "node node-a" in whip.text, whip.text
        assert not media_role(b).hub.find("court-a") or not media_role(b).hub.find("court-a").live

        # three viewers on B: two over WHEP, one over LL-HLS
        started = time.monotonic()
        viewers.append(await open_viewer(base_url(b), "court-a"))
        assert viewers[0].response.status_code == 201, viewers[0].response.text
        first = await frames(viewers[0].track("video"), 1)
        first_frame_s = time.monotonic() - started
        viewers.append(await open_viewer(base_url(b), "court-a"))
        assert viewers[1].response.status_code == 201, viewers[1].response.text
        hls = asyncio.create_task(
            record_hls(f"{base_url(b)}/live/court-a/index.m3u8", tmp_path / "b.mp4", 3)
        )
        rtmp = asyncio.create_task(
            record_hls(
                f"rtmp://127.0.0.1:{media_role(b).rtmp_port}/live/court-a", tmp_path / "r.mp4", 3
            )
        )  # RTMP play from B: a fourth consumer of the same relay
        decoded = await frames(viewers[1].track("video"), 25)
        await eventually(lambda: "court-a" in media_role(b).hls)
        assert media_role(b).cluster.stats()["relays"] == {"court-a": "node-a"}
        metrics = await scrape(b)
        assert metrics[("courtcast_relay_active", "court-a")] == 1
        assert metrics[("courtcast_relays_opened_total", None)] == 1
        assert relayed_to(a, "court-a") == ["relay to node-b"]
        info = await hls
        played = await rtmp
        assert media_role(b).cluster.relays.opened == 1, "a viewer opened a second relay"

        assert (first[0].width, first[0].height) == (320, 240)
        assert all((f.width, f.height) == (320, 240) for f in decoded)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (320, 240)
        assert int(video["nb_read_frames"]) >= 2 * 25, video
        video = next(s for s in played["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_frames"]) >= 2 * 25, video
        print(f"first WHEP frame on node B {first_frame_s:.2f} s after the offer")

        # B's copy is never relayed on (no loops); the link wants a node token
        token = NodeTokens(SECRET.encode()).make("court-a", "node-c")
        async with httpx.AsyncClient(timeout=10) as http:
            url = "/cluster/v1/relay/court-a"
            again = await http.get(base_url(b) + url, headers={"Authorization": f"Bearer {token}"})
            assert again.status_code == 409, again.text
            anonymous = await http.get(base_url(a) + url)
            assert anonymous.status_code == 401, anonymous.text
            forged = NodeTokens(b"another secret").make("court-a", "node-c")
            bad = await http.get(base_url(a) + url, headers={"Authorization": f"Bearer {forged}"})
            assert bad.status_code == 401, bad.text

        # viewers leave: B drops its relay, and A stops sending
        for viewer in viewers:
            await viewer.close()
        await eventually(lambda: not media_role(b).cluster.relays.active, timeout=15)
        await eventually(lambda: not relayed_to(a, "court-a"))
        assert not media_role(b).hub.find("court-a") or not media_role(b).hub.find("court-a").live
        assert await state.lease_holder(SCOPE, "court-a") == "node-a"  # still published on A
        metrics = await scrape(b)
        assert ("courtcast_relay_active", "court-a") not in metrics
        assert metrics[("courtcast_relays_opened_total", None)] == 1
    finally:
        for viewer in viewers:
            await viewer.close()
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)


async def test_a_nodes_leases_go_with_it(nodes: tuple[Platform, Platform], tmp_path: Path) -> None:
    a, b = nodes
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25, size=(320, 240))
    key = await define(a, "court-b", stream_class=StreamClass.conference, public=True)
    publisher = push_loop(
        clip, f"rtmp://127.0.0.1:{media_role(a).rtmp_port}/live/court-b?key={key}"
    )
    try:
        await wait_live(a, "court-b")
        state = media_role(b).storage.state
        assert await state.lease_holder(SCOPE, "court-b") == "node-a"
        await a.stop()
        assert await state.lease_holder(SCOPE, "court-b") is None
        assert set(await state.present(presence.MEDIA_NODE)) == {"node-b"}
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)


async def test_a_killed_nodes_leases_run_out_and_its_streams_may_publish_elsewhere(
    tmp_path: Path,
) -> None:
    """Node A a process of its own, SIGKILLed while a publisher is on it: nobody hands its
    leases back, they run out, and the stream may then be published to node B."""
    redis = EmbeddedRedis(tmp_path / "redis")
    await redis.start()
    config = tmp_path / "cluster.yaml"
    config.write_text(
        f"security: {{open: true, url_signing_secret: {SECRET}}}\n"
        f"state: {{redis_url: '{redis.url}'}}\n"
        "cluster: {enabled: true, heartbeat_s: 0.5, lease_s: 2.0}\n"
    )
    http, rtmp = free_port(), free_port()
    env = {**os.environ, "COURTCAST_NODE__NAME": "node-a"}
    a = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "courtcast"), "media-server", "--config", str(config),
        "--data-dir", str(tmp_path / "a"), "--http-port", str(http), "--rtmp-port", str(rtmp),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    b = None
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25, size=(320, 240))
    publisher = None
    try:
        b = await start_platform(
            tmp_path / "b",
            **{"security.open": True, "state.redis_url": redis.url, "node.name": "node-b"},
            **{k: v for k, v in CLUSTER.items() if k != "cluster.lease_s"},
            **{"cluster.lease_s": 2.0},
        )
        state = media_role(b).storage.state
        await eventually_async(
            lambda: state.present(presence.MEDIA_NODE), lambda n: "node-a" in n, 30
        )
        publisher = push_loop(clip, f"rtmp://127.0.0.1:{rtmp}/live/court-c")
        await eventually_async(
            lambda: state.lease_holder(SCOPE, "court-c"), lambda h: h == "node-a", 15
        )
        a.kill()
        await a.wait()
        killed = time.monotonic()
        await eventually_async(lambda: state.lease_holder(SCOPE, "court-c"), lambda h: h is None, 5)
        assert time.monotonic() - killed < 2.0 + 0.5
        assert "node-a" not in await state.present(presence.MEDIA_NODE)
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        publisher = push_loop(clip, f"rtmp://127.0.0.1:{media_role(b).rtmp_port}/live/court-c")
        await wait_live(b, "court-c")
        await eventually_async(
            lambda: state.lease_holder(SCOPE, "court-c"), lambda h: h == "node-b", 5
        )
    finally:
        if publisher is not None:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
        if a.returncode is None:
            a.kill()
            await a.wait()
        if b is not None:
            await b.stop()
        await redis.stop()


async def eventually_async(read: Any, ok: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok(value := await read()):
        assert time.monotonic() < deadline, f"still {value!r}"
        await asyncio.sleep(0.1)


async def test_a_camera_is_pulled_by_one_node_and_relayed_to_the_other(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, seconds=30, fps=25, gop=25, size=(320, 240))
    async with two_nodes(tmp_path, **{"security.open": True}) as (a, b):
        await define(a, "cam-1", source_url=str(clip), public=True)
        roles = [media_role(a), media_role(b)]
        await eventually(lambda: sum("cam-1" in role.pulls for role in roles) == 1)
        await asyncio.sleep(1.0)  # both nodes reconciled: still one puller
        pullers = [role for role in roles if "cam-1" in role.pulls]
        assert len(pullers) == 1, "the camera is pulled by both nodes"
        puller, other = pullers[0], next(r for r in roles if r is not pullers[0])
        await eventually(lambda: bool(puller.hub.find("cam-1") and puller.hub.find("cam-1").live))
        holder = await puller.storage.state.lease_holder(SCOPE, "cam-1")
        assert holder == puller.config.node.name
        viewer = await open_viewer(other.node_url, "cam-1")
        try:
            assert viewer.response.status_code == 201, viewer.response.text
            decoded = await frames(viewer.track("video"), 10)
            assert all((f.width, f.height) == (320, 240) for f in decoded)
            assert other.cluster.relays.opened == 1
        finally:
            await viewer.close()


async def test_background_consumers_on_b_neither_hold_nor_start_a_relay(
    nodes: tuple[Platform, Platform], tmp_path: Path
) -> None:
    """A security camera: a media node's analysis (and a recorder in its process) attach to
    it whether anyone watches or not. On B they must not keep the relay alive once the
    viewer left. (In a cluster a media node's recorder records nothing: the consumers are
    attached here.)"""
    a, b = nodes
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25, size=(320, 240))
    key = await define(a, "cam-9", stream_class=StreamClass.security)
    publisher = push_loop(clip, f"rtmp://127.0.0.1:{media_role(a).rtmp_port}/live/cam-9?key={key}")
    try:
        await wait_live(a, "cam-9")
        for name in ("recorder cam-9-x", "analysis cam-9"):  # B's background consumers
            media_role(b).hub.subscribe("cam-9", name, 100)
        await asyncio.sleep(1.0)
        assert media_role(b).cluster.relays.opened == 0, "a background consumer pulled it"
        token = media_role(b).tokens.make("cam-9")
        viewer = await open_viewer(base_url(b), f"cam-9?token={token}")
        try:
            assert viewer.response.status_code == 201, viewer.response.text
            await frames(viewer.track("video"), 5)
            assert media_role(b).cluster.stats()["relays"] == {"cam-9": "node-a"}
        finally:
            await viewer.close()
        await eventually(lambda: not media_role(b).cluster.relays.active, timeout=8)
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)


async def test_a_player_on_b_waiting_before_the_publish_on_a_gets_the_stream(
    nodes: tuple[Platform, Platform], tmp_path: Path
) -> None:
    """An RTMP player on B that came before any publisher (no origin to pull from yet, as
    when a relay could not open): once the stream is live on A, B pulls it for the player,
    who does not wait for good on an empty stream."""
    a, b = nodes
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25, size=(320, 240))
    key = await define(a, "early-bird")
    token = media_role(b).tokens.make("early-bird")
    play = f"rtmp://127.0.0.1:{media_role(b).rtmp_port}/live/early-bird?key={token}"
    player = asyncio.create_task(record_hls(play, tmp_path / "p.mp4", 2))
    await eventually(lambda: media_role(b).hub.find("early-bird") is not None)
    await asyncio.sleep(1.5)  # the player waits; nothing is published anywhere
    url = f"rtmp://127.0.0.1:{media_role(a).rtmp_port}/live/early-bird?key={key}"
    publisher = push_loop(clip, url)
    try:
        info = await asyncio.wait_for(asyncio.shield(player), 30)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (320, 240)
        assert media_role(b).cluster.relays.opened == 1
    finally:
        player.cancel()
        publisher.cancel()
        await asyncio.gather(player, publisher, return_exceptions=True)
