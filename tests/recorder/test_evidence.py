"""Recordings as evidence (issue 14, item 4), against a real embedded Redis, real object
stores (disk; S3 through SeaweedFS where S3 matters) and the real CLI entry point:
- verify fails when the index says closed and the manifest is unsigned or says otherwise;
- re-signing (backfill into a closed recording) checks the old signature and the media
  first, and keeps every earlier signed version;
- export refuses a segment whose hash does not match, and names it;
- recording ids do not collide;
- the signing key may live outside the data dir (mode 0600 checked);
- an exported clip verifies with the CLI (no data dir) and with stock tools, as the README
  shows;
- S3 buckets the store creates get versioning and Object Lock (governance) when asked."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from minio.commonconfig import GOVERNANCE

from core.config import ConfigError, load_config
from courtcast.cli import main
from recorder.backfill import BackfillError, RecordingBackfill, SegmentIn
from recorder.export import ExportError, export_clip
from recorder.index import RecordingIndex
from recorder.manifest import Gap, GapCause, Manifest, canonical, sha256_hex
from recorder.manifest_store import save_manifest
from recorder.role import RecorderRole, new_recording_id
from recorder.signing import KEY_FILE, SignatureError, Signer, public_pem
from recorder.verify import verify_recording
from storage.objects import ObjectStore, open_object_store
from storage.recording_keys import manifest_key, object_key, recording_prefix, signature_key
from storage.role import StorageRole, build_object_store, open_state_for_cli
from tests.fixtures.s3 import S3Server
from tests.mediafiles import make_clip
from tests.recorder.test_backfill import agent_segments
from tests.recorder.test_export import FPS, GAP, add_init, add_segment, live_segments

pytestmark = pytest.mark.timeout(120)
README = Path(__file__).parents[2] / "README.md"


async def closed_recording(
    store: ObjectStore, tmp_path: Path, signer: Signer, t0: float
) -> Manifest:
    """A closed, signed recording of stream `cam`: live media, a publisher-lost gap of
    GAP seconds nothing has filled, live media again."""
    manifest = Manifest(
        recording_id=f"cam-{uuid.uuid4().hex[:8]}",
        stream="cam",
        case_number="(2026)豫01刑初1号",
        opened_at=t0,
        state="closed",
        closed_at=t0 + 30,
        signing_key_id=signer.key_id,
    )
    init, live = live_segments(
        make_clip(tmp_path, seconds=10, fps=FPS, gop=FPS), t0, [(0.0, GAP[0]), (GAP[1], 8.0)]
    )
    await add_init(store, manifest, "init.mp4", init)
    for seg in live:
        await add_segment(store, manifest, seg, "init.mp4", backfilled=False)
    before = max(s.end for s in manifest.segments if s.end <= t0 + GAP[1] - 1)
    manifest.gaps.append(Gap(before, t0 + GAP[1], GapCause.publisher_lost))
    await save_manifest(store.put, manifest, signer)
    return manifest


async def flip_a_byte(store: ObjectStore, key: str) -> None:
    data = bytearray(await store.get(key))
    data[len(data) // 2] ^= 0x01
    await store.put(key, bytes(data))


# -- verify against the index -------------------------------------------------------------


def test_verify_fails_when_the_index_says_closed_and_the_manifest_is_unsigned(
    tmp_path: Path,
) -> None:
    """Someone with write access to the store turns a closed recording back into an
    "open" one (state recording, signature deleted): its content could then be changed
    at will. The index still says closed, so verify must not pass."""
    data_dir = tmp_path / "data"
    config = load_config(None, {"node.data_dir": data_dir})
    signer = Signer.for_data_dir(data_dir)

    async def prepare() -> str:
        store = build_object_store(config.storage_section())
        manifest = await closed_recording(store, tmp_path, signer, round(time.time() - 60, 3))
        async with open_state_for_cli(config.storage_section()) as state:
            await RecordingIndex(state).put(manifest, "node-1")
        await store.close()
        return manifest.recording_id

    async def reopen(rid: str) -> None:
        store = build_object_store(config.storage_section())
        manifest = Manifest.from_bytes(await store.get(manifest_key(rid)))
        manifest.state, manifest.closed_at = "recording", None
        await store.put(manifest_key(rid), manifest.to_bytes())
        await store.delete(signature_key(rid))
        await store.close()

    rid = asyncio.run(prepare())
    assert main(["recordings", "verify", rid, "--data-dir", str(data_dir)]) == 0
    asyncio.run(reopen(rid))
    assert main(["recordings", "verify", rid, "--data-dir", str(data_dir)]) == 1


# -- re-signing -----------------------------------------------------------------------------


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[RecorderRole]:
    """A real recorder role (embedded Redis, objects on disk), without a media server:
    what backfill into a closed recording runs on."""
    config = load_config(None, {"node.data_dir": tmp_path / "node"})
    storage = StorageRole(config.storage_section())
    await storage.start()
    yield RecorderRole(config.recorder_section(), storage, None, None)
    await storage.stop()


async def backfill_into(role: RecorderRole, manifest: Manifest, tmp_path: Path) -> list[Any]:
    """Upload an agent's init and its first segment in the gap; the replies."""
    agent = agent_segments(
        make_clip(tmp_path, seconds=4, fps=FPS, gop=FPS, bframes=2), manifest.gaps[0].start, 6.0
    )
    backfill = RecordingBackfill(role)
    done = await backfill.put_init(manifest.recording_id, ["cam"], agent.init)
    seg = agent.segments[0]
    data = seg.data()
    stored = await backfill.put_segment(
        manifest.recording_id,
        ["cam"],
        SegmentIn(
            "cam", seg.wallclock, seg.duration, done["init"], seg.start, sha256_hex(data), data
        ),
    )
    return [done, stored]


