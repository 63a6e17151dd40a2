"""HTTP routes of backfill (device_agents/protocol.py BACKFILL_*), for device agents only.

Every request carries the device's bearer credential; the device may touch only recordings
of its own streams. Bodies are raw bytes (an init.mp4, a .m4s), the segment's facts are
query parameters, and X-Content-SHA256 guards the body against damage on a bad link.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations.
import math
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response

from core.identity import CredentialError, mark_guard
from device_agents.protocol import (
    BACKFILL_GAPS_PATH,
    BACKFILL_INIT_PATH,
    BACKFILL_SEGMENT_PATH,
    GapOut,
)
from recorder.backfill import BackfillError, RecordingBackfill, SegmentIn

if TYPE_CHECKING:
    from recorder.role import RecorderRole

MAX_INIT_BYTES = 1 << 20
MAX_SEGMENT_BYTES = 64 << 20  # a 60 s segment at ~8 Mbit/s


def make_backfill_router(role: "RecorderRole") -> APIRouter:
    router = APIRouter(tags=["backfill"])
    service = RecordingBackfill(role)

    async def device_streams(request: Request) -> list[str]:
        """The streams of the device whose bearer credential this is (401 otherwise)."""
        try:
            return await role.device_streams(request.headers.get("authorization", ""))
        except CredentialError as exc:
            raise HTTPException(
                401, f"device not accepted: {exc}", headers={"WWW-Authenticate": "Bearer"}
            ) from None

    Streams = Annotated[list[str], Depends(mark_guard(device_streams))]

    async def body(request: Request, limit: int) -> bytes:
        size = int(request.headers.get("content-length") or 0)
        if size > limit:
            raise HTTPException(413, f"body of {size} bytes; at most {limit}")
        data = await request.body()
        if not data or len(data) > limit:
            raise HTTPException(
                400 if not data else 413, "empty body" if not data else f"body over {limit} bytes"
            )
        return data

    async def answer(work: Any, status: int = 200) -> Response:
        from fastapi.responses import JSONResponse

        try:
            result = await work
        except BackfillError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        code = 201 if result.get("status") == "stored" else status
        return JSONResponse(result, status_code=code)

    @router.get(BACKFILL_GAPS_PATH, response_model=list[GapOut])
    async def gaps(streams: Streams, stream: str) -> list[GapOut]:
        if stream not in streams:
            raise HTTPException(403, f"stream {stream} is not a stream of this device")
        return await service.gaps(stream)

    @router.put(BACKFILL_INIT_PATH)
    async def put_init(recording_id: str, request: Request, streams: Streams) -> Response:
        data = await body(request, MAX_INIT_BYTES)
        return await answer(service.put_init(recording_id, streams, data))

    @router.put(BACKFILL_SEGMENT_PATH)
    async def put_segment(
        recording_id: str,
        request: Request,
        streams: Streams,
        stream: str,
        start: float,
        duration: float,
        init: str,
        sha256: Annotated[str, Header(alias="X-Content-SHA256")],
        media_start: Annotated[float, Query()] = 0.0,
    ) -> Response:
        if not all(map(math.isfinite, (start, duration, media_start))):
            raise HTTPException(400, "start, duration and media_start must be numbers")
        if stream not in streams:
            raise HTTPException(403, f"stream {stream} is not a stream of this device")
        data = await body(request, MAX_SEGMENT_BYTES)
        seg = SegmentIn(stream, start, duration, init, media_start, sha256.strip(), data)
        return await answer(service.put_segment(recording_id, streams, seg))

    return router
