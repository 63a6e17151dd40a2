"""Export a stretch of a recording as one MP4: remuxed by ffmpeg (-c copy), never re-encoded.

The clip is cut from the keyframe at or before `from` (ffmpeg's input seek, stream copy);
the MP4's edit list starts presentation at `from` exactly, and it ends at `to`. It comes with a signature file: a signed statement of what it is (which
recording, which stretch, the export's SHA-256), so that anyone holding the public key can
check that an exported file is what the court's system produced.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.manifest import Manifest, canonical, object_prefix
from recorder.playback import TimeError, select
from recorder.signing import SignatureError, Signer, verify_signature
from storage.objects import ObjectStore

Progress = Callable[[float], None]  # fraction done, 0..1


class ExportError(Exception):
    """An export that cannot be made, phrased for the user."""


@dataclass
class ExportResult:
    path: Path
    start: float  # wall-clock where presentation starts (`from`, or the first segment)
    end: float
    duration_s: float
    sha256: str
    bytes: int
    signature_path: Path


def _media_time(manifest: Manifest, wallclock: float) -> float:
    """The recording's media time at a wall-clock time (gaps take no media time)."""
    for seg in manifest.segments:
        if seg.start <= wallclock < seg.end:
            return seg.media_start + wallclock - seg.start
        if wallclock < seg.start:
            return seg.media_start
    last = manifest.segments[-1]
    return last.media_start + last.duration


async def export_clip(store: ObjectStore, manifest: Manifest, start: float, end: float,
                      out: Path, signer: Signer, progress: Progress | None = None) -> ExportResult:
    if end <= start:
        raise TimeError("--to must be after --from")
    segments = select(manifest, start, end)
    if not segments:
        raise TimeError("nothing was recorded between --from and --to")
    if len({s.init for s in segments}) > 1:
        raise ExportError("the codecs changed inside this stretch; export the parts before "
                          "and after the change separately")
    prefix = object_prefix(manifest.recording_id)
    skip_s = max(0.0, _media_time(manifest, start) - segments[0].media_start)
    media_s = _media_time(manifest, end) - segments[0].media_start - skip_s
    with tempfile.TemporaryDirectory(prefix="courtcast-export-") as tmp:
        joined = Path(tmp) / "joined.mp4"
        with open(joined, "wb") as f:
            f.write(await store.get(prefix + segments[0].init))
            for seg in segments:
                async for chunk in store.stream(prefix + seg.name):
                    f.write(chunk)
        await _remux(joined, out, skip_s, media_s, progress)
    data_sha = _file_sha256(out)
    first = max(start, segments[0].start)
    statement = {"kind": "courtcast-export/1", "recording_id": manifest.recording_id,
                 "stream": manifest.stream, "case_number": manifest.case_number,
                 "from": round(first, 6), "to": round(min(end, segments[-1].end), 6),
                 "requested_from": start, "requested_to": end,
                 "sha256": data_sha, "bytes": out.stat().st_size,
                 "manifest_sha256": hashlib.sha256(manifest.to_bytes()).hexdigest()}
    sig_path = out.with_name(out.name + ".sig")
    sig_path.write_bytes(sign_statement(signer, statement))
    return ExportResult(out, first, statement["to"], media_s, data_sha, out.stat().st_size,
                        sig_path)


async def _remux(source: Path, out: Path, skip_s: float, media_s: float,
                 progress: Progress | None) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1", "-ss", f"{skip_s:.3f}", "-i", str(source), "-t", f"{media_s:.3f}", "-map", "0",
        "-c", "copy", "-movflags", "+faststart", "-y", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    pattern = re.compile(rb"^out_time_us=(\d+)")
    async for line in proc.stdout:
        match = pattern.match(line)
        if match and progress is not None and media_s > 0:
            progress(min(1.0, int(match.group(1)) / 1e6 / media_s))
    err = await proc.stderr.read()
    if await proc.wait() != 0:
        raise ExportError(f"ffmpeg could not remux the clip: {err.decode(errors='replace')}")
    if progress is not None:
        progress(1.0)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sign_statement(signer: Signer, statement: dict[str, Any]) -> bytes:
    body = json.loads(signer.sign(canonical(statement)))
    return json.dumps({"statement": statement, **body}, indent=1).encode() + b"\n"


def verify_export(public: Ed25519PublicKey, clip: Path, sig_file: bytes) -> dict[str, Any]:
    """The signed statement if the clip is the one it describes; SignatureError if not."""
    try:
        body = json.loads(sig_file)
        statement = body.pop("statement")
    except (ValueError, KeyError, TypeError):
        raise SignatureError("the export's signature file is not readable") from None
    verify_signature(public, canonical(statement), json.dumps(body).encode())
    if _file_sha256(clip) != statement["sha256"]:
        raise SignatureError("the clip's content differs from what was signed")
    return dict(statement)
