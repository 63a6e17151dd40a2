"""What every command shares: the user's mistakes, the --config/--data-dir flags, and
opening the node's state or object store from them."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Config, load_config

if TYPE_CHECKING:
    from storage.objects import ObjectStore
    from storage.state import StateStore

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake on the command line, phrased for the user."""


def state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--data-dir", type=Path, help="where state and objects live")


def config_from(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    flags = {"data_dir": "node.data_dir", "http_port": "http.port", "rtmp_port": "rtmp.port"}
    for attr, key in flags.items():
        if getattr(args, attr, None) is not None:
            overrides[key] = getattr(args, attr)
    for attr, key in (
        ("demo", "demo.enabled"),
        ("open", "security.open"),
        ("record_all", "recorder.record_all"),
    ):
        if getattr(args, attr, False):
            overrides[key] = True
    return load_config(args.config, overrides)


def with_state(args: argparse.Namespace, work: Callable[[StateStore], Awaitable[int]]) -> int:
    """Run work on the node's state (its running Redis, or one started for the command)."""
    config = config_from(args)

    async def run() -> int:
        from storage.role import open_state_for_cli

        async with open_state_for_cli(config.storage_section()) as state:
            return await work(state)

    return asyncio.run(run())


def with_objects(
    args: argparse.Namespace, work: Callable[[Config, ObjectStore], Awaitable[int]]
) -> int:
    """Run work on the node's object store, closed afterwards."""
    config = config_from(args)

    async def run() -> int:
        from storage.role import build_object_store

        store = build_object_store(config.storage_section())
        try:
            return await work(config, store)
        finally:
            await store.close()

    return asyncio.run(run())