async def test_backfill_keeps_every_earlier_signed_version(
    recorder: RecorderRole, tmp_path: Path
) -> None:
    store = recorder.storage.objects
    manifest = await closed_recording(store, tmp_path, recorder.signer, round(time.time() - 60, 3))
    await recorder.index.put(manifest, "node-1")
    rid = manifest.recording_id
    first = (await store.get(manifest_key(rid)), await store.get(signature_key(rid)))
    replies = await backfill_into(recorder, manifest, tmp_path)  # two changes: init, segment
    assert [r["status"] for r in replies] == ["stored", "stored"], replies
    names = {
        i.key.removeprefix(recording_prefix(rid)) for i in await store.list(recording_prefix(rid))
    }
    assert {"manifest-v1.json", "manifest-v1.sig", "manifest-v2.json", "manifest-v2.sig"} <= names
    assert (
        await store.get(object_key(rid, "manifest-v1.json")),
        await store.get(object_key(rid, "manifest-v1.sig")),
    ) == first
    report = await verify_recording(store, rid, recorder.signer.public)
    assert report.ok and report.signed and report.versions == 2, report.summary()


@pytest.mark.parametrize("tamper", ["manifest", "segment"])
async def test_backfill_does_not_re_sign_what_no_longer_matches(
    recorder: RecorderRole, tmp_path: Path, tamper: str
) -> None:
    """Re-signing a manifest someone changed would launder the change; re-signing over a
    changed segment would vouch for it. Both are refused, naming what is wrong, and the
    stored manifest and signature stay as they were."""
    store = recorder.storage.objects
    manifest = await closed_recording(store, tmp_path, recorder.signer, round(time.time() - 60, 3))
    await recorder.index.put(manifest, "node-1")
    rid = manifest.recording_id
    if tamper == "manifest":
        raw = await store.get(manifest_key(rid))
        changed = raw.replace(b'"publisher-lost"', b'"recorder-restart"')
        assert changed != raw
        await store.put(manifest_key(rid), changed)
        named = "manifest.json"
    else:
        await flip_a_byte(store, object_key(rid, manifest.segments[1].name))
        named = manifest.segments[1].name
    before = (await store.get(manifest_key(rid)), await store.get(signature_key(rid)))
    with pytest.raises(BackfillError) as refused:
        await backfill_into(recorder, manifest, tmp_path)
    assert refused.value.status == 409 and named in str(refused.value), str(refused.value)
    assert (await store.get(manifest_key(rid)), await store.get(signature_key(rid))) == before
    report = await verify_recording(store, rid, recorder.signer.public)
    assert not report.ok and report.first is not None and report.first.object == named


# -- export ---------------------------------------------------------------------------------


