"""/arraignment/{room} in Debian's Chromium, in zh-CN and en: the first paint is in the
browser's language, the language switch changes every text (dynamic status lines too), the
choice survives a reload, and the page runs under a strict Content-Security-Policy (no inline
code). Screenshots go to build/test-artifacts/screenshots/ (tests/fixtures/browser.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.media_server.test_webrtc_http import LiveServer

# what the pages will be served with (no inline script or style anywhere)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'"
)
# as functions: Playwright evaluates a bare expression with eval, which the CSP refuses
HEADING = "() => document.querySelector('h1 [data-i18n]').textContent"
STATUS = "() => document.getElementById('status').textContent"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer({}).start()
    yield live
    live.stop()


def strict_csp(route: Any) -> None:
    response = route.fetch()
    route.fulfill(response=response, headers={**response.headers, "content-security-policy": CSP})


def open_room(browser: Any, server: LiveServer, locale: str) -> tuple[Any, list[str]]:
    """The room's page in a new browser profile whose language is locale. Collected as
    errors: console errors (a CSP violation, a missing message), uncaught exceptions, and
    any /static/ file that did not load (an HTTP refusal of the API is the page's business)."""
    page = browser.new_context(locale=locale).new_page()
    errors: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    def response(answer: Any) -> None:
        if "/static/" in answer.url and answer.status not in (200, 304):
            errors.append(f"{answer.url}: HTTP {answer.status}")

    page.on("console", console)
    page.on("response", response)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route(f"{server.url}/arraignment/*", strict_csp)
    page.goto(f"{server.url}/arraignment/r1")
    wait_ready(page)
    return page, errors


def wait_ready(page: Any) -> None:
    page.wait_for_function("() => window.arraignment && window.arraignment.media", timeout=10_000)


@pytest.mark.parametrize(
    ("locale", "lang", "heading", "ready"),
    [
        ("zh-CN", "zh-CN", "远程提讯 — 房间", "摄像头和麦克风已就绪"),
        ("en-US", "en", "Remote arraignment — room", "Camera and microphone ready"),
    ],
    ids=["zh-CN", "en"],
)
def test_the_page_speaks_the_browsers_language(
    chromium_browser: Any,
    server: LiveServer,
    screenshot: Callable[[Any, str], Path],
    locale: str,
    lang: str,
    heading: str,
    ready: str,
) -> None:
    page, errors = open_room(chromium_browser, server, locale)
    assert page.evaluate("() => document.documentElement.lang") == lang
    assert page.evaluate(HEADING) == heading
    assert ready in page.evaluate(STATUS)
    assert page.title() == ("远程提讯" if lang == "zh-CN" else "Remote arraignment")
    assert page.evaluate("() => document.getElementById('room').textContent") == "r1"
    pressed = page.get_attribute(f"[data-lang-switch] [data-lang='{lang}']", "aria-pressed")
    assert pressed == "true"
    # styled by /static/css/common.css and the page's own CSS, not inline rules
    assert (
        page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(17, 17, 17)"
    )
    screenshot(page, lang)
    assert errors == []


def test_the_switch_changes_every_text_and_the_choice_survives_a_reload(
    chromium_browser: Any, server: LiveServer, screenshot: Callable[[Any, str], Path]
) -> None:
    page, errors = open_room(chromium_browser, server, "zh-CN")
    page.fill("#code", "12345678")
    page.click("#join")  # no room r1 is open: a refusal, worded by the page
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('房间 r1 未开启提讯')",
        timeout=5_000,
    )
    screenshot(page, "zh-CN-refused")

    page.click("[data-lang-switch] [data-lang='en']")
    page.wait_for_function("() => document.documentElement.lang === 'en'", timeout=5_000)
    assert page.evaluate(HEADING) == "Remote arraignment — room"
    assert page.evaluate(STATUS).startswith("No arraignment room r1 is open")
    assert page.text_content("#join") == "Join"
    assert page.text_content("#remote-label") == "Other side"
    assert page.get_attribute("[data-lang-switch]", "aria-label") == "Language"
    assert page.title() == "Remote arraignment"
    assert page.get_attribute("[data-lang-switch] [data-lang='en']", "aria-pressed") == "true"
    screenshot(page, "en-after-switch")

    page.reload()
    wait_ready(page)
    assert page.evaluate("() => localStorage.getItem('courtcast-lang')") == "en"
    assert page.evaluate(HEADING) == "Remote arraignment — room"
    # the server itself now answers in the choice, so the first paint is English too
    first_paint = page.context.request.get(f"{server.url}/arraignment/r1")
    assert first_paint.headers["content-language"] == "en"
    assert '<html data-catalogues="arraignment" lang="en">' in first_paint.text()

    page.click("[data-lang-switch] [data-lang='zh-CN']")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('摄像头和麦克风已就绪')",
        timeout=5_000,
    )
    assert page.evaluate(HEADING) == "远程提讯 — 房间"
    assert errors == []
