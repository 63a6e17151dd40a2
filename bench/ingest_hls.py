"""RTMP in, HLS out: courtcast (LL-HLS) against nginx-rtmp (HLS), same machine, same run.

For each N: a fresh `courtcast up --open` and a fresh nginx (libnginx-mod-rtmp, hls on,
2 s fragments) run side by side; N ffmpeg publishers push a pre-encoded 720p 2 Mbit/s
clip (2 s GOP, AAC, `-re -stream_loop -1 -c copy`) into each. Readers in two other
processes play every stream: LL-HLS blocking reloads + parts from courtcast (an output
only runs while someone reads it), playlist polls (1 s) + segments from nginx.
After warm-up, server CPU (utime + stime of the process tree from /proc: courtcast and
its embedded Redis; nginx master and workers) is read over a steady window.

Latency: stream s0 of each server is published through a relay (bench/rtmp_tap.py) that
notes when its first video frame left ffmpeg; with -re, a frame of media time t left at
t0 + t. Readers note when each part (courtcast) or segment (nginx, polled every 50 ms)
arrives and the media time of its first video sample. See bench/RESULTS.md.

    .venv/bin/python bench/ingest_hls.py --n 1,10,25,40 --seconds 20 \
        [--browser 10] [--profile 25 --profile-out FILE] [--json FILE]

--record hls,disk,s3 runs each N once per mode: `hls` is HLS only on both sides; `disk`
adds `--record-all` to courtcast (recordings in its data dir) and `record all` (FLV files) to
nginx; `s3` is the same with courtcast recording to a SeaweedFS started here, as the tests
do (its CPU is shown apart, not in courtcast's).

--browser N also plays s0 of both servers with hls.js in headless Chromium at that N
(bench/hls_browser.py); --profile N records courtcast with py-spy after the window at
that N (summarise with bench/profile_summary.py). Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Procs, cpu_s, free_port, machine_busy, rss_mb, tree
from bench.rtmp_tap import RtmpTap

PY = sys.executable
COURTCAST = ROOT / ".venv/bin/courtcast"
GOP_S = 2.0
NGINX_PTS_DELAY_S = 63000 / 90000  # ngx_rtmp_mpegts.c adds NGX_RTMP_HLS_DELAY to PTS
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
WARMUP_S = 4.0
HLSJS_HOLD_SEGMENTS = 3  # hls.js liveSyncDurationCount default


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the clip --


def make_clip(path: Path, seconds: int) -> Path:
    """720p30 H.264 2 Mbit/s, 2 s GOP (no B-frames), AAC 128k: encoded once."""
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-bf",
            "0",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-b:v",
            "2M",
            "-maxrate",
            "2M",
            "-bufsize",
            "2M",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
            str(path),
        ],
        check=True,
        timeout=300,
    )
    return path


def publisher_cmd(clip: Path, url: str) -> list[str]:
    return [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(clip),
        "-c",
        "copy",
        "-f",
        "flv",
        url,
    ]


# -- the servers --


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[Any]
    http_port: int
    rtmp_port: int
    playlist: str  # path template with {id}

    def pids(self) -> list[int]:
        return tree(self.proc.pid)


S3_CONFIG = """objects:
  backend: s3
  s3:
    endpoint: "{endpoint}"
    access_key: "{access_key}"
    secret_key: "{secret_key}"
    bucket: "bench-recordings"