async def test_export_refuses_a_segment_that_does_not_match(tmp_path: Path) -> None:
    store = open_object_store("disk", root=tmp_path / "objects", signing_secret=b"s" * 32)
    signer = Signer.for_data_dir(tmp_path / "data")
    t0 = round(time.time() - 60, 3)
    manifest = await closed_recording(store, tmp_path, signer, t0)
    await flip_a_byte(store, object_key(manifest.recording_id, manifest.segments[1].name))
    out = tmp_path / "clip.mp4"
    with pytest.raises(ExportError, match=re.escape(manifest.segments[1].name)):
        await export_clip(store, manifest, t0 + 1.0, t0 + 6.0, out, signer)
    assert not out.exists() and not out.with_name("clip.mp4.sig").exists()
    await store.close()


# -- ids ------------------------------------------------------------------------------------


def test_recording_ids_of_one_stream_in_one_second_do_not_collide() -> None:
    """Two recordings of a stream started in the same second (a restart, two recorders)
    must not share objects: ids carry enough randomness (64 bits) that they cannot meet."""
    now = time.time()
    ids = [new_recording_id("room-1", now) for _ in range(5000)]
    assert len(set(ids)) == len(ids)


# -- the signing key --------------------------------------------------------------------------


def write_key(path: Path, mode: int) -> Signer:
    signer = Signer.generate()
    path.write_bytes(signer.private_pem())
    path.chmod(mode)
    return signer


