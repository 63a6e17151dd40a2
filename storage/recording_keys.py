"""The object keys of a recording: everything of recording `{id}` lies under
`recordings/{id}/`, named as below. The one place these formats are written down.

    manifest.json   the manifest (recorder/manifest.py), rewritten at each checkpoint
    manifest.sig    its signature, written once the recording is closed
    manifest-v{n}.json, manifest-v{n}.sig
                    the n-th earlier signed version (n from 1) and its signature, kept
                    when a closed recording is signed again (backfill): history, never
                    overwritten
    init.mp4        the first init segment; init-{seq}.mp4 one for a codec change at
                    segment seq; init-bf{n}.mp4 the n-th a device agent backfilled
    seg-{seq}.m4s   media segment seq

A name is what a manifest lists and a recording's playlist links to; a key is the
recording's prefix and a name. Signed recordings are laid out this way, and whoever
verifies one reads them so: the formats must not change.
"""

from __future__ import annotations

import re

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
FIRST_INIT_NAME = "init.mp4"

_MEDIA_NAME = re.compile(r"^(seg-\d+\.m4s|init(-\d+|-bf\d+)?\.mp4)$")
_VERSION_NAME = re.compile(r"^manifest-v([1-9]\d*)\.(json|sig)$")


def recording_prefix(recording_id: str) -> str:
    """What every key of the recording starts with (for listing and deleting it)."""
    return f"recordings/{recording_id}/"


def object_key(recording_id: str, name: str) -> str:
    """The key of the recording's object called name (a manifest's init or segment name)."""
    return recording_prefix(recording_id) + name


def manifest_key(recording_id: str) -> str:
    return object_key(recording_id, MANIFEST_NAME)


def signature_key(recording_id: str) -> str:
    return object_key(recording_id, SIGNATURE_NAME)


def segment_name(seq: int) -> str:
    return f"seg-{seq}.m4s"


def segment_key(recording_id: str, seq: int) -> str:
    return object_key(recording_id, segment_name(seq))


def init_name(seq: int) -> str:
    """The init segment of a codec change, first used by segment seq."""
    return f"init-{seq}.mp4"


def backfill_init_name(n: int) -> str:
    """The n-th init segment a device agent uploaded to fill gaps."""
    return f"init-bf{n}.mp4"


def is_media_name(name: str) -> bool:
    """Whether name names a media segment or an init segment (what playback may fetch)."""
    return _MEDIA_NAME.match(name) is not None


def version_names(n: int) -> tuple[str, str]:
    """The names of the n-th earlier signed version of the manifest and its signature."""
    return f"manifest-v{n}.json", f"manifest-v{n}.sig"


def version_of(name: str) -> int | None:
    """n when name is one of version_names(n), else None."""
    found = _VERSION_NAME.match(name)
    return int(found.group(1)) if found else None
