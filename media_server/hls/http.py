"""HTTP routes of LL-HLS: the playlist, init segments, segments and parts, from memory.

Every route first awaits `authorize(request, stream_id)`, the control room's hook that
decides public vs private (it raises an HTTPException to refuse). The playlist URIs carry
the request's own query string (e.g. a signed `?token=`), so child requests pass it too.

The routes are plain Starlette routes with raw ASGI endpoints, not FastAPI routes: an
LL-HLS player makes about four requests a second per stream, and FastAPI's dependency
solving and Response objects cost several times what serving bytes from memory does.
Paths, methods (GET only), headers and errors are the same: an HTTPException raised here
reaches the app's exception handlers exactly as it did from a FastAPI route. The price is
that /live is not in the OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from core.identity import PUBLIC_MARK, mark_public
from media_server.hls.output import HlsOutput, HlsOutputs

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
SEGMENT_TYPE = "video/iso.segment"

Authorize = Callable[[Request, str], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Handler = Callable[[Request, dict[str, Any]], Awaitable[tuple[bytes, Headers]]]


class _Endpoint:
    """The ASGI app of one /live route: the handler returns (body, headers without
    content-length); the response goes out as Starlette's Response would send it."""

    __slots__ = ("_handle", PUBLIC_MARK)  # the mark: authorize() is its guard

    def __init__(self, handle: Handler) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":  # as FastAPI answered: no HEAD either
            raise HTTPException(405, headers={"Allow": "GET"})
        request = Request(scope, receive, send)
        body, head = await self._handle(request, scope["path_params"])
        # header order as Starlette's Response: ours, then content-length, content-type
        headers = [head[0], (b"content-length", str(len(body)).encode()), head[1]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _headers(cache_control: str, media_type: str) -> Headers:
    return [(b"cache-control", cache_control.encode()), (b"content-type", media_type.encode())]


def make_hls_router(outputs: HlsOutputs, authorize: Authorize) -> APIRouter:
    """GET /live/{stream_id}/index.m3u8, init-{n}.mp4, seg-{msn}.m4s, part-{msn}.{i}.m4s."""
    router = APIRouter(tags=["live"])
    for path, handle in _handlers(outputs, authorize):
        # any method: the endpoint answers 405 itself (Starlette would allow HEAD)
        endpoint = mark_public(_Endpoint(handle), "authorize_play: public, token or session")
        router.routes.append(Route(path, endpoint))
    return router


class LiveFastPath:
    """The same four routes, served ahead of the app's middleware and router.

    An LL-HLS viewer makes about four requests a second, and the FastAPI/Starlette stack
    in front of a route (six middleware layers, then routing over every API route) cost
    more than the route itself. Called first by the front door (courtcast/http_front.py):
    it answers a request it matches, errors included, and returns False for anything
    else, which the app then serves as before (e.g. a 404 for an unknown /live path).
    """

    def __init__(self, outputs: HlsOutputs, authorize: Authorize) -> None:
        self._routes = [
            Route(path, _Endpoint(handle)) for path, handle in _handlers(outputs, authorize)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        for route in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                try:
                    await route.app(scope, receive, send)
                except HTTPException as exc:  # as FastAPI's handler answers it
                    await send_error(send, exc)
                return True
        return False


async def send_error(send: Send, exc: HTTPException) -> None:
    body = json.dumps({"detail": exc.detail}, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()
    ]
    headers += [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _handlers(outputs: HlsOutputs, authorize: Authorize) -> list[tuple[str, Handler]]:
    """(path, handler) of the four routes, most requested first."""
    options = outputs.options
    media_cache = f"max-age={options.max_age_s}"
    playlist_headers = _headers("no-cache", PLAYLIST_TYPE)
    init_headers = _headers(media_cache, INIT_TYPE)
    segment_headers = _headers(media_cache, SEGMENT_TYPE)

    def live_output(stream_id: str) -> HlsOutput:
        output = outputs.get(stream_id)
        if output is None:
            raise HTTPException(404, f"stream {stream_id!r} is not live")
        return output

    async def media_playlist(request: Request, params: dict[str, Any]) -> tuple[bytes, Headers]:
        stream_id: str = params["stream_id"]
        await authorize(request, stream_id)
        msn, part = blocking_request(request)
        output = live_output(stream_id)
        seg = output.segmenter
        waited = seg.last_msn is None or msn is not None
        if seg.last_msn is None:
            wait = options.block_timeout_s if msn is not None else options.first_segment_wait_s
            if not await output.wait_first_segment(wait):
                raise HTTPException(
                    503, f"stream {stream_id!r} has no segment yet", headers={"Retry-After": "1"}
                )
        if msn is not None:
            newest = seg.last_msn
            assert newest is not None
            if msn > newest + 2:
                raise HTTPException(
                    400, f"_HLS_msn={msn} is too far ahead of the stream (last segment {newest})"
                )
            if not await output.wait_for(msn, part, options.block_timeout_s):
                raise HTTPException(
                    503,
                    "the requested segment or part did not appear in time",
                    headers={"Retry-After": "1"},
                )
        if waited:
            await authorize(request, stream_id)  # the stream may be private by now
        return output.playlist_bytes(child_query(request)), playlist_headers

    async def init_segment(request: Request, params: dict[str, Any]) -> tuple[bytes, Headers]:
        await authorize(request, params["stream_id"])
        init_id: int = params["init_id"]
        data = live_output(params["stream_id"]).segmenter.inits.get(init_id)
        if data is None:
            raise HTTPException(404, f"no init segment {init_id}")
        return data, init_headers

    async def segment(request: Request, params: dict[str, Any]) -> tuple[bytes, Headers]:
        await authorize(request, params["stream_id"])
        msn: int = params["msn"]
        output = live_output(params["stream_id"])
        found = output.segmenter.segment(msn)
        data = None if found is None else output.segment_bytes(found)
        if data is None:
            raise HTTPException(404, f"segment {msn} is not in the live window")
        return data, segment_headers

    async def part(request: Request, params: dict[str, Any]) -> tuple[bytes, Headers]:
        await authorize(request, params["stream_id"])
        msn: int = params["msn"]
        index: int = params["index"]
        output = live_output(params["stream_id"])
        found = output.segmenter.part(msn, index)
        if found is None and output.segmenter.is_future_part(msn, index):
            # the preload hint: answer as soon as the part exists
            await output.wait_part(msn, index, options.block_timeout_s)
            await authorize(request, params["stream_id"])  # it may be private by now
            found = output.segmenter.part(msn, index)
        data = None if found is None else output.part_bytes(found)
        if data is None:
            raise HTTPException(404, f"part {msn}.{index} is not in the live window")
        return data, segment_headers

    # the paths are disjoint, so the order only decides how many patterns a request is
    # tried against: the most frequent first (an LL-HLS player asks for parts and
    # playlists; plain HLS players for segments; init once)
    return [
        ("/live/{stream_id}/part-{msn:int}.{index:int}.m4s", part),
        ("/live/{stream_id}/index.m3u8", media_playlist),
        ("/live/{stream_id}/seg-{msn:int}.m4s", segment),
        ("/live/{stream_id}/init-{init_id:int}.mp4", init_segment),
    ]


def blocking_request(request: Request) -> tuple[int | None, int | None]:
    """_HLS_msn and _HLS_part of a blocking playlist reload; 400 when malformed."""
    params = request.query_params
    msn = _non_negative(params.get("_HLS_msn"), "_HLS_msn")
    part = _non_negative(params.get("_HLS_part"), "_HLS_part")
    if part is not None and msn is None:
        raise HTTPException(400, "_HLS_part needs _HLS_msn")
    return msn, part


def _non_negative(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    # isascii too: str.isdigit() accepts "²" and other digits int() refuses
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise HTTPException(400, f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def child_query(request: Request) -> str:
    """The request's query without the _HLS_ directives, for the playlist's URIs."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if not k.startswith("_HLS_")]
    return "?" + urlencode(kept) if kept else ""
