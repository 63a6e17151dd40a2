"""Recording in the whole platform, as `courtcast up` runs it: ffmpeg publishes over RTMP,
a trial session is opened, recessed, resumed and closed over the API; the recording plays
back over HLS and exports with the CLI, both checked by decoding them with ffprobe."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from courtcast.platform import Platform
from recorder.export import verify_export
from recorder.signing import load_public_pem
from tests.courtcast.test_platform import (
    define,
    media_role,
    probe,
    push,
    start_platform,
    wait_live,
)
from tests.mediafiles import make_clip
from tests.recorder.conftest import ffprobe

pytestmark = pytest.mark.timeout(120)
FPS = 25


def recorder_role(node: Platform) -> Any:
    return next(r for r in node.roles if r.name == "recorder")


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, awaited (the node under test shares this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "courtcast.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_session_recorded_played_back_exported_and_verified(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, seconds=12, fps=FPS, gop=FPS, size=(320, 240))
    node = await start_platform(
        tmp_path, **{"security.open": True, "recorder.segment_target_s": 2.0}
    )
    data_dir = str(tmp_path / "data")
    try:
        base = f"http://127.0.0.1:{node.http_port}/api/v1"
        key = await define(node, "r1-judge", room="r1", court="c1")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            opened = await http.post(
                "/sessions",
                json={"room": "r1", "case_number": "A-7", "title": "A v B", "public": True},
            )
            assert opened.status_code == 201, opened.text
            sid = opened.json()["id"]
            rtmp = f"rtmp://127.0.0.1:{media_role(node).rtmp_port}/live/r1-judge?key={key}"
            publisher = asyncio.create_task(push(clip, rtmp))
            await wait_live(node, "r1-judge")
            await asyncio.sleep(4)
            recess = await http.post(f"/sessions/{sid}/recess", json={"reason": "witness"})
            assert recess.status_code == 200, recess.text
            await asyncio.sleep(2)
            assert (await http.post(f"/sessions/{sid}/resume")).status_code == 200
            code, out = await publisher
            assert code == 0, out
            assert (await http.post(f"/sessions/{sid}/close")).status_code == 200
            await asyncio.sleep(0.5)  # the role reconciles on the change
            await recorder_role(node).wait_closed()
            found = (await http.get("/recordings", params={"case_number": "A-7"})).json()
            [record] = found["recordings"]
            rid = record["id"]
            assert record["state"] == "closed" and record["room"] == "r1"
            manifest = (await http.get(f"/recordings/{rid}")).json()["manifest"]
            causes = [g["cause"] for g in manifest["gaps"]]
            assert causes.count("recess") == 1, causes
            recess_gap = next(g for g in manifest["gaps"] if g["cause"] == "recess")
            assert recess_gap["reason"] == "witness"
            assert 1.9 <= recess_gap["end"] - recess_gap["start"] <= 3.5
            verified = (await http.get(f"/recordings/{rid}/verify")).json()
            assert verified["ok"] and verified["signed"], verified
            pem = (await http.get("/recordings/signing-key")).text
        recorded = sum(s["duration"] for s in manifest["segments"])
        assert 8.0 <= recorded <= 11.0, recorded
        # HLS VOD playback decodes to the recorded duration
        info = await probe(f"{base}/recordings/{rid}/index.m3u8")
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert abs(int(video["nb_read_frames"]) / FPS - recorded) <= 1.0
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            playlist = (await http.get(f"/recordings/{rid}/index.m3u8")).text
        assert "#EXT-X-DISCONTINUITY" in playlist and playlist.rstrip().endswith("ENDLIST")
        assert playlist.count("#EXT-X-PROGRAM-DATE-TIME") == len(manifest["segments"])
        # seek by wall-clock: only the segments around [from, to)
        segs = manifest["segments"]
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            part = (
                await http.get(
                    f"/recordings/{rid}/index.m3u8",
                    params={"from": str(segs[1]["start"] + 0.1), "to": str(segs[2]["start"] + 0.1)},
                )
            ).text
            session = (await http.get(f"/sessions/{sid}")).json()
        assert [line for line in part.splitlines() if line.startswith("seg-")] == [
            f"seg-{segs[1]['seq']}.m4s",
            f"seg-{segs[2]['seq']}.m4s",
        ]
        assert session["playback"][0]["playlist"].endswith(f"{rid}/index.m3u8")
        # CLI on the running node: list, verify, export of 2.5 s (before the recess)
        listed = await cli("recordings", "list", "--data-dir", data_dir, "--case", "A-7", "--json")
        assert [r["id"] for r in json.loads(listed.stdout)] == [rid], listed.stderr
        ok = await cli("recordings", "verify", rid, "--data-dir", data_dir)
        assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stdout + ok.stderr
        first = manifest["segments"][0]["start"]
        clip = tmp_path / "clip.mp4"
        exported = await cli(
            "recordings",
            "export",
            rid,
            "--data-dir",
            data_dir,
            "--from",
            str(first + 0.5),
            "--to",
            str(first + 3.0),
            "-o",
            str(clip),
        )
        assert exported.returncode == 0, exported.stderr
        assert "100.0 %" in exported.stderr
        info = ffprobe(clip)
        seconds = float(info["format"]["duration"])
        assert abs(seconds - 2.5) <= 0.1, seconds  # cut at the keyframe before, shown from --from
        statement = verify_export(load_public_pem(pem), clip, Path(str(clip) + ".sig").read_bytes())
        assert statement["recording_id"] == rid
        state = node.roles[0].state  # type: ignore[attr-defined]
        audit = [e for _, e in await state.read_events("audit")]
        assert any(e["action"] == "export" and e["recording"] == rid for e in audit)
    finally:
        await node.stop()


async def test_record_all_resumes_after_a_restart_with_a_gap(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, seconds=20, fps=FPS, gop=FPS)
    overrides = {
        "security.open": True,
        "recorder.record_all": True,
        "recorder.segment_target_s": 2.0,
    }
    node = await start_platform(tmp_path, **overrides)
    port = media_role(node).rtmp_port
    publisher = asyncio.create_task(push(clip, f"rtmp://127.0.0.1:{port}/live/cam-9"))
    try:
        await wait_live(node, "cam-9")
        await asyncio.sleep(4)
        rid = next(iter(recorder_role(node).active.values())).id
    finally:
        await node.stop()
    stopped = time.time()
    await asyncio.wait_for(publisher, 10)  # ffmpeg ends when the server goes
    node = await start_platform(tmp_path, **overrides, **{"rtmp.port": port})
    try:
        publisher = asyncio.create_task(push(clip, f"rtmp://127.0.0.1:{port}/live/cam-9"))
        await wait_live(node, "cam-9")
        await asyncio.sleep(4)
        recording = recorder_role(node).find(rid)
        assert recording is not None, "the open recording was not resumed"
        manifest = await recording.close()
        restart = [g for g in manifest.gaps if g.cause == "recorder-restart"]
        # the gap spans the stop (segment wall-clocks follow media time: ffmpeg -re runs a
        # few ms ahead of real time)
        assert len(restart) == 1, manifest.gaps
        assert restart[0].start <= stopped + 0.1 and restart[0].end >= stopped
        report = await cli("recordings", "verify", rid, "--data-dir", str(tmp_path / "data"))
        assert report.returncode == 0, report.stdout
    finally:
        await node.stop()
    await asyncio.wait_for(publisher, 10)


async def test_private_recordings_need_a_signed_in_clerk(tmp_path: Path) -> None:
    from control_room.users import Users

    node = await start_platform(tmp_path)
    try:
        state = node.roles[0].state  # type: ignore[attr-defined]
        await Users(state).add("clerk1", "clerk", "pw-123456789")
        await define(node, "r2-cam", room="r2")
        base = f"http://127.0.0.1:{node.http_port}/api/v1"
        async with httpx.AsyncClient(base_url=base, timeout=30) as anon:
            assert "BEGIN PUBLIC KEY" in (await anon.get("/recordings/signing-key")).text
            refused = await anon.post("/sessions", json={"room": "r2", "case_number": "P-1"})
            assert refused.status_code == 401
        async with httpx.AsyncClient(base_url=base, timeout=30) as clerk:
            token = (
                await clerk.post("/login", json={"name": "clerk1", "password": "pw-123456789"})
            ).json()
            clerk.headers["authorization"] = f"Bearer {token['token']}"
            opened = await clerk.post("/sessions", json={"room": "r2", "case_number": "P-1"})
            assert opened.status_code == 201, opened.text
            for _ in range(50):
                found = (await clerk.get("/recordings", params={"room": "r2"})).json()
                if found["recordings"]:
                    break
                await asyncio.sleep(0.1)
            [record] = found["recordings"]
            # listed once indexed; its manifest reaches the store a moment later (404 till then)
            for _ in range(50):
                played = await clerk.get(f"/recordings/{record['id']}/index.m3u8")
                if played.status_code != 404:
                    break
                await asyncio.sleep(0.1)
            assert played.status_code == 200, played.text
            assert (await clerk.get("/recordings/no-such-rec/verify")).status_code == 404
        async with httpx.AsyncClient(base_url=base, timeout=30) as anon:
            # recordings are evidence: the public replays only /public/{id}/replay/
            assert (await anon.get("/recordings", params={"room": "r2"})).status_code == 401
            denied = await anon.get(f"/recordings/{record['id']}/index.m3u8")
            assert denied.status_code == 401
            assert (await anon.get(f"/recordings/{record['id']}/verify")).status_code == 401
    finally:
        await node.stop()


async def test_an_arraignment_side_is_recorded_from_going_on_air_without_a_session(
    tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path, seconds=20, fps=FPS, gop=FPS)
    node = await start_platform(tmp_path, **{"recorder.segment_target_s": 2.0})
    port = media_role(node).rtmp_port
    # the stream an arraignment room defines for a seat (here published over RTMP with
    # a key rather than WHIP: the recorder does not care how it arrives)
    key = await define(node, "arraignment-r9-court", stream_class="arraignment", room="r9")
    assert not recorder_role(node).active, "nothing is recorded before it is on air"
    publisher = asyncio.create_task(
        push(clip, f"rtmp://127.0.0.1:{port}/live/arraignment-r9-court?key={key}")
    )
    try:
        await wait_live(node, "arraignment-r9-court")
        on_air = media_role(node).hub.stream("arraignment-r9-court").publication.started
        await asyncio.sleep(5)
        recordings = recorder_role(node).active
        assert list(recordings) == [("arraignment-r9-court", "")], recordings
        manifest = await next(iter(recordings.values())).close()
        assert manifest.stream_class == "arraignment" and not manifest.session
        assert manifest.segments and manifest.duration >= 2.0, manifest.segments
        # from its first keyframe on: the recording started as the publication did
        assert abs(manifest.segments[0].start - on_air) < 0.5, (manifest.segments[0], on_air)
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        await node.stop()


async def test_a_token_echoed_into_a_recording_playlist_is_encoded_and_plays(
    tmp_path: Path,
) -> None:
    """recorder/http.py copies ?token= into every URI of the playlist (a player sends it on
    with each segment): raw, a token with '"' or a newline rewrote the playlist."""
    clip = make_clip(tmp_path, seconds=6, fps=FPS, gop=FPS, size=(320, 240))
    node = await start_platform(
        tmp_path, **{"security.open": True, "recorder.segment_target_s": 2.0}
    )
    try:
        key = await define(node, "r3-judge", room="r3")
        base = f"http://127.0.0.1:{node.http_port}/api/v1"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            opened = await http.post("/sessions", json={"room": "r3", "case_number": "T-1"})
            assert opened.status_code == 201, opened.text
            rtmp = f"rtmp://127.0.0.1:{media_role(node).rtmp_port}/live/r3-judge?key={key}"
            code, out = await push(clip, rtmp)
            assert code == 0, out
            assert (await http.post(f"/sessions/{opened.json()['id']}/close")).status_code == 200
            await asyncio.sleep(0.5)  # the role reconciles on the change
            await recorder_role(node).wait_closed()
            [record] = (await http.get("/recordings", params={"room": "r3"})).json()["recordings"]
            url = f"/recordings/{record['id']}/index.m3u8"
            token = 'a b&c="#\n#EXT-X-ENDLIST\nhttp://evil.example/x.m4s'
            playlist = (await http.get(url, params={"token": token})).text
        echoed = "?" + urlencode({"token": token})
        lines = playlist.splitlines()
        uris = [line for line in lines if line.startswith("seg-")]
        assert len(uris) >= 2 and all(uri.endswith(echoed) for uri in uris), playlist
        maps = [line for line in lines if line.startswith("#EXT-X-MAP:")]
        assert maps and all(m.endswith(f'.mp4{echoed}"') for m in maps), playlist
        assert lines.count("#EXT-X-ENDLIST") == 1 and lines[-1] == "#EXT-X-ENDLIST"
        assert not any("evil.example/" in line for line in lines)
        assert all(line.count('"') % 2 == 0 for line in lines), playlist
        # a player following those URIs (token and all) decodes the recording
        info = await probe(f"{base}{url}{echoed}")
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_frames"]) >= 3 * FPS, video
    finally:
        await node.stop()
