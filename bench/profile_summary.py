"""Summarise a py-spy raw profile (`py-spy record --format raw`): the functions with the
most samples on top of the stack (self) and anywhere in it (total), in % of all samples.

    .venv/bin/python bench/profile_summary.py /tmp/ingest_hls_profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")
TRIM = ("site-packages/", "lib/python3.11/", "/work/main/")


def short(frame: str) -> str:
    """'feed (/work/main/media_server/rtmp/chunk.py:80)' -> 'media_server/rtmp/chunk.py:feed'."""
    m = FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    path = m["file"]
    for marker in TRIM:
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{m['func']}"


# where a sample's time goes: the first rule (in this order) whose frame is on the stack;
# a group may have several rules (the RTMP ingest runs in its task and in data_received)
GROUPS = (
    (
        "LL-HLS HTTP: authorize_play (access check; definitions cached until changed)",
        "role.py:MediaServerRole.authorize_play",
    ),
    (
        "LL-HLS HTTP: sending responses (uvicorn + socket write)",
        "httptools_impl.py:RequestResponseCycle.send",
    ),
    (
        "LL-HLS HTTP: sending responses (uvicorn + socket write)",
        "h11_impl.py:RequestResponseCycle.send",
    ),
    ("LL-HLS HTTP: our route handlers", "media_server/hls/http.py:"),
    ("LL-HLS HTTP: uvicorn + FastAPI/Starlette", "uvicorn/protocols/http/"),
    # the segmenter runs inside the ingest's hub push (the HLS tap): tried first
    ("LL-HLS segmenter + fMP4 (hub -> parts)", "media_server/hls/segmenter.py:Segmenter.feed"),
    (
        "RTMP ingest: chunks, FLV, hub push",
        "media_server/rtmp/transport.py:RtmpTransport.buffer_updated",
    ),
    (
        "RTMP ingest: chunks, FLV, hub push",
        "media_server/rtmp/transport.py:RtmpTransport.data_received",
    ),
    ("RTMP ingest: chunks, FLV, hub push", "media_server/rtmp/transport.py:RtmpTransport.run"),
    (
        "live stats -> Redis presence (1/s per stream)",
        "media_server/role.py:MediaServerRole._publish_live_stats",
    ),
    (
        "socket reads (recv, in loop callbacks)",
        "selector_events.py:_SelectorSocketTransport._read_ready",
    ),
    ("epoll", "selectors.py:EpollSelector.select"),
)
# uvloop's loop is C: py-spy (without --native) sees its work (epoll, recv, send, timers)
# as the Python frame that entered it
LOOP_IN_C = ("event loop in C (uvloop: epoll, socket calls, timers)", "runners.py:Runner.run")
IDLE = "epoll"


def group(frames: list[str]) -> str:
    for name, marker in GROUPS:
        if any(marker in f for f in frames):
            return name
    if LOOP_IN_C[1] in frames[-1]:
        return LOOP_IN_C[0]
    return "other (event loop, Redis client, timers...)"


def load(path: Path) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
        total["group: " + group(frames)] += n
    return own, total, samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    own, total, samples = load(args.profile)
    groups = [(k, v) for k, v in total.most_common() if k.startswith("group: ")]
    busy = samples - total["group: " + IDLE]
    print(f"{samples} samples, {busy} not in epoll\n\ngroups: % of all, % of non-epoll")
    for name, n in groups:
        share = f"{n / busy * 100:6.1f}%" if name[7:] != IDLE else "      -"
        print(f"{n / samples * 100:6.1f}%  {share}  {name[7:]}")
    for name, _ in groups:
        del total[name]
    for title, counter in (("self", own), ("total (inclusive)", total)):
        print(f"\n{title}:")
        for name, n in counter.most_common(args.top):
            print(f"{n / samples * 100:6.1f}%  {name}")


if __name__ == "__main__":
    main()
