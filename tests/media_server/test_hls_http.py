"""LL-HLS over real HTTP: uvicorn on 127.0.0.1, a hub fed in real time from a test clip,
ffprobe as a plain HLS client, blocking playlist reload timed, error statuses."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Request

from core.web.assets import mount_assets
from courtcast.http_front import FrontDoor
from media_server.hls.http import LiveFastPath, make_hls_router
from media_server.hls.output import HlsOptions, HlsOutputs
from media_server.hls.window_files import WindowFiles
from media_server.hub import Hub
from tests.mediafiles import load_clip, looped, make_clip, publish

T = TypeVar("T")
CLIP_S = 4.0
FPS = 25


class LiveServer:
    """A hub, HLS outputs and uvicorn on a free loopback port, on their own event loop in a
    thread; publishers loop a clip in real time. Tests talk to it over HTTP.

    `url` is served as the platform serves it: the front door with the LL-HLS fast path
    ahead of the app. `app_url` serves the same app without it (the FastAPI routes). The
    windows' parts go to files under window_dir, as the platform keeps them."""

    def __init__(
        self,
        clip: Path,
        options: HlsOptions,
        window_dir: Path,
        extra: APIRouter | None = None,
    ) -> None:
        self.options = options
        self.calls: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.tracks, self.packets = load_clip(clip)
        self.hub: Hub = self.run(self._make_hub())
        self.outputs = HlsOutputs(self.hub, options, WindowFiles(window_dir))
        app = FastAPI()
        app.include_router(make_hls_router(self.outputs, self._authorize))
        if extra is not None:
            app.include_router(extra)
        mount_assets(app)  # /static/, as every courtcast process serves it
        front = FrontDoor(app)
        front.add("/live/", LiveFastPath(self.outputs, self._authorize))
        self._servers: list[tuple[uvicorn.Server, Future[None]]] = []
        self.url = self._serve(front)
        self.app_url = self._serve(app)
        self._publishers: list[Future[Any]] = []

    def _serve(self, app: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", http="httptools")
        )
        serving = asyncio.run_coroutine_threadsafe(server.serve([sock]), self.loop)
        while not server.started:
            time.sleep(0.02)
        self._servers.append((server, serving))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _make_hub(self) -> Hub:
        return Hub()

    async def _authorize(self, request: Request, stream_id: str) -> None:
        self.calls.append((request.url.path.rsplit("/", 1)[-1], stream_id))
        if stream_id.startswith("private") and request.query_params.get("token") != "ok":
            raise HTTPException(403, "private stream: sign in or use a play token")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def publish_forever(self, stream_id: str) -> None:
        packets = looped(self.tracks, self.packets, CLIP_S, times=100)
        self._publishers.append(
            asyncio.run_coroutine_threadsafe(
                publish(self.hub, stream_id, self.tracks, packets), self.loop
            )
        )

    def wait_ready(self, stream_id: str, query: str = "") -> str:
        """The first playlist, once the stream has a segment."""
        deadline = time.monotonic() + 15
        while True:
            r = httpx.get(f"{self.url}/live/{stream_id}/index.m3u8{query}", timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                r.raise_for_status()
                return r.text
            time.sleep(0.2)

    def close(self) -> None:
        for pub in self._publishers:
            pub.cancel()
        self.run(self.outputs.close())
        for server, serving in self._servers:
            server.should_exit = True
            serving.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    clip = make_clip(tmp_path_factory.mktemp("clips"), seconds=CLIP_S, fps=FPS, gop=FPS)
    window_dir = tmp_path_factory.mktemp("hls-window")
    server = LiveServer(clip, HlsOptions(first_segment_wait_s=1.0), window_dir)
    server.publish_forever("court-1")
    server.publish_forever("private-1")
    try:
        yield server
    finally:
        server.close()


def hinted_part(text: str) -> tuple[int, int]:
    found = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-(\d+)\.(\d+)\.m4s', text)
    assert found, text
    return int(found[1]), int(found[2])


def test_playlist_headers_and_media(live: LiveServer) -> None:
    text = live.wait_ready("court-1")
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:6\n")
    r = httpx.get(f"{live.url}/live/court-1/index.m3u8")
    assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert r.headers["cache-control"] == "no-cache"
    init = re.search(r'#EXT-X-MAP:URI="(init-\d+\.mp4)"', r.text)[1]  # type: ignore[index]
    seg = re.findall(r"^(seg-\d+\.m4s)$", r.text, re.MULTILINE)[-1]
    part = re.findall(r'URI="(part-\d+\.\d+\.m4s)"', r.text)[-1]
    for name, ctype in (
        (init, "video/mp4"),
        (seg, "video/iso.segment"),
        (part, "video/iso.segment"),
    ):
        got = httpx.get(f"{live.url}/live/court-1/{name}")
        assert got.status_code == 200, name
        assert got.headers["content-type"] == ctype
        assert got.headers["cache-control"] == "max-age=60"
        assert got.content[4:8] in (b"ftyp", b"prft", b"moof")


def test_ffprobe_plays_the_live_playlist(live: LiveServer) -> None:
    live.wait_ready("court-1")
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-read_intervals",
            "%+3",
            "-show_entries",
            "frame=media_type,pts_time,width,height",
            "-of",
            "json",
            f"{live.url}/live/court-1/index.m3u8",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frames = json.loads(out.stdout)["frames"]
    video = [f for f in frames if f["media_type"] == "video"]
    audio = [f for f in frames if f["media_type"] == "audio"]
    assert {(f["width"], f["height"]) for f in video} == {(320, 240)}
    assert len(video) >= 2 * FPS  # at least 2 s of the 3 s asked for, decoded
    assert audio
    video_s = float(video[-1]["pts_time"]) - float(video[0]["pts_time"])
    assert video_s >= 2.0
    # A/V sync: both start together, within one video frame
    assert abs(float(audio[0]["pts_time"]) - float(video[0]["pts_time"])) <= 1 / FPS


def test_blocking_reload_returns_when_the_part_appears(live: LiveServer) -> None:
    text = live.wait_ready("court-1")
    waits = []
    with httpx.Client(base_url=live.url, timeout=10) as client:
        for _ in range(6):
            msn, part = hinted_part(text)
            started = time.monotonic()
            r = client.get("/live/court-1/index.m3u8", params={"_HLS_msn": msn, "_HLS_part": part})
            waits.append(time.monotonic() - started)
            assert r.status_code == 200
            text = r.text
            assert (
                f'URI="part-{msn}.{part}.m4s"' in text or f'URI="part-{msn + 1}.0.m4s"' in text
            )  # the segment ended first
    # each reload waited for the next part, and no longer than one part (0.5 s) + slack
    assert max(waits) < 0.5 + 0.15, waits
    assert sum(waits) / len(waits) > 0.2, waits
    print(f"blocking reload waits (s): {[round(w, 3) for w in waits]}")


def test_the_hinted_part_blocks_until_it_exists(live: LiveServer) -> None:
    msn, part = hinted_part(live.wait_ready("court-1"))
    started = time.monotonic()
    r = httpx.get(f"{live.url}/live/court-1/part-{msn}.{part}.m4s", timeout=10)
    waited = time.monotonic() - started
    if r.status_code == 404:  # the part became the next segment's first: ask for that
        r = httpx.get(f"{live.url}/live/court-1/part-{msn + 1}.0.m4s", timeout=10)
    assert r.status_code == 200 and r.content[4:8] in (b"moof", b"prft")
    assert waited < 0.5 + 0.15


def test_error_statuses(live: LiveServer) -> None:
    text = live.wait_ready("court-1")
    last = int(re.findall(r"^seg-(\d+)\.m4s$", text, re.MULTILINE)[-1])
    base = f"{live.url}/live"
    cases = {
        f"{base}/nobody/index.m3u8": 404,
        f"{base}/court-1/index.m3u8?_HLS_msn=abc": 400,
        f"{base}/court-1/index.m3u8?_HLS_msn=-1": 400,
        f"{base}/court-1/index.m3u8?_HLS_msn=%C2%B2": 400,  # a superscript two
        f"{base}/court-1/index.m3u8?_HLS_msn=1&_HLS_part=99999999999999999999": 400,
        f"{base}/court-1/index.m3u8?_HLS_part=1": 400,
        f"{base}/court-1/index.m3u8?_HLS_msn={last + 10}": 400,
        f"{base}/court-1/seg-{last - 100}.m4s": 404,
        f"{base}/court-1/seg-{last + 5}.m4s": 404,
        f"{base}/court-1/part-{last - 100}.0.m4s": 404,
        f"{base}/court-1/init-1.mp4": 404,
        f"{base}/nobody/seg-1.m4s": 404,
    }
    got = {url: httpx.get(url, timeout=10).status_code for url in cases}
    assert got == cases


def test_live_stream_without_video_yet_is_503_with_retry_after(live: LiveServer) -> None:
    async def silent() -> None:
        live.hub.publish("silent-1", live.tracks, "test")  # announced, nothing sent

    live.run(silent())
    started = time.monotonic()
    r = httpx.get(f"{live.url}/live/silent-1/index.m3u8", timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert time.monotonic() - started < live.options.first_segment_wait_s + 0.5


def test_authorize_guards_every_route_and_the_token_reaches_child_uris(live: LiveServer) -> None:
    assert httpx.get(f"{live.url}/live/private-1/index.m3u8").status_code == 403
    text = live.wait_ready("private-1", "?token=ok")
    uris = re.findall(r'URI="([^"]+)"', text) + re.findall(r"^(seg-.*)$", text, re.MULTILINE)
    assert uris and all(u.endswith("?token=ok") for u in uris)
    names = [
        re.search(r'#EXT-X-MAP:URI="([^"?]+)', text)[1],  # type: ignore[index]
        re.findall(r"^(seg-[^?]+)", text, re.MULTILINE)[-1],
        re.findall(r'URI="(part-[^"?]+)', text)[-1],
    ]
    live.calls.clear()
    for name in names:
        assert httpx.get(f"{live.url}/live/private-1/{name}").status_code == 403
        assert httpx.get(f"{live.url}/live/private-1/{name}?token=ok").status_code == 200
    calls = [c for c in live.calls if c[1] == "private-1"]
    # every request asked; the hinted part, which waited to exist, asked again after
    # its wait (a stream may turn private meanwhile: issue 14)
    assert sorted(set(calls)) == sorted((n, "private-1") for n in names)
    assert all(2 <= calls.count((n, "private-1")) <= 3 for n in names), calls


def test_only_get_is_allowed(live: LiveServer) -> None:
    """The routes are raw ASGI endpoints now; they answer other methods as FastAPI did."""
    for method in ("HEAD", "POST", "OPTIONS"):
        r = httpx.request(method, f"{live.url}/live/court-1/index.m3u8", timeout=10)
        assert r.status_code == 405 and r.headers["allow"] == "GET", method
    r = httpx.get(f"{live.url}/live/court-1/other.txt", timeout=10)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def _moment_free(body: bytes) -> bytes:
    return re.sub(rb"last segment \d+", b"last segment N", body)


def test_the_fast_path_answers_as_the_app_routes_do(live: LiveServer) -> None:
    """Statuses, headers and bodies of the front door's fast path equal the FastAPI
    routes', for good, bad, private, blocking and unknown requests and other methods."""
    text = live.wait_ready("court-1")
    last = int(re.findall(r"^seg-(\d+)\.m4s$", text, re.MULTILINE)[-1])
    init = re.search(r'#EXT-X-MAP:URI="(init-\d+\.mp4)"', text)[1]  # type: ignore[index]
    paths = [
        "court-1/index.m3u8",
        f"court-1/{init}",
        f"court-1/seg-{last}.m4s",
        f"court-1/part-{last}.0.m4s",
        f"court-1/index.m3u8?_HLS_msn={last}",
        f"court-1/index.m3u8?_HLS_msn={last}&_HLS_part=0&x=1",
        "court-1/index.m3u8?_HLS_msn=abc",
        "court-1/index.m3u8?_HLS_part=1",
        f"court-1/index.m3u8?_HLS_msn={last + 10}",
        "court-1/seg-1.m4s",
        "court-1/init-1.mp4",
        "court-1/part-1.0.m4s",
        "court-1/other.txt",
        "court-1/seg-x.m4s",
        "nobody/index.m3u8",
        "private-1/index.m3u8",
        "private-1/index.m3u8?token=bad",
        "court-1/",
        "court-1",
    ]
    compared = 0
    with httpx.Client(timeout=10) as fast, httpx.Client(timeout=10) as plain:
        for path in paths:
            for method in ("GET", "HEAD", "POST", "OPTIONS"):
                a = fast.request(method, f"{live.url}/live/{path}")
                b = plain.request(method, f"{live.app_url}/live/{path}")
                assert a.status_code == b.status_code, (method, path)
                assert _comparable(a.headers) == _comparable(b.headers), (method, path)
                if a.status_code != 200:  # media bodies differ only by moment
                    # so may "last segment N" of a 400: a segment can close between the two
                    assert _moment_free(a.content) == _moment_free(b.content), (method, path)
                compared += 1
    assert compared == len(paths) * 4


def _comparable(headers: httpx.Headers) -> list[tuple[str, str]]:
    """Headers in order, without the date and the lengths of bodies that change live."""
    live_body = headers.get("content-type", "").startswith(("video/", "application/vnd"))
    return [
        (k, v)
        for k, v in headers.multi_items()
        if k != "date" and not (live_body and k == "content-length")
    ]
