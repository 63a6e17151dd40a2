"""`http.port: 0` takes a free port; the URLs the node hands out name the port it got."""

from __future__ import annotations

from pathlib import Path

import httpx

from courtcast.platform import Platform
from storage.objects import ObjectStore
from storage.role import StorageRole
from tests.courtcast.test_platform import start_platform


def storage_objects(node: Platform) -> ObjectStore:
    return next(r for r in node.roles if isinstance(r, StorageRole)).objects


async def test_signed_object_urls_name_the_port_the_node_listens_on(tmp_path: Path) -> None:
    node = await start_platform(tmp_path, **{"http.host": "127.0.0.1"})
    try:
        objects = storage_objects(node)
        await objects.put("probe/one.txt", b"evidence")
        url = await objects.signed_url("probe/one.txt")
        assert url.startswith(f"http://127.0.0.1:{node.http_port}/objects/"), url
        async with httpx.AsyncClient() as client:
            answer = await client.get(url)
        assert answer.status_code == 200 and answer.content == b"evidence"
    finally:
        await node.stop()
