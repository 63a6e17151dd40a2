"""Media nodes on one Redis (DESIGN.md §9): the node directory (nodes.py), who holds each
live stream (origins.py), the node-to-node packet link (link.py) and on-demand relays
(relay.py), put together for the media-server role by service.py."""
