"""The `courtcast` command as a user runs it: a real subprocess, real embedded Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.netutil import free_port, wait_http

COURTCAST = [sys.executable, "-m", "courtcast.cli"]


def run(args: list[str], stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        COURTCAST + args, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def pids_using(path: Path) -> list[int]:
    """Processes whose command line or cwd mention path (an orphan Redis would)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(int(entry.name))
    return found


METRICS_TOKEN = "cli-test-metrics-token"


@pytest.fixture
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A running `courtcast up` on free ports; yields (process, base URL, data dir)."""
    data = tmp_path / "data"
    http_port, rtmp_port = free_port(), free_port()
    proc = subprocess.Popen(
        COURTCAST
        + [
            "up",
            "--data-dir",
            str(data),
            "--http-port",
            str(http_port),
            "--rtmp-port",
            str(rtmp_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COURTCAST_SECURITY__METRICS_TOKEN": METRICS_TOKEN},
    )
    try:
        wait_http(f"http://127.0.0.1:{http_port}/api/v1/health", timeout_s=30)
        yield proc, f"http://127.0.0.1:{http_port}", data
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_answers_health_and_stops_cleanly(node, sig: signal.Signals) -> None:  # type: ignore[no-untyped-def]
    proc, base, data = node
    assert httpx.get(f"{base}/api/v1/health").json() == {"status": "ok"}  # anonymous
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    health = httpx.get(f"{base}/api/v1/health", headers=scraper).json()
    assert health["status"] == "ok"
    assert health["roles"]["storage"]["state"] == "ok"
    assert health["roles"]["storage"]["redis"]["kind"] == "embedded"
    assert health["roles"]["media_server"]["state"] == "ok"
    assert health["roles"]["control_room"]["state"] == "ok"
    assert httpx.get(f"{base}/metrics").status_code == 401
    metrics = httpx.get(f"{base}/metrics", headers=scraper)
    assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
    assert pids_using(data), "the embedded Redis should be running while courtcast is"
    started = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5.0
    time.sleep(0.2)
    assert pids_using(data) == [], "nothing may be left running (no orphan Redis)"


def test_kill_9_leaves_no_orphan_redis(node) -> None:  # type: ignore[no-untyped-def]
    proc, _, data = node
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while pids_using(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_using(data) == []


def test_cli_reaches_the_running_node(node) -> None:  # type: ignore[no-untyped-def]
    _, base, data = node
    added = run(
        ["users", "add", "olga", "--role", "operator", "--data-dir", str(data)],
        stdin="correct horse battery\n",
    )
    assert added.returncode == 0, added.stderr
    stream = run(["streams", "add", "court1-room2", "--public", "--data-dir", str(data)])
    assert stream.returncode == 0, stream.stderr
    assert "publish key:" in stream.stdout
    listed = run(["streams", "list", "--json", "--data-dir", str(data)])
    assert '"court1-room2"' in listed.stdout
    login = httpx.post(
        f"{base}/api/v1/login", json={"name": "olga", "password": "correct horse battery"}
    )
    assert login.status_code == 200
    me = httpx.get(
        f"{base}/api/v1/me", headers={"authorization": f"Bearer {login.json()['token']}"}
    )
    assert me.json() == {"name": "olga", "role": "operator", "court": ""}
    wrong = httpx.post(f"{base}/api/v1/login", json={"name": "olga", "password": "nope-nope"})
    assert wrong.status_code == 401


def test_cli_without_a_running_node_uses_a_temporary_redis(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = run(["streams", "add", "hall-cam", "--class", "security", "--data-dir", str(data)])
    assert added.returncode == 0, added.stderr
    listed = run(["streams", "list", "--data-dir", str(data)])
    assert "hall-cam" in listed.stdout and "security" in listed.stdout
    assert pids_using(data) == []


def test_streams_add_never_replaces_and_rotate_key_is_its_own_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run(["streams", "add", "hall-cam", "--data-dir", str(data)])
    assert first.returncode == 0, first.stderr
    again = run(["streams", "add", "hall-cam", "--public", "--data-dir", str(data)])
    assert again.returncode == 2 and "hall-cam already exists" in again.stderr
    rotated = run(["streams", "rotate-key", "hall-cam", "--data-dir", str(data)])
    assert rotated.returncode == 0, rotated.stderr
    old = first.stdout.split("publish key: ")[1].strip()
    new = rotated.stdout.split("publish key: ")[1].strip()
    assert new and new != old
    listed = run(["streams", "list", "--json", "--data-dir", str(data)])
    assert '"public": false' in listed.stdout.replace('"public":false', '"public": false')
    missing = run(["streams", "rotate-key", "nope", "--data-dir", str(data)])
    assert missing.returncode == 2 and "no stream nope" in missing.stderr


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_bad_configs_end_with_one_line_and_exit_2(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad-key.yaml"
    bad_key.write_text("http:\n  prot: 80\n")
    assert "http.prot: unknown key" in one_line_error(run(["up", "--config", str(bad_key)]))
    bad_type = tmp_path / "bad-type.yaml"
    bad_type.write_text("rtmp:\n  port: many\n")
    assert "rtmp.port: Input should be a valid integer" in one_line_error(
        run(["up", "--config", str(bad_type)])
    )
    missing = one_line_error(run(["up", "--config", str(tmp_path / "missing.yaml")]))
    assert "missing.yaml: not found" in missing
    env = subprocess.run(
        COURTCAST + ["up", "--data-dir", str(tmp_path / "d")],
        env={**os.environ, "COURTCAST_HLS__PART_TARGET_S": "9"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "COURTCAST_HLS__PART_TARGET_S: hls.part_target_s" in one_line_error(env)


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            [
                "up",
                "--data-dir",
                str(tmp_path / "d"),
                "--http-port",
                str(port),
                "--rtmp-port",
                str(free_port()),
            ]
        )
        assert f"http.port: cannot listen on 127.0.0.1:{port}" in one_line_error(result)
        result = run(
            [
                "up",
                "--data-dir",
                str(tmp_path / "d"),
                "--http-port",
                str(free_port()),
                "--rtmp-port",
                str(port),
            ]
        )
        assert f"rtmp.port: cannot listen on 127.0.0.1:{port}" in one_line_error(result)
    assert pids_using(tmp_path / "d") == []


def test_agent_without_its_config_says_so(tmp_path: Path) -> None:
    result = run(["agent", "run", "--config", str(tmp_path / "nope.yaml")])
    assert one_line_error(result) == f"courtcast: agent config {tmp_path / 'nope.yaml'}: not found"


def test_cli_schedules_a_public_session_with_its_delay(tmp_path: Path) -> None:
    """`courtcast sessions open ... --public --delay S --at ISO-TIME` (DESIGN.md §5)."""
    import json

    data = ["--data-dir", str(tmp_path / "data")]
    added = run(["streams", "add", "r9-cam", "--public", "--room", "r9", *data])
    assert added.returncode == 0, added.stderr
    naive = run(
        ["sessions", "open", "--room", "r9", "--case", "C-9", "--at", "2099-01-01T09:00", *data]
    )
    assert naive.returncode != 0 and "time zone" in naive.stderr
    opened = run(
        ["sessions", "open", "--room", "r9", "--case", "C-9", "--public", "--delay", "12"]
        + ["--at", "2099-01-01T09:00+08:00", *data]
    )
    assert opened.returncode == 0, opened.stderr
    assert "scheduled in room r9 for 2099-01-01 01:00:00 UTC" in opened.stdout
    assert "/public/s-20990101-" in opened.stdout
    listed = json.loads(run(["sessions", "list", "--json", *data]).stdout)
    assert [(s["state"], s["delay_s"], s["public"]) for s in listed] == [("scheduled", 12.0, True)]
    assert listed[0]["mask"] == ""


def test_cli_opens_a_session_whose_broadcast_blurs_faces(tmp_path: Path) -> None:
    """`courtcast sessions open ... --mask faces` (issue 16, item 5)."""
    import json

    data = ["--data-dir", str(tmp_path / "data")]
    assert run(["streams", "add", "r8-cam", "--public", "--room", "r8", *data]).returncode == 0
    wrong = run(["sessions", "open", "--room", "r8", "--case", "C-8", "--mask", "plates", *data])
    assert wrong.returncode != 0 and "faces" in wrong.stderr
    opened = run(
        ["sessions", "open", "--room", "r8", "--case", "C-8", "--public"]
        + ["--mask", "faces", "--parties", "Procuratorate v. Li Si", *data]
    )
    assert opened.returncode == 0, opened.stderr
    assert "faces blurred" in opened.stdout
    listed = json.loads(run(["sessions", "list", "--json", *data]).stdout)
    assert [(s["public"], s["mask"]) for s in listed] == [(True, "faces")]
    assert listed[0]["parties"] == "Procuratorate v. Li Si"
