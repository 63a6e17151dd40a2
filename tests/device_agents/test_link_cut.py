"""A WAN cut between the agent and the media server (tests/fixtures/tcp_proxy.py): the
publisher notices, retries by itself and is live again once the link is back, from a
keyframe; meanwhile the local ring goes on recording, and its segments decode and follow
each other on the wall clock with no hole across the cut. Two kinds of cut: the line drops
(connections reset, connects refused) and the line goes silent (a blackhole: connections
stay open and nothing passes, only the publisher's write timeout can find it)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import Agent
from media_server.hub import Hub
from media_server.rtmp.server import RtmpServer
from tests.device_agents.helpers import agent_config, decode_ring, source, until

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("blackhole", [False, True], ids=["dropped", "blackhole"])
async def test_cut_link_publisher_comes_back_and_ring_has_no_hole(
    tmp_path: Path, rtsp_camera: Any, tcp_proxy: Any, blackhole: bool
) -> None:
    camera = await asyncio.to_thread(rtsp_camera)
    server_hub = Hub()
    server = RtmpServer(server_hub, "127.0.0.1", 0)
    await server.start()
    proxy = tcp_proxy(server.port)
    config = agent_config(
        tmp_path, proxy.port, {"cam": source("rtsp", camera.url, ("c-r-cam", "k"))}
    )
    agent = Agent(config, link=False)
    publisher = None
    try:
        await agent.start()
        publisher = agent.units["cam"].publishers["c-r-cam"]
        await until(lambda: (s := server_hub.find("c-r-cam")) is not None and s.live, 20)
        await asyncio.sleep(2.5)
        epoch = server_hub.find("c-r-cam").epoch
        proxy.cut(blackhole)
        # a dropped line is seen at once; a silent one by the 5 s write timeout
        await until(lambda: not publisher.publishing, 12, "the publisher notices the cut")
        assert "uplink down" in publisher.problem
        await asyncio.sleep(4)  # the line stays down; the camera and the ring go on
        assert agent.units["cam"].health().state == "up"
        assert "uplink down" in agent.units["cam"].health().reason
        proxy.restore()
        loop = asyncio.get_running_loop()
        restored = loop.time()
        stream = server_hub.find("c-r-cam")
        # a connect made into the blackhole hangs until its 5 s timeout, then the backoff
        # (up to 5 s) and the next keyframe: up to ~12 s, more on a loaded machine
        await until(
            # the publisher counts its session once the server's answer reaches it, which
            # may come after the hub sees the stream live
            lambda: (
                stream.live
                and stream.epoch > epoch
                and stream.stats.keyframes
                and publisher.sessions >= 2
            ),
            25 if blackhole else 15,
            "live again after the cut",
        )
        back_s = loop.time() - restored
        assert publisher.sessions >= 2 and publisher.reconnects >= 1
        await asyncio.sleep(2.5)
    finally:
        await agent.stop()
        await server.stop()
    print(f"live again {back_s:.2f} s after the link was restored")
    entries = agent.ring.entries("c-r-cam")
    assert len(entries) >= 5
    for before, after in itertools.pairwise(entries):
        assert 1.0 <= before.duration <= 4.0 or after is entries[-1]
        assert abs(before.start + before.duration - after.start) < 0.01, (before, after)
    span = entries[-1].start + entries[-1].duration - entries[0].start
    frames, width, height = decode_ring(agent.ring, "c-r-cam", tmp_path / "ring.mp4")
    assert (width, height) == (640, 360)
    assert abs(frames - span * 25) <= 3, (frames, span)
