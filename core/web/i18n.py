"""Languages of the pages: which one a request gets, and the message catalogues.

Catalogues are JSON files, one per language and page, under core/web/static/i18n/{lang}/
(`common.json` for the shell, `arraignment.json` for that page, ...); the browser loads the
same files (static/js/i18n.js). Every key starts with its file's name (`arraignment.join`),
so a key says where it lives and pages never collide. tests/core/test_web_i18n.py holds both
languages to the same keys.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

# code -> the language's own name (what its switch button says, the same in every language)
LANGUAGES = {"zh-CN": "中文", "en": "English"}
DEFAULT_LANGUAGE = "zh-CN"  # courts: Chinese when the browser asks for nothing we have
COOKIE = "courtcast-lang"  # the person's own choice, set by the switch (i18n.js)

_PRIMARY = {code.split("-")[0].lower(): code for code in LANGUAGES}
_PARAM = re.compile(r"\{(\w+)\}")


class MissingMessage(KeyError):
    """A page asks for a key its catalogues lack: a defect, raised when the page loads."""


def pick_language(accept_language: str | None, saved: str | None = None) -> str:
    """The saved choice if it is one of ours, else the best of Accept-Language (by q, then
    order) we have, matched on the primary subtag (zh-TW, zh-Hans -> zh-CN; en-GB -> en),
    else DEFAULT_LANGUAGE."""
    if saved in LANGUAGES:
        return saved
    for tag in _ranked(accept_language or ""):
        if tag in LANGUAGES:
            return tag
        primary = _PRIMARY.get(tag.split("-")[0].lower())
        if primary is not None:
            return primary
    return DEFAULT_LANGUAGE


def _ranked(header: str) -> list[str]:
    """The header's language tags, most wanted first; q=0 (refused) and bad q dropped."""
    wanted: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                continue
        if tag and q > 0:
            wanted.append((-q, index, tag.strip()))
    return [tag for _, _, tag in sorted(wanted)]


@cache
def catalogue(lang: str, name: str) -> dict[str, str]:
    """One catalogue file: key -> message. Unknown language or name: FileNotFoundError."""
    if lang not in LANGUAGES:
        raise FileNotFoundError(f"no language {lang!r}; languages are {list(LANGUAGES)}")
    path = resources.files("core.web").joinpath("static", "i18n", lang, f"{name}.json")
    messages: Any = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(messages, dict) or not all(isinstance(v, str) for v in messages.values()):
        raise ValueError(f"{lang}/{name}.json: an object of strings is expected")
    return messages


def messages(lang: str, names: tuple[str, ...]) -> dict[str, str]:
    """The catalogues a page uses, merged (common first)."""
    merged: dict[str, str] = {}
    for name in ("common", *names):
        merged.update(catalogue(lang, name))
    return merged


def translate(table: dict[str, str], key: str, params: dict[str, Any] | None = None) -> str:
    """The message for key with {name} parameters filled (unknown ones left as written)."""
    try:
        text = table[key]
    except KeyError:
        raise MissingMessage(f"no message {key!r} in the page's catalogues") from None
    if not params:
        return text
    return _PARAM.sub(lambda m: str(params.get(m[1], m[0])), text)


def catalogue_problems(root: Path) -> list[str]:
    """What is wrong with the catalogues under root ({lang}/{name}.json): a file or key one
    language has and another lacks, a key not named after its file, a message whose {name}
    parameters differ between languages, a file that is not an object of strings."""
    loaded: dict[str, dict[str, dict[str, str]]] = {lang: {} for lang in LANGUAGES}
    problems: list[str] = []
    for lang in LANGUAGES:
        for path in sorted((root / lang).glob("*.json")):
            try:
                table = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                problems.append(f"{lang}/{path.name}: not JSON ({exc})")
                continue
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                problems.append(f"{lang}/{path.name}: an object of strings is expected")
                continue
            loaded[lang][path.stem] = table
            problems += [
                f"{lang}/{path.name}: key {key!r} does not start with {path.stem + '.'!r}"
                for key in table
                if not key.startswith(path.stem + ".")
            ]
    keys = {(name, key) for tables in loaded.values() for name, t in tables.items() for key in t}
    for name, key in sorted(keys):
        texts = {lang: loaded[lang].get(name, {}).get(key) for lang in LANGUAGES}
        for lang, text in texts.items():
            if text is None:
                problems.append(f"{lang}/{name}.json: missing {key!r}")
        params = {frozenset(_PARAM.findall(t)) for t in texts.values() if t is not None}
        if len(params) > 1:
            problems.append(f"{name}.json {key!r}: parameters differ between languages {texts}")
    return problems