"""


def start_courtcast(
    procs: Procs, work: Path, mode: str, s3: Any = None, heap: bool = False
) -> Server:
    http, rtmp = free_port(), free_port()
    cmd = [
        str(COURTCAST),
        "up",
        "--open",
        "--data-dir",
        str(work / "cc"),
        "--http-port",
        str(http),
        "--rtmp-port",
        str(rtmp),
    ]
    if mode != "hls":
        cmd.append("--record-all")
    if mode == "s3":
        conf = work / "courtcast-s3.yaml"
        conf.write_text(
            S3_CONFIG.format(
                endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key
            )
        )
        cmd += ["--config", str(conf)]
    out = open(work / "courtcast.log", "wb")
    env = {**os.environ, "PYTHONTRACEMALLOC": "1"} if heap else None  # courtcast/heap_snapshots.py
    proc = procs.start(cmd, signal.SIGTERM, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server("courtcast", proc, http, rtmp, "/live/{id}/index.m3u8")
    wait_http(server, "/api/v1/health")
    return server


NGINX_CONF = """load_module {module};
daemon off;
master_process on;
worker_processes 1;
user root;
error_log {work}/nginx-error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp};
    chunk_size 4096;
    application live {{
      live on;
      hls on;
      hls_path {work}/hls;
      hls_fragment 2s;{record}
    }}
  }}
}}
http {{
  access_log off;
  client_body_temp_path {work}/tmp;
  proxy_temp_path {work}/tmp;
  fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp;
  scgi_temp_path {work}/tmp;
  server {{
    listen 127.0.0.1:{http};
    location /hls/ {{
      alias {work}/hls/;
      types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; text/html html; }}
      add_header Cache-Control no-cache;
    }}
  }}
}}
"""


NGINX_RECORD = """
      record all;
      record_path {work}/rec;
      record_unique on;"""


def start_nginx(procs: Procs, work: Path, record: bool) -> Server:
    http, rtmp = free_port(), free_port()
    for sub in ("hls", "tmp", "rec"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    rec = NGINX_RECORD.format(work=work) if record else ""
    conf.write_text(
        NGINX_CONF.format(module=NGINX_MODULE, work=work, rtmp=rtmp, http=http, record=rec)
    )
    out = open(work / "nginx.log", "wb")
    proc = procs.start(
        ["nginx", "-c", str(conf), "-p", str(work)],
        signal.SIGQUIT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    server = Server("nginx-rtmp", proc, http, rtmp, "/hls/{id}.m3u8")
    wait_http(server, "/hls/")
    return server


def wait_http(server: Server, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer on port {server.http_port}")


# -- readers --


class ReaderProc:
    """bench/hls_reader.py in its own process, driven over stdin/stdout."""

    def __init__(self, procs: Procs, spec: dict[str, Any], log_path: Path) -> None:
        self.proc = procs.start(
            [PY, str(ROOT / "bench/hls_reader.py"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log_path, "wb"),
            text=True,
        )

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def report(self, timeout: float = 20.0) -> dict[str, Any]:
        self.command("report")
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError("reader did not report")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"reader exited with {self.proc.poll()}")
        return dict(json.loads(line))


def reader_spec(server: Server, kind: str, n: int) -> dict[str, Any]:
    return {
        "port": server.http_port,
        "kind": kind,
        "path": server.playlist,
        "streams": [f"s{i}" for i in range(n)],
        "latency": ["s0"],
        "poll_s": 1.0,
        "latency_poll_s": 0.05,
    }


# -- one N --


@dataclass
class Side:
    """What one server did at one N."""

    cpu_ms_per_stream_s: float = 0.0
    sys_ms_per_stream_s: float = 0.0  # the kernel's part of it (stime)
    idle_cpu_ms_per_s: float = 0.0
    rss_idle_mb: float = 0.0
    rss_mb: float = 0.0
    rss_mb_per_stream: float = 0.0
    media_per_stream_s: list[float] = field(default_factory=list)  # min, max
    mbit_per_stream: float = 0.0
    reader_errors: int = 0
    latency: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    n: int
    seconds: float
    mode: str = "hls"  # hls | disk | s3: what both servers do besides HLS (module docstring)
    load_avg: float = 0.0  # 1-minute load average at the start of the window
    store_ms_per_stream_s: float = 0.0  # SeaweedFS (mode s3), not in courtcast's figure
    recorded_mb: dict[str, float] = field(default_factory=dict)  # on disk at the end
    # courtcast's segment closed -> durable in the store (health), whole run: p50, p99, max
    durable_ms: dict[str, float] = field(default_factory=dict)
    machine_busy_pct: float = 0.0
    publisher_ms_per_stream_s: float = 0.0
    ours: Side = field(default_factory=Side)
    nginx: Side = field(default_factory=Side)
    browser: dict[str, Any] = field(default_factory=dict)
    saturated: str = ""  # why this N is past what the machine keeps up with

    @property
    def ratio(self) -> float:
        theirs = self.nginx.cpu_ms_per_stream_s
        return self.ours.cpu_ms_per_stream_s / theirs if theirs else float("inf")


def run_n(n: int, mode: str, args: argparse.Namespace, clip: Path, work: Path, s3: Any) -> Row:
    procs = Procs()
    taps: list[RtmpTap] = []
    try:
        return _run_n(n, mode, args, clip, work, procs, taps, s3)
    finally:
        log(f"N={n}: stopping publishers, readers and servers")
        for tap in taps:
            tap.close()
        procs.stop_all()


def _run_n(
    n: int,
    mode: str,
    args: argparse.Namespace,
    clip: Path,
    work: Path,
    procs: Procs,
    taps: list[RtmpTap],
    s3: Any,
) -> Row:
    row = Row(n, args.seconds, mode)
    log(f"N={n} {mode}: starting courtcast and nginx-rtmp")
    servers = {
        "ours": start_courtcast(procs, work, mode, s3, args.heap_diff),
        "nginx": start_nginx(procs, work, record=mode != "hls"),
    }
    idle(servers, row)
    readers = {
        "ours": ReaderProc(procs, reader_spec(servers["ours"], "ll", n), work / "reader-ours.log"),
        "nginx": ReaderProc(
            procs, reader_spec(servers["nginx"], "poll", n), work / "reader-nginx.log"
        ),
    }
    taps += [RtmpTap(servers["ours"].rtmp_port), RtmpTap(servers["nginx"].rtmp_port)]
    publishers = start_publishers(procs, clip, n, servers, taps)
    warm_up(readers, n, args.warmup_timeout)
    store = [s3.process.pid] if mode == "s3" else []
    heap = [heap_snapshot(servers["ours"], work / "cc" / "heap")] if args.heap_diff else []
    clocks = measure(row, servers, readers, publishers, taps, args.seconds, store, args.rss_every)
    if heap:
        print_heap_diff(heap[0], heap_snapshot(servers["ours"], work / "cc" / "heap"), n)
    row.recorded_mb = {"ours": du_mb(work / "cc"), "nginx": du_mb(work / "rec")}
    if mode != "hls":
        row.durable_ms = durability(servers["ours"])
    if args.browser == n:
        row.browser = browser(servers, readers, clocks, args.seconds)
    if args.profile == n and mode in args.profile_modes.split(","):
        out = args.profile_out.with_name(f"{args.profile_out.stem}-{mode}{args.profile_out.suffix}")
        profile(servers["ours"], args.seconds, out)
    return row


def heap_snapshot(server: Server, folder: Path, timeout: float = 120.0) -> Path:
    """SIGUSR2 to courtcast (traced with --heap-diff): the snapshot it writes."""
    before = set(folder.glob("*.snap")) if folder.exists() else set()
    server.proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(folder.glob("*.snap")) - before if folder.exists() else set()
        if new:
            return new.pop()
        time.sleep(0.5)
    raise RuntimeError(f"no heap snapshot in {folder} after {timeout:.0f} s")


def print_heap_diff(first: Path, last: Path, n: int, top: int = 15) -> None:
    """What grew on courtcast's Python heap over the window, per stream, by line."""
    import tracemalloc

    a, b = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    total = sum(s.size for s in b.statistics("filename")) - sum(
        s.size for s in a.statistics("filename")
    )
    print(f"\nPython heap over the window: {total / 1e3 / n:+.1f} KB per stream; by line:")
    for stat in b.compare_to(a, "lineno")[:top]:
        frame = stat.traceback[0]
        print(
            f"{stat.size_diff / 1e3 / n:+9.1f} KB per stream {stat.count_diff / n:+9.1f} blocks"
            f"  {frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        )


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def idle(servers: dict[str, Server], row: Row) -> None:
    """CPU and RSS of the servers with nothing to do: the baseline."""
    time.sleep(2.0)
    before = {k: cpu_s(s.pids()) for k, s in servers.items()}
    time.sleep(3.0)
    for key, server in servers.items():
        side: Side = getattr(row, key)
        side.idle_cpu_ms_per_s = (cpu_s(server.pids()) - before[key]) / 3.0 * 1000
        side.rss_idle_mb = rss_mb(server.pids())


def start_publishers(
    procs: Procs, clip: Path, n: int, servers: dict[str, Server], taps: list[RtmpTap]
) -> list[subprocess.Popen[Any]]:
    """N per server, starts spread over one GOP; s0 goes through the latency tap."""
    log(f"N={n}: starting {2 * n} publishers")
    out = []
    for i in range(n):
        for server, tap in zip(servers.values(), taps):
            port = tap.port if i == 0 else server.rtmp_port
            url = f"rtmp://127.0.0.1:{port}/live/s{i}"
            out.append(procs.start(publisher_cmd(clip, url), stdin=subprocess.DEVNULL))
        time.sleep(GOP_S / n)
    return out


def warm_up(readers: dict[str, ReaderProc], n: int, timeout: float) -> None:
    """Until every stream has delivered media to its reader, then WARMUP_S more."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = {
            k: sum(1 for c in r.report().values() if c["media"] == 0) for k, r in readers.items()
        }
        if not any(waiting.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"N={n}: streams without media after {timeout:.0f} s: {waiting}")
        time.sleep(1.0)
    log(f"N={n}: every stream plays on both servers; warming up {WARMUP_S:.0f} s")
    time.sleep(WARMUP_S)


def measure(
    row: Row,
    servers: dict[str, Server],
    readers: dict[str, ReaderProc],
    publishers: list[subprocess.Popen[Any]],
    taps: list[RtmpTap],
    seconds: float,
    store: list[int],
    rss_every: float = 0.0,
) -> dict[str, Clock]:
    for r in readers.values():
        r.command("mark")
    pids = {k: s.pids() for k, s in servers.items()}
    pub_pids = [p.pid for p in publishers]
    cpu0 = {k: cpu_s(p) for k, p in pids.items()}
    sys0 = {k: sys_s(p) for k, p in pids.items()}
    pub0, busy0, t0 = cpu_s(pub_pids), machine_busy(), time.monotonic()
    store0 = cpu_s(store)
    row.load_avg = os.getloadavg()[0]
    log(f"N={row.n}: measuring {seconds:.0f} s")
    sleep_sampling_rss(servers, row, seconds, rss_every)
    cpu1 = {k: cpu_s(p) for k, p in pids.items()}
    sys1 = {k: sys_s(p) for k, p in pids.items()}
    pub1, busy1, span = cpu_s(pub_pids), machine_busy(), time.monotonic() - t0
    row.store_ms_per_stream_s = (cpu_s(store) - store0) / span / row.n * 1000
    dead = [p.args[-1] for p in publishers if p.poll() is not None]
    if dead:
        raise RuntimeError(f"publishers ended during the window: {dead[:3]}")
    row.machine_busy_pct = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * 100
    row.publisher_ms_per_stream_s = (pub1 - pub0) / span / len(publishers) * 1000
    for key, server in servers.items():
        side: Side = getattr(row, key)
        side.cpu_ms_per_stream_s = (cpu1[key] - cpu0[key]) / span / row.n * 1000
        side.sys_ms_per_stream_s = (sys1[key] - sys0[key]) / span / row.n * 1000
        side.rss_mb = rss_mb(server.pids())
        side.rss_mb_per_stream = (side.rss_mb - side.rss_idle_mb) / row.n
        delivered(side, readers[key].report(), span)
    playlists = {k: fetch_text(s, s.playlist.format(id="s0")) for k, s in servers.items()}
    recs = {k: media_records(getattr(row, k).latency) for k in servers}
    if not recs["ours"] or not recs["nginx"]:
        raise RuntimeError("the latency stream delivered nothing in the window")
    clocks = {"ours": clock_ours(recs["ours"], taps[0]), "nginx": clock_nginx(taps[1])}
    row.ours.latency = latency_ours(recs["ours"], clocks["ours"], playlists["ours"])
    row.nginx.latency = latency_nginx(recs["nginx"], clocks["nginx"], playlists["nginx"])
    return clocks


def sleep_sampling_rss(servers: dict[str, Server], row: Row, seconds: float, every: float) -> None:
    """Sleep through the window; with every > 0, log each server's RSS per stream every
    `every` seconds (memory over a long run: flat, or growing)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(every, left) if every > 0 else left)
        if every > 0:
            per = {
                k: (rss_mb(s.pids()) - getattr(row, k).rss_idle_mb) / row.n
                for k, s in servers.items()
            }
            log("RSS per stream: " + ", ".join(f"{k} {v:.2f} MB" for k, v in per.items()))


