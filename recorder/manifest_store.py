"""Where a recording's manifest is kept: in the object store, as manifest.json and, once
the recording is closed, manifest.sig; and in the spool of the node writing it, as a
checkpoint the store may not have yet (recorder/spool.py).

Saving is one thing wherever it is done: the manifest first, then (closed) the signature
of the same bytes, so verify passes again once both are written.

Signing a closed recording again (backfill into it; a close) is sealing: the stored
manifest must still match its signature and the media must still match the manifest
(else signing would launder a change made behind the system's back, or vouch for damaged
media), and the version signed before is kept as manifest-v{n}.json/.sig (history: every
signature the system ever gave stays checkable). A crash between the two writes of a seal
leaves the recording failing verify, with the version signed before in its history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.manifest import InitEntry, Manifest, SegmentEntry
from recorder.signing import SignatureError, Signer, verify_signature
from recorder.spool import Spool
from storage.objects import ObjectNotFound, ObjectStore
from storage.recording_keys import (
    MANIFEST_NAME,
    manifest_key,
    object_key,
    recording_prefix,
    signature_key,
    version_names,
    version_of,
)

# an object store's put(key, data, content_type), or an upload queue's that retries
Put = Callable[[str, bytes, str], Awaitable[object]]

JSON = "application/json"


async def read_manifest(store: ObjectStore, recording_id: str) -> Manifest:
    """The stored manifest. ObjectNotFound if there is none, ValueError if unreadable."""
    return Manifest.from_bytes(await store.get(manifest_key(recording_id)))


async def load_manifest(store: ObjectStore, spool_dir: Path, recording_id: str) -> Manifest:
    """The newest manifest of an open recording: the spool's checkpoint if this node has
    one, else the object store's."""
    local = Spool(spool_dir, recording_id).load_manifest()
    if local is not None:
        return Manifest.from_bytes(local)
    try:
        return await read_manifest(store, recording_id)
    except ObjectNotFound:
        raise LookupError(f"recording {recording_id} has no manifest") from None


async def save_manifest(
    put: Put, manifest: Manifest, signer: Signer, data: bytes | None = None
) -> None:
    """Store the manifest, and sign it if the recording is closed. data: the manifest's
    bytes when the caller has them already (they are costly to make for a long one)."""
    data = manifest.to_bytes() if data is None else data
    await put(manifest_key(manifest.recording_id), data, JSON)
    if manifest.state == "closed":
        await put(signature_key(manifest.recording_id), signer.sign(data), JSON)


class EvidenceError(Exception):
    """A recording that must not be signed (again) or exported: what is wrong, naming the
    object."""


async def signed_bytes(store: ObjectStore, recording_id: str, public: Ed25519PublicKey) -> bytes:
    """The stored manifest's bytes, checked against its signature when it has one (a closed
    recording must). EvidenceError when they do not match."""
    try:
        data = await store.get(manifest_key(recording_id))
    except ObjectNotFound:
        raise LookupError(f"recording {recording_id} has no manifest") from None
    try:
        sig = await store.get(signature_key(recording_id))
    except ObjectNotFound:
        if Manifest.from_bytes(data).state == "closed":
            raise EvidenceError(f"{MANIFEST_NAME} is closed but not signed") from None
        return data
    try:
        verify_signature(public, data, sig)
    except SignatureError as exc:
        raise EvidenceError(f"{MANIFEST_NAME} does not match its signature ({exc})") from None
    return data


async def check_media(
    store: ObjectStore, recording_id: str, entries: Sequence[InitEntry | SegmentEntry]
) -> None:
    """EvidenceError naming the first object that is missing or differs from its entry."""
    for entry in entries:
        digest = hashlib.sha256()
        try:
            async for chunk in store.stream(object_key(recording_id, entry.name)):
                digest.update(chunk)
        except ObjectNotFound:
            raise EvidenceError(f"{entry.name} is missing") from None
        if digest.hexdigest() != entry.sha256:
            raise EvidenceError(f"{entry.name} changed: its SHA-256 differs from the manifest's")


async def seal_manifest(
    store: ObjectStore,
    put: Put,
    manifest: Manifest,
    signer: Signer,
    check: Sequence[InitEntry | SegmentEntry] = (),
) -> None:
    """Store and sign a closed manifest, after checking what is stored (see the module's
    docstring); check: the media to hash first (what this process did not hash itself).
    EvidenceError, and nothing written, when a check fails."""
    rid = manifest.recording_id
    try:
        old_sig: bytes | None = await store.get(signature_key(rid))
    except ObjectNotFound:
        old_sig = None
    old = await signed_bytes(store, rid, signer.public) if old_sig is not None else b""
    await check_media(store, rid, check)
    data = manifest.to_bytes()
    if old_sig is not None and old != data:
        names = [
            i.key.removeprefix(recording_prefix(rid))
            for i in await store.list(recording_prefix(rid))
        ]
        n = 1 + max((v for v in map(version_of, names) if v is not None), default=0)
        json_name, sig_name = version_names(n)
        await put(object_key(rid, json_name), old, JSON)
        await put(object_key(rid, sig_name), old_sig, JSON)
    await put(manifest_key(rid), data, JSON)
    await put(signature_key(rid), signer.sign(data), JSON)
