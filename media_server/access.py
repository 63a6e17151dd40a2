"""Who may publish and who may watch: enforced by every ingest and every egress.

Publishing needs the stream's key. Watching a public stream needs nothing; a private one
(arraignment, security camera, a closed hearing) needs a signed-in caller with a role that
may watch, or a short-lived signed play token made for that stream. Open mode (local
trials, loopback only) turns the checks off and registers unknown streams on the fly.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from pathlib import Path

from core.config import SecurityConfig
from core.courts import CourtTree
from core.node_secrets import node_secret
from core.rights import Caller, may
from core.scope import sees
from media_server.streams import StreamDefinition, StreamRegistry, valid_stream_id

log = logging.getLogger(__name__)


class AccessDenied(Exception):
    """Refused; `status` is the HTTP status an egress answers with, the message the reason."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


class PlayTokens:
    """Short-lived HMAC tokens that let one stream be played without signing in.

    A token is minted only for a caller who may watch the stream, its court in scope: it
    carries that decision, so the egress that takes it (RTMP play has no session) need not
    ask again. It may name its holder (`expires.holder.signature`, the holder signed too)
    so that the audit trail says who watched with it."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    @classmethod
    def for_node(cls, data_dir: Path, security: SecurityConfig) -> PlayTokens:
        """The node's tokens; every node of a cluster needs the same configured secret."""
        secret = node_secret(data_dir, "play-url", security.url_signing_secret)
        return cls(secret, security.signed_url_ttl_s)

    def make(self, stream_id: str, now: float | None = None, holder: str = "") -> str:
        expires = int((now or time.time()) + self.ttl_s)
        signature = self._sign(stream_id, expires, holder)
        return f"{expires}.{holder}.{signature}" if holder else f"{expires}.{signature}"

    @staticmethod
    def holder(token: str) -> str:
        """Whom the token was made for ("" if nobody was named); true once check() passed."""
        _, _, rest = token.partition(".")
        return rest.rpartition(".")[0]

    def check(self, stream_id: str, token: str, now: float | None = None) -> bool:
        expires_s, _, rest = token.partition(".")
        holder, _, signature = rest.rpartition(".")
        # isascii: str.isdigit() takes "²", which int() refuses, and compare_digest
        # refuses non-ASCII text; either was a 500 for a token anyone can type
        if not (expires_s.isascii() and expires_s.isdigit()) or len(expires_s) > 12:
            return False
        if not signature or not signature.isascii():
            return False
        if int(expires_s) < (now or time.time()):
            return False
        if not holder.isascii():
            return False
        return hmac.compare_digest(signature, self._sign(stream_id, int(expires_s), holder))

    def _sign(self, stream_id: str, expires: int, holder: str = "") -> str:
        named = f":{holder}" if holder else ""
        message = f"play:{stream_id}:{expires}{named}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]


# LL-HLS players ask several times a second per stream, so the definitions egress checks
# are cached. A change (disable, private) drops its entry at once: the registry publishes
# it and the media server calls forget(). This bound is for a change published while
# pub/sub was down (Redis restarting), which nobody hears: it applies within this time.
PLAY_CACHE_S = 10.0


class AccessPolicy:
    def __init__(self, registry: StreamRegistry, tokens: PlayTokens, open_mode: bool) -> None:
        self.registry = registry
        self.courts = CourtTree(registry.state)
        self.tokens = tokens
        self.open_mode = open_mode
        self._play_cache: dict[str, tuple[float, StreamDefinition | None]] = {}
        self._forgotten = 0  # forget() calls so far

    async def _definition_for_play(self, stream_id: str) -> StreamDefinition | None:
        now = time.monotonic()
        cached = self._play_cache.get(stream_id)
        if cached is not None and now - cached[0] < PLAY_CACHE_S:
            return cached[1]
        forgotten = self._forgotten
        definition = await self.registry.get(stream_id)
        if self._forgotten != forgotten:  # changed while read: what was read may be older
            return definition
        if len(self._play_cache) > 10_000:  # unknown ids asked by anyone must not grow it
            self._play_cache.clear()
        self._play_cache[stream_id] = (now, definition)
        return definition

    def forget(self, stream_id: str) -> None:
        """A definition changed: the next check reads it again."""
        self._play_cache.pop(stream_id, None)
        self._forgotten += 1

    async def check_publish(self, stream_id: str, key: str | None, peer: str) -> None:
        if not valid_stream_id(stream_id):
            raise AccessDenied(f"stream id {stream_id!r} is not valid", 400)
        if self.open_mode:
            if await self.registry.get(stream_id) is None:
                await self.registry.define(StreamDefinition(id=stream_id, public=True))
                log.info("open mode: stream %s registered on the fly by %s", stream_id, peer)
            return
        definition = await self.registry.get(stream_id)
        # an unknown id answers as a wrong key does: publishing must not reveal which
        # (private) stream ids exist; only the key's holder learns it is disabled
        if definition is None or not await self.registry.key_matches(stream_id, key):
            raise AccessDenied(f"wrong or missing key for stream {stream_id!r}", 403)
        if not definition.enabled:
            raise AccessDenied(f"stream {stream_id!r} is disabled", 403)

    async def check_play(
        self, stream_id: str, token: str | None = None, caller: Caller | None = None
    ) -> StreamDefinition | None:
        """Returns the definition (None in open mode for unknown streams)."""
        definition = await self._definition_for_play(stream_id)
        if self.open_mode:
            return definition
        if definition is None or not definition.enabled:
            raise AccessDenied(f"stream {stream_id!r} not found", 404)
        if definition.is_public:
            return definition
        if may(caller, "watch_private") and await sees(caller, definition.court, self.courts):
            return definition
        if token and self.tokens.check(stream_id, token):
            return definition
        # same answer as unknown: a public URL must not even reveal a private stream
        raise AccessDenied(f"stream {stream_id!r} not found", 404)