def sys_s(pids: list[int]) -> float:
    """stime alone of these processes: how much of their CPU the kernel spent for them."""
    ticks = 0
    for pid in pids:
        try:
            ticks += int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[12])
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def media_records(latency: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in latency.get("records", []) if r["media"] is not None]


def delivered(side: Side, report: dict[str, Any], span: float) -> None:
    """What the readers got: proof that HLS was produced for every stream."""
    rates = [c["media"] / span for c in report.values()]
    side.media_per_stream_s = [round(min(rates), 2), round(max(rates), 2)]
    side.mbit_per_stream = sum(c["bytes"] for c in report.values()) * 8 / span / len(report) / 1e6
    side.reader_errors = sum(c["errors"] for c in report.values())
    side.latency = {"records": report["s0"]["records"]}


def durability(server: Server) -> dict[str, float]:
    """What courtcast's recorder measured (recorder/uploads.py durable_ms), or {} if the
    code run (--courtcast) does not say."""
    health = json.loads(fetch_text(server, "/api/v1/health"))
    return dict(health.get("roles", {}).get("recorder", {}).get("durable_ms", {}))


def fetch_text(server: Server, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}", timeout=10) as r:
        return str(r.read().decode())


# -- latency --


def tag_value(text: str, tag: str, key: str | None = None) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(tag + ":"))
    value = line.split(":", 1)[1]
    if key is not None:
        value = next(kv.split("=")[1] for kv in value.split(",") if kv.startswith(key + "="))
    return float(value)


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "mean": statistics.fmean(values),
        "p50": values[len(values) // 2],
        "p95": values[min(len(values) - 1, int(len(values) * 0.95))],
        "max": values[-1],
        "count": len(values),
    }


