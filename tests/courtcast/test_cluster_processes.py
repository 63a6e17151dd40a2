"""Roles as processes, configured as a deployment is (configs/cluster.yaml + the §9
environment keys), on a Redis that wants a password and on SeaweedFS (tests/fixtures/cluster.py)."""

from __future__ import annotations

import httpx

from tests.fixtures.cluster import ProcessCluster


def test_the_cli_adds_a_user_who_signs_in_on_the_control_room_process(
    process_cluster: ProcessCluster,
) -> None:
    media = process_cluster.start("media-server", "node-a")
    control = process_cluster.start("control-room", "control-1")
    out = process_cluster.cli(
        "users", "add", "clerk1", "--role", "clerk", stdin="a-long-password-1\n"
    )
    assert "clerk1 added" in out
    login = {"name": "clerk1", "password": "a-long-password-1"}
    assert httpx.post(f"{control.url}/api/v1/login", json=login).status_code == 200
    wrong = {"name": "clerk1", "password": "not-the-password"}
    assert httpx.post(f"{control.url}/api/v1/login", json=wrong).status_code == 401
    assert httpx.get(f"{media.url}/api/v1/health").json()["status"] == "ok"
