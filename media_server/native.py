"""The modules setup.py compiles with Cython, and whether the compiled build is what runs.

A compiled module shadows its .py (the import system prefers the extension), so an edit to
the .py changes nothing until the build runs again. problems() says so, rather than letting
old code run unnoticed; the tests refuse to start and `courtcast up` warns.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a .py with its .pxd of C types beside it, or a .pyx whose plain-Python twin runs unbuilt
SOURCES = ("media_server/rtmp/chunk.py", "media_server/webrtc/frame_send_c.pyx")


def built(source: Path) -> Path | None:
    """The extension compiled from source, if there is one beside it."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def _extensions() -> list[Path]:
    found: set[Path] = set()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found.update((ROOT / "media_server").rglob("*" + suffix))
    return sorted(found)


def problems() -> list[str]:
    """One line per compiled module that is missing or older than its source, and per
    build left over from a module no longer compiled; empty when the build is current, or
    when this is an installed package rather than a checkout."""
    if not (ROOT / "setup.py").exists():
        return []
    compiled = {(ROOT / rel).with_suffix("") for rel in SOURCES}
    out = [
        f"{ext.relative_to(ROOT)} is a build of a module no longer compiled: delete it"
        for ext in _extensions()
        if ext.parent / ext.name.split(".")[0] not in compiled
    ]
    for rel in SOURCES:
        source = ROOT / rel
        ext = built(source)
        if ext is None:
            out.append(
                f"{rel} is not compiled: it runs as plain Python, slower "
                f"(scripts/setup.sh venv builds it)"
            )
            continue
        pxd = source.with_suffix(".pxd")
        newest = max(source.stat().st_mtime, pxd.stat().st_mtime if pxd.exists() else 0.0)
        if ext.stat().st_mtime < newest:
            out.append(
                f"{rel} changed after {ext.name} was built: the old build runs "
                f"(scripts/setup.sh venv rebuilds it)"
            )
    return out