Clock = Callable[[float], float]  # media time of a frame -> when it left the publisher


def clock_ours(recs: list[dict[str, Any]], tap: RtmpTap) -> Clock:
    """The output's timeline starts at a keyframe of the source (0 at the first GOP it got
    from the hub); the PDT of a part says which GOP that was."""
    assert tap.first_video is not None, "the latency publisher sent no video"
    t0 = tap.first_video[0]
    out0 = recs[0]["pdt"] - recs[0]["media"]
    offset = round((out0 - t0) / GOP_S) * GOP_S
    return lambda media: t0 + media + offset


def clock_nginx(tap: RtmpTap) -> Clock:
    """nginx-rtmp's PTS is the RTMP time plus a constant delay."""
    assert tap.first_video is not None, "the latency publisher sent no video"
    t0, d0 = tap.first_video
    return lambda media: t0 + media - NGINX_PTS_DELAY_S - d0 / 1000


def latency_ours(recs: list[dict[str, Any]], clock: Clock, playlist: str) -> dict[str, Any]:
    """Part arrival at the reader vs the moment its first frame left the publisher."""
    ages = [r["t"] - clock(r["media"]) for r in recs]
    hold = tag_value(playlist, "#EXT-X-SERVER-CONTROL", "PART-HOLD-BACK")
    return player_estimate(
        ages,
        [r["dur"] for r in recs],
        hold,
        {"ingest_to_pdt_s": summary([r["pdt"] - clock(r["media"]) for r in recs])},
    )


