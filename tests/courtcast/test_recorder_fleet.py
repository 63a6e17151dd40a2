"""The recorder fleet (issue 18 item 3): `courtcast recorder` processes apart from the media
node record through the on-demand relay, one writer per recording held by a Redis lease;
a killed writer's recording is taken over with a `recorder-failover` gap, and a paused one
is fenced out (processes of tests/fixtures/cluster.py, ffmpeg publishing over RTMP)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recorder.leases import SEQS_PER_EPOCH
from tests.fixtures.cluster import ProcessCluster
from tests.mediafiles import make_clip

STREAM, ROOM = "court-f", "room-f"
LEASE_S = 5.0  # configs/cluster.yaml cluster.lease_s


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


@pytest.fixture
def publishing(process_cluster: ProcessCluster, tmp_path: Path) -> Iterator[ProcessCluster]:
    """Node A with a trial stream of room-f published to it by ffmpeg over RTMP."""
    node = process_cluster.start("media-server", "node-a")
    out = process_cluster.cli("streams", "add", STREAM, "--class", "trial", "--room", ROOM)
    key = out.split()[-1]
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25, size=(320, 240))
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re"]
    args += ["-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "flv"]
    args.append(f"{node.rtmp_url}/live/{STREAM}?key={key}")
    ffmpeg = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process_cluster
    finally:
        ffmpeg.kill()
        ffmpeg.wait()


def open_session(cluster: ProcessCluster) -> str:
    out = cluster.cli("sessions", "open", "--room", ROOM, "--case", "F-1")
    return out.split()[1]


def recording(cluster: ProcessCluster) -> dict[str, Any] | None:
    rows = json.loads(cluster.cli("recordings", "list", "--stream", STREAM, "--json"))
    return rows[0] if rows else None


def get(cluster: ProcessCluster, key: str) -> bytes:
    data = cluster.s3.client().get_object(cluster.bucket, key)
    try:
        return bytes(data.read())
    finally:
        data.close()
        data.release_conn()


def manifest(cluster: ProcessCluster, rid: str) -> dict[str, Any]:
    return dict(json.loads(get(cluster, f"recordings/{rid}/manifest.json")))


def objects(cluster: ProcessCluster, rid: str) -> dict[str, str]:
    """Every object of the recording: name -> ETag."""
    found = cluster.s3.client().list_objects(cluster.bucket, f"recordings/{rid}/", recursive=True)
    return {o.object_name.rsplit("/", 1)[1]: o.etag for o in found}


def segments_by(cluster: ProcessCluster, rid: str, epoch: int) -> int:
    """How many segments the writer of lease epoch `epoch` has listed."""
    lo, hi = (epoch - 1) * SEQS_PER_EPOCH, epoch * SEQS_PER_EPOCH
    return sum(lo <= s["seq"] < hi for s in manifest(cluster, rid)["segments"])


def close_and_verify(cluster: ProcessCluster, session: str, writer: str, tmp_path: Path) -> Any:
    """Close the session; once the closed recording is signed, verify it with the key of
    the recorder that sealed it, and decode an export of it."""
    cluster.cli("sessions", "close", session)
    rid = eventually(
        lambda: (r := recording(cluster)) and r["state"] == "closed" and r["id"],
        30,
        "the recording closed",
    )
    pem = httpx.get(f"{cluster.processes[writer].url}/api/v1/recordings/signing-key").text
    key = tmp_path / f"{writer}.pem"
    key.write_text(pem)
    report = json.loads(
        cluster.cli("recordings", "verify", rid, "--public-key", str(key), "--json")
    )
    assert report["ok"], report
    clip = tmp_path / "recorded.mp4"  # the first init and the segments after the last gap
    m = manifest(cluster, rid)
    last = [s for s in m["segments"] if s["init"] == m["segments"][-1]["init"]][-3:]
    names = [last[0]["init"]] + [f"seg-{s['seq']}.m4s" for s in last]
    clip.write_bytes(b"".join(get(cluster, f"recordings/{rid}/{n}") for n in names))
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,nb_read_frames", "-of", "json", str(clip)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    video = json.loads(probe.stdout)["streams"][0]
    assert video["codec_name"] == "h264" and int(video["nb_read_frames"]) >= 50
    return report


def test_a_recorder_apart_from_the_media_node_records_a_session(
    publishing: ProcessCluster, tmp_path: Path
) -> None:
    cluster = publishing
    cluster.start("recorder", "rec-1")
    session = open_session(cluster)
    rid = eventually(lambda: (r := recording(cluster)) and r["id"], 20, "a recording")
    assert recording(cluster)["node"] == "rec-1"  # type: ignore[index]
    eventually(lambda: segments_by(cluster, rid, 1) >= 1, 30, "a segment listed")
    report = close_and_verify(cluster, session, "rec-1", tmp_path)
    # recorded from the start through the relay: no gap but a first "not live yet" moment
    assert all(g["cause"] != "recorder-failover" for g in report["remaining_gaps"]), report


def test_a_killed_recorder_is_taken_over_with_a_failover_gap(
    publishing: ProcessCluster, tmp_path: Path
) -> None:
    cluster = publishing
    cluster.start("recorder", "rec-1")
    cluster.start("recorder", "rec-2")
    session = open_session(cluster)
    rid = eventually(lambda: (r := recording(cluster)) and r["id"], 20, "a recording")
    first = recording(cluster)["node"]  # type: ignore[index]
    second = "rec-2" if first == "rec-1" else "rec-1"
    eventually(lambda: segments_by(cluster, rid, 1) >= 1, 30, "a segment listed")
    cluster.kill(first)
    killed = time.monotonic()
    eventually(lambda: recording(cluster)["node"] == second, 3 * LEASE_S, "a takeover")  # type: ignore[index]
    # the lease runs out (<= LEASE_S), the next round claims it; the rest is this test's
    # polling through the CLI (bench/recorder_failover.py measures it closely)
    assert time.monotonic() - killed < 3 * LEASE_S
    eventually(lambda: segments_by(cluster, rid, 2) >= 1, 30, "a segment by the new writer")
    report = close_and_verify(cluster, session, second, tmp_path)
    assert "recorder-failover" in [g["cause"] for g in report["remaining_gaps"]], report


def test_a_paused_recorder_cannot_write_after_its_lease_passed(
    publishing: ProcessCluster, tmp_path: Path
) -> None:
    cluster = publishing
    cluster.start("recorder", "rec-1")
    session = open_session(cluster)
    rid = eventually(lambda: (r := recording(cluster)) and r["id"], 20, "a recording")
    eventually(lambda: segments_by(cluster, rid, 1) >= 1, 30, "a segment listed")
    cluster.kill("rec-1", signal.SIGSTOP)
    cluster.start("recorder", "rec-2")
    eventually(lambda: recording(cluster)["node"] == "rec-2", 4 * LEASE_S, "a takeover")  # type: ignore[index]
    eventually(lambda: segments_by(cluster, rid, 2) >= 1, 30, "a segment by the new writer")
    old = {n: e for n, e in objects(cluster, rid).items() if n.startswith("seg-")}
    old = {n: e for n, e in old.items() if int(n[4:-4]) < SEQS_PER_EPOCH}
    cluster.kill("rec-1", signal.SIGCONT)
    time.sleep(4)  # the old writer runs again: its next segment closes within this
    now = objects(cluster, rid)
    assert {n: e for n, e in now.items() if n in old} == old
    late = [n for n in set(now) - set(old) if n.startswith("seg-")]
    assert not [n for n in late if int(n[4:-4]) < SEQS_PER_EPOCH], late
    assert "lease lost" in cluster.processes["rec-1"].log_tail(200)
    assert recording(cluster)["node"] == "rec-2"  # type: ignore[index]
    report = close_and_verify(cluster, session, "rec-2", tmp_path)
    assert "recorder-failover" in [g["cause"] for g in report["remaining_gaps"]], report


def test_a_recording_left_open_by_a_dead_recorder_is_closed_by_another(
    publishing: ProcessCluster, tmp_path: Path
) -> None:
    """The session closed while its only recorder was dead: the next recorder closes it."""
    cluster = publishing
    cluster.start("recorder", "rec-1")
    session = open_session(cluster)
    rid = eventually(lambda: (r := recording(cluster)) and r["id"], 20, "a recording")
    eventually(lambda: segments_by(cluster, rid, 1) >= 1, 30, "a segment listed")
    cluster.kill("rec-1")
    cluster.cli("sessions", "close", session)
    cluster.start("recorder", "rec-2")
    eventually(lambda: recording(cluster)["state"] == "closed", 6 * LEASE_S, "closed")  # type: ignore[index]
    pem = httpx.get(f"{cluster.processes['rec-2'].url}/api/v1/recordings/signing-key").text
    (tmp_path / "key.pem").write_text(pem)
    args = ("recordings", "verify", rid, "--public-key", str(tmp_path / "key.pem"), "--json")
    report = json.loads(cluster.cli(*args))
    assert report["ok"], report
    assert [g["cause"] for g in report["remaining_gaps"]][-1] == "recorder-failover", report
