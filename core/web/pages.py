"""HTML pages in the person's language from the first paint.

A page is a plain HTML file beside the role that serves it. It names its catalogues on <html
data-catalogues="...">, marks translated text with data-i18n="key" (an element that holds
text only) and attributes with data-i18n-title / -placeholder / -aria-label / -alt, and puts
`<header data-shell>...</header>` where the shared header goes (the app's name, the page's
own header content, the signed-in user, the language switch) and `<form data-signin>
</form>` where the shared sign-in form goes (#signin-form: name, password, submit). It loads
its code as ES modules from /static/ and has no inline script, style or on* handler (the
pages run under script-src 'self'); a page breaking that, or asking for a key a catalogue
lacks, fails when its route is built, not when a person opens it. The browser side
(static/js/i18n.js) keeps the text in step when the person switches language.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from importlib import resources

from fastapi import Request
from fastapi.responses import HTMLResponse

from core.page_headers import page_headers
from core.web.i18n import COOKIE, LANGUAGES, messages, pick_language, translate

ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")  # as static/js/i18n.js

_HTML = re.compile(r"<html\b[^>]*>")
_CATALOGUES = re.compile(r'\sdata-catalogues="([^"]*)"')
_LANG = re.compile(r'\slang="[^"]*"')
_SHELL = re.compile(r"<header data-shell>(.*?)</header>", re.S)
_SIGNIN = re.compile(r"<form data-signin>\s*</form>")
_TEXT = re.compile(r'(<(\w+)\b[^>]*?\sdata-i18n="([^"]+)"[^>]*>)[^<]*(</\2\s*>)')
_ATTR = re.compile(r"\sdata-i18n-(" + "|".join(ATTRIBUTES) + r')="([^"]+)"')
_TAG_WITH_ATTR = re.compile(r"<\w+\b[^>]*\sdata-i18n-(?:" + "|".join(ATTRIBUTES) + r")=[^>]*>")
_INLINE_CODE = {
    "an inline <script>": re.compile(r"<script\b(?![^>]*\ssrc=)[^>]*>", re.I),
    "a <style> element": re.compile(r"<style\b", re.I),
    "a style attribute": re.compile(r"<[^>]*\sstyle=", re.I),
    "an on* handler": re.compile(r"<[^>]*\son[a-z]+\s*=", re.I),
}

SHELL = """<header class="shell">
  <span class="shell-app" data-i18n="common.app"></span>
  <div class="shell-page">{page}</div>
  <span class="shell-user" data-shell-user hidden></span>
  <nav class="lang-switch" data-lang-switch data-i18n-aria-label="common.language">{switch}</nav>
</header>"""

SIGNIN = """<form id="signin-form" class="inline">
    <label><span data-i18n="common.signin.user"></span>
      <input name="name" autocomplete="username" required></label>
    <label><span data-i18n="common.signin.password"></span>
      <input name="password" type="password" autocomplete="current-password" required></label>
    <button type="submit" data-i18n="common.signin.submit"></button>
  </form>"""


class PageError(ValueError):
    """A page template breaks the rules above; the message names the page and the rule."""


def render(template: str, lang: str, name: str = "page") -> str:
    """The template in one language: <html lang>, the shell, every marked text."""
    for what, pattern in _INLINE_CODE.items():
        if pattern.search(template):
            raise PageError(f"{name}: {what} (pages run under script-src 'self'; use /static/)")
    head = _HTML.search(template)
    if head is None:
        raise PageError(f"{name}: no <html> element")
    found = _CATALOGUES.search(head[0])
    table = messages(lang, tuple(found[1].split()) if found else ())
    tag = _LANG.sub("", head[0])[:-1] + f' lang="{lang}">'
    page = template[: head.start()] + tag + template[head.end() :]
    page = _SHELL.sub(lambda m: SHELL.format(page=m[1].strip(), switch=_switch(lang)), page, 1)
    page = _SIGNIN.sub(SIGNIN, page, 1)
    page = _TEXT.sub(lambda m: m[1] + html.escape(translate(table, m[3]), quote=False) + m[4], page)
    return _TAG_WITH_ATTR.sub(lambda m: _translate_attributes(m[0], table), page)


def _switch(current: str) -> str:
    return "".join(
        f'<button type="button" data-lang="{code}" lang="{code}" '
        f'aria-pressed="{str(code == current).lower()}">{html.escape(own_name)}</button>'
        for code, own_name in LANGUAGES.items()
    )


def _translate_attributes(tag: str, table: dict[str, str]) -> str:
    for attr, key in _ATTR.findall(tag):
        value = html.escape(translate(table, key), quote=True)
        tag = re.sub(rf'\s{attr}="[^"]*"', "", tag)
        end = len(tag) - (2 if tag.endswith("/>") else 1)
        tag = f'{tag[:end]} {attr}="{value}"{tag[end:]}'
    return tag


@dataclass(frozen=True)
class Page:
    """A page rendered once per language when its route is built."""

    rendered: dict[str, str]

    @classmethod
    def load(cls, package: str, filename: str) -> Page:
        template = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        name = f"{package}/{filename}"
        return cls({lang: render(template, lang, name) for lang in LANGUAGES})

    def response(self, request: Request) -> HTMLResponse:
        """In the saved choice (cookie), else Accept-Language's, else the default; never
        cached, since the same URL answers in either language."""
        lang = pick_language(request.headers.get("accept-language"), request.cookies.get(COOKIE))
        return HTMLResponse(
            self.rendered[lang],
            headers={
                "Cache-Control": "no-store",
                "Content-Language": lang,
                "Vary": "Accept-Language, Cookie",
                **page_headers(self.rendered[lang]),
            },
        )