def latency_nginx(recs: list[dict[str, Any]], clock: Clock, playlist: str) -> dict[str, Any]:
    """Segment arrival at the reader (50 ms polls) vs its first frame leaving ffmpeg."""
    ages = [r["t"] - clock(r["media"]) for r in recs]
    hold = HLSJS_HOLD_SEGMENTS * tag_value(playlist, "#EXT-X-TARGETDURATION")
    return player_estimate(ages, [r["dur"] for r in recs], hold, {})


def player_estimate(
    ages: list[float], durations: list[float], hold: float, extra: dict[str, Any]
) -> dict[str, Any]:
    """edge: how long after its last frame left the publisher a part/segment was in the
    reader's hands. A player holding `hold` behind the newest media plays a frame
    hold + edge + (0..duration, where it joined the sawtooth) after it was sent."""
    edges = [a - d for a, d in zip(ages, durations)]
    dur = statistics.fmean(durations)
    edge = statistics.fmean(edges)
    return {
        "first_frame_age_s": summary(ages),
        "edge_s": summary(edges),
        "duration_s": dur,
        "hold_back_s": hold,
        "player_s": hold + edge + dur / 2,
        "player_range_s": [hold + edge, hold + edge + dur],
        **extra,
    }


# -- a real player --


def browser(
    servers: dict[str, Server],
    readers: dict[str, ReaderProc],
    clocks: dict[str, Clock],
    seconds: float,
) -> dict[str, Any]:
    """hls.js in Chromium on s0 of both servers: when did the frame on screen leave ffmpeg."""
    from bench.hls_browser import play

    log(f"playing s0 of both servers with hls.js in Chromium ({15 + seconds:.0f} s)")
    urls = {
        k: f"http://127.0.0.1:{s.http_port}{s.playlist.format(id='s0')}" for k, s in servers.items()
    }
    samples = play(urls, 15.0, int(seconds))
    media = {
        "ours": ours_media_by_uri(media_records(readers["ours"].report()["s0"])),
        "nginx": {r["uri"]: r["media"] for r in media_records(readers["nginx"].report()["s0"])},
    }
    return {
        player: {k: screen_latency(got[k], media[k], clocks[k]) for k in servers}
        for player, got in samples.items()
    }


