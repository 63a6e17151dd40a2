"""A first run shows it (issue 15, item 8): `courtcast up --demo` (what `make run` runs)
fills the court tree with the demo courts and rooms, makes a demo operator with a one-time
password and prints it with the pages to open; without --demo no such user is made, and a
node with no users says how to add the first admin. A real subprocess on free ports."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from media_server.demo import demo_court_tree
from tests.courtcast.test_cli import COURTCAST, run
from tests.netutil import free_port

pytestmark = pytest.mark.timeout(120)
SIGN_IN = re.compile(r"sign in as (\S+) with password (\S+)")


class Node:
    """`courtcast up` as a user starts it; what it printed up to its "stop with Ctrl-C"."""

    def __init__(self, data: Path, *flags: str) -> None:
        self.http_port = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        args = ["up", "--data-dir", str(data), "--http-port", str(self.http_port)]
        args += ["--rtmp-port", str(free_port()), *flags]
        self.proc = subprocess.Popen(
            COURTCAST + args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def welcome(self, timeout_s: float = 60) -> str:
        """Everything printed until the welcome's last line."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if "stop with Ctrl-C" in line:
                return "".join(seen)
        raise AssertionError(f"no welcome within {timeout_s} s:\n{''.join(seen)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()


def test_a_demo_run_prints_a_demo_operator_who_sees_the_demo_courts(
    tmp_path: Path, nodes: list[Node]
) -> None:
    node = Node(tmp_path / "data", "--demo")
    nodes.append(node)
    welcome = node.welcome()
    found = SIGN_IN.search(welcome)
    assert found, welcome
    name, password = found.groups()
    for page in ("/control", "/wall/main", "/"):
        assert f"{node.base}{page}\n" in welcome or f"{node.base}{page} " in welcome, welcome
    assert "courtcast users add" not in welcome  # the demo has its user

    login = httpx.post(f"{node.base}/api/v1/login", json={"name": name, "password": password})
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['token']}"}
    me = httpx.get(f"{node.base}/api/v1/me", headers=bearer).json()
    assert me == {"name": name, "role": "operator", "court": ""}  # the whole province
    courts = {c["id"]: c for c in httpx.get(f"{node.base}/api/v1/courts", headers=bearer).json()}
    for room in demo_court_tree():
        court = courts[room.court_id]
        assert court["name_en"] == room.court and court["level"] == room.level
        assert court["parent"] == (room.parent or "")
        assert room.room in court["rooms"]
    assert len(courts) == len({r.court_id for r in demo_court_tree()})  # no stray courts
    assert all(re.search(r"[\u4e00-\u9fff]", c["name"]) for c in courts.values())  # zh names
    # the wall the welcome points at shows the demo rooms, visible to the demo operator
    wall = httpx.get(f"{node.base}/api/v1/walls/main", headers=bearer).json()
    assert (wall["layout"], wall["tiles"]) == ("2x2", [r.stream_id for r in demo_court_tree()])
    node.stop()

    # the password was for that run: the next demo run makes a new one
    again = Node(tmp_path / "data", "--demo")
    nodes.append(again)
    found_again = SIGN_IN.search(again.welcome())
    assert found_again and found_again[1] == name and found_again[2] != password
    stale = httpx.post(f"{again.base}/api/v1/login", json={"name": name, "password": password})
    assert stale.status_code == 401


def test_without_demo_no_demo_user_and_a_hint_for_the_first_admin(
    tmp_path: Path, nodes: list[Node]
) -> None:
    node = Node(tmp_path / "data")
    nodes.append(node)
    welcome = node.welcome()
    assert "courtcast users add NAME --role admin" in welcome, welcome
    assert not SIGN_IN.search(welcome)
    node.stop()
    data = ["--data-dir", str(tmp_path / "data")]
    no_demo = run(["users", "set-role", "demo", "--role", "operator", *data])  # it must not exist
    assert no_demo.returncode == 2 and "no user 'demo'" in no_demo.stderr, no_demo.stderr
    added = run(["users", "add", "ada", "--role", "admin", *data], stdin="correct horse battery\n")
    assert added.returncode == 0, added.stderr

    # a node with a user says nothing of a first admin
    with_user = Node(tmp_path / "data")
    nodes.append(with_user)
    assert "courtcast users add NAME --role admin" not in with_user.welcome()


def test_a_demo_user_left_by_a_demo_run_cannot_sign_in_on_a_run_without_demo(
    tmp_path: Path, nodes: list[Node]
) -> None:
    demo = Node(tmp_path / "data", "--demo")
    nodes.append(demo)
    found = SIGN_IN.search(demo.welcome())
    assert found
    demo.stop()
    plain = Node(tmp_path / "data")
    nodes.append(plain)
    assert "courtcast users add NAME --role admin" in plain.welcome()  # nobody else can
    login = httpx.post(f"{plain.base}/api/v1/login", json={"name": found[1], "password": found[2]})
    assert login.status_code == 401
