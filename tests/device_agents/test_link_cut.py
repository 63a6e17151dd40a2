"""A WAN cut between the agent and the media server (a loopback TCP proxy the test
controls): the publisher notices, retries by itself and is live again once the link is
back, from a keyframe; meanwhile the local ring goes on recording, and its segments decode
and follow each other on the wall clock with no hole across the cut."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import Agent
from media_server.hub import Hub
from media_server.rtmp.server import RtmpServer
from tests.device_agents.helpers import agent_config, decode_ring, source, until

pytestmark = pytest.mark.timeout(60)


class CutProxy:
    """127.0.0.1:port -> target; cut() drops every connection and refuses new ones (the
    line is down), restore() listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    restore = start


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


async def test_cut_link_publisher_comes_back_and_ring_has_no_hole(tmp_path: Path,
                                                                  rtsp_camera: Any) -> None:
    camera = await asyncio.to_thread(rtsp_camera)
    server_hub = Hub()
    server = RtmpServer(server_hub, "127.0.0.1", 0)
    await server.start()
    proxy = CutProxy(server.port)
    await proxy.start()
    config = agent_config(tmp_path, proxy.port,
                          {"cam": source("rtsp", camera.url, ("c-r-cam", "k"))})
    agent = Agent(config, link=False)
    publisher = None
    try:
        await agent.start()
        publisher = agent.units["cam"].publishers["c-r-cam"]
        await until(lambda: (s := server_hub.find("c-r-cam")) is not None and s.live, 20)
        await asyncio.sleep(2.5)
        epoch = server_hub.find("c-r-cam").epoch
        await proxy.cut()
        await until(lambda: not publisher.publishing, 5, "the publisher notices the cut")
        assert "uplink down" in publisher.problem
        await asyncio.sleep(4)  # the line stays down; the camera and the ring go on
        assert agent.units["cam"].health().state == "up"
        assert "uplink down" in agent.units["cam"].health().reason
        await proxy.restore()
        loop = asyncio.get_running_loop()
        restored = loop.time()
        stream = server_hub.find("c-r-cam")
        await until(lambda: stream.live and stream.epoch > epoch and stream.stats.keyframes,
                    15, "live again after the cut")
        back_s = loop.time() - restored
        assert publisher.sessions >= 2 and publisher.reconnects >= 1
        await asyncio.sleep(2.5)
    finally:
        await agent.stop()
        await server.stop()
    print(f"live again {back_s:.2f} s after the link was restored")
    entries = agent.ring.entries("c-r-cam")
    assert len(entries) >= 5
    for before, after in zip(entries, entries[1:]):
        assert 1.0 <= before.duration <= 4.0 or after is entries[-1]
        assert abs(before.start + before.duration - after.start) < 0.01, (before, after)
    span = entries[-1].start + entries[-1].duration - entries[0].start
    frames, width, height = decode_ring(agent.ring, "c-r-cam", tmp_path / "ring.mp4")
    assert (width, height) == (640, 360)
    assert abs(frames - span * 25) <= 3, (frames, span)
