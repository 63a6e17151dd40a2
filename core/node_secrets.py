"""Node secrets kept in the data dir (created once, 0600), for signed URLs and tokens."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def node_secret(data_dir: Path, name: str, configured: str | None = None) -> bytes:
    """The configured secret, or one generated on first use and kept in data_dir/secrets.

    Every node of a cluster must be given the same secret in config, or URLs signed by one
    node fail on the others; the generated one suits a single node.
    """
    if configured:
        return configured.encode()
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{name}.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value
