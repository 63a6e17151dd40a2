"""Ed25519 signatures of manifests and exports.

The private key is `recorder.signing_key_file` when set (a path, or its environment
override COURTCAST_RECORDER__SIGNING_KEY_FILE: the key can live outside the data dir, on a
mounted secret, and a cluster gives every recorder the same one); else it is generated once
into the data dir (secrets/recordings-ed25519.pem). Either way the file must be readable by
its owner only (0600 or stricter): a key others can read signs nothing. The public key is
published (GET /api/v1/recordings/signing-key, `courtcast recordings signing-key -o F`) so
that anyone can verify a recording or an export with the objects and that key alone.

A signature file is JSON: {"algorithm": "ed25519", "key_id": ..., "signature": base64}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

if TYPE_CHECKING:
    from core.config import RecorderConfig

KEY_FILE = "recordings-ed25519.pem"


class SignatureError(Exception):
    """A signature file that is unreadable or does not match."""


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_pem(pem: str | bytes) -> Ed25519PublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("the public key is not an Ed25519 key")
    return key


class Signer:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def for_recorder(cls, config: RecorderConfig, data_dir: Path) -> Signer:
        """The configured key file, else the data dir's (generated on first use)."""
        if config.signing_key_file is not None:
            return cls.from_file(config.signing_key_file)
        return cls.for_data_dir(data_dir)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """A key file, refused unless only its owner may read it."""
        try:
            with open(path, "rb") as f:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                if mode & 0o077:
                    raise SignatureError(
                        f"the recordings signing key {path} is mode {mode:04o}: others may "
                        "read it; make it 0600 (chmod 600)"
                    )
                return cls.from_pem(f.read())
        except FileNotFoundError:
            raise SignatureError(f"no recordings signing key at {path}") from None

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Signer:
        """The node's key, generated on first use (0600 in a 0700 folder)."""
        folder = data_dir / "secrets"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / KEY_FILE
        if path.exists():
            return cls.from_file(path)
        signer = cls.generate()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return cls.from_file(path)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.private_pem())
        return signer

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"the recordings signing key is not readable: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the recordings signing key is not an Ed25519 key")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        """The signature file's bytes for `data`."""
        signature = base64.b64encode(self._private.sign(data)).decode()
        return (
            json.dumps(
                {"algorithm": "ed25519", "key_id": self.key_id, "signature": signature}, indent=1
            ).encode()
            + b"\n"
        )


def verify_signature(public: Ed25519PublicKey, data: bytes, sig_file: bytes) -> None:
    """Raise SignatureError unless sig_file is a valid signature of data by public."""
    try:
        body = json.loads(sig_file)
        raw = base64.b64decode(body["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise SignatureError("the signature file is not readable") from None
    if body.get("key_id") != key_id(public):
        raise SignatureError(f"signed by key {body.get('key_id')}, not by {key_id(public)}")
    try:
        public.verify(raw, data)
    except InvalidSignature:
        raise SignatureError("the signature does not match the content") from None
