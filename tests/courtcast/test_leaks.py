"""What the platform tells a caller who may not know (issue 14, item 6): /metrics and the
health detail need a token or a signed-in user; an unknown stream id and a private one the
caller may not use answer alike on every protocol; play tokens that are not even well
formed are refused, never a 500; values echoed into playlists are encoded; WHEP answers
carry only the configured candidate addresses."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from courtcast.platform import Platform
from media_server.streams import StreamClass
from tests.courtcast.test_platform import (
    base_url,
    cancel,
    define,
    media_role,
    push,
    start_platform,
    wait_live,
)
from tests.fixtures.rtmp import RawRtmpClient
from tests.media_server.test_webrtc_http import _offer
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(60)

METRICS_TOKEN = "m" * 32
SDP = {"Content-Type": "application/sdp"}
PRIVATE, UNKNOWN = "hall-cam", "no-such-cam"


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    node = await start_platform(
        tmp_path,
        **{"security.metrics_token": METRICS_TOKEN, "webrtc.host_addresses": ["127.0.0.1"]},
    )
    yield node
    await node.stop()


@pytest.fixture
async def private_live(platform: Platform, tmp_path: Path) -> AsyncIterator[str]:
    """The security camera PRIVATE, publishing."""
    clip = make_clip(tmp_path, seconds=20, fps=25, gop=25, size=(320, 240))
    key = await define(platform, PRIVATE, stream_class=StreamClass.security)
    url = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/{PRIVATE}?key={key}"
    publisher = asyncio.create_task(push(clip, url))
    await wait_live(platform, PRIVATE)
    yield PRIVATE
    await cancel(publisher)


async def test_metrics_and_health_detail_need_a_token_or_a_user(
    platform: Platform, private_live: str
) -> None:
    users = platform.roles[-1].users  # type: ignore[attr-defined]
    await users.add("olga", "operator", "correct horse battery")
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        anonymous = await http.get("/metrics")
        assert anonymous.status_code == 401, anonymous.text[:300]
        assert PRIVATE not in anonymous.text
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and PRIVATE not in wrong.text
        scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        scraped = await http.get("/metrics", headers=scraper)
        assert scraped.status_code == 200 and f'stream="{PRIVATE}"' in scraped.text
        health = await http.get("/api/v1/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert "roles" in (await http.get("/api/v1/health", headers=scraper)).json()
        login = await http.post(
            "/api/v1/login", json={"name": "olga", "password": "correct horse battery"}
        )
        assert login.status_code == 200
        assert (await http.get("/metrics")).status_code == 200  # the session cookie
        assert "roles" in (await http.get("/api/v1/health")).json()


def alike(answer: httpx.Response, stream_id: str) -> tuple[int, str]:
    return answer.status_code, answer.text.replace(stream_id, "ID")


async def test_unknown_and_private_streams_answer_alike_over_http(
    platform: Platform, private_live: str
) -> None:
    offer = await _offer()
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        for ask in (
            lambda sid: http.get(f"/live/{sid}/index.m3u8"),
            lambda sid: http.get(f"/live/{sid}/index.m3u8?token=123.abc"),
            lambda sid: http.get(f"/live/{sid}/part-1.0.m4s"),
            lambda sid: http.post(f"/whep/{sid}", content=offer, headers=SDP),
            lambda sid: http.post(
                f"/whip/{sid}", content=offer, headers={**SDP, "Authorization": "Bearer x"}
            ),
            lambda sid: http.post(f"/whip/{sid}", content=offer, headers=SDP),
        ):
            private, unknown = await ask(private_live), await ask(UNKNOWN)
            assert private.status_code in (401, 403, 404), private.text
            assert alike(private, private_live) == alike(unknown, UNKNOWN)


async def rtmp_refusal(node: Platform, command: str, name: str) -> str:
    """The description of the server's error status to a publish or play of `name`."""
    client = await RawRtmpClient.connect(media_role(node).rtmp_port)
    await client.handshake()
    client.command(0, "connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
    client.command(0, "createStream", 2.0, None)
    client.command(1, command, 0.0, None, name)
    await client.writer.drain()
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(client.reader.read(65536), 10):
            received += chunk
    await client.close()
    found = re.findall(rb"description\x02\x00.([^\x00]*)", received, re.DOTALL)
    assert found, received[-300:]
    return found[-1].decode(errors="replace")


async def test_unknown_and_private_streams_answer_alike_over_rtmp(
    platform: Platform, private_live: str
) -> None:
    for command, suffix in (("publish", "?key=wrong"), ("play", "?key=123.abc"), ("play", "")):
        private = await rtmp_refusal(platform, command, private_live + suffix)
        unknown = await rtmp_refusal(platform, command, UNKNOWN + suffix)
        assert private.replace(private_live, "ID") == unknown.replace(UNKNOWN, "ID"), command


async def test_malformed_play_tokens_are_refused_not_a_500(
    platform: Platform, private_live: str
) -> None:
    tokens = ["²", "²³.x", "9" * 5000 + ".x", "1.é", "99999999999.\x00", ".", "1..", "-1.a"]
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        for token in tokens:
            answer = await http.get(f"/live/{private_live}/index.m3u8", params={"token": token})
            assert answer.status_code in (401, 404), (token[:20], answer.status_code)
            whep = await http.post(
                f"/whep/{private_live}", params={"token": token}, content="v=0", headers=SDP
            )
            assert whep.status_code in (401, 404), (token[:20], whep.status_code)
    refusal = await rtmp_refusal(platform, "play", f"{private_live}?key=²³.x")
    assert "unavailable" not in refusal


async def test_values_echoed_into_a_playlist_are_encoded(
    platform: Platform, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path, seconds=20, fps=25, gop=25, size=(320, 240))
    key = await define(platform, "court-a", stream_class=StreamClass.conference, public=True)
    url = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/court-a?key={key}"
    publisher = asyncio.create_task(push(clip, url))
    await wait_live(platform, "court-a")
    evil = 'x"\n#EXT-X-ENDLIST\n#EXTINF:1,\nhttp://evil.example/a.m4s?'
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        answer = await http.get("/live/court-a/index.m3u8", params={"token": evil, evil: "v"})
    await cancel(publisher)
    assert answer.status_code == 200
    lines = answer.text.splitlines()
    assert "#EXT-X-ENDLIST" not in lines and not any("evil.example/" in x for x in lines)
    for line in lines:
        assert line.count('"') % 2 == 0, line


async def test_whep_answers_only_the_configured_addresses(
    platform: Platform, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path, seconds=20, fps=25, gop=25, size=(320, 240))
    key = await define(platform, "court-a", stream_class=StreamClass.conference, public=True)
    url = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/court-a?key={key}"
    publisher = asyncio.create_task(push(clip, url))
    await wait_live(platform, "court-a")
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        answer = await http.post("/whep/court-a", content=await _offer(), headers=SDP)
        assert answer.status_code == 201, answer.text
        await http.delete(f"{answer.headers['location']}")
    await cancel(publisher)
    addresses: set[Any] = set()
    for line in answer.text.splitlines():
        if line.startswith("a=candidate:"):
            addresses.add(line.split()[4])
        elif line.startswith("c=IN "):
            addresses.add(line.split()[2])
    assert addresses and addresses <= {"127.0.0.1", "0.0.0.0"}, addresses
