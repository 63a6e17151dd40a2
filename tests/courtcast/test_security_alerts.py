"""Security analysis (issue 17, items 1, 2 and 4) on the real platform: synthetic cameras
with known ground truth (tests/fixtures/scenes.py: a noisy still scene, and a square, black
frames, blur, a pan or a frozen picture at known times) published by ffmpeg over RTMP;
alerts read over the API as an operator would, clips and snapshots fetched and decoded."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest

from core.courts import CourtTree
from courtcast.platform import Platform
from media_server.analysis.settings import AnalysisSettings
from media_server.media import Item, Packet
from media_server.streams import StreamClass
from media_server.tap import tap
from tests.courtcast.test_platform import (
    base_url,
    cancel,
    define,
    media_role,
    platform,  # noqa: F401 (a fixture)
    run,
    scrape,
)
from tests.fixtures.scenes import Scene, Square, Walker, make_scene

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery"
ZONE = {"name": "right half", "points": [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]}
TAMPER = ("covered", "defocused", "moved", "frozen")


async def user(node: Platform, name: str, role: str, court: str = "") -> httpx.AsyncClient:
    await node.roles[-1].users.add(name, role, PASSWORD, court)  # type: ignore[attr-defined]
    http = httpx.AsyncClient(base_url=base_url(node), timeout=15)
    login = await http.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return http


async def publish(node: Platform, clip: Path, stream: str, key: str, *rate: str) -> Any:
    """ffmpeg sending the clip over RTMP (at its own pace, -re, unless rate says)."""
    url = f"rtmp://127.0.0.1:{media_role(node).rtmp_port}/live/{stream}?key={key}"
    pace = list(rate) or ["-re"]
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *pace, "-i", str(clip)]
    return asyncio.create_task(run(*cmd, "-c", "copy", "-f", "flv", url))


def first_packet_clock(node: Platform, stream_id: str) -> list[float]:
    """Arrival wall-clock of the stream's first video packet, once it comes: t = 0 of
    the scene (ffmpeg -re sends at the media's pace)."""
    seen: list[float] = []

    def on_item(item: Item) -> None:
        if isinstance(item, Packet) and item.track == 0 and not seen:
            seen.append(item.arrival)

    tap(media_role(node).hub.stream(stream_id), "test-clock", on_item)
    return seen


async def alerts(http: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    answer = await http.get("/api/v1/alerts", params=query)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def fetch(http: httpx.AsyncClient, url: str) -> bytes:
    """A signed object URL, asked of this platform (its public URL names the configured
    port, not the test's)."""
    parts = urlsplit(url)
    answer = await http.get(f"{parts.path}?{parts.query}")
    assert answer.status_code == 200, (url, answer.status_code)
    return answer.content


async def configure(http: httpx.AsyncClient, node: Platform, stream: str, **settings: Any) -> None:
    answer = await http.put(f"/api/v1/streams/{stream}/analysis", json=settings)
    assert answer.status_code == 200, answer.text
    analysis = media_role(node).analysis
    for _ in range(100):  # the media server follows the change (pub/sub)
        running = analysis.streams.get(stream)
        if running is not None and running.settings == AnalysisSettings(**answer.json()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream}: the analysis did not take its new settings")


async def test_motion_in_a_zone_and_each_kind_of_tamper(
    platform: Platform,  # noqa: F811
    tmp_path: Path,
) -> None:
    state = platform.roles[0].state  # type: ignore[attr-defined]
    await CourtTree(state).ensure("c-a")
    await CourtTree(state).ensure("c-b")
    scenes = {
        # a square moves outside the zone all along; another enters the zone at t = 10 s
        "sec-zone": Scene(
            squares=[Square(0, 20, (0.05, 0.4), 0.3), Square(10, 14, (0.7, 0.9), 0.7)]
        ),
        "sec-black": Scene(black=(8, 14)),
        "sec-blur": Scene(blur=(8, 14)),
        "sec-pan": Scene(pan_at=8),
        "sec-freeze": Scene(freeze=(8, 14)),
        # a person walks in the zone from t = 6 s (a square moves there before: no person)
        "sec-person": Scene(
            squares=[Square(1, 5, (0.6, 0.9), 0.2)], walkers=[Walker(6, 14, (0.6, 0.9))]
        ),
    }
    keys = {
        sid: await define(platform, sid, stream_class=StreamClass.security, court="c-a")
        for sid in scenes
    }
    clips = {sid: make_scene(tmp_path / f"{sid}.mp4", 20, scene) for sid, scene in scenes.items()}
    technician = await user(platform, "tech", "technician")
    operator = await user(platform, "op-a", "operator", "c-a")
    elsewhere = await user(platform, "op-b", "operator", "c-b")
    publishers = []
    try:
        for sid in scenes:  # every security stream is analysed by default
            assert sid in media_role(platform).analysis.streams
        await configure(technician, platform, "sec-zone", zones=[ZONE])
        detectors = {"person": True}
        await configure(technician, platform, "sec-person", zones=[ZONE], detectors=detectors)
        clocks = {sid: first_packet_clock(platform, sid) for sid in scenes}
        live = asyncio.create_task(listen(state, "sec-zone"))
        await asyncio.sleep(0.2)  # subscribed
        publishers = [await publish(platform, clips[s], s, keys[s]) for s in scenes]
        await asyncio.wait_for(asyncio.gather(*publishers), 40)
        await asyncio.sleep(7)  # the post-roll of the last episodes, and their ends
        found = await alerts(operator)
    finally:
        for task in publishers:
            await cancel(task)
        await cancel(live)
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for item in found:
        by_stream.setdefault(str(item["stream"]), []).append(item)
    summary = {
        s: sorted((i["type"], round(i["start"] - clocks[s][0], 2)) for i in items)
        for s, items in by_stream.items()
    }
    print(json.dumps(summary))

    # motion: one alert, for the square in the zone, within a second of it; none before
    motion = [i for i in by_stream["sec-zone"] if i["type"] == "motion"]
    assert len(motion) == 1, summary["sec-zone"]
    late = motion[0]["start"] - (clocks["sec-zone"][0] + 10)
    assert -0.3 <= late <= 1.0, late
    assert not [i for i in by_stream["sec-zone"] if i["type"] in TAMPER], summary["sec-zone"]
    assert motion[0]["end"] is not None and motion[0]["end"] > motion[0]["start"]
    # and live, on the alerts channel: its start, its clip, its end, as they happened
    told = [(m["phase"], m["received"]) for m in messages if m["alert"]["type"] == "motion"]
    assert [phase for phase, _ in told] == ["start", "clip", "end"], told
    latency = told[0][1] - motion[0]["start"]  # from the arrival of the picture that showed it
    print(f"motion in the zone -> live alert message: {latency:.3f} s")
    assert 0 < latency < 1.0, latency
    first = next(m for m in messages if m["phase"] == "start")
    assert first["type"] == "alert" and first["alert"]["court"] == "c-a"
    assert first["alert"]["snapshot"].startswith("http"), first  # a signed URL

    # tamper: each its own type, once, from t = 8 s (after the detector's rise time)
    for sid, kind in [
        ("sec-black", "covered"),
        ("sec-blur", "defocused"),
        ("sec-pan", "moved"),
        ("sec-freeze", "frozen"),
    ]:
        tamper = [i for i in by_stream.get(sid, []) if i["type"] in TAMPER]
        assert [i["type"] for i in tamper] == [kind], (sid, summary.get(sid))
        at = tamper[0]["start"] - clocks[sid][0]
        assert 7.5 <= at <= 11.0, (sid, at)

    # a person: one alert, when the walker came in; the square before it is no person
    person = [i for i in by_stream["sec-person"] if i["type"] == "person"]
    assert len(person) == 1, summary["sec-person"]
    at = person[0]["start"] - clocks["sec-person"][0]
    assert 5.7 <= at <= 7.5, at

    # the clip decodes, lasts pre-roll + post-roll, and opens before the square came in
    clip = await fetch(operator, motion[0]["clip"])
    (tmp_path / "clip.mp4").write_bytes(clip)
    code, out = await run(
        "ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format",
        "-of", "json", str(tmp_path / "clip.mp4"),
    )  # fmt: skip
    assert code == 0, out
    probe = json.loads(out)
    assert probe["streams"][0]["codec_name"] == "h264"
    assert float(probe["format"]["duration"]) >= 9.0, probe["format"]
    assert int(probe["streams"][0]["nb_read_frames"]) >= 90
    frames = decode(tmp_path / "clip.mp4")
    assert not square_in_zone(frames[0]) and any(square_in_zone(f) for f in frames)
    snapshot = await fetch(operator, motion[0]["snapshot"])
    assert snapshot[:3] == b"\xff\xd8\xff"  # JPEG
    picture = cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert picture is not None and picture.shape == (240, 320)
    assert square_in_zone(picture)

    # scope: another court's operator sees none of it, and cannot ack it (404)
    assert not await alerts(elsewhere)
    alert_id = motion[0]["id"]
    refused = await elsewhere.post(f"/api/v1/alerts/{alert_id}/ack", json={"note": "x"})
    assert refused.status_code == 404, refused.text
    # ack with a note: on the alert, and in the audit trail
    acked = await operator.post(f"/api/v1/alerts/{alert_id}/ack", json={"note": "cleaner"})
    assert acked.status_code == 200, acked.text
    again = (await operator.get(f"/api/v1/alerts/{alert_id}")).json()
    assert again["ack"]["note"] == "cleaner" and again["ack"]["who"] == "op-a"
    admin = await user(platform, "boss", "admin")
    trail = (await admin.get("/api/v1/audit", params={"action": "alert.ack"})).json()["entries"]
    assert [(e["who"], e["alert"], e["note"]) for e in trail] == [("op-a", alert_id, "cleaner")]
    # filters
    assert {i["type"] for i in await alerts(operator, type="frozen")} == {"frozen"}
    assert {i["stream"] for i in await alerts(operator, stream="sec-pan")} == {"sec-pan"}
    assert not await alerts(operator, since=str(time.time() + 60))

    metrics = await scrape(platform)
    assert metrics[("courtcast_analysis_pictures_total", "sec-zone")] >= 35
    assert metrics[("courtcast_analysis_skipped_packets_total", "sec-zone")] == 0

    # analysis turned off: the stream's open alert (its signal, lost since the clip ended)
    # ends, it does not stay open for ever
    [lost] = await alerts(operator, stream="sec-zone", type="signal_loss")
    assert lost["end"] is None, lost
    off = await technician.put("/api/v1/streams/sec-zone/analysis", json={"enabled": False})
    assert off.status_code == 200, off.text
    for _ in range(50):
        [lost] = await alerts(operator, stream="sec-zone", type="signal_loss")
        if lost["end"] is not None:
            break
        await asyncio.sleep(0.1)
    assert lost["end"] is not None and "sec-zone" not in media_role(platform).analysis.streams
    for http in (technician, operator, elsewhere, admin):
        await http.aclose()


messages: list[dict[str, Any]] = []


async def listen(state: Any, stream: str) -> None:
    """What a websocket would carry: the alerts channel's messages of one stream, with
    the time each came."""
    messages.clear()
    async with state.subscribe("alerts") as channel:
        async for message in channel:
            if message["alert"]["stream"] == stream:
                messages.append({**message, "received": time.time()})


def decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray") for f in container.decode(video=0)]


def square_in_zone(picture: np.ndarray) -> bool:
    """The bright square of the zone (lower right; the scene has nothing above 225)."""
    height, width = picture.shape
    return int((picture[height // 2 :, width // 2 :] > 225).sum()) > 300


async def test_a_calm_scene_raises_nothing_and_a_lost_signal_is_told_with_its_end(
    platform: Platform,  # noqa: F811
    tmp_path: Path,
) -> None:
    """5 minutes of a calm scene with sensor noise (sent 10x faster than real time:
    analysis judges media time), then a publisher killed and back."""
    key = await define(platform, "sec-calm", stream_class=StreamClass.security)
    technician = await user(platform, "tech", "technician")
    operator = await user(platform, "op", "operator")
    await configure(technician, platform, "sec-calm", signal_loss_s=2.0)
    # settings: technicians and admins only, checked, audited with before and after
    assert (await operator.put("/api/v1/streams/sec-calm/analysis", json={})).status_code == 403
    outside = {"zones": [{"points": [[0, 0], [1.5, 0], [1, 1]]}]}
    bad = await technician.put("/api/v1/streams/sec-calm/analysis", json=outside)
    assert bad.status_code == 422, bad.text
    unknown = await technician.put("/api/v1/streams/nope/analysis", json={})
    assert unknown.status_code == 404, unknown.text
    admin = await user(platform, "boss", "admin")
    trail = (await admin.get("/api/v1/audit", params={"action": "stream.analysis"})).json()
    [entry] = trail["entries"]
    assert (entry["who"], entry["stream"]) == ("tech", "sec-calm")
    assert (entry["before"]["signal_loss_s"], entry["after"]["signal_loss_s"]) == (5.0, 2.0)
    await admin.aclose()
    calm = make_scene(tmp_path / "calm.mp4", 30, Scene(seed=11))
    short = make_scene(tmp_path / "short.mp4", 10, Scene(seed=11))
    # the 30 s ten times over: 5 minutes of video, sent in 30 s
    first = await publish(platform, calm, "sec-calm", key, "-stream_loop", "9", "-readrate", "10")
    code, out = await asyncio.wait_for(first, 60)
    assert code == 0, out
    analysed = media_role(platform).analysis.streams["sec-calm"].sampler
    assert analysed.pictures >= 590, analysed.pictures  # 2 a second of the 300 s
    assert analysed.skipped == 0
    assert await alerts(operator) == []

    second = await publish(platform, short, "sec-calm", key)
    await asyncio.sleep(4)
    killed_at = time.time()
    await cancel(second)  # kill -9: the connection just drops
    await asyncio.sleep(3.5)
    lost = await alerts(operator, type="signal_loss")
    assert len(lost) == 1 and lost[0]["end"] is None, lost
    assert killed_at - 1.0 <= lost[0]["start"] <= killed_at + 0.5, lost[0]["start"] - killed_at
    back_at = time.time()
    third = await publish(platform, short, "sec-calm", key)
    try:
        for _ in range(60):
            lost = await alerts(operator, type="signal_loss")
            if lost[0]["end"] is not None:
                break
            await asyncio.sleep(0.1)
        assert lost[0]["end"] is not None and back_at <= lost[0]["end"] <= back_at + 3, lost
        assert lost[0]["clip"], lost[0]  # the last seconds before the loss
        assert [i["type"] for i in await alerts(operator)] == ["signal_loss"]
    finally:
        await cancel(third)
    await technician.aclose()
    await operator.aclose()
