"""Backfill against the real platform (embedded Redis, objects on disk and on S3 through
SeaweedFS, ffmpeg over RTMP):
a trial recording with a publisher-lost gap is filled by fMP4 segments made the way a
device agent makes them (the same Segmenter, wall-clock from the agent's clock), uploaded
over the BACKFILL_* API with a device's bearer credential. The gap closes, verify says
complete, the playlist plays the backfilled part in its place (decoded by ffprobe) while
the open recording's EVENT playlist only grew, an export across the gap decodes, and
every refusal is the right one. Then the agent's uploader (device_agents/backfill.py)
does the same from a real Ring, and a restart of it uploads nothing twice."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_room.devices import DeviceRegistry
from courtcast.platform import Platform
from device_agents.backfill import Backfill
from device_agents.protocol import (
    BACKFILL_GAPS_PATH,
    BACKFILL_INIT_PATH,
    BACKFILL_SEGMENT_PATH,
    EnrolRequest,
    EnrolResponse,
    SourceInfo,
    bearer,
)
from device_agents.ring import Ring
from media_server.hls.segmenter import Segment, Segmenter
from media_server.media import StreamStart
from recorder.manifest import FILL_HOLE_S, Manifest, merged, overlap
from recorder.verify import verify_recording
from storage.recording_keys import manifest_key, recording_prefix
from tests.courtcast.test_platform import (
    base_url,
    cancel,
    media_role,
    probe,
    push,
    start_platform,
)
from tests.fixtures.s3 import S3Server
from tests.mediafiles import load_clip, make_clip
from tests.recorder.conftest import decoded_video
from tests.recorder.test_platform_recording import cli, recorder_role

pytestmark = pytest.mark.timeout(150)
FPS = 25
PUSHES: list[asyncio.Task[tuple[int, str]]] = []  # ffmpeg publishers, ended at teardown


@pytest.fixture(autouse=True)
async def _end_publishers() -> AsyncIterator[None]:
    yield
    while PUSHES:
        await cancel(PUSHES.pop())


@dataclass
class Made:
    """What an agent's ring would hold: an init and closed segments with wall-clock."""

    init: bytes
    segments: list[Segment]


def agent_segments(clip: Path, wallclock: float, seconds: float) -> Made:
    """Cut the clip (looped as needed) into 2 s fMP4 segments as the agent's ring recorder
    does, its first sample at `wallclock`."""
    tracks, packets = load_clip(clip)
    segmenter = Segmenter(2.0, 0.5, window_segments=1000, prft=True)
    segmenter.feed(StreamStart(tracks, 1))
    clip_s = max(p.dts / tracks[p.track].timescale for p in packets)
    loops = int(seconds // clip_s) + 1
    for n in range(loops):
        for p in packets:
            t = p.dts / tracks[p.track].timescale + n * (clip_s + 1 / FPS)
            if t > seconds:
                continue
            shift = round(n * (clip_s + 1 / FPS) * tracks[p.track].timescale)
            segmenter.feed(replace(p, dts=p.dts + shift, pts=p.pts + shift, arrival=wallclock + t))
    segmenter.end_run()
    return Made(next(iter(segmenter.inits.values())), list(segmenter.segments))


async def enrol_device(node: Platform, room: str) -> EnrolResponse:
    registry = DeviceRegistry(node.roles[0].state)  # type: ignore[attr-defined]
    token = await registry.make_enrol_token("c1", room)
    return await registry.enroll(
        EnrolRequest(token=token, sources=[SourceInfo(name="cam", kind="test")]),
        f"rtmp://127.0.0.1:{media_role(node).rtmp_port}/live",
    )


def client(node: Platform, device: EnrolResponse | None) -> httpx.AsyncClient:
    headers = {"Authorization": bearer(device.device_id, device.device_secret)} if device else {}
    return httpx.AsyncClient(base_url=base_url(node), headers=headers, timeout=30)


async def put_segment(
    http: httpx.AsyncClient, rid: str, stream: str, seg: Segment, init: str, sha: str | None = None
) -> httpx.Response:
    data = seg.data()
    return await http.put(
        BACKFILL_SEGMENT_PATH.format(recording_id=rid),
        content=data,
        params={
            "stream": stream,
            "start": seg.wallclock,
            "duration": seg.duration,
            "init": init,
            "media_start": seg.start,
        },
        headers={"X-Content-SHA256": sha or hashlib.sha256(data).hexdigest()},
    )


async def record_with_gap(
    node: Platform, tmp_path: Path, stream: str, key: str, away_s: float = 3.0
) -> tuple[str, asyncio.Task[tuple[int, str]]]:
    """Publish 6 s, open the session while live, lose the publisher ~3 s, publish again:
    the open recording's id (a publisher-lost gap in it) and the second publisher, still
    publishing for a while (close the session before it ends: no trailing gap)."""
    rtmp = f"rtmp://127.0.0.1:{media_role(node).rtmp_port}/live/{stream}?key={key}"
    hub = media_role(node).hub
    first = asyncio.create_task(push(make_clip(tmp_path, seconds=6, fps=FPS, gop=FPS), rtmp))
    PUSHES.append(first)
    for _ in range(200):
        if (s := hub.find(stream)) is not None and s.live and s.tracks:
            break
        await asyncio.sleep(0.05)
    role = recorder_role(node)
    await role.sessions.open("r1", "B-9", "backfill", public=True)
    for _ in range(100):
        if role.active:
            break
        await asyncio.sleep(0.05)
    [recording] = role.active.values()
    assert (await first)[0] == 0
    await asyncio.sleep(away_s)
    second = asyncio.create_task(push(make_clip(tmp_path, seconds=14, fps=FPS, gop=FPS), rtmp))
    PUSHES.append(second)
    for _ in range(200):  # the gap is closed once the second publication's segment starts
        if recording.manifest.gaps:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.5)
    return str(recording.id), second


