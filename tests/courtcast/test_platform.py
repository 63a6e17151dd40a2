"""The whole platform in one process, as `courtcast up` runs it, fed by the ffmpeg CLI over
RTMP and read back over LL-HLS by ffmpeg: media checked by decoding it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import load_config
from courtcast.platform import Platform, bind_socket
from media_server.access import PLAY_CACHE_S
from media_server.streams import StreamClass, StreamDefinition, StreamRegistry
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(120)

METRICS_TOKEN = "test-metrics-token"  # /metrics needs it (issue 14)


async def start_platform(tmp_path: Path, **overrides: Any) -> Platform:
    config = load_config(
        overrides={
            "node.data_dir": str(tmp_path / "data"),
            "http.port": 0,
            "rtmp.port": 0,
            "security.metrics_token": METRICS_TOKEN,
            **overrides,
        },
        environ={},
    )
    node = Platform(config)
    await node.start()
    return node


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    node = await start_platform(tmp_path)
    yield node
    await node.stop()


def media_role(node: Platform) -> Any:
    return next(r for r in node.roles if r.name == "media_server")


def base_url(node: Platform) -> str:
    return f"http://127.0.0.1:{node.http_port}"


async def define(node: Platform, stream_id: str, **fields: Any) -> str:
    registry = StreamRegistry(node.roles[0].state)  # type: ignore[attr-defined]
    return await registry.define(StreamDefinition(id=stream_id, **fields))


async def run(*cmd: str, timeout: float = 60) -> tuple[int, str]:
    """Run a command; it is killed (and reaped) if it overruns or the caller is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def push(clip: Path, url: str) -> tuple[int, str]:
    return await run(
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-i",
        str(clip),
        "-c",
        "copy",
        "-f",
        "flv",
        url,
    )


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a run()/push() task; run() kills and reaps its process."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def probe(path: Path | str, authorization: str | None = None) -> dict[str, Any]:
    """ffprobe (frames counted) of a file or URL; `authorization`: the header's value, for
    URLs of signed-in users only (recordings are evidence)."""
    headers = ["-headers", f"Authorization: {authorization}\r\n"] if authorization else []
    code, out = await run(
        "ffprobe", "-v", "error", *headers, "-count_frames",
        "-show_streams", "-show_format", "-of", "json", str(path),
    )  # fmt: skip
    assert code == 0, out
    return dict(json.loads(out))


