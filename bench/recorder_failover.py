"""Recorder takeover time in a fleet (issue 18): SIGKILL the recorder writing a session's
recording, time until another recorder holds its lease (claim) and until the first segment
by the new writer is listed in the stored manifest (first segment). Processes as a
deployment runs them (tests/fixtures/cluster.py): a password Redis, SeaweedFS, one media
node fed by ffmpeg over RTMP, two `courtcast recorder` processes (the killed one restarts
after each round, so there are always two).

    .venv/bin/python bench/recorder_failover.py --kills 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from recorder.leases import SCOPE, SEQS_PER_EPOCH
from tests.fixtures import s3 as s3fix
from tests.fixtures.cluster import ProcessCluster
from tests.mediafiles import make_clip

STREAM, ROOM = "court-b", "room-b"


@contextlib.contextmanager
def seaweedfs(root: Path) -> Iterator[s3fix.S3Server]:
    """SeaweedFS as tests/fixtures/s3.py starts it for the test session."""
    (root / "data").mkdir(parents=True)
    access, secret = f"cc{secrets.token_hex(8)}", secrets.token_hex(20)
    identities = root / "identities.json"
    s3fix._write_identities(identities, access, secret)
    ports = dict(zip(s3fix.PORT_FLAGS, s3fix.free_ports(len(s3fix.PORT_FLAGS)), strict=True))
    ports["admin.port"], ports["admin.port.grpc"] = s3fix.free_port_pair()
    s3fix._remove_grpc_sockets(ports)
    log_path = root / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            s3fix._command(s3fix._weed_binary(), root, ports, identities),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
        )
    server = s3fix.S3Server(
        f"127.0.0.1:{ports['s3.port']}", access, secret, "us-east-1", process, log_path
    )
    try:
        s3fix._wait_ready(server)
        yield server
    finally:
        s3fix._stop(process, ports)


def seqs(cluster: ProcessCluster, rid: str) -> list[int]:
    try:
        data = cluster.s3.client().get_object(cluster.bucket, f"recordings/{rid}/manifest.json")
    except Exception:
        return []
    try:
        return [int(s["seq"]) for s in json.loads(data.read())["segments"]]
    finally:
        data.close()
        data.release_conn()


def wait(check: object, timeout: float, step: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("bench: waited too long")
        time.sleep(step)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with seaweedfs(root / "s3") as s3, ProcessCluster(root / "cluster", s3) as cluster:
            run(cluster, root, args.kills)


def run(cluster: ProcessCluster, root: Path, kills: int) -> None:
    node = cluster.start("media-server", "node-a")
    key = cluster.cli("streams", "add", STREAM, "--class", "trial", "--room", ROOM).split()[-1]
    clip = make_clip(root, seconds=4, fps=25, gop=25, size=(320, 240))
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
         str(clip), "-c", "copy", "-f", "flv", f"{node.rtmp_url}/live/{STREAM}?key={key}"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    names = ["rec-1", "rec-2"]
    for name in names:
        cluster.start("recorder", name)
    r = redis.Redis(host="127.0.0.1", port=cluster.redis.port, password=cluster.redis.password)
    try:
        session = cluster.cli("sessions", "open", "--room", ROOM, "--case", "B-1").split()[1]
        lease = f"cc:lease:{SCOPE}:{STREAM}|{session}"
        wait(lambda: r.get(lease), 30)
        rows = json.loads(cluster.cli("recordings", "list", "--stream", STREAM, "--json"))
        rid = rows[0]["id"]
        claims, firsts = [], []
        for _ in range(kills):
            grant = r.get(lease).decode()  # type: ignore[union-attr]
            epoch = int(grant.rsplit("/", 1)[1])
            wait(lambda e=epoch: any(s >= (e - 1) * SEQS_PER_EPOCH for s in seqs(cluster, rid)), 30)
            victim = grant.split(".", 1)[0]
            cluster.kill(victim)
            killed = time.monotonic()
            claimed = wait(lambda g=grant: (v := r.get(lease)) and v.decode() != g, 60)
            base = epoch * SEQS_PER_EPOCH
            first = wait(lambda b=base: any(s >= b for s in seqs(cluster, rid)), 60, 0.1)
            claims.append(claimed - killed)
            firsts.append(first - killed)
            print(f"kill {victim}: claimed {claims[-1]:.2f} s, first segment {firsts[-1]:.2f} s")
            cluster.start("recorder", victim)
        cluster.cli("sessions", "close", session)
        report(claims, firsts)
    finally:
        ffmpeg.kill()
        ffmpeg.wait()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def report(claims: list[float], firsts: list[float]) -> None:
    load = os.getloadavg()
    print(f"kills: {len(claims)}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for label, values in (("claim", claims), ("first segment", firsts)):
        print(
            f"{label}: p50 {statistics.median(values):.2f} s, p95 {pct(values, 0.95):.2f} s, "
            f"max {max(values):.2f} s"
        )


if __name__ == "__main__":
    main()
