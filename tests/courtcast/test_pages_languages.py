"""Every page renders in zh-CN and in en (issue 15, item 7), in Debian's Chromium against the
whole platform: chosen by Accept-Language, by the switch's cookie (which wins over the
browser's language), and by pressing the switch on the page. Each time <html lang> and
Content-Language say the language, a string known in that language is shown, and no
catalogue key is visible (in the text, the title or the translated attributes), nor any
console error (a missing message, a CSP refusal).

To cover a new page, add a PageCase to PAGES: its path, a string it shows in each
language, the role to sign in as (None: anonymous), and a function telling when its
dynamic text is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.web.assets import STATIC_DIR
from core.web.i18n import COOKIE, DEFAULT_LANGUAGE, LANGUAGES
from courtcast.platform import Platform
from device_agents.protocol import SourceInfo
from tests.control_room.conftest import PASSWORD, base_url, enrol, signed_in, start_platform
from tests.control_room.test_devices_page import Background

pytestmark = pytest.mark.timeout(120)

LOCALES = {"zh-CN": "zh-CN", "en": "en-US"}  # a browser's locale that asks for the language
# every translated text and attribute of the page, as the person meets it
SHOWN = """() => [document.title, document.body.innerText,
  ...[...document.querySelectorAll('[title],[placeholder],[aria-label],[alt]')].flatMap(
    (e) => ['title', 'placeholder', 'aria-label', 'alt'].map((a) => e.getAttribute(a) || ''))
].join('\\n')"""


@dataclass(frozen=True)
class PageCase:
    path: str
    known: dict[str, str]  # language -> a string the page shows in it
    role: str | None = None  # sign in as a user of this role first
    ready: str = "() => true"  # a JS function: true once the page's dynamic text is drawn

    def __str__(self) -> str:
        return f"{self.path}{'@' + self.role if self.role else ''}"


SIGNED_IN = "() => !document.querySelector('[data-shell-user]').hidden"

PAGES = [
    PageCase(
        "/devices",
        {"zh-CN": "登录后查看设备。", "en": "Sign in to see the devices."},
        ready="() => !document.getElementById('signin').hidden",
    ),
    PageCase(
        "/devices",
        {"zh-CN": "从未上线", "en": "never seen"},  # a device's state badge: dynamic text
        role="technician",
        ready="() => document.querySelector('#rows tr[data-device]') !== null",
    ),
    # the header names the signed-in user's role in the page's language
    PageCase("/sessions", {"zh-CN": "书记员", "en": "(clerk)"}, role="clerk", ready=SIGNED_IN),
    PageCase("/recordings", {"zh-CN": "录像", "en": "Recordings"}, role="clerk", ready=SIGNED_IN),
    PageCase("/control", {"zh-CN": "实时更新已连接", "en": "Live updates on"}, "operator"),
    PageCase("/wall/main", {"zh-CN": "值班员", "en": "(operator)"}, "operator", SIGNED_IN),
    PageCase("/", {"zh-CN": "目前没有正在直播的庭审。", "en": "No trial is broadcast live"}),
    PageCase(
        "/arraignment/room-1",
        {"zh-CN": "远程提讯", "en": "Remote arraignment"},
        ready="() => window.arraignment && window.arraignment.media !== null",
    ),
]


def catalogue_key_pattern() -> str:
    """A regular expression for a catalogue key: `{file}.{words}` of any catalogue."""
    names = sorted(p.stem for p in (STATIC_DIR / "i18n" / DEFAULT_LANGUAGE).glob("*.json"))
    return rf"\b(?:{'|'.join(names)})\.[a-z0-9-]+(?:\.[a-z0-9-]+)*\b"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Background, Platform]]:
    background = Background()
    platform: Platform = background.run(start_platform(tmp_path_factory.mktemp("data")))

    async def users() -> None:
        for role in ("technician", "clerk", "operator"):
            client = await signed_in(platform, role, role)
            if role == "technician":
                await enrol(platform, client, sources=[SourceInfo(name="bench", kind="rtsp")])
            await client.aclose()

    try:
        background.run(users())
        yield background, platform
    finally:
        background.run(platform.stop())
        background.close()


def other(lang: str) -> str:
    return next(code for code in LANGUAGES if code != lang)


@pytest.mark.parametrize("how", ["accept-language", "cookie", "switch"])
@pytest.mark.parametrize("lang", list(LANGUAGES))
@pytest.mark.parametrize("case", PAGES, ids=str)
def test_the_page_renders_in_the_language(
    chromium_browser: Any,
    node: tuple[Background, Platform],
    screenshot: Callable[[Any, str], Path],
    case: PageCase,
    lang: str,
    how: str,
) -> None:
    base = base_url(node[1])
    asked = lang if how == "accept-language" else other(lang)  # the browser's own language
    context = chromium_browser.new_context(locale=LOCALES[asked])
    if how == "cookie":
        context.add_cookies([{"name": COOKIE, "value": lang, "url": base}])
    if case.role is not None:
        login = context.request.post(
            f"{base}/api/v1/login", data={"name": case.role, "password": PASSWORD}
        )
        assert login.status == 200, login.text()
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    answer = page.goto(f"{base}{case.path}")
    served = lang if how != "switch" else asked
    assert answer.headers["content-language"] == served
    page.wait_for_function(case.ready, timeout=10_000)
    if how == "switch":
        page.click(f"[data-lang-switch] [data-lang='{lang}']")
        page.wait_for_function(f"() => document.documentElement.lang === '{lang}'")
        page.wait_for_function(
            "() => document.querySelector(\"[data-lang-switch] [aria-pressed='true']\")"
            f".dataset.lang === '{lang}'"
        )
    assert page.get_attribute("html", "lang") == lang
    page.get_by_text(case.known[lang], exact=False).first.wait_for(timeout=10_000)
    assert case.known[other(lang)] not in page.evaluate(SHOWN)  # nothing left in the other
    keys = page.evaluate(
        "([shown, pattern]) => shown.match(new RegExp(pattern, 'g')) || []",
        [page.evaluate(SHOWN), catalogue_key_pattern()],
    )
    assert keys == [], f"untranslated keys shown: {keys}"
    assert errors == []
    screenshot(page, f"{lang}-{how}")
    context.close()
