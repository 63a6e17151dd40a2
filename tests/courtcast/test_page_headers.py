"""Pages send a Content-Security-Policy (scripts from the app's origin; an inline script
only by its hash, never 'unsafe-inline'), X-Frame-Options and a Referrer-Policy; every
other answer of the app gets the frame and referrer headers too (issue 14, item 3). That
the pages still work under their policy is the Chromium tests' job (test_devices_page,
test_arraignment_page).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from courtcast.platform import Platform
from tests.control_room.conftest import base_url, start_platform

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    node: Platform = await start_platform(tmp_path / "data")
    async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as client:
        yield client
    await node.stop()


@pytest.mark.parametrize("path", ["/devices", "/arraignment/room-1"])
async def test_pages_send_a_strict_policy(http: httpx.AsyncClient, path: str) -> None:
    page = await http.get(path)
    assert page.status_code == 200 and "<script" in page.text
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert "'unsafe-inline'" not in policy["script-src"]
    for inline in re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy["script-src"], "an inline script not allowed"
    assert "media-src" in policy and "blob:" in policy["media-src"]  # hls.js's MediaSource
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_every_app_answer_refuses_framing(http: httpx.AsyncClient) -> None:
    for path in ("/api/v1/health", "/api/v1/me", "/api/v1/nothing-here"):
        answer = await http.get(path)
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], path
