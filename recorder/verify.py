"""Verify a recording from its stored objects and the public key alone.

Recomputes the SHA-256 of every init and segment object, checks each against the manifest
and the chain of entry hashes, looks for objects the manifest does not list, and checks
the Ed25519 signature of the manifest (once the recording is closed), and every earlier
signed version kept when it was signed again (each must verify, and its segments must be
the first ones of the manifest now: history only grows). Given the index's state, a
manifest that is not closed (so unsigned) while the index says closed fails: someone
re-opened it to change it. Reports OK, or the first bad object and why: changed, missing,
reordered, extra, bad signature, broken chain, reopened, rewritten.

An OK report also says whether the recording is complete: "complete, no gaps" when every
gap was filled by backfill (a device agent uploading what it recorded during a WAN cut),
else the gaps left, each with its time and cause.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.manifest import Gap, Manifest, overlap
from recorder.playback import program_date_time
from recorder.signing import SignatureError, verify_signature
from storage.objects import ObjectNotFound, ObjectStore
from storage.recording_keys import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    is_media_name,
    recording_prefix,
    segment_name,
    version_names,
    version_of,
)


@dataclass
class Problem:
    object: str
    why: str  # changed | missing | reordered | extra | bad signature | broken chain | ...
    detail: str = ""


@dataclass
class VerifyReport:
    recording_id: str
    ok: bool = True
    signed: bool = False
    state: str = ""
    segments: int = 0
    duration_s: float = 0.0
    gaps: int = 0  # every gap the manifest lists, filled or not
    filled_gaps: int = 0  # of those, filled by backfill
    backfilled_segments: int = 0
    versions: int = 0  # earlier signed versions kept (signed again after backfill)
    remaining_gaps: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def fail(self, obj: str, why: str, detail: str = "") -> None:
        self.ok = False
        self.problems.append(Problem(obj, why, detail))

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        if self.ok:
            signed = "signed" if self.signed else "not signed yet (recording open)"
            if self.versions:
                signed += f", {self.versions} earlier signed version(s) kept"
            return (
                f"OK: recording {self.recording_id}, {self.segments} segments, "
                f"{self.duration_s:.1f} s, {self.completeness()}, {signed}"
            )
        p = self.problems[0]
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        detail = f": {p.detail}" if p.detail else ""
        return f"NOT OK: {p.object} {p.why}{detail}{more}"

    def completeness(self) -> str:
        filled = (
            (f" ({self.filled_gaps} filled by backfill, {self.backfilled_segments} segments)")
            if self.filled_gaps
            else ""
        )
        if not self.remaining_gaps:
            return f"complete, no gaps{filled}"
        listed = "; ".join(
            f"{g['from']} to {g['to']} {g['cause']}" + (f" ({g['reason']})" if g["reason"] else "")
            for g in self.remaining_gaps
        )
        n = len(self.remaining_gaps)
        return f"{n} gap{'s' if n > 1 else ''} left: {listed}{filled}"

    @property
    def complete(self) -> bool:
        return self.ok and not self.remaining_gaps

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete, "summary": self.summary()}


def _gap_out(gap: Gap) -> dict[str, Any]:
    return {
        "start": gap.start,
        "end": gap.end,
        "from": program_date_time(gap.start),
        "to": program_date_time(gap.end),
        "cause": gap.cause,
        "reason": gap.reason,
    }


async def _sha256(store: ObjectStore, key: str) -> str | None:
    digest = hashlib.sha256()
    try:
        async for chunk in store.stream(key):
            digest.update(chunk)
    except ObjectNotFound:
        return None
    return digest.hexdigest()


async def verify_recording(
    store: ObjectStore,
    recording_id: str,
    public_key: Ed25519PublicKey,
    indexed_state: str = "",
) -> VerifyReport:
    """indexed_state: the recording's state in the index ("" when unknown)."""
    report = VerifyReport(recording_id)
    prefix = recording_prefix(recording_id)
    try:
        raw = await store.get(prefix + MANIFEST_NAME)
    except ObjectNotFound:
        report.fail(MANIFEST_NAME, "missing")
        return report
    try:
        manifest = Manifest.from_bytes(raw)
    except ValueError as exc:
        report.fail(MANIFEST_NAME, "unreadable", str(exc))
        return report
    report.state, report.segments = manifest.state, len(manifest.segments)
    report.duration_s, report.gaps = round(manifest.duration, 3), len(manifest.gaps)
    report.filled_gaps = sum(1 for g in manifest.gaps if g.filled)
    report.backfilled_segments = sum(1 for s in manifest.segments if s.backfilled)
    report.remaining_gaps = [_gap_out(g) for g in manifest.open_gaps()]
    if indexed_state == "closed" and manifest.state != "closed":
        report.fail(
            MANIFEST_NAME, "reopened", f"the index says closed, the manifest says {manifest.state}"
        )
    await _check_signature(store, prefix, raw, manifest, public_key, report)
    names = [info.key.removeprefix(prefix) for info in await store.list(prefix)]
    await _check_versions(store, prefix, manifest, names, public_key, report)
    await _check_inits(store, prefix, manifest, report)
    await _check_segments(store, prefix, manifest, report)
    _check_extra(names, manifest, report)
    return report


