"""docker-compose.yml, the Dockerfile and configs/cluster.yaml must agree (no Docker engine
runs here, so this is how they are kept honest)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from core.config import load_config
from courtcast.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "configs/cluster.yaml"


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def courtcast_services() -> dict[str, Any]:
    return {n: s for n, s in compose()["services"].items() if s.get("build")}


def test_cluster_config_names_compose_services() -> None:
    config = load_config(CLUSTER, environ={})
    services = compose()["services"]
    assert urlparse(config.state.redis_url).hostname in services
    assert config.objects.s3 is not None
    assert config.objects.s3.endpoint.split(":")[0] in services
    minio_user = services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert minio_user == config.objects.s3.access_key


def test_roles_run_the_cluster_config_with_real_subcommands() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, service in courtcast_services().items():
        command = service["command"]
        assert command[0] in commands, f"{name}: no such subcommand {command[0]}"
        assert command[1:] == ["--config", "/app/configs/cluster.yaml"]


def test_published_ports_match_the_config() -> None:
    config = load_config(CLUSTER, environ={})
    for name, service in courtcast_services().items():
        container_ports = {int(p.split(":")[1].split()[0]) for p in service["ports"]}
        assert config.http.port in container_ports, name
    media_ports = {p.split(":")[1] for p in courtcast_services()["media-server"]["ports"]}
    assert str(config.rtmp.port) in media_ports


def test_environment_overrides_are_real_config_keys() -> None:
    for name, service in courtcast_services().items():
        env = {k: "x" if "SECRET" in k else "http://localhost:1" for k in service["environment"]}
        assert env, name
        load_config(CLUSTER, environ=env)  # an unknown key would raise ConfigError


def test_dockerfile_ships_every_role_and_the_configs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, flags=re.MULTILINE))
    for package in (
        "courtcast",
        "media_server",
        "recorder",
        "control_room",
        "device_agents",
        "storage",
        "configs",
    ):
        assert package in copied
    assert "ffmpeg" in dockerfile and 'ENTRYPOINT ["courtcast"]' in dockerfile
