"""RTP payloads for H.264 (RFC 6184, packetization-mode 1), computed from NAL units.

Pure functions. Small NAL units (parameter sets, SEI) travel together in one STAP-A,
large ones are split into FU-A fragments of equal size (the last a little shorter), the
rest go as single NAL unit packets. The output is the list of RTP payloads of one frame, in order; the sender
adds headers (and sets the marker bit on the last one).
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_PAYLOAD = 1200  # RTP payload bytes; leaves room for headers, SRTP and a VPN/tunnel
STAP_A = 24
FU_A = 28


def h264_payloads(
    nals: Sequence[bytes | memoryview], max_payload: int = MAX_PAYLOAD
) -> list[bytes]:
    """The RTP payloads carrying these NAL units of one access unit."""
    payloads: list[bytes] = []
    group: list[bytes | memoryview] = []
    group_size = 1  # STAP-A header
    for nal in nals:
        if not len(nal):
            continue
        if len(nal) > max_payload:
            _flush(group, payloads)
            group, group_size = [], 1
            payloads.extend(fu_a(nal, max_payload))
            continue
        if group and group_size + 2 + len(nal) > max_payload:
            _flush(group, payloads)
            group, group_size = [], 1
        group.append(nal)
        group_size += 2 + len(nal)
    _flush(group, payloads)
    return payloads


def _flush(group: list[bytes | memoryview], payloads: list[bytes]) -> None:
    if len(group) == 1:
        payloads.append(bytes(group[0]))
    elif group:
        payloads.append(stap_a(group))


def stap_a(nals: Sequence[bytes | memoryview]) -> bytes:
    """One aggregation packet: F is OR-ed, NRI is the highest of its units."""
    f = 0
    nri = 0
    for nal in nals:
        f |= nal[0] & 0x80
        nri = max(nri, nal[0] & 0x60)
    parts = [bytes([f | nri | STAP_A])]
    for nal in nals:
        parts.append(len(nal).to_bytes(2, "big"))
        parts.append(bytes(nal))
    return b"".join(parts)


def fu_a(nal: bytes | memoryview, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Fragments of one NAL unit: all of one size but the last, which is at most one byte
    per fragment shorter (so no tiny last packet, and UDP GSO can send them in one go)."""
    header = nal[0]
    indicator = bytes([(header & 0xE0) | FU_A])
    kind = header & 0x1F
    body = memoryview(nal)[1:]
    room = max_payload - 2
    count = -(-len(body) // room)
    size = -(-len(body) // count)
    out: list[bytes] = []
    for i, pos in enumerate(range(0, len(body), size)):
        fu_header = kind | (0x80 if i == 0 else 0) | (0x40 if pos + size >= len(body) else 0)
        out.append(indicator + bytes([fu_header]) + body[pos : pos + size].tobytes())
    return out