async def _check_signature(
    store: ObjectStore,
    prefix: str,
    raw: bytes,
    manifest: Manifest,
    public_key: Ed25519PublicKey,
    report: VerifyReport,
) -> None:
    try:
        sig = await store.get(prefix + SIGNATURE_NAME)
    except ObjectNotFound:
        if manifest.state == "closed":
            report.fail(SIGNATURE_NAME, "missing", "a closed recording must be signed")
        return
    try:
        verify_signature(public_key, raw, sig)
    except SignatureError as exc:
        report.fail(MANIFEST_NAME, "bad signature", str(exc))
        return
    report.signed = True


async def _check_inits(
    store: ObjectStore, prefix: str, manifest: Manifest, report: VerifyReport
) -> None:
    for init in manifest.inits:
        digest = await _sha256(store, prefix + init.name)
        if digest is None:
            report.fail(init.name, "missing")
        elif digest != init.sha256:
            report.fail(init.name, "changed", "its SHA-256 differs from the manifest's")


async def _check_segments(
    store: ObjectStore, prefix: str, manifest: Manifest, report: VerifyReport
) -> None:
    by_hash = {s.sha256: s.seq for s in manifest.segments}
    expected_prev = manifest.genesis()
    seen: set[int] = set()
    last_live = -1
    for entry in manifest.segments:
        # the recorder numbers its segments in order; a backfilled one takes the next free
        # number when it arrives, so it may come before a live one with a lower number
        in_order = entry.backfilled or entry.seq > last_live
        if entry.prev != expected_prev or entry.seq in seen or not in_order:
            report.fail(
                entry.name, "broken chain", "the manifest entry does not follow the one before it"
            )
        if entry.backfilled and not any(
            overlap(entry.start, entry.end, g.start, g.end) > 0 for g in manifest.gaps
        ):
            report.fail(entry.name, "misplaced", "a backfilled segment outside every gap")
        seen.add(entry.seq)
        last_live = last_live if entry.backfilled else entry.seq
        expected_prev = entry.entry_hash()
        digest = await _sha256(store, prefix + entry.name)
        if digest is None:
            report.fail(entry.name, "missing")
        elif digest != entry.sha256:
            other = by_hash.get(digest)
            if other is not None:
                why = f"it holds the content of {segment_name(other)}"
                report.fail(entry.name, "reordered", why)
            else:
                report.fail(entry.name, "changed", "its SHA-256 differs from the manifest's")


async def _check_versions(
    store: ObjectStore,
    prefix: str,
    manifest: Manifest,
    names: list[str],
    public_key: Ed25519PublicKey,
    report: VerifyReport,
) -> None:
    """Each earlier signed version verifies, and the manifest now extends it."""
    count = max((v for v in map(version_of, names) if v is not None), default=0)
    now = [s.entry_hash() for s in manifest.segments]
    for n in range(1, count + 1):
        json_name, sig_name = version_names(n)
        try:
            raw, sig = await store.get(prefix + json_name), await store.get(prefix + sig_name)
            verify_signature(public_key, raw, sig)
            old = Manifest.from_bytes(raw)
        except ObjectNotFound as exc:
            report.fail(exc.key.removeprefix(prefix), "missing")
            continue
        except (SignatureError, ValueError) as exc:
            report.fail(json_name, "bad signature", str(exc))
            continue
        if [s.entry_hash() for s in old.segments] != now[: len(old.segments)]:
            report.fail(json_name, "rewritten", "the manifest now does not extend this version")
    report.versions = count


def _check_extra(names: list[str], manifest: Manifest, report: VerifyReport) -> None:
    listed = {s.name for s in manifest.segments} | {i.name for i in manifest.inits}
    for name in names:
        if name in (MANIFEST_NAME, SIGNATURE_NAME) or name in listed:
            continue
        if version_of(name) is not None:
            continue
        if is_media_name(name) and manifest.state != "closed":
            continue  # an open recording's next segment, uploaded before its checkpoint
        report.fail(name, "extra", "an object the manifest does not list")
