"""A 16-tile wall across a thin WAN link (issue 18): node A, the origin, sits in a network
namespace of its own behind a veth pair shaped with tc to 10 Mbit/s, with 16 rooms
published to it, each a main stream (640x360, ~1.5 Mbit/s) and a sub stream (`<id>-sub`,
320x180, ~0.2 Mbit/s). Node B, on this side of the link, serves the wall `/wall/big` whose
16 tiles name the rooms (main ids, as a console dispatches them). In Chromium every tile is
live with decoded frames at the sub stream's size, B relays exactly the 16 sub streams from
A and nothing else, and what crosses the link is the sub streams' rate, far under 10 Mbit/s
(the 16 main streams alone would need ~24 Mbit/s).

Both nodes are configured as a deployment is: configs/cluster.yaml and the §9 environment
(tests/fixtures/cluster.py). A is a `courtcast media-server` process run by
`ip netns exec`; it reaches this side's password Redis and SeaweedFS over the link, through
TCP proxies listening on the veth address. B runs in this process (all roles, as
`courtcast up` would) on a thread of its own. Needs CAP_NET_ADMIN (root, as CI runs):
skipped with the reason otherwise.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import load_config
from courtcast.platform import Platform
from media_server.cluster.origins import SCOPE
from media_server.streams import StreamClass
from tests.control_room.conftest import PASSWORD, control
from tests.control_room.test_devices_page import Background, background  # noqa: F401
from tests.courtcast.test_platform import define, media_role
from tests.fixtures.cluster import CONFIG, REPO, ProcessCluster, _die_with_parent
from tests.fixtures.tcp_proxy import ProxyFactory
from tests.netutil import free_port, wait_http

pytestmark = pytest.mark.timeout(180)

ROOMS = [f"room{i:02d}" for i in range(1, 17)]
SUBS = [f"{room}-sub" for room in ROOMS]
LINK = "10mbit"
LINK_BIT_S = 10_000_000
MAIN = ((640, 360), 25, 1500)  # size, fps, kbit/s: a camera's main stream, scaled down
SUB = ((320, 180), 15, 200)  # and its sub stream
LIVE_TILES = """() => [...document.querySelectorAll('#wall [data-tile]')]
  .filter((el) => el.dataset.state === 'live').length"""
TILES = """() => [...document.querySelectorAll('#wall [data-tile]')]
  .map((el) => `${el.dataset.stream}:${el.dataset.state}`).join(' ')"""
TILE = "#wall [data-tile]"
STATS = "async () => Promise.all(window.wall.tiles.map((t) => t.stats()))"


@dataclass
class ThinLink:
    """A namespace joined to this one by a veth pair shaped to LINK in both directions."""

    ns: str
    here_dev: str
    here_ip: str
    there_ip: str

    def received(self) -> int:
        """Bytes this side received over the link (from the namespace)."""
        return int(Path(f"/sys/class/net/{self.here_dev}/statistics/rx_bytes").read_text())

    def run(self, *cmd: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """A command in the namespace (`ip netns exec` execs it: the pid is its own)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *cmd], preexec_fn=_die_with_parent, **kwargs
        )


def sh(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"{' '.join(cmd)}: {done.stderr.strip()}")


