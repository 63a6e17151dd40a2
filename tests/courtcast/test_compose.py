"""docker-compose.yml, the Dockerfile and configs/cluster.yaml must agree (no Docker engine
runs here, so this is how they are kept honest)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from core.config import ConfigError, check_secrets, load_config
from courtcast import nginx_conf
from courtcast.cli import build_parser
from tests.netutil import free_port

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "configs/cluster.yaml"
# what an operator's .env holds (openssl rand -hex ...)
MINIO_PASSWORD = "5f0c2b9e8d7a41c3b6e2f90d"
REDIS_PASSWORD = "a93e1c07b4d85f26e1c0b7a9"
URL_SECRET = "c4e81f0a7b3d92e65a0f1c8b7d2e94a3"


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


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as docker compose would give it, each ${VAR:?...} set to
    a strong value (the operator's .env)."""
    strong = {
        "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "COURTCAST_URL_SIGNING_SECRET": URL_SECRET,
    }

    def fill(value: str) -> str:
        return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: strong[m[1]], value)

    return {k: fill(str(v)) for k, v in service["environment"].items()}


def test_the_cluster_config_carries_no_usable_secret() -> None:
    """Started as shipped (no .env), a cluster node refuses; with the operator's secrets in
    the environment, as compose passes them, it starts."""
    with pytest.raises(ConfigError, match=r"security\.url_signing_secret"):
        check_secrets(load_config(CLUSTER, environ={}))
    config = load_config(CLUSTER, environ={"COURTCAST_SECURITY__URL_SIGNING_SECRET": URL_SECRET})
    with pytest.raises(ConfigError, match=r"objects\.s3\.secret_key"):
        check_secrets(config)
    for service in courtcast_services().values():
        check_secrets(load_config(CLUSTER, environ=compose_env(service)))


def test_redis_requires_a_password_and_every_role_sends_it() -> None:
    redis = compose()["services"]["redis"]
    assert "--requirepass" in redis["command"]
    password = redis["command"][redis["command"].index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?"), "no default password"
    for name, service in courtcast_services().items():
        config = load_config(CLUSTER, environ=compose_env(service))
        url = urlparse(config.state.redis_url)
        assert url.hostname == "redis" and url.password == REDIS_PASSWORD, name


def test_the_dockerfile_sets_no_secret() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    settings = re.findall(r"^(?:ENV|ARG)\s+(.*)$", dockerfile, flags=re.MULTILINE)
    for line in settings:
        assert not re.search(r"SECRET|PASSWORD|KEY", line, flags=re.IGNORECASE), line


def test_roles_run_the_cluster_config_with_real_subcommands() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, service in courtcast_services().items():
        command = service["command"]
        assert command[0] in commands, f"{name}: no such subcommand {command[0]}"
        assert command[1:] == ["--config", "/app/configs/cluster.yaml"]


def test_the_topology_of_issue_18() -> None:
    """Two media nodes, two recorders, control rooms, each its own node name; media nodes
    advertise their compose address (relays) and publish RTMP, nothing else publishes
    courtcast's HTTP port: nginx is the one way in."""
    config = load_config(CLUSTER, environ={})
    roles: dict[str, list[str]] = {}
    names = set()
    for name, service in courtcast_services().items():
        roles.setdefault(service["command"][0], []).append(name)
        names.add(service["environment"]["COURTCAST_NODE__NAME"])
        ports = [str(p).split(":")[1] for p in service.get("ports", [])]
        assert str(config.http.port) not in ports, f"{name} publishes HTTP past nginx"
        if service["command"][0] == "media-server":
            assert ports == [str(config.rtmp.port)], name
            url = service["environment"]["COURTCAST_HTTP__PUBLIC_URL"]
            assert url == f"http://{name}:{config.http.port}", name
    assert len(roles["media-server"]) == 2 and len(roles["recorder"]) == 2
    assert len(roles["control-room"]) >= 1
    assert len(names) == len(courtcast_services()), "node names must differ"


def test_every_secret_comes_from_the_environment() -> None:
    """No secret, password or key in compose has a value of its own: each is ${VAR:?...}."""
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|_KEY$", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}: {key}"
        if name != "redis":
            url = (service.get("environment") or {}).get("COURTCAST_STATE__REDIS_URL")
            assert url is None or ":${REDIS_PASSWORD:?" in url, name


def nginx_conf_text() -> str:
    service = compose()["services"]["nginx"]
    mounted = [v.split(":") for v in service["volumes"] if v.startswith("./")]
    assert [target for _, target, *_ in mounted] == ["/etc/nginx/nginx.conf"]
    return (REPO / str(mounted[0][0])).read_text()


def test_nginx_sends_each_kind_of_request_to_the_services_that_serve_it() -> None:
    config = load_config(CLUSTER, environ={})
    by_role: dict[str, set[str]] = {}
    for name, service in courtcast_services().items():
        by_role.setdefault(service["command"][0], set()).add(f"{name}:{config.http.port}")
    upstreams = {k: set(v) for k, v in nginx_conf.upstreams(nginx_conf_text()).items()}
    assert upstreams == {
        "media": by_role["media-server"],
        "recorders": by_role["recorder"],
        "control": by_role["control-room"],
    }
    assert compose()["services"]["nginx"]["ports"] == ["8080:80"]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_the_nginx_config_parses(tmp_path: Path) -> None:
    """`nginx -t` on the file rendered for loopback (the compose hosts do not resolve here)."""
    servers = {
        name: [f"127.0.0.1:{free_port()}" for _ in hosts]
        for name, hosts in nginx_conf.upstreams(nginx_conf_text()).items()
    }
    conf = nginx_conf.write(tmp_path, free_port(), servers)
    test = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")],
        capture_output=True,
        text=True,
    )
    assert test.returncode == 0, test.stderr


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
