"""LL-HLS egress: fMP4 parts and segments cut from hub packets, served from memory."""
