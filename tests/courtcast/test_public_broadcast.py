"""The public sees a trial only through its delayed public rendition, while a session
approved for broadcast is open in its room (issue 16, items 2, 3 and 7): the live stream
itself is never public, unknown and private things answer 404 alike, a cut shows a slate
and nothing captured in the held window or the cut reaches a public URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

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
from tests.media_server.test_webrtc_http import open_viewer
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    node = await start_platform(tmp_path)
    yield node
    await node.stop()


async def rtmp_play_bytes(node: Platform, name: str, seconds: float = 3.0) -> int:
    """What an anonymous RTMP player receives in a few seconds (media is tens of kB)."""
    client = await RawRtmpClient.connect(media_role(node).rtmp_port)
    received = 0
    try:
        await client.play(name)
        async with asyncio.timeout(seconds):
            while chunk := await client.reader.read(65536):
                received += len(chunk)
    except TimeoutError:
        pass
    finally:
        await client.close()
    return received


async def test_the_live_trial_stream_is_never_public(platform: Platform, tmp_path: Path) -> None:
    """The `public` flag of a trial stream means "may be broadcast": /live/, WHEP and RTMP
    play still need a signed-in operator or a play token (today they served anyone)."""
    clip = make_clip(tmp_path, seconds=20, fps=25, gop=25)
    key = await define(platform, "court-p", public=True, room="r-p")
    url = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/court-p?key={key}"
    publisher = asyncio.create_task(push(clip, url))
    try:
        await wait_live(platform, "court-p")
        async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
            hls = await http.get("/live/court-p/index.m3u8")
        assert hls.status_code == 404, hls.text[:200]
        viewer = await open_viewer(base_url(platform), "court-p")
        await viewer.pc.close()
        assert viewer.response.status_code == 404, viewer.response.text[:200]
        assert await rtmp_play_bytes(platform, "court-p") < 5_000
    finally:
        await cancel(publisher)


# -- helpers for a platform with a clerk and a broadcast camera ------------------------

PASSWORD = "correct horse battery"
ROUTES = (
    "index.m3u8",
    "index.m3u8?_HLS_msn=1&_HLS_part=0",
    "part-1.0.m4s",
    "seg-1.m4s",
    "init-1.mp4",
)


async def signed_in(node: Platform, role: str = "admin") -> httpx.AsyncClient:
    users = node.roles[-1].users  # type: ignore[attr-defined]
    await users.add(f"u-{role}", role, PASSWORD)
    http = httpx.AsyncClient(base_url=base_url(node), timeout=15)
    login = await http.post("/api/v1/login", json={"name": f"u-{role}", "password": PASSWORD})
    assert login.status_code == 200, login.text
    return http


async def open_session(http: httpx.AsyncClient, room: str, **fields: object) -> dict[str, object]:
    answer = await http.post(
        "/api/v1/sessions", json={"room": room, "case_number": f"(2026)豫01刑初{room}号", **fields}
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


async def public_list(http: httpx.AsyncClient) -> dict[str, list[dict[str, object]]]:
    answer = await http.get("/api/v1/public/sessions")
    assert answer.status_code == 200, answer.text
    body: dict[str, list[dict[str, object]]] = answer.json()
    return body


def ids(items: list[dict[str, object]]) -> set[object]:
    return {item["id"] for item in items}


async def test_nothing_but_an_open_public_session_is_served_or_listed(
    platform: Platform,
) -> None:
    """Guessed ids, a private session, a closed one, an arraignment room and a security
    camera: every public route answers the same 404. A scheduled session is listed as
    upcoming, then live; a session not approved for broadcast never is."""
    await define(platform, "court-q", public=True, room="r-q", court="c1")
    await define(platform, "court-z", public=True, room="r-z", court="c1")
    await define(platform, "court-q2", public=True, room="r-q2", court="c1")
    await define(platform, "arr-1", stream_class=StreamClass.arraignment, public=True, room="a1")
    await define(platform, "hall-1", stream_class=StreamClass.security, public=True, room="h1")
    http = await signed_in(platform)
    try:
        private = await open_session(http, "r-q", public=False)
        arraignment = await open_session(http, "a1", public=True)
        security = await open_session(http, "h1", public=True)
        closed = await open_session(http, "r-z", public=True)
        assert (await http.post(f"/api/v1/sessions/{closed['id']}/close")).status_code == 200
        soon = time.time() + 600
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(soon))
        scheduled = await open_session(http, "r-q2", at=f"{stamp}Z", public=True, delay=4)
        assert scheduled["state"] == "scheduled"

        guessed = ["s-20261206-000000", "court-q", "hall-1", "arr-1", "..", "%2e%2e"]
        names = [private["id"], arraignment["id"], security["id"], closed["id"], *guessed]
        async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as anonymous:
            for name in names:
                for route in ROUTES:
                    answer = await anonymous.get(f"/public/{name}/{route}")
                    assert answer.status_code == 404, (name, route, answer.status_code)
                    assert answer.json() == {"detail": "Not Found"}, (name, route)
            listed = await public_list(anonymous)
        assert not ids(listed["live"]), listed  # no camera that may be broadcast is open
        assert ids(listed["finished"]) == {closed["id"]}
        assert ids(listed["upcoming"]) == {scheduled["id"]}
        assert private["id"] not in str(listed)
        upcoming = listed["upcoming"][0]
        assert upcoming["case"] == "(2026)豫01刑初r-q2号" and upcoming["hls"] is None
        assert upcoming["start"] == f"{stamp}Z"
    finally:
        await http.aclose()


async def test_a_scheduled_session_goes_live_when_its_time_comes(platform: Platform) -> None:
    await define(platform, "court-s", public=True, room="r-s", court="c1")
    await define(platform, "court-s2", public=True, room="r-s2", court="c1")
    http = await signed_in(platform, "admin")
    try:
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 2)) + "+00:00"
        session = await open_session(http, "r-s", public=True, delay=4, at=at)
        hidden = await open_session(http, "r-s2", public=False)
        listed = await public_list(http)
        assert ids(listed["upcoming"]) == {session["id"]} and not listed["live"]
        deadline = time.monotonic() + 10
        while not (listed := await public_list(http))["live"]:
            assert time.monotonic() < deadline, "the scheduled session never opened"
            await asyncio.sleep(0.5)
        live = listed["live"][0]
        assert live["id"] == session["id"] and not listed["upcoming"]
        assert live["hls"] == f"/public/{session['id']}/index.m3u8"
        assert hidden["id"] not in str(listed)
        events = (await http.get(f"/api/v1/sessions/{session['id']}")).json()["events"]
        assert [e["event"] for e in events] == ["schedule", "open"]
        # the camera is disabled (its privacy cannot change mid-session): the broadcast ends
        public = media_role(platform).public
        assert public.get(session["id"]) is not None
        patched = await http.patch("/api/v1/streams/court-s", json={"enabled": False})
        assert patched.status_code == 200, patched.text
        for _ in range(40):
            if public.get(session["id"]) is None:
                break
            await asyncio.sleep(0.05)
        answer = await http.get(f"/public/{session['id']}/index.m3u8")
        assert answer.status_code == 404
    finally:
        await http.aclose()


# -- the broadcast itself: delay, cut, resume, close -----------------------------------

DELAY_S = 4.0
SEGMENT_S = 2.0  # the platform's hls.segment_target_s


class PublicReader:
    """Polls the public playlist and fetches every init, part and segment it names, as a
    player (and a CDN) would; keeps each with the init it needs."""

    def __init__(self, http: httpx.AsyncClient, name: str) -> None:
        self.http = http
        self.base = f"/public/{name}/"
        self.inits: dict[str, bytes] = {}
        self.media: dict[str, tuple[str, bytes, float]] = {}  # uri -> (init uri, data, at)
        self.playlists: list[str] = []
        self.refused_at: float | None = None

    async def run(self) -> None:
        while self.refused_at is None:
            answer = await self.http.get(self.base + "index.m3u8")
            if answer.status_code == 404:
                self.refused_at = time.monotonic()
                return
            if answer.status_code == 200:
                assert answer.headers["cache-control"] == "public, max-age=1"
                self.playlists.append(answer.text)
                await self.fetch_all(answer.text)
            await asyncio.sleep(0.2)

    async def fetch_all(self, playlist: str) -> None:
        init = ""
        for line in playlist.splitlines():
            uri = ""
            if line.startswith("#EXT-X-MAP:URI="):
                init = line.split('"')[1]
                if init not in self.inits:
                    self.inits[init] = await self.get(init)
            elif line.startswith("#EXT-X-PART:"):
                uri = line.split('URI="')[1].split('"')[0]
            elif line and not line.startswith("#"):
                uri = line
            if uri and uri not in self.media:
                self.media[uri] = (init, await self.get(uri), time.monotonic())

    async def get(self, uri: str) -> bytes:
        answer = await self.http.get(self.base + uri)
        assert answer.status_code == 200, (uri, answer.status_code)
        assert answer.headers["cache-control"].endswith("immutable"), answer.headers
        etag = answer.headers["etag"]
        again = await self.http.get(self.base + uri, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        return answer.content


def samples(init: bytes, data: bytes, decode: bool) -> list[tuple[bytes, bool]]:
    """The video samples of one fragment (and, decode: decoded, every frame checked)."""
    import io

    import av

    out = []
    with av.open(io.BytesIO(init + data), "r") as container:
        video = container.streams.video[0]
        for packet in container.demux(video):
            if packet.size:
                out.append((bytes(packet), packet.is_keyframe))
                if decode:
                    for frame in packet.decode():
                        assert frame.width > 0
    return out


async def test_broadcast_runs_late_cuts_to_a_slate_and_ends_with_the_session(
    platform: Platform, tmp_path: Path
) -> None:
    import hashlib

    from media_server import fmp4
    from media_server.media import Item, Packet
    from media_server.tap import tap

    clip = make_clip(tmp_path, seconds=90, fps=25, gop=25, size=(320, 240))
    key = await define(platform, "court-b", public=True, room="r-b", court="c1")
    media = media_role(platform)
    url = f"rtmp://127.0.0.1:{media.rtmp_port}/live/court-b?key={key}"
    publisher = asyncio.create_task(push(clip, url))
    captured: dict[bytes, float] = {}  # live video sample digest -> capture wall-clock

    def record(item: Item) -> None:
        if isinstance(item, Packet) and item.track == 0:
            captured[hashlib.sha1(item.data).digest()] = item.arrival

    http = await signed_in(platform, "clerk")
    anonymous = httpx.AsyncClient(base_url=base_url(platform), timeout=15)
    try:
        await wait_live(platform, "court-b")
        live_track = media.hub.find("court-b").tracks[0]
        recorder_tap = tap(media.hub.stream("court-b"), "test", record)
        session = await open_session(http, "r-b", public=True, delay=DELAY_S)
        sid = str(session["id"])
        reader = PublicReader(anonymous, sid)
        reading = asyncio.create_task(reader.run())

        # late by the delay, within a segment
        while not reader.media:
            assert not reading.done(), "the public rendition of an open public session is 404"
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)
        playlist = (await anonymous.get(f"/public/{sid}/index.m3u8")).text
        lag = time.time() - newest_capture(playlist)
        print(f"public rendition lag {lag:.2f} s (delay {DELAY_S} s)")
        assert DELAY_S - SEGMENT_S <= lag <= DELAY_S + SEGMENT_S, lag

        cut = await http.post(f"/api/v1/sessions/{sid}/cut")
        assert cut.status_code == 200, cut.text
        cut_asked = time.monotonic()
        await asyncio.sleep(6)
        resumed = await http.post(f"/api/v1/sessions/{sid}/resume")
        assert resumed.status_code == 200, resumed.text
        events = resumed.json()["events"]
        cut_at = next(e["at"] for e in events if e["event"] == "cut")
        resume_at = next(e["at"] for e in events if e["event"] == "broadcast-resume")
        # the session's timeline (what the clerks' pages show) carries the cut and resume
        timeline = (await http.get(f"/api/v1/sessions/{sid}")).json()["events"]
        marks = [
            (e["event"], e["at"]) for e in timeline if e["event"] in ("cut", "broadcast-resume")
        ]
        assert marks == [("cut", cut_at), ("broadcast-resume", resume_at)], timeline
        assert all(e["who"] == "u-clerk" for e in timeline if e["event"] == "cut"), timeline
        await asyncio.sleep(DELAY_S + 5)

        # a viewer blocked on the next part is answered 404 when the session closes
        newest = media.public.get(sid).segmenter.last_msn
        blocked = asyncio.create_task(
            anonymous.get(f"/public/{sid}/index.m3u8", params={"_HLS_msn": newest + 1})
        )
        await asyncio.sleep(0.1)
        assert (await http.post(f"/api/v1/sessions/{sid}/close")).status_code == 200
        closed = time.monotonic()
        assert (await blocked).status_code == 404
        await asyncio.wait_for(reading, 5)
        assert reader.refused_at is not None and reader.refused_at - closed < 1.5
        recorder_tap.close()
    finally:
        await http.aclose()
        await anonymous.aclose()
        await cancel(publisher)

    slate_samples = {
        hashlib.sha1(p.data).digest()
        for slate in media.public.slates._slates.values()
        for p in slate.packets
        if p.track == 0
    }
    prefixes = [fmp4.parameter_sets(live_track)] + [
        fmp4.parameter_sets(s.tracks[0]) for s in media.public.slates._slates.values()
    ]
    live_after, slate_seen, first_slate_at = 0, 0, None
    for uri, (init, data, fetched) in reader.media.items():
        for sample, keyframe in samples(reader.inits[init], data, uri.startswith("seg-")):
            digest = lookup(sample, keyframe, prefixes, captured, slate_samples)
            if digest in slate_samples:
                slate_seen += 1
                first_slate_at = min(first_slate_at or fetched, fetched)
                continue
            at = captured[digest]
            assert not cut_at - DELAY_S <= at <= resume_at, (uri, at - cut_at)
            live_after += at > resume_at
    assert slate_seen and live_after, (slate_seen, live_after)
    assert first_slate_at is not None and first_slate_at - cut_asked < SEGMENT_S + 1.0
    audited = await platform.roles[0].state.read_events("audit")  # type: ignore[attr-defined]
    actions = [e["action"] for _, e in audited if e.get("session") == sid]
    assert actions == [
        "session.open",
        "session.cut",
        "session.broadcast-resume",
        "session.close",
    ], actions


def lookup(
    sample: bytes,
    keyframe: bool,
    prefixes: list[bytes],
    captured: dict[bytes, float],
    slate: set[bytes],
) -> bytes:
    """The digest of the original sample: keyframes went out with parameter sets in
    front (media_server/fmp4.py)."""
    import hashlib

    candidates = [sample] + [
        sample[len(p) :] for p in prefixes if keyframe and sample.startswith(p)
    ]
    for candidate in candidates:
        digest = hashlib.sha1(candidate).digest()
        if digest in captured or digest in slate:
            return digest
    raise AssertionError(
        f"a public sample that is neither live media nor the slate ({len(sample)} B)"
    )


def newest_capture(playlist: str) -> float:
    """Capture wall-clock of the end of the newest part: the last program date-time plus
    the parts (or segments) after it."""
    from datetime import datetime

    at, since = 0.0, 0.0
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            at = datetime.fromisoformat(line.split(":", 1)[1]).timestamp()
            since = 0.0
        elif line.startswith("#EXT-X-PART:DURATION="):
            since += float(line.split("=")[1].split(",")[0])
    return at + since
