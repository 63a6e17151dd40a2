"""The issue's headline test (issue 6, store-and-forward): a real RTSP camera, an agent
enrolled with a one-time token, the platform with a trial session open on the room, and
every byte between agent and platform (RTMP media, HTTP + websocket control, backfill)
through a loopback proxy the test cuts for 60 s.

Then, without help: the live stream resumes (LL-HLS playlist advances, new media decodes),
the agent uploads what its ring recorded during the cut, and the session's recording
verifies complete, with no gap left and nothing uploaded twice.

WAN_CUT_S shortens the cut for a quick local run (default 60, as the issue asks).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_room.devices import DeviceRegistry
from courtcast.platform import Platform
from device_agents.agent import Agent
from device_agents.config import load_agent_config
from recorder.manifest import Manifest
from recorder.verify import verify_recording
from storage.recording_keys import manifest_key
from tests.courtcast.test_platform import base_url, media_role, probe, record_hls, start_platform
from tests.device_agents.helpers import until
from tests.fixtures.tcp_proxy import Link, ProxyFactory
from tests.recorder.test_backfill import clerk
from tests.recorder.test_platform_recording import cli, recorder_role

pytestmark = [pytest.mark.timeout(240), pytest.mark.wan_cut]
CUT_S = float(os.environ.get("WAN_CUT_S", "60"))
FPS = 25


async def last_msn(http: httpx.AsyncClient, url: str) -> int:
    """The media sequence number of the newest complete segment of an LL-HLS playlist."""
    text = (await http.get(url)).text
    found = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    if found is None:
        return -1  # no playlist while the stream is not live
    first = int(found[1])
    segments = [line for line in text.splitlines() if line and not line.startswith("#")]
    return first + len(segments) - 1


async def play_url(node: Platform, stream: str) -> str:
    """A signed LL-HLS URL for the (private, trial) stream, as an operator gets it."""
    users = next(r for r in node.roles if r.name == "control_room").users  # type: ignore[attr-defined]
    await users.add("olga", "operator", "correct horse battery")
    async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as http:
        login = await http.post(
            "/api/v1/login", json={"name": "olga", "password": "correct horse battery"}
        )
        assert login.status_code == 200, login.text
        answer = await http.get(f"/api/v1/streams/{stream}/play-url")
        assert answer.status_code == 200, answer.text
        return base_url(node) + str(answer.json()["hls"])


async def enrol_agent(
    node: Platform, tmp_path: Path, camera_url: str, server: str, rtmp_url: str
) -> Agent:
    """`courtcast agent enroll` with a one-time token (through the proxied link), then the
    agent with its RTMP pointed at the proxy too (the server names its own port; the proxy
    is the WAN in between)."""
    registry = DeviceRegistry(node.roles[0].state)  # type: ignore[attr-defined]
    token = await registry.make_enrol_token("c1", "r1")
    out = tmp_path / "agent.yaml"
    enrolled = await cli(
        "agent",
        "enroll",
        "--server",
        server,
        "--token",
        token,
        "--out",
        str(out),
        "--source",
        f"cam={camera_url}",
    )
    assert enrolled.returncode == 0, enrolled.stderr
    config = load_agent_config(out).model_copy(update={"rtmp_url": rtmp_url})
    return Agent(config, out)


async def test_wan_cut_live_resumes_and_backfill_closes_the_gap(
    tmp_path: Path, rtsp_camera: Any, tcp_proxy: ProxyFactory
) -> None:
    camera = await asyncio.to_thread(rtsp_camera, size="320x240")
    node = await start_platform(tmp_path, **{"recorder.segment_target_s": 2.0})
    agent: Agent | None = None
    link = Link()
    http_proxy = tcp_proxy(node.http_port, link=link)
    rtmp_proxy = tcp_proxy(media_role(node).rtmp_port, link=link)
    try:
        agent = await enrol_agent(
            node,
            tmp_path,
            camera.url,
            f"http://127.0.0.1:{http_proxy.port}",
            f"rtmp://127.0.0.1:{rtmp_proxy.port}/live",
        )
        stream = agent.config.sources["cam"].main.stream_id
        await agent.start()
        hub = media_role(node).hub
        await until(
            lambda: (s := hub.find(stream)) is not None and s.live and s.tracks,
            20,
            "live on the server",
        )
        role = recorder_role(node)
        session = await role.sessions.open("r1", "C-60", "wan cut", public=True)
        recording = await until(
            lambda: next(iter(role.active.values()), None), 10, "recording started"
        )
        url = await play_url(node, stream)
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.sleep(4)
            msn_before = await last_msn(http, url)
            assert msn_before >= 0
            link.cut()
            await until(lambda: not hub.find(stream).live, 10, "server sees the publisher go")
            await asyncio.sleep(CUT_S)
            msn_before = await last_msn(http, url)  # what the cut left (-1: no playlist)
            await asyncio.to_thread(link.restore)
            restored = time.monotonic()
            # the live stream resumes by itself: a new segment in the playlist, decoded
            while await last_msn(http, url) <= msn_before:
                assert time.monotonic() - restored < 40, "live did not resume"
                await asyncio.sleep(0.1)
            live_back_s = time.monotonic() - restored
        info = await record_hls(url, tmp_path / "after.mp4", 2)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_frames"]) >= 40 and video["width"] == 320
        # backfill closes the cut's gap (the periodic round, or the reconnect kick)
        gaps = await until(
            lambda: [g for g in recording.manifest.gaps if g.cause == "publisher-lost"],
            20,
            "gap recorded",
        )
        assert len(gaps) == 1 and gaps[0].end - gaps[0].start >= CUT_S - 1, gaps
        await until(
            lambda: all(g.filled for g in recording.manifest.gaps), 60, "gap filled by backfill"
        )
        backfill_done_s = time.monotonic() - restored
        uploader = agent.backfill
        assert uploader is not None
        await until(lambda: uploader.pending == 0, 15, "nothing pending")
        await role.sessions.close(session.id)
        await asyncio.sleep(0.5)
        await role.wait_closed()
        rid = recording.id
        objects = node.roles[0].objects  # type: ignore[attr-defined]
        report = await verify_recording(objects, rid, role.signer.public)
        assert report.ok and report.signed and report.complete, report.summary()
        verified = await cli("recordings", "verify", rid, "--data-dir", str(tmp_path / "data"))
        assert "complete, no gaps" in verified.stdout, verified.stdout + verified.stderr
        # nothing uploaded twice: every backfilled entry once, no duplicate answers
        manifest = Manifest.from_bytes(await objects.get(manifest_key(rid)))
        backfilled = [s for s in manifest.segments if s.backfilled]
        assert len({s.sha256 for s in backfilled}) == len(backfilled) == uploader.uploaded
        assert uploader.duplicates == 0
        sent = [json.loads(line) for line in uploader.state_path.read_text().splitlines()]
        stored = [(r["recording"], r["sha256"]) for r in sent if r["result"] == "stored"]
        assert len(stored) == len(set(stored)) == len(backfilled)
        covered = sum(min(s.end, gaps[0].end) - max(s.start, gaps[0].start) for s in backfilled)
        assert covered >= CUT_S - 2, covered
        # the recording plays through the cut: decoded length ~ what the manifest holds
        staff = await clerk(node)  # recordings are evidence: signed-in staff only
        bearer = str(staff.headers["authorization"])
        await staff.aclose()
        played = await probe(f"{base_url(node)}/api/v1/recordings/{rid}/index.m3u8", bearer)
        frames = next(s for s in played["streams"] if s["codec_type"] == "video")
        assert abs(int(frames["nb_read_frames"]) / FPS - manifest.duration) <= 2.0
        print(
            f"\nWAN cut {CUT_S:.0f} s: live back {live_back_s:.1f} s after restore; "
            f"backfill {len(backfilled)} segments, {sum(s.bytes for s in backfilled)} bytes, "
            f"gap filled {backfill_done_s:.1f} s after restore"
        )
    finally:
        if agent is not None:
            await agent.stop()
        await node.stop()
