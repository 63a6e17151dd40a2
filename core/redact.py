"""Secrets out of text that goes to logs, APIs and pages (DESIGN.md §7: RTSP URLs with
credentials are redacted)."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s'\"<>]*@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:user(?:name)?|pass(?:word|wd)?|pwd|token|key|secret|auth)=)[^&;#\s'\"]*",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """The URL (or any text holding URLs) with credentials masked:
    rtsp://user:pass@host/x?password=y -> rtsp://***@host/x?password=***.
    Masks up to the last '@' so a password holding '@' or '/' cannot leak."""
    text = _USERINFO.sub(r"\g<scheme>***@", url)
    return _SECRET_QUERY.sub(r"\g<key>***", text)
