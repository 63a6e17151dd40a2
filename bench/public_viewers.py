"""Public LL-HLS viewers per core (issue 16, Measure): courtcast's /public/ routes against
nginx serving the same files, in the same run; then nginx as a caching reverse proxy in
front of courtcast (the deployment the README recommends): origin requests per second.

    .venv/bin/python -m bench.public_viewers --viewers 500,1000,2000 --seconds 15 \\
        --cache-viewers 1000 [--server-cpu 0 --client-cpu 1]

Set-up: `courtcast up --open` and nginx (one worker) pinned to --server-cpu; an ffmpeg
publisher (720p30 2 Mbit/s, 2 s GOP, over RTMP) and one public session of its room with a
2 s delay. A mirror (in this process) follows the public rendition as one LL-HLS viewer and
writes its playlist, inits, parts and segments to a directory nginx serves as files.
Viewers are bench/viewer_load.py, one process pinned to --client-cpu.

Phases, each `seconds` long after a ramp and warm-up, the viewers ending between them:
- idle: no viewer (courtcast's baseline: ingest, rendition, recording, the mirror);
- ours N: N viewers of /public/{session}/ (blocking playlist requests, then the part);
- nginx N: N viewers of the mirrored files from nginx (playlist every 0.5 s, then the new
  part: files cannot block; the same two requests per part per viewer);
- cache: --cache-viewers viewers of courtcast through nginx's proxy_cache (blocking
  requests cached by their query, one origin request per key with proxy_cache_lock).
Server CPU is utime + stime from /proc over the window (courtcast with its Redis; nginx's
master and worker). Viewers per core = N / (server CPU share above idle); the ratio is
nginx's CPU per viewer over ours.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_hls import make_clip, publisher_cmd
from bench.procs import Procs, cpu_s, free_port, tree

COURTCAST = ROOT / ".venv/bin/courtcast"
PY = sys.executable
URI_RE = re.compile(r'URI="([^"]+)"')
HINT_RE = re.compile(r'PRELOAD-HINT:TYPE=PART,URI="part-(\d+)\.(\d+)')

NGINX_CONF = """daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
user root;
error_log {work}/nginx-error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 10000; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; video/mp4 mp4; }}
  client_body_temp_path {work}/tmp;
  proxy_temp_path {work}/tmp;
  fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp;
  scgi_temp_path {work}/tmp;

  # the files, as the mirror writes them
  server {{
    listen 127.0.0.1:{files_port};
    location /public/ {{ root {work}/mirror; }}
  }}

  # courtcast behind a caching reverse proxy: the deployment README.md recommends
  proxy_cache_path {work}/cache levels=1:2 keys_zone=public_hls:10m max_size=1g
                   inactive=2m use_temp_path=off;
  log_format origin '$upstream_cache_status $upstream_addr $request_uri';
  upstream courtcast {{
    server 127.0.0.1:{origin_port};
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{cache_port};
    access_log {work}/cache-access.log origin;
    location /public/ {{
      proxy_pass http://courtcast;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache public_hls;
      proxy_cache_key $uri$is_args$args;  # blocking playlist requests by their query
      proxy_cache_lock on;                # one origin request per key, the rest wait
      proxy_cache_lock_timeout 8s;        # longer than a blocking request may wait (6 s)
      proxy_cache_lock_age 8s;
      proxy_cache_use_stale updating;
      proxy_read_timeout 10s;
    }}
  }}
}}
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(args: list[str]) -> str:
    """courtcast's CLI on the running node's data dir (the API would need a sign-in)."""
    done = subprocess.run([str(COURTCAST), *args], capture_output=True, text=True, check=True)
    return done.stdout


def get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as a:
            return a.status, a.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def wait_ok(port: int, path: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(port, path, 3)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"no 200 from :{port}{path} in {timeout} s")