async def scrape(node: Platform) -> dict[tuple[str, str | None], float]:
    """/metrics as {(sample, its stream label): value}, read with Prometheus's parser."""
    async with httpx.AsyncClient(base_url=base_url(node)) as http:
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        text = (await http.get("/metrics", headers=auth)).text
    return {
        (sample.name, sample.labels.get("stream")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def wait_live(node: Platform, stream_id: str, timeout: float = 10) -> None:
    hub = media_role(node).hub
    for _ in range(int(timeout / 0.05)):
        stream = hub.find(stream_id)
        if stream is not None and stream.live and stream.tracks:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream_id} never went live")


async def test_rtmp_in_ll_hls_out_decodes_like_the_source(
    platform: Platform, tmp_path: Path
) -> None:
    seconds, fps = 6, 25
    clip = make_clip(tmp_path, seconds=seconds, fps=fps, gop=2 * fps, bframes=2, size=(640, 360))
    key = await define(platform, "court-a", stream_class=StreamClass.conference, public=True)
    rtmp = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/court-a?key={key}"
    publisher = asyncio.create_task(push(clip, rtmp))
    await wait_live(platform, "court-a")
    live = await scrape(platform)
    assert live[("courtcast_stream_live", "court-a")] == 1
    assert live[("courtcast_rtmp_publishing", None)] >= 1
    playlist = f"{base_url(platform)}/live/court-a/index.m3u8"
    out = tmp_path / "from-hls.mp4"
    # read the whole window from its first segment; give up 4 reloads after the last one
    reader = asyncio.create_task(
        run(
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-live_start_index",
            "0",
            "-m3u8_hold_counters",
            "4",
            "-i",
            playlist,
            "-c",
            "copy",
            "-y",
            str(out),
            timeout=60,
        )
    )
    code, log = await publisher
    assert code == 0, log
    code, log = await reader
    assert code == 0, log
    ended = await scrape(platform)
    assert ended[("courtcast_stream_live", "court-a")] == 0
    assert ended[("courtcast_stream_packets_total", "court-a")] >= seconds * fps
    received = ended[("courtcast_rtmp_received_bytes_total", None)]
    assert received > ended[("courtcast_stream_bytes_total", "court-a")]
    assert 0 < ended[("courtcast_rtmp_reads_total", None)] < received / 100
    info = await probe(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (video["width"], video["height"]) == (640, 360)
    assert abs(int(video["nb_read_frames"]) - seconds * fps) <= 1
    assert audio["codec_name"] == "aac"
    assert abs(float(video["start_time"]) - float(audio["start_time"])) <= 1 / fps


async def test_private_stream_needs_a_signed_in_operator_or_a_token(
    platform: Platform, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path, seconds=8, fps=25, gop=25)
    key = await define(platform, "hall-cam", stream_class=StreamClass.security, public=True)
    port = media_role(platform).rtmp_port
    wrong = await push(clip, f"rtmp://127.0.0.1:{port}/live/hall-cam?key=not-the-key")
    assert wrong[0] != 0
    publisher = asyncio.create_task(push(clip, f"rtmp://127.0.0.1:{port}/live/hall-cam?key={key}"))
    await wait_live(platform, "hall-cam")
    base = base_url(platform)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        anonymous = await http.get("/live/hall-cam/index.m3u8")
        assert anonymous.status_code == 404  # a public URL never reveals a private stream
        listed = await http.get("/api/v1/streams")
        assert "hall-cam" not in [s["id"] for s in listed.json()]
        forged = await http.get("/live/hall-cam/index.m3u8?token=9999999999.deadbeef")
        assert forged.status_code == 404
        no_login = await http.get("/api/v1/streams/hall-cam/play-url")
        assert no_login.status_code == 401

    users = platform.roles[-1].users  # type: ignore[attr-defined]
    await users.add("olga", "operator", "correct horse battery")
    await users.add("tom", "technician", "correct horse battery")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        await http.post("/api/v1/login", json={"name": "tom", "password": "correct horse battery"})
        assert (await http.get("/api/v1/streams/hall-cam/play-url")).status_code == 403
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        login = await http.post(
            "/api/v1/login", json={"name": "olga", "password": "correct horse battery"}
        )
        assert login.status_code == 200
        as_operator = await http.get("/live/hall-cam/index.m3u8")
        assert as_operator.status_code == 200 and "#EXTM3U" in as_operator.text
        url = (await http.get("/api/v1/streams/hall-cam/play-url")).json()["hls"]
    # the token alone (no cookie) plays, and reaches every segment the playlist names
    code, log = await run("ffprobe", "-v", "error", "-show_streams", "-of", "json", base + url)
    assert code == 0, log
    assert '"codec_name": "h264"' in log
    await cancel(publisher)


async def test_a_stream_made_private_stops_playing_at_once(
    platform: Platform, tmp_path: Path
) -> None:
    """Egress caches the definitions it checks (PLAY_CACHE_S); a change reaches the cache
    over pub/sub, long before that bound."""
    clip = make_clip(tmp_path, seconds=8, fps=25, gop=25)
    key = await define(platform, "court-b", stream_class=StreamClass.conference, public=True)
    port = media_role(platform).rtmp_port
    publisher = asyncio.create_task(push(clip, f"rtmp://127.0.0.1:{port}/live/court-b?key={key}"))
    await wait_live(platform, "court-b")
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        assert (await http.get("/live/court-b/index.m3u8")).status_code == 200  # cached now
        await define(platform, "court-b", public=False)
        changed = loop.time()
        while (await http.get("/live/court-b/index.m3u8")).status_code == 200:
            assert loop.time() - changed < PLAY_CACHE_S / 4, "still served from the cache"
            await asyncio.sleep(0.05)
        assert (await http.get("/live/court-b/index.m3u8")).status_code == 404
    await cancel(publisher)


async def record_hls(url: str, out: Path, seconds: float) -> dict[str, Any]:
    code, log = await run(
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        url,
        "-t",
        str(seconds),
        "-c",
        "copy",
        "-y",
        str(out),
    )
    assert code == 0, log
    return await probe(out)


def stream_info(info: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(s for s in info["streams"] if s["codec_type"] == kind)


async def test_demo_courtrooms_are_live_public_and_decode(tmp_path: Path) -> None:
    """Demo rooms are trial streams that may be broadcast; their live stream itself needs a
    play token, as `courtcast up --demo` prints (the public sees a trial only through a
    public session's delayed rendition)."""
    node = await start_platform(tmp_path, **{"demo.enabled": True, "demo.rooms": 2})
    try:
        demos = media_role(node).demo_streams()
        assert len(demos) == 2
        stream_id = demos[0][0]
        await wait_live(node, stream_id)
        token = media_role(node).tokens.make(stream_id)
        info = await record_hls(
            f"{base_url(node)}/live/{stream_id}/index.m3u8?token={token}", tmp_path / "demo.mp4", 3
        )
        video = stream_info(info, "video")
        assert (video["width"], video["height"]) == (1280, 720)
        assert int(video["nb_read_frames"]) >= 3 * 25 - 1
        assert stream_info(info, "audio")["codec_name"] == "aac"
        users = node.roles[-1].users  # type: ignore[attr-defined]
        await users.add("olga", "operator", "correct horse battery")
        async with httpx.AsyncClient(base_url=base_url(node)) as http:
            login = {"name": "olga", "password": "correct horse battery"}
            assert (await http.post("/api/v1/login", json=login)).status_code == 200
            for _ in range(40):  # live stats reach Redis within about a second
                listed = {s["id"]: s for s in (await http.get("/api/v1/streams")).json()}
                if (listed.get(stream_id) or {}).get("stats"):
                    break
                await asyncio.sleep(0.1)
        assert listed[stream_id]["public"] and listed[stream_id]["stats"]["live"]
        assert listed[stream_id]["stats"]["video"]["width"] == 1280
    finally:
        await node.stop()


async def test_rtsp_camera_is_pulled_to_ll_hls_and_comes_back_after_a_reboot(
    platform: Platform, tmp_path: Path, rtsp_camera: Any
) -> None:
    camera = await asyncio.to_thread(rtsp_camera, user="clerk", password="s3cret:pw")
    await define(
        platform,
        "court-cam",
        source_url=camera.url,
        stream_class=StreamClass.conference,
        public=True,
    )
    await wait_live(platform, "court-cam", timeout=15)
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        shown = (await http.get("/api/v1/streams/court-cam")).json()
        assert "s3cret" not in json.dumps(shown) and shown["source_url"].startswith("rtsp://***@")
    playlist = f"{base_url(platform)}/live/court-cam/index.m3u8"
    info = await record_hls(playlist, tmp_path / "cam.mp4", 2)
    assert (stream_info(info, "video")["width"], stream_info(info, "video")["height"]) == (640, 360)

    stream = media_role(platform).hub.find("court-cam")
    epoch = stream.epoch
    await asyncio.to_thread(camera.kill)
    for _ in range(100):
        if not stream.live:
            break
        await asyncio.sleep(0.1)
    assert not stream.live and stream.source.state == "failed"
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        for _ in range(50):  # the API shows why the camera is down (stats refresh each second)
            stats = (await http.get("/api/v1/streams/court-cam")).json()["stats"] or {}
            if stats.get("source", {}).get("state") == "failed":
                break
            await asyncio.sleep(0.1)
    assert stats["source"]["state"] == "failed" and stats["source"]["reason"]
    assert "s3cret" not in json.dumps(stats)
    await asyncio.to_thread(camera.start)
    await wait_live(platform, "court-cam", timeout=30)  # back by itself, no operator
    assert stream.epoch > epoch
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(100):
            text = (await http.get(playlist)).text
            if "#EXT-X-DISCONTINUITY" in text:
                break
            await asyncio.sleep(0.1)
    assert "#EXT-X-DISCONTINUITY" in text
    info = await record_hls(playlist, tmp_path / "cam-after.mp4", 2)
    assert stream_info(info, "video")["codec_name"] == "h264"


async def test_a_start_that_fails_stops_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start that fails half-way (here the control room, after the demo rooms, the
    recorder and its listeners are up) stops what it had started before raising: the caller
    has no platform to stop, and what stayed running kept the test runner's loop teardown
    waiting for ever (the whole suite stalled at the first failing portal test)."""
    from control_room.role import ControlRoomRole

    async def refuse(self: ControlRoomRole) -> None:
        raise RuntimeError("control room refuses to start")

    monkeypatch.setattr(ControlRoomRole, "start", refuse)
    before = asyncio.all_tasks()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="refuses"):
        await start_platform(tmp_path, **{"demo.enabled": True, "demo.rooms": 2})
    took = time.monotonic() - started
    assert took < 10, took
    left = asyncio.all_tasks() - before
    if left:  # work that ends by itself may finish (a slate being encoded in a thread)
        _, left = await asyncio.wait(left, timeout=5)
    assert not left, f"tasks left running: {sorted(t.get_name() for t in left)}"
    encoders = [t.name for t in threading.enumerate() if t.name.startswith("demo-")]
    assert not encoders, f"demo encoders left running: {encoders}"


async def test_accepted_connections_send_small_writes_at_once() -> None:
    # asyncio turns Nagle off only on sockets made with proto IPPROTO_TCP; with Nagle on,
    # a response written as headers then body waits ~40 ms for the client's delayed ACK
    # on every kept-alive request (measured: 44 ms for a refused LL-HLS play)
    nodelay: list[int] = []

    async def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=bind_socket("127.0.0.1", 0, "http.port"))
    async with server:
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
    assert nodelay and nodelay[0] != 0, f"TCP_NODELAY on the accepted socket: {nodelay}"