def ours_media_by_uri(recs: list[dict[str, Any]]) -> dict[str, float]:
    out = {f"part-{r['msn']}.{r['idx']}.m4s": r["media"] for r in recs}
    out.update({f"seg-{r['msn']}.m4s": r["media"] for r in recs if r["idx"] == 0})
    return out


def screen_latency(
    samples: list[dict[str, Any]], media: dict[str, float], clock: Clock
) -> dict[str, Any]:
    found = [s for s in samples if s["uri"] in media and s["into"] is not None]
    if not found:
        return {"error": f"no sample maps to a known part/segment: {samples[-1:]}"}
    values = [s["now"] - (clock(media[s["uri"]]) + s["into"]) for s in found]
    return {
        "latency_s": summary(values),
        "samples": len(samples),
        "mapped": len(found),
        "hlsjs_latency_s": statistics.fmean(s["hls_latency"] or 0.0 for s in found),
        "hlsjs_target_s": found[-1]["target"],
        "frames_decoded": samples[-1]["frames"] - samples[0]["frames"],
        "stalls": samples[-1]["stalls"],
        "errors": samples[-1]["errors"],
        "series_s": [round(v, 2) for v in values],
        "buffer_ahead_s": statistics.fmean(s["buffer"] for s in found),
        "rates": sorted({s["rate"] for s in found}),
    }


# -- profile --


