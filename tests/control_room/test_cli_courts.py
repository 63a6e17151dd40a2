"""`courtcast courts add | list` and `courtcast users add --court` as a user runs them:
real subprocesses on a data dir's embedded Redis; free-text court names of `streams add`
resolve to the tree's courts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.control_room.test_cli_devices import COURTCAST

pytestmark = pytest.mark.timeout(120)


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COURTCAST, *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


def test_courts_add_list_and_users_scoped_to_a_court(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    for args in (
        ["hn-high", "--name", "河南省高级人民法院", "--name-en", "Henan High", "--level", "high"],
        [
            "zz-mid",
            "--name",
            "郑州市中级人民法院",
            "--level",
            "intermediate",
            "--parent",
            "hn-high",
        ],
        [
            "ly-mid",
            "--name",
            "洛阳市中级人民法院",
            "--level",
            "intermediate",
            "--parent",
            "hn-high",
        ],
    ):
        added = run("courts", "add", *args, *data)
        assert added.returncode == 0, added.stderr
        assert added.stdout == f"court {args[0]} added\n"
    # mistakes are one line and exit 2
    for args, problem in (
        (["x", "--name", "X", "--parent", "nope"], "no parent court 'nope'"),
        (["hn-high", "--name", "X", "--parent", "zz-mid"], "under its own subtree"),
        (["a/b", "--name", "X"], "without ':' or '/'"),
    ):
        refused = run("courts", "add", *args, *data)
        assert refused.returncode == 2 and problem in refused.stderr, refused.stderr
        # the embedded Redis logs its start; the mistake itself is one line
        [said] = [line for line in refused.stderr.splitlines() if line.startswith("courtcast:")]
        assert problem in said
    bad_level = run("courts", "add", "x", "--name", "X", "--level", "supreme", *data)
    assert bad_level.returncode == 2

    # a stream's court named by its name is the tree's court, its room under it
    made = run("streams", "add", "zz-cam", "--court", "郑州市中级人民法院", "--room", "R1", *data)
    assert made.returncode == 0, made.stderr
    listed = run("courts", "list", "--json", *data)
    assert listed.returncode == 0, listed.stderr
    courts = json.loads(listed.stdout)
    assert [c["id"] for c in courts] == ["hn-high", "ly-mid", "zz-mid"]  # each after its parent
    high, _, zz = courts
    assert (high["name"], high["name_en"], high["level"], high["parent"]) == (
        "河南省高级人民法院",
        "Henan High",
        "high",
        "",
    )
    assert (zz["parent"], zz["rooms"]) == ("hn-high", ["R1"])
    streams = json.loads(run("streams", "list", "--json", *data).stdout)
    assert [(s["id"], s["court"]) for s in streams] == [("zz-cam", "zz-mid")]
    table = run("courts", "list", *data).stdout.splitlines()
    assert table[0].split()[:3] == ["COURT", "LEVEL", "PARENT"]
    assert table[3].split()[:3] == ["zz-mid", "intermediate", "hn-high"]

    # users: scoped by a court's id or name; an unknown court is refused
    for name, court in (("op-zz", "zz-mid"), ("op-ly", "洛阳市中级人民法院")):
        added = run(
            "users",
            "add",
            name,
            "--role",
            "operator",
            "--court",
            court,
            *data,
            stdin="pw-123456789\n",
        )
        assert added.returncode == 0, added.stderr
        assert "scoped to court" in added.stdout
    province = run("users", "add", "ada", "--role", "admin", *data, stdin="pw-123456789\n")
    assert "scoped to the province" in province.stdout
    unknown = run(
        "users", "add", "x1", "--role", "operator", "--court", "nope", *data, stdin="pw-123456789\n"
    )
    assert unknown.returncode == 2 and "no court 'nope'" in unknown.stderr