@pytest.mark.parametrize("backend", ["disk", "s3"])
async def test_backfill_fills_the_gap_verifies_and_plays(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {"recorder.segment_target_s": 2.0}
    cli_config: list[str] = []
    if backend == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        objects = {
            "backend": "s3",
            "s3": {
                "endpoint": s3.endpoint,
                "access_key": s3.access_key,
                "secret_key": s3.secret_key,
                "bucket": f"bf-{uuid.uuid4().hex[:12]}",
            },
        }
        settings |= {"objects.backend": "s3", "objects.s3": objects["s3"]}
        config = tmp_path / "s3.json"  # JSON is YAML: the CLI reads the same store
        config.write_text(json.dumps({"objects": objects}))
        cli_config = ["--config", str(config)]
    node = await start_platform(tmp_path, **settings)
    try:
        await run_backfill_scenario(node, tmp_path, cli_config)
    finally:
        await node.stop()


async def run_backfill_scenario(
    node: Platform, tmp_path: Path, cli_config: list[str] | None = None
) -> None:
    device = await enrol_device(node, "r1")
    other = await enrol_device(node, "r2")
    stream = device.streams["cam"].main.stream_id
    role = recorder_role(node)
    rid, publisher = await record_with_gap(node, tmp_path, stream, device.streams["cam"].main.key)
    live = role.find(rid)
    assert live is not None
    [gap] = [g for g in live.manifest.gaps if g.cause == "publisher-lost"]
    # 3 s away, plus ffmpeg's start, which takes seconds on a loaded machine
    assert 2.5 <= gap.end - gap.start <= 9, gap
    # the agent recorded all along: a different encode (B-frames) so its init is its own
    made = agent_segments(
        make_clip(tmp_path, seconds=4, fps=FPS, gop=FPS, bframes=2),
        gap.start - 3.0,
        gap.end - gap.start + 6.0,
    )
    needed = [
        s
        for s in made.segments
        if min(s.wallclock + s.duration, gap.end) - max(s.wallclock, gap.start) >= 0.1
    ]
    outside = made.segments[0]  # [gap.start - 3, - 1]: recorded media is there
    assert outside.wallclock + outside.duration <= gap.start
    async with (
        client(node, device) as http,
        client(node, other) as intruder,
        client(node, None) as anonymous,
    ):
        # who may ask
        gaps = await http.get(BACKFILL_GAPS_PATH, params={"stream": stream})
        assert gaps.status_code == 200, gaps.text
        assert [(g["recording_id"], g["start"], g["end"]) for g in gaps.json()] == [
            (rid, gap.start, gap.end)
        ]
        assert (
            await anonymous.get(BACKFILL_GAPS_PATH, params={"stream": stream})
        ).status_code == 401
        assert (
            await intruder.get(BACKFILL_GAPS_PATH, params={"stream": stream})
        ).status_code == 403
        wrong = client(node, replace_secret(device))
        assert (await wrong.get(BACKFILL_GAPS_PATH, params={"stream": stream})).status_code == 401
        await wrong.aclose()
        init_url = BACKFILL_INIT_PATH.format(recording_id=rid)
        assert (await intruder.put(init_url, content=made.init)).status_code == 403
        # the init: stored once, then a duplicate with the same name
        first = await http.put(init_url, content=made.init)
        assert first.status_code == 201 and first.json() == {
            "status": "stored",
            "init": "init-bf0.mp4",
        }
        again = await http.put(init_url, content=made.init)
        assert again.status_code == 200 and again.json()["init"] == "init-bf0.mp4"
        h265 = agent_segments(
            make_clip(tmp_path, seconds=2, fps=FPS, gop=FPS, video="h265"), gap.start, 2.0
        )
        refused = await http.put(init_url, content=h265.init)
        assert refused.status_code == 409 and "hvc1" in refused.text, refused.text
        # bad uploads
        bad_sha = await put_segment(http, rid, stream, needed[0], "init-bf0.mp4", "0" * 64)
        assert bad_sha.status_code == 400 and "SHA256" in bad_sha.text
        no_gap = await put_segment(http, rid, stream, outside, "init-bf0.mp4")
        assert no_gap.status_code == 409 and "no gap there" in no_gap.text
        assert (
            await put_segment(intruder, rid, stream, needed[0], "init-bf0.mp4")
        ).status_code == 403
        # half while the recording is open (through the live writer) ...
        half = len(needed) // 2
        for seg in needed[:half]:
            answer = await put_segment(http, rid, stream, seg, "init-bf0.mp4")
            assert answer.status_code == 201, answer.text
        assert sum(s.backfilled for s in live.manifest.segments) == half
        staff = await clerk(node)  # recordings are evidence: signed-in staff only
        await check_open_playlists(staff, rid)
        # ... the rest once it is closed and signed (load, change, re-sign)
        sessions = await role.sessions.list("open")
        await role.sessions.close(sessions[0].id)
        await asyncio.sleep(0.5)
        await role.wait_closed()
        assert role.find(rid) is None
        assert (await publisher)[0] == 0
        answers = [
            await put_segment(http, rid, stream, seg, "init-bf0.mp4") for seg in needed[half:]
        ]
        assert [a.status_code for a in answers] == [201] * len(answers), answers[-1].text
        assert answers[-1].json()["gap_filled"] is True
        # nothing twice: the same content again is a duplicate, nothing new is stored
        objects = node.roles[0].objects  # type: ignore[attr-defined]
        stored = {o.key for o in await objects.list(recording_prefix(rid))}
        dup = await put_segment(http, rid, stream, needed[0], "init-bf0.mp4")
        assert dup.status_code == 200 and dup.json() == {"status": "duplicate"}
        assert {o.key for o in await objects.list(recording_prefix(rid))} == stored
        assert (await http.get(BACKFILL_GAPS_PATH, params={"stream": stream})).json() == []
        playlist = (await staff.get(f"/api/v1/recordings/{rid}/index.m3u8")).text
        clip = tmp_path / "across-the-gap.mp4"
        await export_across(staff, rid, gap.start - 2.0, gap.end + 1.5, clip)
        bearer = str(staff.headers["authorization"])
        await staff.aclose()

    report = await verify_recording(objects, rid, role.signer.public)
    assert report.ok and report.signed and report.complete, report.summary()
    assert report.backfilled_segments == len(needed) and report.filled_gaps == 1
    verified = await cli(
        "recordings", "verify", rid, "--data-dir", str(tmp_path / "data"), *(cli_config or [])
    )
    assert verified.returncode == 0 and "complete, no gaps" in verified.stdout, verified.stdout

    check_playlist(playlist, needed, gap.start, gap.end)
    manifest = Manifest.from_bytes(await objects.get(manifest_key(rid)))
    assert [g.filled_by for g in manifest.gaps] == ["backfill"]
    recorded = sum(s.duration for s in manifest.segments)
    info = await probe(f"{base_url(node)}/api/v1/recordings/{rid}/index.m3u8", bearer)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert abs(int(video["nb_read_frames"]) / FPS - recorded) <= 1.0, (video, recorded)


async def check_open_playlists(http: httpx.AsyncClient, rid: str) -> None:
    """While the recording is open: its EVENT playlist has only live segments (it may only
    grow at its end), the snapshot has the backfilled ones in the gap."""
    url = f"/api/v1/recordings/{rid}/index.m3u8"
    event = (await http.get(url)).text
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "init-bf0" not in event, event
    snapshot = (await http.get(url, params={"snapshot": "1"})).text
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in snapshot and '"init-bf0.mp4"' in snapshot, snapshot
    assert snapshot.rstrip().endswith("#EXT-X-ENDLIST")


async def clerk(node: Platform) -> httpx.AsyncClient:
    """A client signed in as a clerk (exports are for clerks)."""
    from control_room.users import Users

    await Users(node.roles[0].state).add("clerk1", "clerk", "pw-123456789")  # type: ignore[attr-defined]
    http = httpx.AsyncClient(base_url=base_url(node), timeout=60)
    token = (
        await http.post("/api/v1/login", json={"name": "clerk1", "password": "pw-123456789"})
    ).json()
    http.headers["authorization"] = f"Bearer {token['token']}"
    return http


async def export_across(
    http: httpx.AsyncClient, rid: str, start: float, end: float, out: Path
) -> None:
    """The HTTP export of [start, end): wall-clock order over the backfilled part, its
    length about what was asked, every frame decodable across both joins."""
    try:
        response = await http.get(
            f"/api/v1/recordings/{rid}/export.mp4", params={"from": str(start), "to": str(end)}
        )
    finally:
        await http.aclose()
    assert response.status_code == 200, response.text
    out.write_bytes(response.content)
    info = await probe(out)
    assert abs(float(info["format"]["duration"]) - (end - start)) <= 0.5, info["format"]
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert video["codec_tag_string"] == "avc3", video  # the agent's parameter sets in-band
    frames = decoded_video(out)
    assert abs(len(frames) / FPS - (end - start)) <= 0.5, len(frames)
    assert max(b - a for a, b in pairwise(frames)) <= 0.5


def replace_secret(device: EnrolResponse) -> EnrolResponse:
    return device.model_copy(update={"device_secret": "not-the-secret"})


def check_playlist(text: str, needed: list[Segment], gap_start: float, gap_end: float) -> None:
    """The backfilled segments play in the gap, in wall-clock order, behind their own
    EXT-X-MAP and between discontinuities."""
    lines = text.splitlines()
    maps = [line for line in lines if line.startswith("#EXT-X-MAP")]
    assert maps == [
        '#EXT-X-MAP:URI="init.mp4"',
        '#EXT-X-MAP:URI="init-bf0.mp4"',
        '#EXT-X-MAP:URI="init.mp4"',
    ], maps
    at = lines.index('#EXT-X-MAP:URI="init-bf0.mp4"')
    back = lines.index('#EXT-X-MAP:URI="init.mp4"', at)
    assert lines[at - 1] == "#EXT-X-DISCONTINUITY" and lines[back - 1] == "#EXT-X-DISCONTINUITY"
    backfilled = [line for line in lines[at:back] if line.startswith("seg-")]
    assert len(backfilled) == len(needed)
    times = [line.split(":", 1)[1] for line in lines if line.startswith("#EXT-X-PROGRAM")]
    assert times == sorted(times)


async def test_agent_uploader_fills_from_its_ring_once(tmp_path: Path) -> None:
    """device_agents/backfill.py against the same API, from a real Ring: a first uploader
    sends what the ring held when it ran (the gap is not filled yet); the agent restarts
    (new Ring and uploader on the same spool), the ring gets the rest, and the new uploader
    sends only that: nothing twice, and the gap is filled."""
    node = await start_platform(tmp_path, **{"recorder.segment_target_s": 2.0})
    try:
        device = await enrol_device(node, "r1")
        stream = device.streams["cam"].main.stream_id
        rid, publisher = await record_with_gap(
            node, tmp_path, stream, device.streams["cam"].main.key, away_s=5.0
        )
        live = recorder_role(node).find(rid)
        assert live is not None
        [gap] = [g for g in live.manifest.gaps if g.cause == "publisher-lost"]
        made = agent_segments(
            make_clip(tmp_path, seconds=4, fps=FPS, gop=FPS, bframes=2),
            gap.start - 8.0,
            gap.end - gap.start + 12.0,
        )
        # the ring when the first uploader runs: up to the first segment in the gap (one
        # 2 s segment cannot cover a 5 s gap)
        first_in = next(
            n
            for n, s in enumerate(made.segments)
            if min(s.wallclock + s.duration, gap.end) - max(s.wallclock, gap.start) >= 0.1
        )
        early = made.segments[: first_in + 1]
        auth = bearer(device.device_id, device.device_secret)
        first = await upload_from_ring(tmp_path, node, auth, stream, made.init, early)
        assert first.uploaded >= 1 and first.pending == 0 and not gap.filled
        second = await upload_from_ring(
            tmp_path, node, auth, stream, made.init, made.segments[len(early) :]
        )
        assert second.uploaded >= 1 and second.duplicates == 0 and gap.filled
        backfilled = [s for s in live.manifest.segments if s.backfilled]
        assert len(backfilled) == first.uploaded + second.uploaded
        assert len({s.sha256 for s in backfilled}) == len(backfilled)
        await publisher
    finally:
        await node.stop()


async def test_agent_uploader_comes_back_for_a_short_gap_its_ring_was_not_past(
    tmp_path: Path,
) -> None:
    """A short gap (a media node died, the publisher moved within seconds): the round runs
    while the ring has recorded only into the gap; the server marks the gap filled within
    its edge tolerance and no longer lists it. The same uploader's next round still sends
    the ring's segment that reaches past the gap's end: the gap is covered whole."""
    node = await start_platform(tmp_path, **{"recorder.segment_target_s": 2.0})
    try:
        device = await enrol_device(node, "r1")
        stream = device.streams["cam"].main.stream_id
        rid, publisher = await record_with_gap(
            node, tmp_path, stream, device.streams["cam"].main.key, away_s=1.0
        )
        live = recorder_role(node).find(rid)
        assert live is not None
        [gap] = [g for g in live.manifest.gaps if g.cause == "publisher-lost"]
        made = agent_segments(
            make_clip(tmp_path, seconds=4, fps=FPS, gop=FPS // 2),
            gap.start - 1.5,  # the first segment ends ~1 s into the gap: filled (tolerance)
            gap.end - gap.start + 5.0,
        )
        ring = Ring(tmp_path / "spool", 1 << 30)
        name = ring.add_init(stream, made.init)
        uploader = Backfill(ring, base_url(node), bearer(device.device_id, device.device_secret),
                            [stream])  # fmt: skip
        try:
            for seg in made.segments:  # the ring records on; a round after each segment
                ring.add_segment(stream, name, seg.wallclock, seg.duration, seg.start, seg.data())
                await uploader.run_once()
            spans = merged(sorted((s.start, s.end) for s in live.manifest.segments if s.backfilled))
            covered = sum(overlap(a, b, gap.start, gap.end) for a, b in spans)
            assert gap.filled and covered >= gap.end - gap.start - FILL_HOLE_S, (gap, spans)
            assert uploader.unfinished == 0
        finally:
            await uploader.stop()
        await publisher
    finally:
        await node.stop()


async def upload_from_ring(
    tmp_path: Path, node: Platform, auth: str, stream: str, init: bytes, segments: list[Segment]
) -> Backfill:
    """An agent run: a Ring on the spool (what earlier runs left is loaded), these new
    segments recorded into it, one backfill round."""
    ring = Ring(tmp_path / "spool", 1 << 30)
    name = ring.add_init(stream, init)
    for seg in segments:
        ring.add_segment(stream, name, seg.wallclock, seg.duration, seg.start, seg.data())
    uploader = Backfill(ring, base_url(node), auth, [stream])
    try:
        await uploader.run_once()
    finally:
        await uploader.stop()
    return uploader