def profile(server: Server, seconds: float, out: Path) -> None:
    spy = Path(PY).parent / "py-spy"
    if not spy.exists():
        log("py-spy is not installed in the venv (pip install py-spy): no profile")
        return
    log(f"profiling courtcast (pid {server.proc.pid}) for {seconds:.0f} s with py-spy")
    subprocess.run(
        [
            str(spy),
            "record",
            "--pid",
            str(server.proc.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            *(os.environ.get("PYSPY_ARGS") or "--nonblocking").split(),
            "-o",
            str(out),
        ],
        check=True,
        timeout=seconds + 60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log(f"raw profile in {out}; summary: python bench/profile_summary.py {out}")


# -- report --


def print_tables(rows: list[Row]) -> None:
    print("\nCPU and memory (server process trees; ms CPU per stream-second)")
    print(
        f"{'mode':>5} {'N':>4} {'ours ms':>8} {'nginx ms':>9} {'ratio':>6} {'ours MB/str':>12} "
        f"{'nginx MB/str':>13} {'ours idle ms/s':>15} {'busy %':>7} {'pub ms':>7} "
        f"{'ours sys':>9} {'nginx sys':>10} {'load':>5} {'s3 ms':>6} {'rec MB ours/nginx':>18}"
    )
    for r in rows:
        mark = "*" if r.saturated else " "
        rec = "/".join(f"{r.recorded_mb.get(k, 0.0):.0f}" for k in ("ours", "nginx"))
        print(
            f"{r.mode:>5} {r.n:>3}{mark} {r.ours.cpu_ms_per_stream_s:>8.2f} "
            f"{r.nginx.cpu_ms_per_stream_s:>9.2f} {r.ratio:>6.2f} "
            f"{r.ours.rss_mb_per_stream:>12.2f} {r.nginx.rss_mb_per_stream:>13.2f} "
            f"{r.ours.idle_cpu_ms_per_s:>15.1f} {r.machine_busy_pct:>7.0f} "
            f"{r.publisher_ms_per_stream_s:>7.2f} {r.ours.sys_ms_per_stream_s:>9.2f} "
            f"{r.nginx.sys_ms_per_stream_s:>10.2f} {r.load_avg:>5.1f} "
            f"{r.store_ms_per_stream_s:>6.2f} {rec:>18}"
        )
    for r in rows:
        if r.saturated:
            print(
                f"  * {r.mode} N={r.n} saturated ({r.saturated}): courtcast did not keep up, "
                "so its CPU figure is what it got, not what it needed"
            )
    print("\nDelivery (readers): parts|segments per stream-second min-max, Mbit/s per stream")
    for r in rows:
        print(
            f"{r.n:>4} ours {r.ours.media_per_stream_s} {r.ours.mbit_per_stream:.2f} Mbit/s "
            f"errors {r.ours.reader_errors} | nginx {r.nginx.media_per_stream_s} "
            f"{r.nginx.mbit_per_stream:.2f} Mbit/s errors {r.nginx.reader_errors}"
        )
    print("\nDurability (courtcast: segment closed -> durable in the store, ms, whole run)")
    for r in rows:
        d = r.durable_ms
        if d.get("segments"):
            print(
                f"{r.mode:>5} {r.n:>4} p50 {d['p50']:.0f} p99 {d['p99']:.0f} max {d['max']:.0f} "
                f"({d['segments']:.0f} segments)"
            )
    print("\nLatency of s0 (seconds): edge p50/p95, at the player (estimate, range)")
    for r in rows:
        print(
            f"{r.n:>4} LL-HLS {fmt_latency(r.ours.latency)} | nginx HLS "
            f"{fmt_latency(r.nginx.latency)}"
        )
    for r in rows:
        for player, lat in r.browser.items():
            print(
                f"{r.n:>4} hls.js ({player}) in Chromium, publisher to screen: LL-HLS "
                f"{fmt_screen(lat['ours'])} | nginx HLS {fmt_screen(lat['nginx'])}"
            )


def fmt_latency(lat: dict[str, Any]) -> str:
    if "edge_s" not in lat:
        return lat.get("error", "?")
    e, lo, hi = lat["edge_s"], *lat["player_range_s"]
    return f"edge {e['p50']:.2f}/{e['p95']:.2f}, player ~{lat['player_s']:.2f} ({lo:.2f}-{hi:.2f})"


def fmt_screen(lat: dict[str, Any]) -> str:
    if "latency_s" not in lat:
        return lat.get("error", "?")
    v = lat["latency_s"]
    return (
        f"{v['mean']:.2f} (p50 {v['p50']:.2f}, max {v['max']:.2f}; "
        f"{lat['frames_decoded']} frames decoded, {lat['stalls']} stalls)"
    )


# -- main --


def main() -> None:
    global COURTCAST
    args = parse_args()
    COURTCAST = args.courtcast
    counts = [int(n) for n in args.n.split(",")]
    modes = args.record.split(",")
    budget = len(counts) * len(modes) * (90 + args.warmup_timeout + args.seconds) + 120
    if args.profile in counts:
        budget += args.seconds + 60
    if args.browser in counts:
        budget += args.seconds + 60
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(sig, _interrupt)
    signal.signal(signal.SIGALRM, _interrupt)
    signal.alarm(int(budget))
    log(
        f"{os.cpu_count()} CPUs; N in {counts}; {args.seconds:.0f} s windows; "
        f"at most {budget / 60:.0f} min"
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ingest-hls-") as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.clip_seconds)
        s3, s3_gen = start_s3(Path(tmp)) if "s3" in modes else (None, None)
        try:
            run_all(counts, modes, args, clip, Path(tmp), s3, rows)
        finally:
            if s3_gen is not None:
                s3_gen.close()  # the fixture's own teardown: stops weed
    print_tables(rows)
    print_ratios(rows)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "ratio": r.ratio} for r in rows], indent=1))


