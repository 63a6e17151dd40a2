"""Serves the disk backend's signed URLs: `GET /objects/{key}?expires=..&signature=..`.

S3 hands out its own presigned URLs; on disk, courtcast is the server. The control room
mounts `make_objects_router(store)`. The signature is checked before anything else, so an
unsigned request cannot even learn whether a key exists. `Range: bytes=a-b` (one range)
gives 206 with Content-Range; bodies are streamed, never loaded whole.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from core.identity import public
from storage.objects import ObjectInfo, ObjectNotFound, StorageUnavailable
from storage.objects_disk import DiskObjectStore

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One HTTP byte range as slice-style [start, end), or None for the whole object.

    Malformed or multi-range headers are ignored (RFC 9110 allows serving the whole
    object); a range starting past the end raises RangeNotSatisfiable.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # "bytes=-n": the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None  # invalid (last before first): ignore, per the RFC
    if start >= size:
        raise RangeNotSatisfiable
    return start, end


def _headers(info: ObjectInfo) -> dict[str, str]:
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private"}
    if info.sha256:
        headers["ETag"] = f'"{info.sha256}"'
    return headers


async def _prefetched(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def make_objects_router(store: DiskObjectStore) -> APIRouter:
    if not isinstance(store, DiskObjectStore):
        raise TypeError(
            "make_objects_router serves the disk backend only; S3 serves its presigned URLs"
        )
    router = APIRouter(tags=["objects"], dependencies=[public("the URL's own signature")])

    @router.get("/objects/{key:path}", response_model=None)
    async def get_object(
        key: str, request: Request, expires: int | None = None, signature: str | None = None
    ) -> Response:
        problem = store.signature_problem(key, expires, signature)
        if problem is not None:
            raise HTTPException(status_code=403, detail=problem)
        try:
            info = await store.stat(key)
            try:
                span = parse_range(request.headers.get("range"), info.size)
            except RangeNotSatisfiable:
                return Response(
                    status_code=416,
                    headers={"Content-Range": f"bytes */{info.size}", **_headers(info)},
                )
            start, end = span or (0, info.size)
            body = store.stream(key, start, end)
            # Open the file now: a missing object is a 404, not a broken 200, and a delete
            # after this point cannot cut the download (the open file stays readable).
            first = await anext(body, b"")
        except ObjectNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except StorageUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        headers = {"Content-Length": str(end - start), **_headers(info)}
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        return StreamingResponse(
            _prefetched(first, body),
            status_code=206 if span is not None else 200,
            headers=headers,
            media_type=info.content_type,
        )

    return router
