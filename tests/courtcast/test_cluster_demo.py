"""`courtcast cluster-demo` (issue 18, item 6): the compose topology as processes on
127.0.0.1 comes up, says where to look, plays a stream published to one media node as
LL-HLS through nginx (decoded), and leaves no process behind after Ctrl-C."""

from __future__ import annotations

import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.rtmp import FFMPEG
from tests.netutil import free_port

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 150.0  # six Python processes at once on a loaded 2-core machine
FFPROBE = shutil.which("ffprobe") or "ffprobe"


def read_until(lines: queue.Queue[str], marker: str, timeout_s: float) -> str:
    """The launcher's output up to the line containing marker."""
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} in {timeout_s} s:\n{''.join(seen)}")


def descendants(pid: int) -> set[tuple[int, str]]:
    """Every process under pid, as (pid, start time) so a reused pid is not mistaken."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add((child, started(child)))
            todo.append(child)
    return found


def started(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return ""


def decoded_frames(url: str) -> int:
    probe = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-read_intervals",
            "%+2",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    counts = [int(n) for n in probe.stdout.split()]  # the stream, again under its program
    return max(counts, default=0) if probe.returncode == 0 else 0


def test_cluster_demo_plays_through_nginx_and_stops_clean(tmp_path: Path) -> None:
    port = free_port()
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "courtcast.cli",
            "cluster-demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output = launcher.stdout
    assert output is not None

    def pump() -> None:
        for line in output:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    publisher: subprocess.Popen[bytes] | None = None
    try:
        told = read_until(lines, "logs:", START_TIMEOUT_S)
        base = f"http://127.0.0.1:{port}"
        assert f"open:      {base}/control" in told
        password = re.search(r"sign in:\s+demo / (\S+)", told)[1]  # type: ignore[index]
        publish = re.search(r'-f flv "(rtmp://[^"]+)"', told)[1]  # type: ignore[index]

        publisher = subprocess.Popen(
            [
                FFMPEG,
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-c:v",
                "libx264",
                "-g",
                "25",
                "-f",
                "flv",
                publish,
            ],
            stdin=subprocess.DEVNULL,
        )
        with httpx.Client(base_url=base, timeout=30) as client:  # all through nginx
            login = client.post("/api/v1/login", json={"name": "demo", "password": password})
            assert login.status_code == 200, login.text
            play = client.get("/api/v1/streams/demo-room/play-url").json()["hls"]
        frames, deadline = 0, time.monotonic() + 40
        while frames < 25 and time.monotonic() < deadline:
            frames = decoded_frames(base + play)
        assert frames >= 25, f"LL-HLS through nginx: {frames} frames decoded"

        before = descendants(launcher.pid)
        assert len({p for p, _ in before}) >= 8  # redis, weed, 5 courtcast, nginx
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(60) == 0
        left = [(p, s) for p, s in before if started(p) == s]
        assert not left, f"left behind: {left}"
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        if launcher.poll() is None:
            launcher.kill()  # its children are SIGKILLed with it (PR_SET_PDEATHSIG)
            launcher.wait()
