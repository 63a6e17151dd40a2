"""HTTP routes of LL-HLS: the playlist, init segments, segments and parts, from memory.

Every route first awaits `authorize(request, stream_id)`, the control room's hook that
decides public vs private (it raises an HTTPException to refuse). The playlist URIs carry
the request's own query string (e.g. a signed `?token=`), so child requests pass it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response

from media_server.hls.output import HlsOutput, HlsOutputs

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
SEGMENT_TYPE = "video/iso.segment"

Authorize = Callable[[Request, str], Awaitable[None]]


def make_hls_router(outputs: HlsOutputs, authorize: Authorize) -> APIRouter:
    """GET /live/{stream_id}/index.m3u8, init-{n}.mp4, seg-{msn}.m4s, part-{msn}.{i}.m4s."""
    router = APIRouter(tags=["live"])
    options = outputs.options
    media_cache = f"max-age={options.max_age_s}"

    def live_output(stream_id: str) -> HlsOutput:
        output = outputs.get(stream_id)
        if output is None:
            raise HTTPException(404, f"stream {stream_id!r} is not live")
        return output

    @router.get("/live/{stream_id}/index.m3u8")
    async def media_playlist(request: Request, stream_id: str) -> Response:
        await authorize(request, stream_id)
        msn, part = blocking_request(request)
        output = live_output(stream_id)
        seg = output.segmenter
        if seg.last_msn is None:
            wait = options.block_timeout_s if msn is not None else options.first_segment_wait_s
            if not await output.wait_first_segment(wait):
                raise HTTPException(503, f"stream {stream_id!r} has no segment yet",
                                    headers={"Retry-After": "1"})
        if msn is not None:
            newest = seg.last_msn
            assert newest is not None
            if msn > newest + 2:
                raise HTTPException(400, f"_HLS_msn={msn} is too far ahead of the stream "
                                         f"(last segment {newest})")
            if not await output.wait_for(msn, part, options.block_timeout_s):
                raise HTTPException(503, "the requested segment or part did not appear in time",
                                    headers={"Retry-After": "1"})
        text = output.playlist(child_query(request))
        return Response(text, media_type=PLAYLIST_TYPE, headers={"Cache-Control": "no-cache"})

    @router.get("/live/{stream_id}/init-{init_id:int}.mp4")
    async def init_segment(request: Request, stream_id: str, init_id: int) -> Response:
        await authorize(request, stream_id)
        data = live_output(stream_id).segmenter.inits.get(init_id)
        if data is None:
            raise HTTPException(404, f"no init segment {init_id}")
        return Response(data, media_type=INIT_TYPE, headers={"Cache-Control": media_cache})

    @router.get("/live/{stream_id}/seg-{msn:int}.m4s")
    async def segment(request: Request, stream_id: str, msn: int) -> Response:
        await authorize(request, stream_id)
        found = live_output(stream_id).segmenter.segment(msn)
        if found is None:
            raise HTTPException(404, f"segment {msn} is not in the live window")
        return Response(found.data(), media_type=SEGMENT_TYPE,
                        headers={"Cache-Control": media_cache})

    @router.get("/live/{stream_id}/part-{msn:int}.{index:int}.m4s")
    async def part(request: Request, stream_id: str, msn: int, index: int) -> Response:
        await authorize(request, stream_id)
        output = live_output(stream_id)
        found = output.segmenter.part(msn, index)
        if found is None and output.segmenter.is_future_part(msn, index):
            # the preload hint: answer as soon as the part exists
            await output.wait_part(msn, index, options.block_timeout_s)
            found = output.segmenter.part(msn, index)
        if found is None:
            raise HTTPException(404, f"part {msn}.{index} is not in the live window")
        return Response(found.data, media_type=SEGMENT_TYPE,
                        headers={"Cache-Control": media_cache})

    return router


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
    if not value.isdigit():
        raise HTTPException(400, f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def child_query(request: Request) -> str:
    """The request's query without the _HLS_ directives, for the playlist's URIs."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if not k.startswith("_HLS_")]
    return "?" + urlencode(kept) if kept else ""
