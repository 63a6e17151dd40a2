"""Config loading: defaults, file, environment, flags, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_configs_load() -> None:
    default = load_config(REPO / "configs/default.yaml", environ={})
    assert default.http.port == 8080 and default.objects.backend == "disk"
    assert default.state.redis_url is None
    cluster = load_config(REPO / "configs/cluster.yaml", environ={})
    assert cluster.objects.backend == "s3" and cluster.state.redis_url


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("http:\n  port: 9000\nhls:\n  part_target_s: 0.4\n")
    env = {"COURTCAST_HTTP__PORT": "9001", "COURTCAST_HLS__WINDOW_SEGMENTS": "8"}
    config = load_config(path, {"http.port": 9002}, environ=env)
    assert config.http.port == 9002  # flag beats env beats file
    assert config.hls.window_segments == 8 and config.hls.part_target_s == 0.4


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "http:\n  port: eighty\n",
            {},
            "config file {path}: http.port: Input should be a valid integer",
        ),
        ("htp:\n  port: 1\n", {}, "config file {path}: htp: unknown key"),
        (
            "hls:\n  part_target_s: 3\n",
            {},
            "hls.part_target_s: Input should be less than or equal to 1",
        ),
        ("objects:\n  backend: s3\n", {}, "objects: backend is s3 but objects.s3"),
        ("", {"COURTCAST_HTTP__PORT": "x"}, "environment COURTCAST_HTTP__PORT: http.port"),
        (
            "",
            {"COURTCAST_RTMP__PROT": "1"},
            "environment COURTCAST_RTMP__PROT: rtmp.prot: unknown key",
        ),
        (
            "security:\n  open: true\nhttp:\n  host: 0.0.0.0\n",
            {},
            "security.open refuses http.host=0.0.0.0",
        ),
        ("http: [1, 2\n", {}, "config file {path} line 2"),
        ("- a\n- b\n", {}, "the top level must be a mapping"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=env)
    message = str(err.value)
    assert expected.format(path=path) in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml: not found"):
        load_config(tmp_path / "nope.yaml", environ={})
