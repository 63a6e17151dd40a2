"""A media node dies (issue 18 item 5): how long until the publisher is live on another node,
and until a viewer through the load balancer decodes new video again.

    .venv/bin/python bench/node_failover.py --runs 6

Each run is the test's scene (tests/courtcast/test_node_failover.py), fresh: a password
Redis, two `courtcast media-server` processes, a control room and a recorder (idle: no
session) from configs/cluster.yaml + the §9 environment (one SeaweedFS for all runs),
`courtcast agent run` enrolled through nginx in front of them (configs/nginx.conf; so given
both nodes' RTMP URLs) publishing a test pattern (320x240, 25 fps, 2 s GOP), and nginx
in front of the nodes (node B a backup, so the viewer is on the node that dies: the worst
case). The viewer is a plain-HLS player (playlist every 0.25 s, each new segment fetched and
decoded). Then SIGKILL node A:

- publisher move: SIGKILL -> node B holds the stream's origin lease (the agent publishes
  there; Redis, polled every 50 ms);
- viewer recovery: SIGKILL -> the viewer has decoded the first new segment, served by B.

Results: bench/RESULTS.md, "Scale-out (issue 18) — node failover".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recorder import start_s3
from tests.courtcast.test_node_failover import (
    Failover,
    kill_and_watch,
    start_scene,
)
from tests.fixtures.cluster import ProcessCluster
from tests.fixtures.nginx_lb import NginxLB


def one_run(root: Path, s3: object) -> Failover:
    with ProcessCluster(root, s3) as cluster, contextlib.ExitStack() as stack:  # type: ignore[arg-type]
        stream_id, agent = start_scene(cluster, stack)
        nodes = [cluster.processes[n] for n in ("node-a", "node-b")]
        try:
            with NginxLB(root, [n.http_port for n in nodes], backup_last=True) as lb:
                return asyncio.run(kill_and_watch(cluster, lb, stream_id, agent))
        finally:
            agent.terminate()
            agent.wait(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    results: list[Failover] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="node-failover-") as tmp:
        s3, gen = start_s3(Path(tmp))
        try:
            for i in range(args.runs):
                started = time.monotonic()
                result = one_run(Path(tmp) / f"run{i}", s3)
                loads.append(os.getloadavg()[0])
                results.append(result)
                print(
                    json.dumps(
                        {
                            "run": i,
                            "publisher_move_s": round(result.publisher_move_s, 2),
                            "viewer_recovery_s": round(result.viewer_recovery_s, 2),
                            "viewer_errors": result.viewer_errors,
                            "load1": loads[-1],
                            "run_s": round(time.monotonic() - started, 1),
                        }
                    ),
                    flush=True,
                )
        finally:
            for _ in gen:  # the fixture's teardown: stops weed
                pass
    moves = [r.publisher_move_s for r in results]
    views = [r.viewer_recovery_s for r in results]
    print(
        f"runs {len(results)}  publisher move p50 {statistics.median(moves):.2f} s "
        f"p95 {percentile(moves, 0.95):.2f} s  |  viewer recovery p50 "
        f"{statistics.median(views):.2f} s p95 {percentile(views, 0.95):.2f} s  |  "
        f"load average {min(loads):.1f}-{max(loads):.1f}"
    )


if __name__ == "__main__":
    main()
