"""A first run shows the portal something (issue 16, item 6): with --demo every demo room
holds a public session broadcast with the default delay, one recesses and resumes, one
finished session replays (without its cut), and one trial is upcoming. The timetable is
shortened here; `courtcast up --demo` runs the same code on its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from recorder import demo_trials
from recorder.sessions import DEFAULT_DELAY_S
from tests.courtcast.test_platform import base_url, start_platform

pytestmark = pytest.mark.timeout(120)

QUICK = demo_trials.Timetable(
    replay_delay_s=2.0, cut_at=8.0, resume_at=12.0, close_at=18.0, recess_every_s=5.0, recess_s=4.0
)


async def test_the_demo_rooms_hold_public_trials_to_watch_and_one_to_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_trials, "Timetable", lambda: QUICK)
    node = await start_platform(tmp_path, **{"demo.enabled": True, "demo.rooms": 3})
    try:
        async with httpx.AsyncClient(base_url=base_url(node), timeout=15) as http:
            for _ in range(50):  # the replay room's session opens in the background
                listed = (await http.get("/api/v1/public/sessions")).json()
                rooms = {i["room"]: i for i in listed["live"]}
                if len(rooms) == 3:
                    break
                await asyncio.sleep(0.1)
            assert {"Courtroom 1", "Courtroom 3", "Courtroom 5"} == set(rooms), listed
            assert rooms["Courtroom 1"]["delay"] == DEFAULT_DELAY_S
            assert [i["room"] for i in listed["upcoming"]] == ["Courtroom 1"]
            assert all(i["case"] and i["parties"] and i["title"] for i in listed["live"])
            assert (await http.get("/")).status_code == 200

            paused_seen, replay = False, None
            deadline = time.monotonic() + 60
            while replay is None or not paused_seen:
                assert time.monotonic() < deadline, (paused_seen, replay)
                listed = (await http.get("/api/v1/public/sessions")).json()
                recess = next(i for i in listed["live"] if i["room"] == "Courtroom 3")
                paused_seen |= recess["paused"] and recess["state"] == "recess"
                replay = next((i for i in listed["finished"] if i["hls"]), None)
                await asyncio.sleep(0.5)
            assert replay["room"] == "Courtroom 5"
            while not any(i["room"] == "Courtroom 5" for i in listed["live"]):  # live again
                assert time.monotonic() < deadline, listed
                await asyncio.sleep(0.2)
                listed = (await http.get("/api/v1/public/sessions")).json()
            playlist = await http.get(replay["hls"])
            assert playlist.status_code == 200 and "#EXT-X-ENDLIST" in playlist.text
            assert "#EXT-X-DISCONTINUITY" in playlist.text  # the cut is left out

        # a second start with the same data finds what the first made
        await node.stop()
        node = await start_platform(tmp_path, **{"demo.enabled": True, "demo.rooms": 3})
        async with httpx.AsyncClient(base_url=base_url(node), timeout=15) as http:
            again = (await http.get("/api/v1/public/sessions")).json()
        assert len(again["upcoming"]) == 1 and len(again["live"]) == 3, again
        assert replay["id"] in {i["id"] for i in again["finished"]}
    finally:
        await node.stop()