class Mirror(threading.Thread):
    """Follows a public playlist as one LL-HLS viewer and keeps its files in a directory:
    what nginx serves in the 'nginx' phases."""

    def __init__(self, port: int, base: str, out: Path) -> None:
        super().__init__(daemon=True)
        self.port, self.base, self.out = port, base, out
        self.stop = False
        out.mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        query = ""
        while not self.stop:
            try:
                status, body = get(self.port, self.base + "index.m3u8" + query)
            except OSError:
                status, body = 0, b""
            if status != 200:
                query = ""
                time.sleep(0.2)
                continue
            text = body.decode()
            for uri in URI_RE.findall(text) + [
                line for line in text.splitlines() if line and not line.startswith("#")
            ]:
                if not (self.out / uri).exists():
                    self._write(uri, get(self.port, self.base + uri)[1])
            self._write("index.m3u8", body)
            hint = HINT_RE.search(text)
            query = f"?_HLS_msn={hint[1]}&_HLS_part={hint[2]}" if hint else ""

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.out / name)


def load(
    procs: Procs, cpu: int, spec: dict[str, Any], servers: dict[str, list[int]]
) -> dict[str, Any]:
    """Run viewer_load with spec; CPU seconds of each server over its window."""
    cmd = ["taskset", "-c", str(cpu), PY, str(ROOT / "bench/viewer_load.py"), json.dumps(spec)]
    proc = procs.start(cmd, signal.SIGTERM, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "window":
        raise RuntimeError(f"viewer_load: {line!r}")
    before = {name: cpu_s(pids) for name, pids in servers.items()}
    started = time.monotonic()
    result: dict[str, Any] = json.loads(proc.stdout.readline())
    span = time.monotonic() - started
    result["cpu_share"] = {
        name: (cpu_s(pids) - before[name]) / span for name, pids in servers.items()
    }
    proc.wait(timeout=10)
    return result


def idle_share(pids: list[int], seconds: float) -> float:
    before, started = cpu_s(pids), time.monotonic()
    time.sleep(seconds)
    return (cpu_s(pids) - before) / (time.monotonic() - started)


def origin_requests(log_path: Path, since: int) -> tuple[int, int]:
    """Requests nginx passed to courtcast (an upstream address logged) after byte since,
    and all requests."""
    with open(log_path, "rb") as f:
        f.seek(since)
        lines = f.read().splitlines()
    return sum(line.split()[1] != b"-" for line in lines), len(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", default="500,1000,2000")
    parser.add_argument("--cache-viewers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    procs = Procs()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run(procs, Path(tmp), args)
        finally:
            procs.stop_all()


def run(procs: Procs, work: Path, args: argparse.Namespace) -> None:
    http, rtmp, files_port, cache_port = free_port(), free_port(), free_port(), free_port()
    pin = ["taskset", "-c", str(args.server_cpu)]
    env = {**os.environ, "COURTCAST_HTTP__MAX_UNFINISHED_PER_ADDRESS": "10000"}
    out = open(work / "courtcast.log", "wb")
    cmd = [str(COURTCAST), "up", "--open", "--data-dir", str(work / "cc")]
    cmd += ["--http-port", str(http), "--rtmp-port", str(rtmp)]
    courtcast = procs.start(
        pin + cmd, signal.SIGTERM, stdout=out, stderr=subprocess.STDOUT, env=env
    )
    wait_ok(http, "/api/v1/health")
    log(f"courtcast up (pid {courtcast.pid}), making a 720p clip")
    clip = make_clip(work / "clip.mp4", 30)
    data = ["--data-dir", str(work / "cc")]
    cli(["streams", "add", "court-1", "--public", "--room", "r1", *data])
    publisher = ["taskset", "-c", str(args.client_cpu)]
    publisher += publisher_cmd(clip, f"rtmp://127.0.0.1:{rtmp}/live/court-1")
    procs.start(publisher, signal.SIGTERM)
    time.sleep(2)
    opened = cli(
        ["sessions", "open", "--room", "r1", "--case", "B-1", "--public", "--delay", "2", *data]
    )
    session = {"id": re.findall(r"session (\S+)", opened)[0]}
    base = f"/public/{session['id']}/"
    wait_ok(http, base + "index.m3u8")
    mirror = Mirror(http, base, work / "mirror" / base.strip("/"))
    mirror.start()
    (work / "tmp").mkdir()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(work=work, files_port=files_port, cache_port=cache_port, origin_port=http)
    )
    nginx = procs.start(
        pin + ["nginx", "-c", str(conf), "-p", str(work)],
        signal.SIGQUIT,
        stdout=open(work / "nginx.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    time.sleep(3)
    wait_ok(files_port, base + "index.m3u8")
    log(f"session {session['id']} broadcasting; nginx up (pid {nginx.pid})")
    servers = {"courtcast": tree(courtcast.pid), "nginx": tree(nginx.pid)}
    idle = idle_share(servers["courtcast"], args.seconds)
    log(f"courtcast idle (ingest, rendition, recording, mirror): {idle * 100:.1f} % of a core")

    rows = []
    for n in (int(v) for v in args.viewers.split(",")):
        spec = {"n": n, "seconds": args.seconds, "warmup_s": 4.0, "ramp_s": 3.0}
        ours = load(
            procs, args.client_cpu, {**spec, "port": http, "base": base, "mode": "ll"}, servers
        )
        log(f"ours  {n}: {json.dumps(ours)}")
        theirs = load(
            procs,
            args.client_cpu,
            {**spec, "port": files_port, "base": base, "mode": "poll"},
            servers,
        )
        log(f"nginx {n}: {json.dumps(theirs)}")
        rows.append((n, ours, theirs))

    access = work / "cache-access.log"
    since = access.stat().st_size if access.exists() else 0
    spec = {"n": args.cache_viewers, "seconds": args.seconds, "warmup_s": 4.0, "ramp_s": 3.0}
    cached = load(
        procs, args.client_cpu, {**spec, "port": cache_port, "base": base, "mode": "ll"}, servers
    )
    origin, total = origin_requests(access, since)
    log(f"cache {args.cache_viewers}: {json.dumps(cached)}")
    mirror.stop = True
    report(rows, idle, cached, origin, total, args)


def report(
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]],
    idle: float,
    cached: dict[str, Any],
    origin: int,
    total: int,
    args: argparse.Namespace,
) -> None:
    print(
        f"\n{'N':>5} | {'ours CPU %':>10} {'viewers/core':>12} {'parts/v/s':>9} "
        f"{'part p99':>8} {'block p99':>9} {'spread p99':>10} {'err':>4} | "
        f"{'nginx CPU %':>11} {'viewers/core':>12} {'parts/v/s':>9} {'part p99':>8} "
        f"{'pl p99':>6} {'err':>4} | {'ratio':>5}"
    )
    for n, ours, theirs in rows:
        ours_cpu = ours["cpu_share"]["courtcast"] - idle
        nginx_cpu = theirs["cpu_share"]["nginx"]
        print(
            f"{n:>5} | {ours_cpu * 100:>10.1f} {n / max(ours_cpu, 1e-9):>12.0f} "
            f"{ours['parts_per_viewer_s']:>9.2f} {ours['part_ms'][1]:>8.1f} "
            f"{ours['playlist_ms'][1]:>9.1f} {ours['spread_ms'][1]:>10.1f} {ours['errors']:>4} | "
            f"{nginx_cpu * 100:>11.1f} {n / max(nginx_cpu, 1e-9):>12.0f} "
            f"{theirs['parts_per_viewer_s']:>9.2f} {theirs['part_ms'][1]:>8.1f} "
            f"{theirs['playlist_ms'][1]:>6.1f} {theirs['errors']:>4} | "
            f"{ours_cpu / max(nginx_cpu, 1e-9):>5.2f}"
        )
    print("viewers/core = N / CPU share: meaningful only while parts/v/s stays near 2")
    span = cached["span_s"]
    print(
        f"\nnginx proxy_cache in front, {args.cache_viewers} viewers of one trial: "
        f"{origin / span:.1f} origin requests/s of {total / span:.0f} requests/s "
        f"(courtcast {(cached['cpu_share']['courtcast'] - idle) * 100:.1f} % of a core above "
        f"idle, nginx {cached['cpu_share']['nginx'] * 100:.1f} %); viewers: "
        f"{cached['parts_per_viewer_s']:.2f} parts/s each, part p99 {cached['part_ms'][1]} ms, "
        f"blocking playlist p99 {cached['playlist_ms'][1]} ms, spread p99 "
        f"{cached['spread_ms'][1]} ms, errors {cached['errors']}"
    )


if __name__ == "__main__":
    main()
