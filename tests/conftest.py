"""Shared test setup. Every module in tests/fixtures/ is loaded as a pytest plugin, so a
fixture written there (a real S3 server, a real RTSP camera, ...) is usable by every test.
Modules named *_server.py there are programs the fixtures run as subprocesses, not plugins.
"""

from pathlib import Path

import pytest

from media_server import native

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__" and not p.stem.endswith("_server")
)


def pytest_sessionstart(session: pytest.Session) -> None:
    # a compiled module older than its source would run old code under the new tests
    problems = native.problems()
    if problems:
        pytest.exit("\n".join(problems), returncode=2)
