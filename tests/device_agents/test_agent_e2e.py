"""End to end, as a technician does it: the platform runs; `courtcast devices enrol-token`
makes a token; `courtcast agent enroll` spends it (0600 config with the credentials and
stream keys); `courtcast agent run` starts the agent: its heartbeats make the device
online with its sources up, both camera streams play over LL-HLS, a snapshot command
goes through the control plane, and SIGTERM stops the agent cleanly in under 5 s."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from courtcast.platform import Platform
from tests.courtcast.test_platform import base_url, run, start_platform

pytestmark = pytest.mark.timeout(90)
COURTCAST = [str(Path(sys.executable).parent / "courtcast")]  # the console script


async def signed_in_admin(node: Platform) -> httpx.AsyncClient:
    users = next(r for r in node.roles if r.name == "control_room").users
    await users.add("ada", "admin", "correct horse battery")
    client = httpx.AsyncClient(base_url=base_url(node), timeout=15)
    answer = await client.post(
        "/api/v1/login", json={"name": "ada", "password": "correct horse battery"}
    )
    assert answer.status_code == 200, answer.text
    return client


async def test_enrol_run_online_play_snapshot_stop(tmp_path: Path, rtsp_camera: Any) -> None:
    camera = await asyncio.to_thread(
        rtsp_camera, user="cam", password="pw1x", size="640x360", sub_size="320x180"
    )
    data = tmp_path / "data"
    node = await start_platform(tmp_path, **{"devices.heartbeat_s": 0.5})
    admin = await signed_in_admin(node)
    agent: asyncio.subprocess.Process | None = None
    try:
        code, out = await run(
            *COURTCAST,
            "devices",
            "enrol-token",
            "--court",
            "Zhengzhou High",
            "--room",
            "Room 3",
            "--data-dir",
            str(data),
        )
        assert code == 0, out
        token = out.strip().splitlines()[-1]
        server = base_url(node)
        conf = tmp_path / "agent.yaml"
        code, out = await run(
            *COURTCAST,
            "agent",
            "enroll",
            "--server",
            server,
            "--token",
            token,
            "--out",
            str(conf),
            "--source",
            f"bench={camera.url}",
            "--sub",
            f"bench={camera.sub_url}",
            "--model",
            "test cam",
        )
        assert code == 0, out
        assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
        written = yaml.safe_load(conf.read_text())
        main_id = written["sources"]["bench"]["main"]["stream_id"]
        sub_id = written["sources"]["bench"]["sub"]["stream_id"]
        assert main_id in out and sub_id in out and sub_id == f"{main_id}-sub"
        # the token is spent; an existing --out is not overwritten
        code, again = await run(
            *COURTCAST,
            "agent",
            "enroll",
            "--server",
            server,
            "--token",
            token,
            "--out",
            str(tmp_path / "b.yaml"),
        )
        assert code == 2 and "enrolment refused" in again, again
        assert len(again.strip().splitlines()) == 1, again
        code, again = await run(
            *COURTCAST, "agent", "enroll", "--server", server, "--token", "x", "--out", str(conf)
        )
        assert code == 2 and "exists already" in again

        agent = await asyncio.create_subprocess_exec(
            *COURTCAST,
            "agent",
            "run",
            "--config",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        device_id = written["device_id"]

        async def device() -> dict[str, Any]:
            return (await admin.get(f"/api/v1/devices/{device_id}")).json()

        for _ in range(300):
            seen = await device()
            if (
                seen["state"] == "online"
                and seen["sources"][0]["state"] == "up"
                and seen["sources"][0].get("publishing")
            ):
                break
            await asyncio.sleep(0.1)
        assert seen["state"] == "online", seen
        assert seen["sources"][0]["state"] == "up" and seen["sources"][0]["publishing"], seen
        assert seen["clock_offset_s"] is not None and abs(seen["clock_offset_s"]) < 0.5

        for stream_id, size in ((main_id, (640, 360)), (sub_id, (320, 180))):
            url = (await admin.get(f"/api/v1/streams/{stream_id}/play-url")).json()["hls"]
            code, out = await run(
                "ffprobe",
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=width,height",
                "-of",
                "csv=p=0",
                server + url,
                timeout=30,
            )
            assert code == 0 and set(out.split()) == {f"{size[0]},{size[1]}"}, out

        answer = await admin.post(
            f"/api/v1/devices/{device_id}/commands",
            json={"name": "snapshot", "args": {"source": "bench"}},
        )
        assert answer.status_code == 200 and answer.json()["ok"], answer.text
        assert (answer.json()["width"], answer.json()["height"]) == (640, 360)
        jpeg = await admin.get(answer.json()["url"])
        assert jpeg.content.startswith(b"\xff\xd8")

        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(agent.communicate(), 10)
        assert agent.returncode == 0, err.decode()[-2000:]
        assert time.monotonic() - started < 5.0
        assert b"Traceback" not in err
    finally:
        if agent is not None and agent.returncode is None:
            agent.kill()
            await agent.wait()
        await admin.aclose()
        await node.stop()
