"""Prometheus view of a node's cluster side, read at scrape time: the streams it relays
(from which origin), how many relays it has opened, the origins it holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from media_server.cluster.service import Cluster


class ClusterCollector(Collector):
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        relays = GaugeMetricFamily(
            "courtcast_relay_active",
            "1 for each stream this node pulls from its origin node (one relay per stream)",
            labels=["stream", "origin"],
        )
        for stream_id, relay in self._cluster.relays.active.items():
            relays.add_metric([stream_id, relay.origin], 1)
        yield relays
        yield CounterMetricFamily(
            "courtcast_relays_opened",
            "relays this node opened since it started",
            value=self._cluster.relays.opened,
        )
        yield GaugeMetricFamily(
            "courtcast_origin_leases",
            "streams published on this node whose origin lease it holds",
            value=len(self._cluster.origins.held),
        )
