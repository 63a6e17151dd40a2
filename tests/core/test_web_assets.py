"""/static/: the pages' own files revalidated each time, the vendored hls.js (fetched from the
npm registry by scripts/setup.sh, pinned in core/web/package.json) served, and a library that
was never fetched answered with what to run. Pages answer in the request's language."""

import json
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from core.web.assets import STATIC_DIR, VENDOR_DIR, StaticAssets, mount_assets
from core.web.i18n import COOKIE
from core.web.pages import Page

PINS = json.loads((STATIC_DIR.parent / "package.json").read_text(encoding="utf-8"))
HLSJS_VERSION = PINS["dependencies"]["hls.js"]


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    mount_assets(app)
    page = Page.load("media_server.webrtc", "arraignment.html")

    @app.get("/page")
    async def show(request: Request) -> HTMLResponse:
        return page.response(request)

    return app


async def test_own_files_are_revalidated_and_answer_304_when_unchanged(app: FastAPI) -> None:
    async with client(app) as http:
        first = await http.get("/static/js/i18n.js")
        assert first.status_code == 200
        assert first.headers["cache-control"] == "no-cache"
        assert "javascript" in first.headers["content-type"]
        again = await http.get(
            "/static/js/i18n.js", headers={"If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304
        catalogue = await http.get("/static/i18n/zh-CN/arraignment.json")
        assert catalogue.json()["arraignment.join"] == "加入"


async def test_the_vendored_hlsjs_is_the_pinned_one(app: FastAPI) -> None:
    assert HLSJS_VERSION == "1.7.4"  # the version tests/media_server/test_hls_browser.py plays
    async with client(app) as http:
        served = await http.get("/static/vendor/hls.min.js")
    assert served.status_code == 200, f"{served.text[:200]} (scripts/setup.sh venv fetches it)"
    assert served.headers["cache-control"] == "public, max-age=3600"
    assert served.content == (VENDOR_DIR / "hls.min.js").read_bytes()
    assert f'"{HLSJS_VERSION}"' in served.text  # hls.js carries its version as a literal


async def test_a_library_never_fetched_answers_503_with_what_to_run(tmp_path: Path) -> None:
    shutil.copytree(STATIC_DIR, tmp_path / "static", ignore=shutil.ignore_patterns("vendor"))
    app = FastAPI()
    app.mount("/static", StaticAssets(directory=tmp_path / "static"))
    async with client(app) as http:
        missing = await http.get("/static/vendor/hls.min.js")
        assert missing.status_code == 503
        assert "scripts/setup.sh venv" in missing.text and "hls.js/dist/hls.min.js" in missing.text
        assert (await http.get("/static/vendor/other.js")).status_code == 404


async def test_a_page_answers_in_the_saved_choice_else_accept_language(app: FastAPI) -> None:
    async with client(app) as http:
        zh = await http.get("/page", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        en = await http.get("/page", headers={"Accept-Language": "en-US,en;q=0.9"})
        nothing = await http.get("/page", headers={"Accept-Language": ""})
        chosen = await http.get(
            "/page", headers={"Accept-Language": "zh-CN", "Cookie": f"{COOKIE}=en"}
        )
    assert zh.headers["content-language"] == "zh-CN" and 'lang="zh-CN"' in zh.text
    assert "加入码" in zh.text
    assert en.headers["content-language"] == "en" and "Join code" in en.text
    assert nothing.headers["content-language"] == "zh-CN"
    assert chosen.headers["content-language"] == "en"
    for answer in (zh, en):
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["vary"] == "Accept-Language, Cookie"
