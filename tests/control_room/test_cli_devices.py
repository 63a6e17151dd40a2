"""`courtcast devices enrol-token` and `courtcast devices list` as a user runs them: real
subprocesses on a data dir's embedded Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from control_room.devices import DeviceRegistry
from core.config import load_config
from device_agents.protocol import EnrolRequest, SourceInfo
from storage.role import open_state_for_cli

pytestmark = pytest.mark.timeout(60)
COURTCAST = [sys.executable, "-m", "courtcast.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COURTCAST, *args], capture_output=True, text=True, timeout=30, check=False
    )


async def test_enrol_token_then_list(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    made = run(
        "devices",
        "enrol-token",
        "--data-dir",
        data,
        "--court",
        "Luoyang Inter",
        "--room",
        "Room 1",
        "--class",
        "security",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert len(token) >= 32 and "\n" not in token

    config = load_config(overrides={"node.data_dir": data}, environ={})
    async with open_state_for_cli(config.storage_section()) as state:
        registry = DeviceRegistry(state)
        enrolled = await registry.enroll(
            EnrolRequest(
                token=token, model="Dahua NVR", sources=[SourceInfo(name="hall", kind="rtsp")]
            ),
            "rtmp://127.0.0.1:1935/live",
        )
        assert (await state.get_record("stream", "luoyang-inter-room-1-hall") or {}).get(
            "stream_class"
        ) == "security"

    table = run("devices", "list", "--data-dir", data)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:5] == ["COURT", "ROOM", "DEVICE", "MODEL", "STATE"]
    assert "Luoyang Inter" in row and "Room 1" in row and enrolled.device_id in row
    assert "Dahua NVR" in row and "never-seen" in row and "never" in row
    assert row.endswith("hall:unknown")
    listed = json.loads(run("devices", "list", "--data-dir", data, "--json").stdout)
    assert [(d["id"], d["court"], d["state"]) for d in listed] == [
        (enrolled.device_id, "Luoyang Inter", "never-seen")
    ]
    assert "secret_sha256" not in listed[0]


def test_enrol_token_mistakes_are_one_line(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    short = run(
        "devices", "enrol-token", "--data-dir", data, "--court", "C", "--room", "R", "--ttl-s", "5"
    )
    assert short.returncode == 2
    assert short.stderr.strip() == "courtcast: --ttl-s: at least 60 seconds"
    bad = run("devices", "enrol-token", "--data-dir", data, "--court", "a:b", "--room", "R")
    assert bad.returncode == 2
    assert "court and room must be non-empty" in bad.stderr
    assert "Traceback" not in bad.stderr