@pytest.fixture
def thin_link() -> Iterator[ThinLink]:
    tag = secrets.token_hex(3)
    net = f"10.{secrets.randbelow(150) + 100}.{secrets.randbelow(250)}"
    link = ThinLink(f"cc-thin-{tag}", f"cth{tag}", f"{net}.1", f"{net}.2")
    there_dev = f"ctn{tag}"
    try:
        sh("ip", "netns", "add", link.ns)
    except OSError as exc:  # no CAP_NET_ADMIN (not root, or a container without it)
        pytest.skip(f"a network namespace needs CAP_NET_ADMIN: {exc}")
    shaped = ("root", "tbf", "rate", LINK, "burst", "32kbit", "latency", "200ms")
    try:
        sh("ip", "link", "add", link.here_dev, "type", "veth", "peer", "name", there_dev)
        sh("ip", "link", "set", there_dev, "netns", link.ns)
        sh("ip", "addr", "add", f"{link.here_ip}/30", "dev", link.here_dev)
        sh("ip", "link", "set", link.here_dev, "up")
        sh("tc", "qdisc", "add", "dev", link.here_dev, *shaped)
        inside = ("ip", "netns", "exec", link.ns)
        sh(*inside, "ip", "addr", "add", f"{link.there_ip}/30", "dev", there_dev)
        sh(*inside, "ip", "link", "set", there_dev, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "tc", "qdisc", "add", "dev", there_dev, *shaped)
        yield link
    finally:
        subprocess.run(["ip", "link", "del", link.here_dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", link.ns], capture_output=True)


def encode(directory: Path, size: tuple[int, int], fps: int, kbit_s: int) -> Path:
    """A 10 s H.264 test pattern at about kbit_s (video only: a wall plays no sound)."""
    out = directory / f"pattern-{size[0]}x{size[1]}-{fps}-{kbit_s}k.mp4"
    rate = f"{kbit_s}k"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}", "-t", "10",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-g", str(fps), "-keyint_min", str(fps), "-sc_threshold", "0", "-bf", "0",
         "-b:v", rate, "-maxrate", rate, "-bufsize", rate, str(out)],
        check=True,
    )  # fmt: skip
    return out


