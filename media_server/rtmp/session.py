"""One RTMP session: the command state machine on top of the transport (transport.py).

connect (the application, and a key it may carry), createStream, then publish or play,
each authorized first: a publish becomes a hub publication fed by Ingest (publish.py), a
play a hub subscription written out by PlayOut (play.py). A refusal tells the client
why, in a status it shows, and ends the connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qs

from media_server.hub import StreamBusy
from media_server.media import Item, StreamEnd
from media_server.rtmp import amf0
from media_server.rtmp.chunk import (
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    Message,
)
from media_server.rtmp.errors import RtmpRefused
from media_server.rtmp.flv import split_aggregate
from media_server.rtmp.play import CSID_DATA, PlayOut
from media_server.rtmp.publish import Ingest
from media_server.rtmp.transport import CSID_CONTROL, CloseConnection, RtmpTransport

if TYPE_CHECKING:
    from media_server.rtmp.server import RtmpServer

log = logging.getLogger(__name__)

CSID_COMMAND = 3
STREAM_BEGIN = 0  # a User Control event
MAX_NAME = 256
_U32 = struct.Struct(">I")


def split_query_key(text: str) -> tuple[str, str | None]:
    """'name?key=K&x=y' -> ('name', 'K'); no key -> ('name', None)."""
    base, _, query = text.partition("?")
    keys = parse_qs(query).get("key") if query else None
    return base, (keys[0] if keys else None)


class RtmpSession(RtmpTransport):
    """One connection's commands: at most one publish or one play."""

    def __init__(self, server: RtmpServer) -> None:
        super().__init__(server)
        self.app_key: str | None = None
        self.connected = False
        self.next_stream_id = 1
        self.ingest: Ingest | None = None
        self.publish_msid = 0
        self.play_task: asyncio.Task[None] | None = None

    # -- the transport's hooks --

    def _media(
        self, type_id: int, timestamp: int, payload: bytes | bytearray, arrival: float
    ) -> None:
        if self.ingest is None:
            return  # media before publish (or after unpublish): nothing to attach it to
        if type_id == VIDEO:
            self.ingest.on_video(timestamp, payload, arrival)
        else:
            self.ingest.on_audio(timestamp, payload, arrival)

    async def _message(self, msg: Message, arrival: float) -> None:
        kind = msg.type_id
        if kind in (COMMAND_AMF0, COMMAND_AMF3):
            await self._on_command(msg)
        elif kind in (DATA_AMF0, DATA_AMF3):
            if self.ingest is not None:
                self.ingest.on_metadata(_amf_values(msg))
        elif kind == AGGREGATE:
            for sub_type, ts, body in split_aggregate(msg.payload, msg.timestamp):
                if sub_type in (VIDEO, AUDIO):
                    self._media(sub_type, ts, bytes(body), arrival)
        else:
            self._control(msg)

    def _read_timeout(self) -> float | None:
        if self.ingest is not None:
            self.phase = "publishing"
            return self.limits.publish_timeout
        if self.play_task is not None:
            self.phase = "playing"
            return None  # players may stay silent; the writer notices a dead one
        return self.limits.idle_timeout

    def _end(self, reason: str) -> None:
        if self.play_task is not None:
            self.play_task.cancel()
            self.stats.playing -= 1
        if self.ingest is not None:
            self.ingest.publication.close(reason)
            self.stats.publishing -= 1
            self.ingest = None

    # -- sending --

    def _command(self, msid: int, *values: Any) -> None:
        csid = CSID_COMMAND if msid == 0 else CSID_DATA
        self._send(csid, COMMAND_AMF0, msid, amf0.encode(*values))

    def _status(self, msid: int, level: str, code: str, description: str) -> None:
        self._command(
            msid, "onStatus", 0.0, None, {"level": level, "code": code, "description": description}
        )

    def _user_control(self, event: int, value: int) -> None:
        self._send(CSID_CONTROL, USER_CONTROL, 0, struct.pack(">HI", event, value))

    # -- commands --

    async def _on_command(self, msg: Message) -> None:
        values = _amf_values(msg)
        if not values or not isinstance(values[0], str):
            raise CloseConnection("command message without a command name")
        name = values[0]
        txid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[3:]
        if name == "connect":
            self._on_connect(txid, values[2] if len(values) > 2 else None)
        elif not self.connected:
            raise CloseConnection(f"command {name!r} before connect")
        elif name == "createStream":
            self._command(0, "_result", txid, None, float(self.next_stream_id))
            self.next_stream_id += 1
        elif name == "publish":
            await self._on_publish(msg.stream_id, _first_str(args))
        elif name == "play":
            await self._on_play(msg.stream_id, _first_str(args))
        elif name in ("deleteStream", "closeStream"):
            self._on_delete(int(args[0]) if args and isinstance(args[0], float) else msg.stream_id)
        elif txid:  # releaseStream, FCPublish, FCUnpublish, getStreamLength, ...
            self._command(0, "_result", txid, None)
        await self._drain()

    def _on_connect(self, txid: float, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise CloseConnection("connect without its command object")
        app, app_key = split_query_key(str(obj.get("app", "")))
        _, tc_key = split_query_key(str(obj.get("tcUrl", "")))
        if app.strip("/") != self.server.app:
            self._command(
                0,
                "_error",
                txid,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Connect.Rejected",
                    "description": f"unknown application {app!r}: use "
                    f"rtmp://HOST:PORT/{self.server.app}/STREAM_ID?key=KEY",
                },
            )
            self.stats.refused += 1
            raise CloseConnection(f"connect refused: unknown application {app!r}")
        self.app_key = app_key or tc_key
        self.connected = True
        window = self.limits.window_ack_size
        self._send(CSID_CONTROL, WINDOW_ACK_SIZE, 0, _U32.pack(window))
        self._send(CSID_CONTROL, SET_PEER_BANDWIDTH, 0, _U32.pack(window) + b"\x02")
        self._send(CSID_CONTROL, SET_CHUNK_SIZE, 0, _U32.pack(self.limits.chunk_size))
        self.chunks_out.chunk_size = self.limits.chunk_size
        self._command(
            0,
            "_result",
            txid,
            {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        )

    # -- access --

    def _stream_name(self, name: str | None, action: str) -> tuple[str, str | None]:
        if not name:
            raise CloseConnection(f"{action} without a stream name")
        stream_id, key = split_query_key(name)
        stream_id = stream_id.strip("/")
        if not stream_id or len(stream_id) > MAX_NAME or not stream_id.isprintable():
            return "", None
        return stream_id, key or self.app_key

    async def _check(
        self, msid: int, action: str, name: str | None, code: str
    ) -> tuple[str, str | None]:
        """Authorize; on refusal tell the client why and end the connection."""
        stream_id, key = self._stream_name(name, action)
        reason = None
        if not stream_id:
            reason = f"invalid stream name {name!r}: use {self.server.app}/STREAM_ID?key=KEY"
        elif self.ingest is not None or self.play_task is not None:
            reason = "this connection is already publishing or playing"
        elif self.server.authorize is not None:
            reason = await self._authorize(stream_id, key, action)
        if reason is not None:
            self._refuse(msid, code, f"{action} {stream_id or name!r}", reason)
        return stream_id, key

    async def _authorize(self, stream_id: str, key: str | None, action: str) -> str | None:
        assert self.server.authorize is not None
        try:
            await self.server.authorize(stream_id, key, action, self.peer)
        except RtmpRefused as exc:
            return exc.reason
        except Exception:  # the registry being down is not the client's fault, but no entry
            log.exception("rtmp %s: authorization of %s %s failed", self.peer, action, stream_id)
            return "authorization is unavailable, try again later"
        return None

    def _refuse(self, msid: int, code: str, what: str, reason: str) -> NoReturn:
        self.stats.refused += 1
        self._status(msid, "error", code, reason)
        raise CloseConnection(f"{what} refused: {reason}")

    # -- publish --

    async def _on_publish(self, msid: int, name: str | None) -> None:
        stream_id, _ = await self._check(msid, "publish", name, "NetStream.Publish.Denied")
        try:
            publication = self.server.hub.publish(
                stream_id, (), source=f"rtmp {self.peer}", on_evict=self._evicted
            )
        except StreamBusy as exc:
            self._refuse(msid, "NetStream.Publish.BadName", f"publish {stream_id!r}", str(exc))
        trusted = self.server.authorize is not None  # its key was checked
        self.ingest = Ingest(publication, f"{self.peer} {stream_id}", trusted)
        self.act_by = None
        self.publish_msid = msid
        self.stats.publishing += 1
        stream = publication.stream
        self._start_batching(lambda: not stream.realtime)
        self._user_control(STREAM_BEGIN, msid)
        self._status(msid, "status", "NetStream.Publish.Start", f"{stream_id} is now published")
        log.info("rtmp %s: publishing %s", self.peer, stream_id)

    def _evicted(self, reason: str) -> None:
        self.ingest = None  # the hub already ended this publication
        self._stop_batching()
        self.stats.publishing -= 1
        self.close(reason)

    def _on_delete(self, msid: int) -> None:
        if self.ingest is not None and msid == self.publish_msid:
            self.ingest.publication.close("publisher ended the stream")
            self._status(msid, "status", "NetStream.Unpublish.Success", "stream unpublished")
            self.ingest = None
            self.stats.publishing -= 1
            self._stop_batching()

    # -- play --

    async def _on_play(self, msid: int, name: str | None) -> None:
        stream_id, key = await self._check(msid, "play", name, "NetStream.Play.Failed")
        self._user_control(STREAM_BEGIN, msid)
        self._status(msid, "status", "NetStream.Play.Reset", f"playing {stream_id}")
        self._status(msid, "status", "NetStream.Play.Start", f"started playing {stream_id}")
        self._send(CSID_DATA, DATA_AMF0, msid, amf0.encode("|RtmpSampleAccess", True, True))
        self.stats.playing += 1
        self.act_by = None
        self.play_task = task = asyncio.create_task(self._play_loop(stream_id, msid))
        if self.server.admit_player is not None:
            self.server.admit_player(stream_id, key, self.close, task.done)
        log.info("rtmp %s: playing %s", self.peer, stream_id)

    async def _play_loop(self, stream_id: str, msid: int) -> None:
        sub = self.server.hub.subscribe(stream_id, f"rtmp play {self.peer}")
        out = PlayOut(
            lambda csid, type_id, ts, payload, prefix: self._send(
                csid, type_id, msid, payload, ts, prefix
            )
        )
        try:
            while True:
                item: Item | None = await sub.get()
                while item is not None:
                    if isinstance(item, StreamEnd):
                        self._status(
                            msid,
                            "status",
                            "NetStream.Play.UnpublishNotify",
                            f"{stream_id} stopped: {item.reason}",
                        )
                    out.handle(item)
                    item = sub.get_nowait()
                await self._drain()
        except CloseConnection as exc:
            self.close_reason = exc
            self._close_transport()
        except (EOFError, ConnectionError):
            self._close_transport()
        finally:
            sub.close()


def _amf_values(msg: Message) -> list[Any]:
    payload = msg.payload
    if msg.type_id in (COMMAND_AMF3, DATA_AMF3) and payload[:1] == b"\x00":
        payload = payload[1:]  # AMF3 messages of AMF0 values start with a zero byte
    return amf0.decode(payload)


def _first_str(args: list[Any]) -> str | None:
    return args[0] if args and isinstance(args[0], str) else None
