"""Streams per node as the cluster grows from 1 to 3 media nodes on this machine (issue 18).

One redis-server and K = 1, 2, 3 `courtcast media-server` processes (open mode,
`cluster.enabled`, one `url_signing_secret`) on 127.0.0.1. N streams (a camera-like main
stream: 1280x720, 25 fps, 2 s GOP, H.264 ~2 Mbit/s + AAC 64 kbit/s) are published spread
over the nodes, stream i to node i mod K (one ffmpeg per node, -re, -c copy, one RTMP
output per stream). Each stream is played once by an RTMP player (ffmpeg -f null) on
another node, node (i + 1) mod K, so with K > 1 every stream also crosses one relay (the
origin serves the link, the other node pulls it and serves the player); with K = 1 it is
played where it is published.

Per run: after a warm-up, each node's CPU (utime + stime, /proc) over the window, and each
player's frames over the window (ffmpeg -progress). Reported per node: CPU ms per
stream-second, where a node's streams are the ones it holds as origin plus the ones it
relays; and for the cluster: CPU ms per published stream-second over all nodes. A run is
"at full rate" when every player received at least 95 % of the source's frames; the largest
such N is what the cluster size sustains here. Redis's commands per second over the
window come from INFO commandstats (docs/scale.md sizes one Redis with them).

    .venv/bin/python bench/cluster_scale.py [--per-node 8,16,24] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Procs, cpu_s, free_port, machine_busy, tree
from bench.relay import Node
from storage.redis_server import redis_server_binary

FPS = 25
WARMUP_S = 6.0
FULL_RATE = 0.95
CONFIG = """security:
  open: true
  url_signing_secret: bench-cluster-scale-secret-of-40-chars!!
state:
  redis_url: redis://127.0.0.1:REDIS_PORT/0
cluster:
  enabled: true
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main_stream(work: Path) -> Path:
    """A 10 s 720p25 clip at ~2 Mbit/s, a camera's main stream (x264 ultrafast, CBR-ish)."""
    out = work / "main-720p25-2m.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "10",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-g", str(2 * FPS), "-keyint_min", str(2 * FPS), "-sc_threshold", "0", "-bf", "0",
         "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-c:a", "aac", "-b:a", "64k",
         str(out)],
        check=True,
    )  # fmt: skip
    return out


@dataclass
class Player:
    stream: str
    progress: Path
    proc: subprocess.Popen[Any]

    def frames(self) -> int:
        """The last frame count ffmpeg reported (-progress writes one block a second)."""
        try:
            lines = self.progress.read_text().splitlines()
        except OSError:
            return 0
        counts = [int(line[6:]) for line in lines if line.startswith("frame=")]
        return counts[-1] if counts else 0


