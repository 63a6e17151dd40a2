"""RTMP ingest and play: our own asyncio server over pure parsers.

amf0, chunk, flv and handshake are pure functions / small state machines over bytes (no
I/O), so they can be unit-tested from bytes and fuzzed; server.py (RtmpServer) is the only
module that touches sockets and the hub.
"""
