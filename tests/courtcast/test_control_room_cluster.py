"""Two control-room processes behind one (imagined) load balancer (issue 18, item 4): a
session made on one is good on the other, an operator's websocket on one hears a wall
changed, a wall acknowledged and a stream gone live through the others, a sign-in hold
started on one holds on the other, and an alert rule's hold ends though the control room
that pushed it died. Processes as a deployment runs them
(tests/fixtures/cluster.py)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from tests.fixtures.cluster import ClusterProcess, ProcessCluster
from tests.fixtures.rtmp import FFMPEG

pytestmark = pytest.mark.timeout(120)

PASSWORD = "a-long-operator-password"


def events(node: ClusterProcess, cookie: str) -> ClientConnection:
    url = node.url.replace("http://", "ws://") + "/api/v1/events"
    return connect(url, additional_headers={"Cookie": f"cc_session={cookie}"})


def next_message(
    ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
) -> dict[str, Any]:
    """The first message `wanted` accepts (others skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if wanted(message):
            return message  # type: ignore[no-any-return]


def sign_in(node: ClusterProcess, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{node.url}/api/v1/login", json={"name": "op", "password": password}, timeout=30
    )


def test_sessions_walls_stream_news_and_sign_in_holds_cross_control_rooms(
    process_cluster: ProcessCluster,
) -> None:
    media = process_cluster.start("media-server", "node-a")
    one = process_cluster.start("control-room", "control-1")
    two = process_cluster.start("control-room", "control-2")
    process_cluster.cli("users", "add", "op", "--role", "operator", stdin=PASSWORD + "\n")
    key = process_cluster.cli("streams", "add", "room1", "--court", "zz").split()[-1]

    login = sign_in(one)
    assert login.status_code == 200, login.text
    cookie = login.cookies["cc_session"]
    me = httpx.get(f"{two.url}/api/v1/me", cookies={"cc_session": cookie})
    assert me.status_code == 200 and me.json()["name"] == "op"

    with events(two, cookie) as on_two, events(one, cookie) as on_one:
        hello = next_message(on_two, lambda m: m["type"] == "hello")
        assert [s["state"] for s in hello["streams"] if s["id"] == "room1"] == ["offline"]
        for ws in (on_two, on_one):
            ws.send(json.dumps({"type": "subscribe", "walls": ["big"]}))
            next_message(ws, lambda m: m["type"] == "wall" and m["version"] == 0)

        put = httpx.put(
            f"{one.url}/api/v1/walls/big",
            json={"layout": "2x2", "tiles": ["room1", None, None, None]},
            cookies={"cc_session": cookie},
        )
        assert put.status_code == 200, put.text
        wall = next_message(on_two, lambda m: m["type"] == "wall" and m["version"] == 1)
        assert wall["tiles"] == ["room1", None, None, None] and wall["updated_by"] == "op"

        # the wall's page acknowledges on process 1; a console on process 2 sees it
        on_one.send(json.dumps({"type": "ack", "wall": "big", "version": 1}))
        next_message(on_two, lambda m: m["type"] == "wall" and m["acked_version"] == 1)

        # a publisher on the media node: news reaches the websocket on process 2
        publisher = subprocess.Popen(
            [
                FFMPEG,
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-c:v",
                "libx264",
                "-g",
                "25",
                "-f",
                "flv",
                f"{media.rtmp_url}/live/room1?key={key}",
            ],
            stdin=subprocess.DEVNULL,
        )
        try:
            news = next_message(on_two, lambda m: m["type"] == "stream" and m["id"] == "room1")
            assert news["state"] == "live"
        finally:
            publisher.kill()
            publisher.wait()
    hold_on_one_holds_on_the_other(one, two)


def hold_on_one_holds_on_the_other(one: ClusterProcess, two: ClusterProcess) -> None:
    """Wrong passwords for `op` on process 1: five free failures, then holds of 1 s, 2 s,
    4 s (each waited out); the right password on process 2 is refused while held."""
    hold_s = 0
    for _ in range(12):
        answer = sign_in(one, "wrong-password")
        if answer.status_code == 429:
            hold_s = int(answer.headers["Retry-After"])
            if hold_s >= 4:
                break
            time.sleep(hold_s)
        else:
            assert answer.status_code == 401, answer.text
    assert hold_s >= 4, "process 1 never held the name"
    held = sign_in(two)
    assert held.status_code == 429, held.text
    assert 1 <= int(held.headers["Retry-After"]) <= hold_s


def wall_tiles(node: ClusterProcess, cookie: str) -> list[str | None]:
    wall = httpx.get(f"{node.url}/api/v1/walls/big", cookies={"cc_session": cookie})
    return wall.json()["tiles"]  # type: ignore[no-any-return]


def wait_tiles(
    node: ClusterProcess, cookie: str, tiles: list[str | None], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while (now := wall_tiles(node, cookie)) != tiles:
        assert time.monotonic() < deadline, f"wall big: {now}, not {tiles}"
        time.sleep(0.2)


def test_a_rule_s_hold_ends_though_the_control_room_that_pushed_it_died(
    process_cluster: ProcessCluster,
) -> None:
    """An alert rule puts a camera on a tile for hold_s; the control room that pushed it is
    killed during the hold; another brings the tile's stream back."""
    one = process_cluster.start("control-room", "control-1")
    process_cluster.cli("users", "add", "op", "--role", "admin", stdin=PASSWORD + "\n")
    for stream in ("gate", "hall"):
        process_cluster.cli("streams", "add", stream, "--class", "security", "--court", "zz")
    cookie = sign_in(one).cookies["cc_session"]
    jar = {"cc_session": cookie}
    wall = {"layout": "2x2", "tiles": ["hall", None, None, None]}
    assert httpx.put(f"{one.url}/api/v1/walls/big", json=wall, cookies=jar).status_code == 200
    rule = {"types": ["motion"], "streams": ["gate"], "wall": "big", "tile": 0, "hold_s": 3}
    answer = httpx.put(f"{one.url}/api/v1/alert-rules/gate", json=rule, cookies=jar)
    assert answer.status_code == 200, answer.text

    alert = {"id": "a1", "stream": "gate", "type": "motion", "court": "zz"}
    message = json.dumps({"type": "alert", "phase": "start", "alert": alert})
    with redis.Redis.from_url(process_cluster.redis.url) as client:
        assert client.publish("cc:chan:alerts", message) == 2  # its rules and events
    wait_tiles(one, cookie, ["gate", None, None, None], 10)
    process_cluster.kill("control-1")  # SIGKILL during the hold

    two = process_cluster.start("control-room", "control-2")
    wait_tiles(two, cookie, ["hall", None, None, None], 10)
