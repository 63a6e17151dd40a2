"""What the media server knows about codecs, as pure functions over bytes (no I/O).

- `bitstream`: bit reading, RBSP unescaping, NAL framing (Annex-B and length-prefixed),
  shared by H.264 and H.265.
- `h264`, `h265`: NAL types, SPS parsing, decoder configuration records (avcC, hvcC); for
  H.264 also RTP packing (RFC 6184) and the assembly of depacketized frames.
- `video`: what both video codecs share above the bitstream: NAL types by codec name,
  a stream's parameter sets and the normalizer that puts a source's access units in the
  hub's form.
- `aac`: the AudioSpecificConfig.

Malformed input raises `bitstream.BitstreamError` (a ValueError), never anything else.
"""
