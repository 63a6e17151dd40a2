"""A flood of wrong passwords does not move LL-HLS part latency (issue 14, item 2): a
stream plays on the platform while another process sends failed sign-ins for 30 s; each
part's arrival (blocking playlist reload) is compared with its media time, and the p95
lateness stays within 100 ms of a quiet run on the same node.

Before the fix each wrong password was an argon2 check (~0.1 s) on the event loop that
also serves the parts."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from courtcast.platform import Platform
from tests.control_room.conftest import base_url, media, signed_in
from tests.mediafiles import load_clip, looped, make_clip, publish

pytestmark = [pytest.mark.timeout(150), pytest.mark.serial]  # p95 latency: alone on the CPU

QUIET_S = 10.0
FLOOD_S = 30.0
ALLOWED_S = 0.1

# The flood: several connections, each posting wrong passwords as fast as it is answered.
# It runs niced: an attacker's CPU is not the server's, and on a 2-core box the client
# would otherwise take a core from the server it floods.
FLOOD = """
import os, sys, threading, time, httpx
os.nice(10)
url, seconds = sys.argv[1], float(sys.argv[2])
answers = []
def attack(n):
    with httpx.Client(base_url=url, timeout=30) as http:
        end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < end:
            name = "ada" if k % 2 else f"guess{n}-{k}"
            r = http.post("/api/v1/login", json={"name": name, "password": f"wrong{k}"})
            answers.append(r.status_code)
            k += 1
threads = [threading.Thread(target=attack, args=(n,)) for n in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(answers), sorted(set(answers)))
"""


def hinted(text: str) -> tuple[int, int]:
    found = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-(\d+)\.(\d+)\.m4s', text)
    assert found, text
    return int(found[1]), int(found[2])


def duration_of(text: str, msn: int, part: int) -> float | None:
    found = re.search(rf'#EXT-X-PART:DURATION=([\d.]+),URI="part-{msn}\.{part}\.m4s', text)
    return float(found[1]) if found else None


async def part_lateness(
    http: httpx.AsyncClient, path: str, token: str, seconds: float
) -> tuple[list[float], int]:
    """Each part's arrival minus its media time (both counted from the first part), in
    seconds, for `seconds` of playing; and how many parts were missed (the playlist had
    moved past a part before its request was answered: the chain starts again)."""
    text = (await http.get(path, params={"token": token})).text
    msn, part = hinted(text)
    lateness: list[float] = []
    missed, start, media_time = 0, None, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        query = {"token": token, "_HLS_msn": str(msn), "_HLS_part": str(part)}
        answer = await http.get(path, params=query)
        arrived = time.monotonic()
        assert answer.status_code == 200, answer.text
        duration = duration_of(answer.text, msn, part)
        if duration is None:
            missed, start = missed + 1, None
        elif start is None:
            start, media_time = arrived, 0.0
        else:
            media_time += duration
            lateness.append(arrived - start - media_time)
        msn, part = hinted(answer.text)
    floor = min(lateness)
    return [late - floor for late in lateness], missed


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def test_a_sign_in_flood_leaves_part_latency_alone(
    platform: Platform, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path, seconds=4.0, fps=25, gop=25)
    tracks, packets = load_clip(clip)
    admin = await signed_in(platform, "ada", "admin")
    made = await admin.post("/api/v1/streams", json={"id": "court-1"})
    assert made.status_code == 201, made.text
    token = (await admin.get("/api/v1/streams/court-1/play-url")).json()["token"]
    await admin.aclose()
    playing = asyncio.create_task(
        publish(media(platform).hub, "court-1", tracks, looped(tracks, packets, 4.0, times=30))
    )
    path = "/live/court-1/index.m3u8"
    try:
        async with httpx.AsyncClient(base_url=base_url(platform), timeout=30) as http:
            for _ in range(100):  # the first segment
                if (await http.get(path, params={"token": token})).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            quiet_lateness, quiet_missed = await part_lateness(http, path, token, QUIET_S)
            flood = subprocess.Popen(
                [sys.executable, "-c", FLOOD, base_url(platform), str(FLOOD_S)],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                loud_lateness, loud_missed = await part_lateness(http, path, token, FLOOD_S)
            finally:
                sent, _ = await asyncio.to_thread(flood.communicate, timeout=60)
    finally:
        playing.cancel()
    quiet, loud = p95(quiet_lateness), p95(loud_lateness)
    print(
        f"\npart lateness p95: quiet {quiet * 1000:.0f} ms, flood {loud * 1000:.0f} ms; "
        f"flood answers: {sent.strip()}"
    )
    assert int(sent.split()[0]) > 100, f"not much of a flood: {sent}"
    assert quiet_missed == 0, f"{quiet_missed} parts missed without a flood"
    assert loud_missed == 0, f"{loud_missed} parts came too late to be listed under the flood"
    assert loud - quiet < ALLOWED_S, (
        f"p95 part lateness {loud * 1000:.0f} ms under the flood, {quiet * 1000:.0f} ms quiet"
    )
