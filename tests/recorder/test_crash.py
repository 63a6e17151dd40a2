"""kill -9 of the process running the recorder, in the middle of a segment: the restarted
process resumes the same recording with a recorder-restart gap, at most ~1 s is lost (the
LL-HLS part being built), and the recording verifies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.manifest import Manifest
from storage.recording_keys import manifest_key
from tests.mediafiles import make_clip
from tests.netutil import free_port, wait_http

pytestmark = pytest.mark.timeout(120)
COURTCAST = [sys.executable, "-m", "courtcast.cli"]


class Node:
    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.http, self.rtmp = free_port(), free_port()
        self.log = tmp_path / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *COURTCAST,
                    "up",
                    "--data-dir",
                    str(self.data),
                    "--http-port",
                    str(self.http),
                    "--rtmp-port",
                    str(self.rtmp),
                    "--open",
                ],
                stdout=log,
                stderr=log,
            )
        wait_http(f"http://127.0.0.1:{self.http}/api/v1/health", timeout_s=30)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*COURTCAST, *args, "--data-dir", str(self.data)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def publish(self, clip: Path, stream: str, key: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-i",
                str(clip),
                "-c",
                "copy",
                "-f",
                "flv",
                f"rtmp://127.0.0.1:{self.rtmp}/live/{stream}?key={key}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.stop()


def wait_for_segments(node: Node, count: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(list((node.data / "objects" / "recordings").rglob("seg-*.m4s"))) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} segments were recorded")


def test_kill_9_mid_segment_resumes_with_a_gap_and_loses_at_most_a_part(
    node: Node, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path, seconds=30, fps=25, gop=50)  # 2 s GOPs, 4 s segments
    node.start()
    added = node.cli("streams", "add", "cam-1", "--class", "trial", "--room", "r9")
    key = added.split("key: ")[1].strip()
    sid = node.cli("sessions", "open", "--room", "r9", "--case", "K-1").split()[1]
    publisher = node.publish(clip, "cam-1", key)
    try:
        wait_for_segments(node, 1)
        time.sleep(2.0)  # half-way into the next 4 s segment
        killed = time.time()
        node.kill9()
        publisher.wait(10)
        node.start()
        publisher = node.publish(clip, "cam-1", key)
        time.sleep(5)
        node.cli("sessions", "close", sid)
        [record] = json.loads(node.cli("recordings", "list", "--case", "K-1", "--json"))
        deadline = time.monotonic() + 20
        while record["state"] != "closed" and time.monotonic() < deadline:
            time.sleep(0.2)
            [record] = json.loads(node.cli("recordings", "list", "--case", "K-1", "--json"))
        assert record["state"] == "closed"
    finally:
        publisher.kill()
        publisher.wait()
    rid = record["id"]
    manifest = Manifest.from_bytes((node.data / "objects" / manifest_key(rid)).read_bytes())
    [gap] = [g for g in manifest.gaps if g.cause == "recorder-restart"]
    lost = killed - gap.start
    print(f"kill -9: media lost before the kill {lost:.3f} s")
    assert lost <= 1.0, (killed, gap)
    assert gap.end > killed
    assert manifest.duration >= 5.0
    # the segment the kill interrupted was recovered from its spooled parts
    before = [s for s in manifest.segments if s.end <= gap.start + 0.001]
    assert (before and before[-1].duration < 4.0 - 1e-3) or len(before) >= 2
    assert node.cli("recordings", "verify", rid).startswith("OK")
