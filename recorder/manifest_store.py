"""Where a recording's manifest is kept: in the object store, as manifest.json and, once
the recording is closed, manifest.sig; and in the spool of the node writing it, as a
checkpoint the store may not have yet (recorder/spool.py).

Saving is one thing wherever it is done (closing a recording, backfill into a closed
one): the manifest first, then the signature of the same bytes, so verify passes again
once both are written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from recorder.manifest import Manifest
from recorder.signing import Signer
from recorder.spool import Spool
from storage.objects import ObjectNotFound, ObjectStore
from storage.recording_keys import manifest_key, signature_key

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
