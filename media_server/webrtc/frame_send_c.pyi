from collections.abc import Sequence
from socket import socket
from typing import Any

class FrameSender:
    gso: bool
    batches: int
    def __init__(self, session: Any, sock: socket, addr: tuple[str, int], gso: bool) -> None: ...
    def send_frame(
        self,
        first: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extension: bytes,
        payloads: Sequence[bytes],
        history: dict[int, Any],
    ) -> tuple[int, list[bytes]]: ...