def test_the_signing_key_may_live_outside_the_data_dir(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "court.pem"
    key.parent.mkdir()
    wanted = write_key(key, 0o600)
    config = load_config(
        None, {"node.data_dir": tmp_path / "data", "recorder.signing_key_file": str(key)}
    )
    signer = Signer.for_recorder(config.recorder, config.data_dir)
    assert signer.key_id == wanted.key_id
    assert not (tmp_path / "data" / "secrets" / KEY_FILE).exists()  # none generated
    # from the environment, as a cluster gives it
    os.environ["COURTCAST_RECORDER__SIGNING_KEY_FILE"] = str(key)
    try:
        from_env = load_config(None, {"node.data_dir": tmp_path / "data"})
    finally:
        del os.environ["COURTCAST_RECORDER__SIGNING_KEY_FILE"]
    assert Signer.for_recorder(from_env.recorder, from_env.data_dir).key_id == wanted.key_id
    # the public part, published as a file for third parties
    out = tmp_path / "court-public.pem"
    config_file = tmp_path / "node.yaml"
    config_file.write_text(
        json.dumps(
            {
                "node": {"data_dir": str(tmp_path / "data")},
                "recorder": {"signing_key_file": str(key)},
            }
        )
    )
    assert main(["recordings", "signing-key", "--config", str(config_file), "-o", str(out)]) == 0
    assert out.read_text() == public_pem(wanted.public)


@pytest.mark.parametrize("where", ["outside", "data-dir"])
def test_a_signing_key_others_can_read_is_refused(tmp_path: Path, where: str) -> None:
    if where == "outside":
        key = tmp_path / "court.pem"
        write_key(key, 0o644)
        overrides = {"recorder.signing_key_file": str(key)}
    else:
        key = tmp_path / "data" / "secrets" / KEY_FILE
        Signer.for_data_dir(tmp_path / "data")
        key.chmod(0o640)
        overrides = {}
    config = load_config(None, {"node.data_dir": tmp_path / "data", **overrides})
    with pytest.raises(SignatureError, match=re.escape(str(key)) + ".*0600"):
        Signer.for_recorder(config.recorder, config.data_dir)


def test_a_signing_key_file_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(None, {"recorder.signing_key_file": str(tmp_path / "nope.pem")})
    with pytest.raises((SignatureError, ConfigError), match=r"nope\.pem"):
        Signer.for_recorder(config.recorder, config.data_dir)


# -- verifying an export without the system ---------------------------------------------------


async def exported(tmp_path: Path) -> tuple[Path, Path, Manifest, Signer]:
    store = open_object_store("disk", root=tmp_path / "objects", signing_secret=b"s" * 32)
    signer = Signer.for_data_dir(tmp_path / "data")
    t0 = round(time.time() - 60, 3)
    manifest = await closed_recording(store, tmp_path, signer, t0)
    out = tmp_path / "given" / "clip.mp4"
    out.parent.mkdir()
    result = await export_clip(store, manifest, t0 + 1.0, t0 + 14.0, out, signer)
    await store.close()
    pem = tmp_path / "given" / "court.pem"
    pem.write_text(public_pem(signer.public))
    return out, result.signature_path, manifest, signer


async def test_an_export_carries_the_signed_excerpt_of_its_segments(tmp_path: Path) -> None:
    _, sig, manifest, _ = await exported(tmp_path)
    statement = json.loads(sig.read_text())["statement"]
    t0 = manifest.opened_at
    used = [s for s in manifest.segments if s.end > t0 + 1.0 and s.start < t0 + 14.0]
    assert [(s["name"], s["sha256"]) for s in statement["segments"]] == [
        (s.name, s.sha256) for s in used
    ]
    assert statement["manifest_sha256"] == sha256_hex(manifest.to_bytes())
    assert [g["cause"] for g in statement["gaps"]] == ["publisher-lost"]  # the cut inside it
    assert statement["case_number"] == manifest.case_number


def test_verify_export_needs_no_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip, _, _, _ = asyncio.run(exported(tmp_path))
    pem = clip.parent / "court.pem"
    monkeypatch.chdir(clip.parent)  # no config, no data dir here
    assert main(["recordings", "verify-export", str(clip), "--public-key", str(pem)]) == 0
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0x01
    clip.write_bytes(bytes(data))
    assert main(["recordings", "verify-export", str(clip), "--public-key", str(pem)]) == 1
    assert sorted(p.name for p in clip.parent.iterdir()) == [
        "clip.mp4",
        "clip.mp4.sig",
        "court.pem",
    ]


def readme_stock_check() -> str:
    """The shell commands the README gives for checking an export with stock tools."""
    text = README.read_text()
    found = re.search(r"<!-- verify-export-stock -->\s*```sh\n(.*?)```", text, re.S)
    assert found, "README: no stock-tool check of an export"
    return found.group(1)


@pytest.mark.parametrize("tamper", ["none", "clip", "statement"])
def test_the_readme_checks_an_export_with_stock_tools(tmp_path: Path, tamper: str) -> None:
    clip, sig, _, _ = asyncio.run(exported(tmp_path))
    if tamper == "clip":
        data = bytearray(clip.read_bytes())
        data[len(data) // 2] ^= 0x01
        clip.write_bytes(bytes(data))
    elif tamper == "statement":
        body = json.loads(sig.read_text())
        body["statement"]["to"] = body["statement"]["from"]
        sig.write_text(json.dumps(body))
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_stock_check()],
        cwd=clip.parent,
        env={"PATH": "/usr/bin:/bin", "CLIP": clip.name, "KEY": "court.pem"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if tamper == "none":
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Signature Verified Successfully" in run.stdout and "clip.mp4: OK" in run.stdout
    else:
        assert run.returncode != 0, run.stdout + run.stderr


def test_the_readme_stock_check_signature_is_the_one_python_makes(tmp_path: Path) -> None:
    """The canonical bytes the README rebuilds with jq are the bytes that were signed."""
    _, sig, _, signer = asyncio.run(exported(tmp_path))
    body = json.loads(sig.read_text())

    jq = subprocess.run(
        ["jq", "-cjS", ".statement", str(sig)], capture_output=True, check=True, timeout=10
    ).stdout
    assert jq == canonical(body["statement"])
    signer.public.verify(base64.b64decode(body["signature"]), jq)


# -- S3: versioning and Object Lock ------------------------------------------------------------


async def test_s3_bucket_is_created_with_versioning_and_object_lock(s3_server: S3Server) -> None:
    """SeaweedFS (the test S3) supports both; the bucket the store creates has them, and a
    locked object version cannot be deleted with the store's (non-bypass) rights."""
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    store = open_object_store(
        "s3",
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=bucket,
        versioning=True,
        object_lock_days=1,
        retry_budget_s=2.0,
    )
    await store.put("recordings/r/seg-0.m4s", b"evidence")
    client = s3_server.client()
    assert client.get_bucket_versioning(bucket).status == "Enabled"
    lock = client.get_object_lock_config(bucket)
    assert (lock.mode, lock.duration) == (GOVERNANCE, 1)
    await store.delete("recordings/r/seg-0.m4s")  # retention: a delete marker
    [version] = [
        o
        for o in client.list_objects(bucket, recursive=True, include_version=True)
        if not o.is_delete_marker
    ]
    with pytest.raises(Exception, match="AccessDenied"):
        client.remove_object(bucket, version.object_name, version_id=version.version_id)
    await store.close()


def test_the_cluster_config_asks_for_versioning_and_object_lock() -> None:
    config = load_config(Path(__file__).parents[2] / "configs" / "cluster.yaml")
    assert config.objects.s3 is not None
    assert config.objects.s3.versioning and (config.objects.s3.object_lock_days or 0) >= 1
