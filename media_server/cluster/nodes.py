"""The media nodes of a cluster: each says, with a heartbeat that expires, where it is
reached (its HTTP base and RTMP address) and how loaded it is."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from core import presence
from storage.state import StateStore


class NodeDirectory:
    def __init__(self, state: StateStore, name: str, url: str, rtmp: str, ttl_s: float) -> None:
        self.state = state
        self.name = name
        self.url = url
        self.rtmp = rtmp
        self.ttl_s = ttl_s

    async def heartbeat(self, load: dict[str, Any]) -> None:
        info = {"url": self.url, "rtmp": self.rtmp, "load": load}
        await self.state.touch_presence(presence.MEDIA_NODE, self.name, self.ttl_s, info)

    async def leave(self) -> None:
        await self.state.drop_presence(presence.MEDIA_NODE, self.name)

    async def alive(self, node: str) -> bool:
        """Whether node's heartbeat is in the directory (its last one within ttl_s)."""
        return await self.state.is_present(presence.MEDIA_NODE, node)

    async def silent_for(self, node: str) -> float | None:
        """How long since node's last heartbeat (every node beats with the same ttl_s);
        None once it is gone from the directory."""
        left = await self.state.presence_left_s(presence.MEDIA_NODE, node)
        return None if left is None else max(0.0, self.ttl_s - left)

    async def url_of(self, node: str) -> str | None:
        """A live node's HTTP base, None once its heartbeat expired."""
        info = await self.state.get_presence(presence.MEDIA_NODE, node)
        return str(info["url"]) if info and info.get("url") else None

    async def nodes(self) -> dict[str, dict[str, Any]]:
        return await self.state.present(presence.MEDIA_NODE)


WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def publish_urls(nodes: dict[str, dict[str, Any]]) -> list[str]:
    """The RTMP publish URLs (rtmp://host:port/live) of the nodes in the directory, the
    least loaded first: what an agent enrolling in a cluster is given. A node listening on
    a wildcard address is reached at its public URL's host."""
    ranked = sorted(nodes.items(), key=lambda n: (n[1].get("load", {}).get("streams", 0), n[0]))
    urls = []
    for _, info in ranked:
        host, _, port = str(info.get("rtmp", "")).rpartition(":")
        if not port:
            continue  # a node without RTMP
        if host in WILDCARD_HOSTS:
            host = urlsplit(str(info.get("url", ""))).hostname or ""
        if host:
            urls.append(f"rtmp://{host}:{port}/live")
    return urls


async def cluster_publish_urls(state: StateStore) -> list[str]:
    """publish_urls of the media nodes alive now (none outside a cluster)."""
    return publish_urls(await state.present(presence.MEDIA_NODE))