def publish(procs: Procs, clip: Path, node: Node, streams: list[str]) -> subprocess.Popen[Any]:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    cmd += ["-re", "-stream_loop", "-1", "-i", str(clip)]
    for stream in streams:
        cmd += [
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "flv",
            f"rtmp://127.0.0.1:{node.rtmp}/live/{stream}",
        ]
    return procs.start(cmd, signal.SIGKILL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def play(procs: Procs, node: Node, stream: str, work: Path) -> Player:
    progress = work / f"{stream}-on-{node.name}.progress"
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    cmd += ["-progress", str(progress), "-stats_period", "0.5"]
    cmd += ["-i", f"rtmp://127.0.0.1:{node.rtmp}/live/{stream}", "-c", "copy", "-f", "null", "-"]
    with open(progress.with_suffix(".log"), "wb") as errors:
        proc = procs.start(cmd, signal.SIGKILL, stdout=subprocess.DEVNULL, stderr=errors)
    return Player(stream, progress, proc)


def wait_origins(nodes: list[Node], expected: list[int], timeout_s: float = 60.0) -> None:
    """Until every node holds the origin leases of the streams published to it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = [len(n.health()["roles"]["media_server"]["cluster"]["origins"]) for n in nodes]
        if held == expected:
            return
        time.sleep(0.5)
    raise RuntimeError(f"origins held {held}, expected {expected}")


def redis_calls(port: int) -> dict[str, int]:
    """Redis's commands so far, by command (INFO commandstats)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(k: int, n: int, seconds: float, work: Path, clip: Path) -> dict[str, Any]:
    """One cluster of k nodes carrying n streams; its numbers."""
    procs = Procs()
    nodes: list[Node] = []
    try:
        port = free_port()
        redis = [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1"]
        redis += ["--save", "", "--appendonly", "no", "--dir", str(work)]
        redis_proc = procs.start(redis, signal.SIGTERM, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        config = work / "cluster.yaml"
        config.write_text(CONFIG.replace("REDIS_PORT", str(port)))
        nodes = [Node(procs, work, f"node-{j + 1}", config) for j in range(k)]
        streams = [f"s{i:03d}" for i in range(n)]
        load = [
            publish(procs, clip, node, [s for i, s in enumerate(streams) if i % k == j])
            for j, node in enumerate(nodes)
        ]
        wait_origins(nodes, [len(range(j, n, k)) for j in range(k)])
        players = []
        for i, stream in enumerate(streams):
            players.append(play(procs, nodes[(i + 1) % k], stream, work))
            time.sleep(0.1)  # players arrive over a few seconds, not all in one instant
        load += [p.proc for p in players]
        time.sleep(WARMUP_S)
        cpu0, frames0, busy0 = (
            [n.cpu() for n in nodes],
            [p.frames() for p in players],
            machine_busy(),
        )
        ffmpeg0 = cpu_s([pid for p in load for pid in tree(p.pid)])
        calls0 = redis_calls(port)
        time.sleep(seconds)
        cpu1, frames1, busy1 = (
            [n.cpu() for n in nodes],
            [p.frames() for p in players],
            machine_busy(),
        )
        ffmpeg1 = cpu_s([pid for p in load for pid in tree(p.pid)])
        calls1 = redis_calls(port)
        calls = {c: (v - calls0.get(c, 0)) / seconds for c, v in calls1.items()}
        calls = {c: v for c, v in calls.items() if v > 0}
        stats = [node.health().get("roles", {}).get("media_server", {}) for node in nodes]
        result = {
            "k": k,
            "n": n,
            "cpu_s": [b - a for a, b in zip(cpu0, cpu1, strict=True)],
            "fps": [(b - a) / seconds for a, b in zip(frames0, frames1, strict=True)],
            "players_exited": sum(p.proc.poll() is not None for p in players),
            "origins": [len(s.get("cluster", {}).get("origins", [])) for s in stats],
            "relays": [len(s.get("cluster", {}).get("relays", {})) for s in stats],
            "ffmpeg_cpu_s": ffmpeg1 - ffmpeg0,
            "redis_calls_s": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
            "busy": (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
            "load": load_average(),
        }
        for node in nodes:  # before Redis, so that they hand their leases back
            procs.stop(node.proc)
        procs.stop(redis_proc)
        return result
    finally:
        procs.stop_all()


def report(row: dict[str, Any], seconds: float) -> str:
    handled = [o + r for o, r in zip(row["origins"], row["relays"], strict=True)]
    per_node = [
        f"{cpu * 1000 / seconds / max(1, h):.1f}"
        for cpu, h in zip(row["cpu_s"], handled, strict=True)
    ]
    cluster_ms = sum(row["cpu_s"]) * 1000 / seconds / row["n"]
    fps = row["fps"]
    full = min(fps) >= FULL_RATE * FPS
    load = " / ".join(f"{c / seconds * 100:.0f}" for c in row["cpu_s"])
    return (
        f"| {row['k']} | {row['n']} | {load} "
        f"| {' / '.join(f'{o}+{r}' for o, r in zip(row['origins'], row['relays'], strict=True))} "
        f"| {' / '.join(per_node)} | {cluster_ms:.1f} | {min(fps):.1f} / {sum(fps) / len(fps):.1f} "
        f"| {'yes' if full and not row['players_exited'] else 'no'} | {row['players_exited']} "
        f"| {row['ffmpeg_cpu_s'] / seconds * 100:.0f} "
        f"| {sum(row['redis_calls_s'].values()):.0f} "
        f"| {row['busy'] * 100:.0f}% | {row['load']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="1,2,3", help="cluster sizes")
    parser.add_argument("--per-node", default="8,16,24", help="streams per node, each run")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    sizes = [int(v) for v in args.nodes.split(",")]
    per_node = [int(v) for v in args.per_node.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(os.environ.get("BENCH_WORK") or tmp)
        work.mkdir(parents=True, exist_ok=True)
        clip = main_stream(work)
        for k in sizes:
            for m in per_node:
                run_dir = work / f"k{k}-n{k * m}"
                run_dir.mkdir(parents=True, exist_ok=True)
                log(f"{k} node(s), {k * m} streams, {args.seconds:.0f} s")
                rows.append(run(k, k * m, args.seconds, run_dir, clip))
                log(str(rows[-1]))
    print(
        f"\n720p25 H.264 2 Mbit/s + AAC; window {args.seconds:.0f} s after {WARMUP_S:.0f} s warm-up"
    )
    print(
        "| nodes | streams | node CPU % of a core | origins+relays per node "
        "| node CPU ms per stream-second | cluster CPU ms per published stream-second "
        "| player fps min / mean | full rate | players refused "
        "| ffmpeg CPU % (publishers + players) "
        "| Redis commands/s | machine busy | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(report(row, args.seconds))
    print()
    for row in rows:
        top = ", ".join(f"{c} {v:.0f}" for c, v in list(row["redis_calls_s"].items())[:6])
        print(f"Redis at {row['k']} node(s), {row['n']} streams, per second: {top}")


if __name__ == "__main__":
    main()
