"""The pages' languages: which one a request gets, the catalogues held to the same keys in
both languages, and pages rendered in a language with nothing inline."""

import json
import re
from pathlib import Path

import pytest

from core.web.assets import STATIC_DIR
from core.web.i18n import DEFAULT_LANGUAGE, LANGUAGES, catalogue_problems, pick_language
from core.web.pages import Page, PageError, render


@pytest.mark.parametrize(
    ("accept", "saved", "lang"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh-CN"),
        ("en-US,en;q=0.9", None, "en"),
        ("en-GB", None, "en"),
        ("zh-TW", None, "zh-CN"),  # Chinese of any region: our Chinese
        ("zh", None, "zh-CN"),
        ("fr-FR,en;q=0.5,zh;q=0.8", None, "zh-CN"),  # by q, not by order
        ("fr-FR,en;q=0.5,zh;q=0.5", None, "en"),  # equal q: the first
        ("en;q=0,zh-CN;q=0.1", None, "zh-CN"),  # q=0 is a refusal
        ("de,fr", None, DEFAULT_LANGUAGE),
        ("", None, DEFAULT_LANGUAGE),
        (None, None, DEFAULT_LANGUAGE),
        ("*", None, DEFAULT_LANGUAGE),
        ("en;q=abc,zh-CN;q=0.2", None, "zh-CN"),  # a broken q: that entry is dropped
        ("zh-CN", "en", "en"),  # the person's own choice wins
        ("en", "xx", "en"),  # a saved value that is not ours is ignored
    ],
)
def test_the_language_follows_the_choice_then_accept_language_then_chinese(
    accept: str | None, saved: str | None, lang: str
) -> None:
    assert pick_language(accept, saved) == lang


def test_both_languages_have_the_same_catalogues_and_keys() -> None:
    assert catalogue_problems(STATIC_DIR / "i18n") == []
    for lang in LANGUAGES:
        assert (STATIC_DIR / "i18n" / lang / "common.json").is_file()


def test_a_missing_key_or_mismatched_parameter_is_reported(tmp_path: Path) -> None:
    files = {
        "zh-CN": {"a.one": "一", "a.two": "二 {n}", "a.three": "三"},
        "en": {"a.one": "one", "a.two": "two {count}", "b.stray": "x"},
    }
    for lang, table in files.items():
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "a.json").write_text(json.dumps(table), encoding="utf-8")
    problems = catalogue_problems(tmp_path)
    assert "en/a.json: missing 'a.three'" in problems
    assert "zh-CN/a.json: missing 'b.stray'" in problems
    assert "en/a.json: key 'b.stray' does not start with 'a.'" in problems
    assert any("'a.two': parameters differ" in p for p in problems)
    assert len(problems) == 4, problems


def test_every_key_a_page_module_names_is_in_the_catalogues() -> None:
    known = {
        key
        for path in (STATIC_DIR / "i18n" / DEFAULT_LANGUAGE).glob("*.json")
        for key in json.loads(path.read_text(encoding="utf-8"))
    }
    names = "|".join(p.stem for p in (STATIC_DIR / "i18n" / DEFAULT_LANGUAGE).glob("*.json"))
    literal = re.compile(rf"""["']((?:{names})\.[a-z0-9.-]*[a-z0-9])["']""")
    used = {
        key
        for path in STATIC_DIR.rglob("*.js")
        if "vendor" not in path.parts
        for key in literal.findall(path.read_text(encoding="utf-8"))
    }
    assert "arraignment.status.waiting" in used  # the scan finds the page's keys
    assert used - known == set()


PAGE = """<!doctype html>
<html lang="xx" data-catalogues="arraignment">
<head><title data-i18n="arraignment.title">stale</title></head>
<body><header data-shell><h1 data-i18n="arraignment.heading"></h1></header>
<input id="code" data-i18n-placeholder="arraignment.code" placeholder="old">
</body></html>"""


def test_a_page_is_rendered_in_the_language_with_the_shared_header() -> None:
    zh, en = render(PAGE, "zh-CN"), render(PAGE, "en")
    assert '<html data-catalogues="arraignment" lang="zh-CN">' in zh
    assert '<title data-i18n="arraignment.title">远程提讯</title>' in zh
    assert 'placeholder="加入码"' in zh and 'placeholder="old"' not in zh
    assert '<span class="shell-app" data-i18n="common.app">courtcast</span>' in en
    assert 'data-lang="en" lang="en" aria-pressed="true"' in en
    assert 'data-lang="zh-CN" lang="zh-CN" aria-pressed="false"' in en
    assert '<h1 data-i18n="arraignment.heading">Remote arraignment — room</h1>' in en


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        ('<body><span data-i18n="arraignment.no-such-key"></span>', "no message"),
        ("<body><script>alert(1)</script>", "inline <script>"),
        ("<body><style>p{}</style>", "<style>"),
        ('<body><p style="color:red">', "style attribute"),
        ('<body><button onclick="go()">', "on* handler"),
    ],
)
def test_a_page_breaking_a_rule_fails_when_loaded(bad: str, rule: str) -> None:
    with pytest.raises((PageError, KeyError), match=re.escape(rule)):
        render(PAGE.replace("<body>", bad), "en")


def test_the_arraignment_page_loads_in_every_language() -> None:
    page = Page.load("media_server.webrtc", "arraignment.html")
    assert set(page.rendered) == set(LANGUAGES)
    assert "远程提讯" in page.rendered["zh-CN"] and "Join code" in page.rendered["en"]
