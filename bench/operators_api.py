"""API latency with N signed-in operators at once (issue 15): each holds the staff websocket
(/api/v1/events, subscribed to its own console wall @NAME) and polls nothing; each "clicks"
at random moments (every 0.5-3 s) as the console does: a PUT of its console wall (a tile
changed), and now and then a GET of the stream list. Measured per request kind: p50, p95,
p99 and max; and the click → the wall's news on the clicker's own websocket.

The platform is `courtcast up` as a separate process, so the clients' Python does not share
the server's event loop; the tiles name streams defined with `courtcast streams add` (no
publisher: the demo's encoders would share the server's GIL and CPU, which is not what a
control room does). The server's and the clients' CPU (/proc) over the window are printed.

    .venv/bin/python bench/operators_api.py [--operators 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Procs, cpu_s, free_port, tree

COURTCAST = [str(ROOT / ".venv/bin/courtcast")]
PASSWORD = "bench-operator-password"
STREAMS = [f"room{n}-cam" for n in range(1, 9)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def add_users_and_streams(data: Path, count: int) -> None:
    for stream in STREAMS:
        subprocess.run(
            [*COURTCAST, "streams", "add", stream, "--court", "bench-court"]
            + ["--room", stream.removesuffix("-cam"), "--data-dir", str(data)],
            check=True,
            capture_output=True,
        )
    for n in range(count):
        subprocess.run(
            [*COURTCAST, "users", "add", f"op{n:02d}", "--role", "operator"]
            + ["--data-dir", str(data)],
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )


def start_node(procs: Procs, data: Path, port: int) -> subprocess.Popen[Any]:
    args = ["up", "--data-dir", str(data), "--http-port", str(port)]
    return procs.start(  # asked to stop as Ctrl-C does: it stops its embedded Redis too
        [*COURTCAST, *args, "--rtmp-port", str(free_port())],
        stop_signal=signal.SIGINT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(600):
            try:
                if (await http.get("/api/v1/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("courtcast up did not answer in 60 s")


class Operator:
    """One signed-in operator: a websocket and clicks; its timings in `times`."""

    def __init__(self, base: str, name: str, times: dict[str, list[float]]) -> None:
        self.base, self.name, self.times = base, name, times
        self.http = httpx.AsyncClient(base_url=base, timeout=30)
        self.sent: dict[int, float] = {}  # wall version -> when the click's PUT was sent
        self.arrived: dict[int, float] = {}  # news of a version that came before its answer

    async def sign_in(self) -> None:
        login = await self.http.post(
            "/api/v1/login", json={"name": self.name, "password": PASSWORD}
        )
        login.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {login.json()['token']}"

    async def run(self, until: float) -> None:
        url = self.base.replace("http", "ws", 1) + "/api/v1/events"
        headers = {"Authorization": self.http.headers["Authorization"]}
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "subscribe", "walls": [f"@{self.name}"]}))
            listener = asyncio.create_task(self._listen(ws))
            try:
                await self._click_until(until)
            finally:
                listener.cancel()
        await self.http.aclose()

    async def _click_until(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(random.uniform(0.5, 3.0))
            tiles: list[str | None] = [random.choice(STREAMS) for _ in range(4)]
            started = time.monotonic()
            answer = await self.http.put(
                f"/api/v1/walls/@{self.name}", json={"layout": "2x2", "tiles": tiles}
            )
            self.times["PUT wall (click)"].append(time.monotonic() - started)
            if answer.status_code == 200:
                version = int(answer.json()["version"])
                if version in self.arrived:  # the news was quicker than the answer
                    news = self.arrived.pop(version) - started
                    self.times["click -> wall news"].append(news)
                else:
                    self.sent[version] = started
            if random.random() < 0.3:
                started = time.monotonic()
                await self.http.get("/api/v1/streams")
                self.times["GET streams"].append(time.monotonic() - started)

    async def _listen(self, ws: Any) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") != "wall":
                continue
            version = int(message.get("version") or 0)
            if version in self.sent:
                self.times["click -> wall news"].append(time.monotonic() - self.sent.pop(version))
            else:
                self.arrived[version] = time.monotonic()


async def sign_in_all(base: str, operators: int) -> list[Operator]:
    """Everyone signs in first, a few at a time (argon2 is meant to be slow), outside the
    measured window: the window is operators at work, not a morning's sign-in rush."""
    times: dict[str, list[float]] = {k: [] for k in ("PUT wall (click)", "GET streams")}
    times["click -> wall news"] = []
    crowd = [Operator(base, f"op{n:02d}", times) for n in range(operators)]
    gate = asyncio.Semaphore(4)

    async def one(op: Operator) -> None:
        async with gate:
            await op.sign_in()

    await asyncio.gather(*(one(op) for op in crowd))
    return crowd


async def measure(crowd: list[Operator], seconds: float) -> dict[str, list[float]]:
    until = time.monotonic() + seconds
    await asyncio.gather(*(op.run(until) for op in crowd))
    return crowd[0].times


async def session(
    base: str, node_pid: int, operators: int, seconds: float
) -> tuple[dict[str, list[float]], float, float]:
    """The timings, and the server's and the clients' CPU (share of a core) while clicking."""
    crowd = await sign_in_all(base, operators)
    cpu0, own0, wall0 = cpu_s(tree(node_pid)), cpu_s([os.getpid()]), time.monotonic()
    times = await measure(crowd, seconds)
    took = time.monotonic() - wall0
    return times, (cpu_s(tree(node_pid)) - cpu0) / took, (cpu_s([os.getpid()]) - own0) / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="operators-") as tmp:
        data = Path(tmp) / "data"
        add_users_and_streams(data, args.operators)
        port = free_port()
        node = start_node(procs, data, port)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_up(base))
            times, cpu, own = asyncio.run(session(base, node.pid, args.operators, args.seconds))
        finally:
            procs.stop_all()
    print(
        f"{args.operators} operators, {args.seconds:.0f} s: server CPU {cpu:.0%} of a core, "
        f"the clients' {own:.0%}, load average {os.getloadavg()[0]:.1f}"
    )
    print("| request | n | p50 ms | p95 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, values in times.items():
        row = [pct(values, q) * 1000 for q in (0.5, 0.95, 0.99)] + [max(values) * 1000]
        print(f"| {kind} | {len(values)} | " + " | ".join(f"{v:.0f}" for v in row) + " |")


if __name__ == "__main__":
    main()