def publish_all(
    link: ThinLink, rtmp_port: int, keys: dict[str, str], tmp: Path
) -> subprocess.Popen[bytes]:
    """One ffmpeg in the namespace pushes every main and sub stream to node A (-c copy)."""
    main, sub = encode(tmp, *MAIN), encode(tmp, *SUB)
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    for clip in (main, sub):
        cmd += ["-re", "-stream_loop", "-1", "-i", str(clip)]
    for stream_id, key in keys.items():
        source = "1:v" if stream_id.endswith("-sub") else "0:v"
        url = f"rtmp://127.0.0.1:{rtmp_port}/live/{stream_id}?key={key}"
        cmd += ["-map", source, "-c", "copy", "-f", "flv", url]
    with open(tmp / "publishers.log", "wb") as log:  # the child keeps its own copy
        return link.run(*cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def start_origin(
    cluster: ProcessCluster, link: ThinLink, tcp_proxy: ProxyFactory
) -> tuple[subprocess.Popen[bytes], int]:
    """Node A in the namespace: Redis and S3 are reached over the link (proxies on its far
    end), it listens on its veth address and advertises that to B."""
    redis = tcp_proxy(cluster.redis.port, host=link.here_ip)
    s3 = tcp_proxy(int(cluster.s3.endpoint.split(":")[1]), host=link.here_ip)
    http_port, rtmp_port = free_port(), free_port()
    env = cluster.node_env("node-a", http_port, rtmp_port)
    env |= {
        "COURTCAST_HTTP__HOST": link.there_ip,
        "COURTCAST_HTTP__PUBLIC_URL": f"http://{link.there_ip}:{http_port}",
        "COURTCAST_STATE__REDIS_URL": cluster.redis.url.replace(
            f"127.0.0.1:{cluster.redis.port}", f"{link.here_ip}:{redis.port}"
        ),
        "COURTCAST_OBJECTS__S3__ENDPOINT": f"{link.here_ip}:{s3.port}",
    }
    log_path = cluster.root / "node-a.log"
    with open(log_path, "wb") as log:
        process = link.run(
            sys.executable, "-m", "courtcast.cli", "media-server", "--config", str(CONFIG),
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_http(f"http://{link.there_ip}:{http_port}/api/v1/health", 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nnode-a log:\n{log_path.read_text()[-3000:]}") from None
    return process, rtmp_port


async def start_edge(cluster: ProcessCluster) -> Platform:
    """Node B here, every role in one process, configured as a deployment is."""
    env = cluster.node_env("node-b", free_port(), free_port())
    node = Platform(load_config(CONFIG, environ=env))
    await node.start()
    await control(node).users.add("ada", "admin", PASSWORD)
    return node


async def define_rooms(node: Platform) -> dict[str, str]:
    keys = {}
    for room in ROOMS:
        for stream_id in (room, f"{room}-sub"):
            keys[stream_id] = await define(
                node, stream_id, stream_class=StreamClass.conference, court="c1", room=room
            )
    return keys


async def origins(node: Platform) -> dict[str, str | None]:
    state = media_role(node).storage.state
    return {sid: await state.lease_holder(SCOPE, sid) for sid in [*ROOMS, *SUBS]}


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_16_tile_wall_across_a_10_mbit_link_plays_every_tile_from_its_sub_stream(
    thin_link: ThinLink,
    process_cluster: ProcessCluster,
    tcp_proxy: ProxyFactory,
    background: Background,  # noqa: F811
    chromium_browser: Any,
    screenshot: Any,
    tmp_path: Path,
) -> None:
    origin, rtmp_port = start_origin(process_cluster, thin_link, tcp_proxy)
    node_b: Platform | None = None
    publishers: subprocess.Popen[bytes] | None = None
    try:
        node_b = background.run(start_edge(process_cluster), timeout=60)
        keys = background.run(define_rooms(node_b))
        publishers = publish_all(thin_link, rtmp_port, keys, tmp_path)
        deadline = time.monotonic() + 30
        while set((held := background.run(origins(node_b))).values()) != {"node-a"}:
            assert publishers.poll() is None, (tmp_path / "publishers.log").read_text()
            assert time.monotonic() < deadline, f"not all live on node A: {held}"
            time.sleep(0.5)
        base = f"http://127.0.0.1:{node_b.http_port}"
        login = {"name": "ada", "password": PASSWORD}
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.post("/api/v1/login", json=login).status_code == 200
            wall = http.put("/api/v1/walls/big", json={"layout": "4x4", "tiles": ROOMS})
            assert wall.status_code == 200, wall.text

        context = chromium_browser.new_context()
        assert context.request.post(f"{base}/api/v1/login", data=login).ok
        page = context.new_page()
        assert page.goto(f"{base}/wall/big").status == 200
        try:
            page.wait_for_function(f"() => ({LIVE_TILES})() === 16", timeout=60_000)
        except Exception:
            relays = media_role(node_b).cluster.stats()["relays"]
            raise AssertionError(
                f"not every tile live: {page.evaluate(TILES)}\nB relays: {sorted(relays)}"
            ) from None

        before = page.evaluate(STATS)
        received, started = thin_link.received(), time.monotonic()
        page.wait_for_timeout(4000)
        after = page.evaluate(STATS)
        rate_bit_s = (thin_link.received() - received) * 8 / (time.monotonic() - started)
        print(f"link A -> B: {rate_bit_s / 1e6:.2f} Mbit/s while 16 tiles played")

        # every tile plays its room's sub stream, decoding, at the sub stream's size
        shown = [el.get_attribute("data-stream") for el in page.query_selector_all(TILE)]
        assert shown == SUBS, f"{shown}; {rate_bit_s / 1e6:.2f} Mbit/s crossed the link"
        for i, (old, new) in enumerate(zip(before, after, strict=True)):
            assert new["framesDecoded"] > old["framesDecoded"] > 0, (i, new)
            assert (new["width"], new["height"]) == SUB[0], (i, new)
        assert page.evaluate(TILES).count(":live") == 16, page.evaluate(TILES)
        screenshot(page, "16-tiles")

        # B pulls the 16 sub streams from A, once each, and no main stream
        relays = media_role(node_b).cluster.stats()["relays"]
        assert relays == dict.fromkeys(SUBS, "node-a"), relays
        # what crossed the link: the sub streams (16 x ~0.2 Mbit/s) and the cluster's chatter,
        # not the main streams (16 x ~1.5 Mbit/s would fill the 10 Mbit/s)
        assert rate_bit_s < 0.6 * LINK_BIT_S, f"{rate_bit_s / 1e6:.2f} Mbit/s crossed the link"
        assert rate_bit_s > 16 * SUB[2] * 1000 * 0.5, "the sub streams did not cross the link"
        context.close()
    finally:
        if publishers is not None:
            stop(publishers)
        if node_b is not None:
            background.run(node_b.stop(), timeout=30)
        stop(origin)
