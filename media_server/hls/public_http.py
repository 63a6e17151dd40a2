"""HTTP routes of the public renditions: /public/{name}/index.m3u8, part-{msn}.{i}.m4s,
seg-{msn}.m4s, init-{n}.mp4. Built for a cache in front (nginx, a CDN):

- parts, segments and init segments never change under their name (numbers are
  time-based, media_server/hls/output.py), so they are `immutable` with a strong ETag;
- a playlist is fresh for a second; a blocking one (_HLS_msn/_HLS_part) answers the same
  for its query once it can be answered, so a cache keyed by the full URL keeps it for the
  blocking window and collapses every viewer's request into one;
- every refusal is the same 404 with `no-store`: an unknown name, a broadcast that ended,
  a part out of the window. Playlists carry no query (no tokens here): one cache entry
  serves every viewer.

No sign-in and no access check beyond "is this name broadcasting": what is not public is
not in PublicRenditions at all. Raw ASGI, served ahead of the app, for the reasons given
in media_server/hls/http.py.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from core.identity import PUBLIC_MARK, mark_public
from media_server.hls.delayed import DelayedRendition
from media_server.hls.http import (
    INIT_TYPE,
    PLAYLIST_TYPE,
    SEGMENT_TYPE,
    blocking_request,
    send_error,
)
from media_server.public import PublicRenditions

PLAYLIST_MAX_AGE_S = 1
NO_STORE = {"Cache-Control": "no-store"}

# (body, etag, cache-control, content-type)
Answer = tuple[bytes, str, str, str]
Handler = Callable[[Request, dict[str, Any]], Awaitable[Answer]]


def not_found() -> HTTPException:
    return HTTPException(404, "Not Found", headers=NO_STORE)  # as the app answers an unknown path


class _Endpoint:
    __slots__ = ("_handle", PUBLIC_MARK)  # the mark: only open public sessions answer

    def __init__(self, handle: Handler) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            raise HTTPException(405, headers={"Allow": "GET"})
        request = Request(scope, receive, send)
        body, etag, cache, media_type = await self._handle(request, scope["path_params"])
        status = 200
        if etag in request.headers.get("if-none-match", ""):
            status, body = 304, b""
        headers = [
            (b"cache-control", cache.encode()),
            (b"etag", etag.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", media_type.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def make_public_router(renditions: PublicRenditions) -> APIRouter:
    router = APIRouter(tags=["public"])
    for path, handle in _handlers(renditions):
        endpoint = mark_public(_Endpoint(handle), "public broadcasts: open public sessions only")
        router.routes.append(Route(path, endpoint))
    return router


class PublicFastPath:
    """The same routes for the front door (courtcast/http_front.py), ahead of the app."""

    def __init__(self, renditions: PublicRenditions) -> None:
        self._routes = [Route(path, _Endpoint(handle)) for path, handle in _handlers(renditions)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        for route in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                try:
                    await route.app(scope, receive, send)
                except HTTPException as exc:
                    await send_error(send, exc)
                return True
        return False


def _handlers(renditions: PublicRenditions) -> list[tuple[str, Handler]]:
    options = renditions.options
    media_cache = f"public, max-age={options.max_age_s}, immutable"
    playlist_cache = f"public, max-age={PLAYLIST_MAX_AGE_S}"
    blocking_cache = f"public, max-age={math.ceil(options.block_timeout_s)}"

    def broadcasting(name: str, since: DelayedRendition | None = None) -> DelayedRendition:
        """The rendition called name, or 404; after a wait, still the same one."""
        found = renditions.get(name)
        if found is None or found.closed or (since is not None and found is not since):
            raise not_found()
        return found

    async def media_playlist(request: Request, params: dict[str, Any]) -> Answer:
        name: str = params["name"]
        msn, part = blocking_request(request)
        rendition = broadcasting(name)
        seg = rendition.segmenter
        if seg.last_msn is None:
            wait = options.block_timeout_s if msn is not None else options.first_segment_wait_s
            if not await rendition.wait_first_segment(wait):
                broadcasting(name, rendition)
                raise HTTPException(503, "no segment yet", headers={"Retry-After": "1", **NO_STORE})
        if msn is not None:
            newest = seg.last_msn
            assert newest is not None
            if msn > newest + 2:
                raise HTTPException(400, f"_HLS_msn={msn} is too far ahead", headers=NO_STORE)
            if not await rendition.wait_for(msn, part, options.block_timeout_s):
                broadcasting(name, rendition)
                raise HTTPException(503, "not in time", headers={"Retry-After": "1", **NO_STORE})
        broadcasting(name, rendition)  # it may have ended while this request waited
        etag = f'"{rendition.first_msn}.{seg.version}"'
        cache = blocking_cache if msn is not None else playlist_cache
        return rendition.playlist_bytes(), etag, cache, PLAYLIST_TYPE

    async def init_segment(request: Request, params: dict[str, Any]) -> Answer:
        init_id: int = params["init_id"]
        data = broadcasting(params["name"]).segmenter.inits.get(init_id)
        if data is None:
            raise not_found()
        return data, f'"i{init_id}"', media_cache, INIT_TYPE

    async def segment(request: Request, params: dict[str, Any]) -> Answer:
        msn: int = params["msn"]
        found = broadcasting(params["name"]).segmenter.segment(msn)
        if found is None:
            raise not_found()
        return found.data(), f'"s{msn}"', media_cache, SEGMENT_TYPE

    async def part(request: Request, params: dict[str, Any]) -> Answer:
        name: str = params["name"]
        msn: int = params["msn"]
        index: int = params["index"]
        rendition = broadcasting(name)
        found = rendition.segmenter.part(msn, index)
        if found is None and rendition.segmenter.is_future_part(msn, index):
            await rendition.wait_part(msn, index, options.block_timeout_s)  # preload hint
            broadcasting(name, rendition)
            found = rendition.segmenter.part(msn, index)
        if found is None:
            raise not_found()
        renditions.counted(name, msn, index)
        return found.data, f'"p{msn}.{index}"', media_cache, SEGMENT_TYPE

    return [
        ("/public/{name}/part-{msn:int}.{index:int}.m4s", part),
        ("/public/{name}/index.m3u8", media_playlist),
        ("/public/{name}/seg-{msn:int}.m4s", segment),
        ("/public/{name}/init-{init_id:int}.mp4", init_segment),
    ]
