"""A loopback TCP relay in front of an RTMP server that notes when the publisher sent its
first video frame: the wall-clock reference of the latency measurement.

With `ffmpeg -re`, a frame of RTMP time d leaves the publisher at about
t0 + (d - d0) / 1000, where (t0, d0) is (wall-clock, RTMP time) of the first coded video
frame (not the sequence header). The relay parses the publisher's chunk stream with
courtcast's own ChunkReader until it sees that frame, then only copies bytes.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media_server.rtmp.chunk import VIDEO, ChunkReader

HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0, C1, C2 from the client


class RtmpTap:
    """Listen on 127.0.0.1:<free port>, relay one connection at a time to target."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.first_video: tuple[float, int] | None = None  # (wall-clock, RTMP ms)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [client, server]
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=_pump, args=(server, client), daemon=True).start()

    def _upstream(self, src: socket.socket, dst: socket.socket) -> None:
        """Publisher -> server, watching for the first coded video frame."""
        skip, chunks = HANDSHAKE_BYTES, ChunkReader()
        while data := _recv(src):
            if self.first_video is None:
                now = time.time()
                body, skip = data[skip:], max(0, skip - len(data))
                for msg in chunks.feed(body) if body else []:
                    if msg.type_id == VIDEO and len(msg.payload) > 1 and msg.payload[1] == 1:
                        self.first_video = (now, msg.timestamp)
                        break
            if not _send(dst, data):
                break
        _close(src, dst)

    def close(self) -> None:
        for s in self._socks:
            _close(s)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _pump(src: socket.socket, dst: socket.socket) -> None:
    while (data := _recv(src)) and _send(dst, data):
        pass
    _close(src, dst)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
