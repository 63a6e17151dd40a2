"""Where courtcast patches a library's internals, and nowhere else.

Each module here patches one library for one reason, names the versions it was written
and tested against, and checks at start-up (`require_version`) that the installed version
is one of them: an upgrade fails loudly at start rather than misbehaving quietly later.
Each has a test that exercises the patched behaviour (tests/media_server/test_patches.py).
"""

from __future__ import annotations

from importlib.metadata import version


class UnsupportedLibraryVersion(RuntimeError):
    """A patched library is at a version its patch was not written for."""


def require_version(package: str, supported: tuple[str, ...], why: str) -> None:
    """Raise unless `package` is installed at one of the `supported` versions."""
    found = version(package)
    if found not in supported:
        raise UnsupportedLibraryVersion(
            f"{package} {found} is installed, but courtcast patches its internals ({why}) "
            f"and knows only {', '.join(supported)}: check the patch in media_server/patches/ "
            "against the new version, then add it there"
        )