def run_all(
    counts: list[int],
    modes: list[str],
    args: argparse.Namespace,
    clip: Path,
    tmp: Path,
    s3: Any,
    rows: list[Row],
) -> None:
    """Modes alternate inside each N, so that they share the machine's load of the moment."""
    for n in counts:
        for mode in modes:
            work = tmp / f"n{n}-{mode}"
            work.mkdir()
            rows.append(run_n(n, mode, args, clip, work, s3))
            print_tables(rows[-1:])
            rows[-1].saturated = saturated(rows[-1]) or ""
            if rows[-1].saturated:
                log(f"N={n} {mode}: {rows[-1].saturated}: the machine is saturated")


def start_s3(root: Path) -> tuple[Any, Any]:
    """A SeaweedFS like the tests' (their fixture's generator, driven by hand)."""
    from bench.recorder import start_s3 as start

    return start(root)


def print_ratios(rows: list[Row]) -> None:
    """The comparisons: courtcast against nginx-rtmp doing the same work, and what
    recording costs each side over its own HLS-only run at the same N."""
    print("\nRatios (courtcast / nginx-rtmp, CPU per stream-second, same work)")
    hls = {r.n: r for r in rows if r.mode == "hls"}
    for r in rows:
        label = {"hls": "HLS only", "disk": "HLS + recording (disk)", "s3": "HLS + recording (S3)"}
        extra = ""
        if r.mode != "hls" and r.n in hls:
            ours = r.ours.cpu_ms_per_stream_s - hls[r.n].ours.cpu_ms_per_stream_s
            theirs = r.nginx.cpu_ms_per_stream_s - hls[r.n].nginx.cpu_ms_per_stream_s
            extra = f"; recording adds {ours:+.2f} ms (ours) and {theirs:+.2f} ms (nginx)"
        print(f"  N={r.n:<3} {label[r.mode]:<24} {r.ratio:.2f}x{extra}")


def saturated(row: Row) -> str | None:
    """A sign that the machine no longer keeps up: a stream short of media, late media."""
    for name, side, expected in (("courtcast", row.ours, 2.0), ("nginx", row.nginx, 0.5)):
        if not side.media_per_stream_s or side.media_per_stream_s[0] < 0.85 * expected:
            return f"{name} readers got {side.media_per_stream_s} per stream-second"
    edge = row.ours.latency.get("edge_s", {}).get("p95", 0.0)
    return f"LL-HLS edge p95 {edge:.2f} s" if edge > 1.0 else None


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", default="1,10,25", help="publishers per server, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    p.add_argument(
        "--rss-every", type=float, default=0.0, help="log RSS per stream every S s of the window"
    )
    p.add_argument("--clip-seconds", type=int, default=30)
    p.add_argument("--warmup-timeout", type=float, default=40.0)
    p.add_argument(
        "--browser",
        type=int,
        default=0,
        help="at this N, also play s0 with hls.js in headless Chromium",
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        help="py-spy courtcast at this N (env PYSPY_ARGS replaces --nonblocking, "
        "e.g. PYSPY_ARGS=--native)",
    )
    p.add_argument("--profile-out", type=Path, default=Path("/tmp/ingest_hls_profile.txt"))
    p.add_argument(
        "--profile-modes",
        default="disk",
        help="profile in these modes (the file name gets -MODE before its suffix)",
    )
    p.add_argument(
        "--record",
        default="hls",
        help="modes, comma-separated: hls (HLS only), disk, s3 (HLS + recording; module doc)",
    )
    p.add_argument(
        "--courtcast",
        type=Path,
        default=COURTCAST,
        help="the courtcast command to run (e.g. from another venv)",
    )
    p.add_argument(
        "--heap-diff",
        action="store_true",
        help="trace courtcast's allocations (PYTHONTRACEMALLOC=1, slower) and print what "
        "grew on its heap over the window",
    )
    p.add_argument("--json", type=Path, help="write the rows (and latency records) here")
    return p.parse_args()


if __name__ == "__main__":
    main()
