"""How many WHEP viewers one core serves, H.264 passed through (never re-encoded).

One process serves a 720p30 H.264 + AAC test clip over WHEP (uvicorn on 127.0.0.1);
another runs N aiortc viewers on loopback that receive and decrypt every RTP packet but
do not decode (their receivers count packets instead). Server CPU (user + system, all
threads, from /proc) is measured over a window at each N, for both modes:

- shared: each frame's RTP payloads are computed once per stream, viewers add headers/SRTP
- shared-python: the same, with the compiled send path (frame_send_c) off: its Python twin
- per-viewer: aiortc's own H.264 packetizer runs for every viewer (av.Packet pass-through)

The cost per viewer is the slope between the smallest and the largest N (the AAC->Opus
transcoder and the publisher are fixed costs, counted at N=1).

    .venv/bin/python bench/webrtc_viewers.py [--viewers 1,10,20] [--seconds 8]
                                             [--modes shared,shared-no-gso,shared-python,per-viewer]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICKS = os.sysconf("SC_CLK_TCK")


# -- the server process --


def serve(
    port: int, clip: Path, shared: bool, gso: bool, host: str = "127.0.0.1", compiled: bool = True
) -> None:
    import uvicorn
    from fastapi import FastAPI

    from media_server.webrtc import udp_path

    udp_path.USE_GSO = gso
    udp_path.USE_COMPILED = compiled

    from media_server.hub import Hub
    from media_server.webrtc import IceConfig, WebRTCOptions, make_webrtc_router
    from tests.fixtures.clip import ClipPublisher, load_clip

    async def allow(*_: Any) -> None:
        return None

    async def main() -> None:
        hub = Hub()
        app = FastAPI()
        app.include_router(
            make_webrtc_router(
                hub,
                allow,
                allow,
                IceConfig(host_addresses=[host], connect_timeout_s=60),
                # every viewer here is anonymous and on one address: no per-address share
                WebRTCOptions(
                    shared_packetization=shared, staff_reserve=0, max_public_per_address=1000
                ),
            )
        )
        publisher = asyncio.create_task(ClipPublisher(hub, "bench", load_clip(clip)).run())
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()
        publisher.cancel()

    asyncio.run(main())


# -- the viewers process --


def viewers(
    port: int, count: int, seconds: float, host: str = "127.0.0.1", server: str = "127.0.0.1"
) -> None:
    asyncio.run(_viewers(port, count, seconds, host, server))


async def _viewers(port: int, count: int, seconds: float, host: str, server: str) -> None:
    from aiortc import RTCSessionDescription

    from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
    from media_server.webrtc.ice import IceConfig, new_peer_connection

    counters = [{"packets": 0, "bytes": 0} for _ in range(count)]
    pcs = []
    async with httpx.AsyncClient(base_url=f"http://{server}:{port}", timeout=30) as client:
        for counter in counters:
            pc = new_peer_connection(IceConfig())
            for kind in ("video", "audio"):
                receiver = pc.addTransceiver(kind, direction="recvonly").receiver
                receiver._handle_rtp_packet = counting(counter)  # type: ignore[method-assign]
            bind_candidate_addresses(pc, [host])
            await pc.setLocalDescription(await pc.createOffer())
            answer = await client.post(
                "/whep/bench",
                content=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            )
            answer.raise_for_status()
            await pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
            pcs.append(pc)
    await report_received(pcs, counters, seconds)


async def report_received(pcs: list[Any], counters: list[dict[str, int]], seconds: float) -> None:
    """Once all are connected: say ready, count a window, print it, wait for the go."""
    while any(pc.connectionState != "connected" for pc in pcs):
        await asyncio.sleep(0.1)
    print("ready", flush=True)
    await asyncio.sleep(2.0)  # warm up: GOP bursts over
    before = [dict(c) for c in counters]
    await asyncio.sleep(seconds)
    got = [{k: c[k] - b[k] for k in c} for c, b in zip(counters, before)]
    print(json.dumps({"received": got, "seconds": seconds}), flush=True)
    sys.stdin.readline()  # stay connected until the orchestrator has read the server CPU
    for pc in pcs:
        await pc.close()


def counting(counter: dict[str, int]) -> Any:
    async def handle(packet: Any, arrival_time_ms: int) -> None:
        counter["packets"] += 1
        counter["bytes"] += len(packet.payload)

    return handle


# -- the orchestrator --


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(port: int, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.options(f"http://{host}:{port}/whep/bench").status_code == 204:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def measure(
    port: int, server_pid: int, count: int, seconds: float, cmd: list[str] | None = None
) -> dict[str, Any]:
    """Server CPU while `count` viewers (this script's, or cmd + --count/--seconds) play."""
    cmd = (cmd or [sys.executable, __file__, "--role", "viewers", "--port", str(port)]) + [
        "--count",
        str(count),
        "--seconds",
        str(seconds),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready", "viewers did not connect"
        time.sleep(2.0)
        cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
        report = json.loads(proc.stdout.readline())
        cpu1, t1 = cpu_seconds(server_pid), time.monotonic()
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rates = [r["bytes"] * 8 / report["seconds"] / 1e6 for r in report["received"]]
    return {
        "n": count,
        "cpu": (cpu1 - cpu0) / (t1 - t0),
        "mbps_min": min(rates),
        "mbps_avg": sum(rates) / len(rates),
    }


def run_mode(
    clip: Path,
    shared: bool,
    counts: list[int],
    seconds: float,
    gso: bool = True,
    compiled: bool = True,
) -> list[dict[str, Any]]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "server",
            "--port",
            str(port),
            "--clip",
            str(clip),
            "--shared",
            "1" if shared else "0",
            "--gso",
            "1" if gso else "0",
            "--compiled",
            "1" if compiled else "0",
        ]
    )
    try:
        wait_up(port)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(3.0)
        idle = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
        rows = [{"n": 0, "cpu": idle, "mbps_min": 0.0, "mbps_avg": 0.0}]
        for count in counts:
            rows.append(measure(port, server.pid, count, seconds))
            time.sleep(1.0)
        return rows
    finally:
        server.terminate()
        server.wait(15)


