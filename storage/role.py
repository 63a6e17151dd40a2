"""The storage role: state (Redis, embedded by default) and objects (disk or S3)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from core.config import StorageSection
from core.node_secrets import node_secret
from storage.objects import ObjectStore, open_object_store
from storage.redis_server import EmbeddedRedis
from storage.state import StateStore, StateStoreUnavailable

log = logging.getLogger(__name__)


class StorageRole:
    name = "storage"

    def __init__(self, config: StorageSection) -> None:
        self.config = config
        self.embedded: EmbeddedRedis | None = None
        self._state: StateStore | None = None
        self._objects: ObjectStore | None = None

    @property
    def state(self) -> StateStore:
        assert self._state is not None, "storage role not started"
        return self._state

    @property
    def objects(self) -> ObjectStore:
        assert self._objects is not None, "storage role not started"
        return self._objects

    async def start(self) -> None:
        self._state = await open_state(self.config, self)
        self._objects = build_object_store(self.config)

    async def stop(self) -> None:
        if self._objects is not None:
            await self._objects.close()
        if self._state is not None:
            await self._state.close()
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None

    async def health(self) -> dict[str, Any]:
        state = self._state.health() if self._state else {"state": "starting"}
        objects = await self._objects.health() if self._objects else {"state": "starting"}
        overall = "ok" if state["state"] == objects["state"] == "ok" else "degraded"
        backend = "embedded" if self.embedded else "external"
        return {
            "state": overall,
            "redis": {**state, "kind": backend},
            "objects": {**objects, "backend": self.config.objects.backend},
        }


async def open_state(config: StorageSection, owner: StorageRole | None = None) -> StateStore:
    """Connect to the configured Redis, starting the embedded one when none is configured.

    With an owner, the embedded server is handed to it to stop later.
    """
    url = config.state.redis_url
    embedded = None
    if url is None:
        embedded = EmbeddedRedis(config.data_dir / "redis", fsync=config.state.fsync)
        await embedded.start()
        url = embedded.url
    state = StateStore(url)
    try:
        await state.connect()
    except StateStoreUnavailable:
        await state.close()
        if embedded is not None:
            await embedded.stop()
        raise
    if owner is not None:
        owner.embedded = embedded
    return state


@asynccontextmanager
async def open_state_for_cli(config: StorageSection) -> AsyncIterator[StateStore]:
    """State for a CLI command: the running node's embedded Redis if one is up (the data
    dir's socket answers), else a temporary one on the same files, stopped afterwards."""
    if config.state.redis_url is None:
        probe = EmbeddedRedis(config.data_dir / "redis", fsync=config.state.fsync)
        if probe.socket_path.exists():
            state = StateStore(probe.url)
            try:
                await state.connect(timeout_s=1.0)
            except StateStoreUnavailable:
                await state.close()
            else:
                try:
                    yield state
                finally:
                    await state.close()
                return
    holder = StorageRole(config)
    state = await open_state(config, holder)
    try:
        yield state
    finally:
        await state.close()
        if holder.embedded is not None:
            await holder.embedded.stop()


def build_object_store(config: StorageSection) -> ObjectStore:
    secret = node_secret(config.data_dir, "objects-url", config.url_signing_secret)
    s3 = config.objects.s3
    return open_object_store(
        config.objects.backend,
        root=config.objects_dir,
        endpoint=s3.endpoint if s3 else None,
        access_key=s3.access_key if s3 else None,
        secret_key=s3.secret_key if s3 else None,
        bucket=s3.bucket if s3 else "courtcast",
        region=s3.region if s3 else "us-east-1",
        secure=s3.secure if s3 else False,
        versioning=s3.versioning if s3 else False,
        object_lock_days=s3.object_lock_days if s3 else None,
        signing_secret=secret,
        public_base_url=config.public_url,
    )
