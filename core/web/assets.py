"""The pages' static files at /static/: ES modules, CSS, catalogues, vendored libraries.

They live in core/web/static/ so that every role's pages can use them (core is the ground
floor: media_server's /arraignment as much as control_room's /devices) and one process
serves them whatever roles it runs. There is no build step: the browser loads the files as
they are in the repository.

Caching: our own files answer `no-cache` with an ETag, so a browser asks each time and gets
a 304 unless the file changed; after an upgrade no page runs a mix of old and new modules.
Vendored libraries (static/vendor/, fetched from the npm registry by scripts/setup.sh at
the versions pinned in core/web/package-lock.json) may be kept an hour. A library that was
not fetched answers 503 with what to run, and the start logs it.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from core.identity import mark_public

log = logging.getLogger(__name__)

PREFIX = "/static"
STATIC_DIR = Path(str(resources.files("core.web").joinpath("static")))
VENDOR_DIR = STATIC_DIR / "vendor"
OWN_FILES = "no-cache"
VENDORED = "public, max-age=3600"
SETUP_HINT = "run `scripts/setup.sh venv` (make run does) to fetch it from the npm registry"


def vendored() -> dict[str, str]:
    """File name under /static/vendor/ -> its npm source, from core/web/package.json."""
    package = json.loads((STATIC_DIR.parent / "package.json").read_text(encoding="utf-8"))
    files: dict[str, str] = package["courtcast"]["vendor"]
    return files


def missing_vendored() -> list[str]:
    return [name for name in vendored() if not (VENDOR_DIR / name).is_file()]


class StaticAssets(StaticFiles):
    """StaticFiles with the cache policy above and a clear answer for a missing library."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            name = path.removeprefix("vendor/")
            if exc.status_code == 404 and name != path and name in vendored():
                return PlainTextResponse(
                    f"{name} ({vendored()[name]}) is not installed: {SETUP_HINT}\n", 503
                )
            raise
        vendor = path.startswith("vendor/")
        response.headers["Cache-Control"] = VENDORED if vendor else OWN_FILES
        return response


def mount_assets(app: FastAPI) -> None:
    """Serve core/web/static/ at /static/ (once per app, whatever roles it runs)."""
    for name in missing_vendored():
        log.error("/static/vendor/%s (%s) is missing: %s", name, vendored()[name], SETUP_HINT)
    assets = mark_public(StaticAssets(directory=STATIC_DIR), "the pages' own files, no data")
    app.mount(PREFIX, assets, name="static")