def report(mode: str, rows: list[dict[str, Any]]) -> float | None:
    """Print the rows; the CPU seconds per viewer-second, if two rows kept up."""
    print(f"\n{mode}")
    print(f"{'viewers':>8} {'server CPU':>11} {'Mbit/s per viewer (min/avg)':>28}")
    for r in rows:
        print(f"{r['n']:>8} {r['cpu'] * 100:>10.1f}% {r['mbps_min']:>13.2f} / {r['mbps_avg']:.2f}")
    # a row whose viewers fell behind (CPU starved: the viewers' process, or other load on
    # a shared machine) sent less than the stream: its CPU says nothing about the cost
    full = [r for r in rows[1:] if r["mbps_min"] >= 0.9 * rows[1]["mbps_avg"]]
    for r in rows[1:]:
        if r not in full:
            print(f"  ({r['n']} viewers fell behind: left out of the per-viewer cost)")
    if not full or full[-1]["n"] <= full[0]["n"]:
        return None
    lo, hi = full[0], full[-1]
    per_viewer: float = (hi["cpu"] - lo["cpu"]) / (hi["n"] - lo["n"])
    print(
        f"  per viewer: {per_viewer * 1000:.1f} ms CPU per second -> "
        f"~{1 / per_viewer:.0f} viewers per core (fixed costs: {lo['cpu'] * 100:.1f}% "
        f"at {lo['n']} viewer)"
    )
    return per_viewer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="bench", choices=["bench", "server", "viewers"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--clip", type=Path)
    parser.add_argument("--shared", default="1")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--viewers", default="1,10,20")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--modes",
        default="shared,per-viewer",
        help="which of shared, per-viewer, shared-no-gso, shared-python to measure",
    )
    parser.add_argument("--gso", default="1", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", default="1", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--server", default="127.0.0.1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        serve(
            args.port,
            args.clip,
            args.shared == "1",
            args.gso == "1",
            args.host,
            args.compiled == "1",
        )
    elif args.role == "viewers":
        viewers(args.port, args.count, args.seconds, args.host, args.server)
    else:
        bench(args)


def bench(args: argparse.Namespace) -> None:
    from tests.fixtures.clip import make_test_clip

    counts = [int(n) for n in args.viewers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(
            Path(tmp) / "bench.mp4", seconds=6, width=1280, height=720, gop=60, bitrate="2000k"
        )
        print(
            f"clip: 1280x720 30 fps H.264 2 Mbit/s + AAC; {os.cpu_count()} cores; "
            f"{args.seconds:.0f} s per measurement"
        )
        modes = args.modes.split(",")
        for key, title, shared, gso, compiled in (
            ("shared", "shared packetization (default)", True, True, True),
            ("shared-no-gso", "shared packetization, UDP GSO off", True, False, True),
            ("shared-python", "shared packetization, frame_send_c off", True, True, False),
            ("per-viewer", "per-viewer packetization (aiortc pack)", False, True, True),
        ):
            if key in modes:
                report(title, run_mode(clip, shared, counts, args.seconds, gso, compiled))


if __name__ == "__main__":
    main()
