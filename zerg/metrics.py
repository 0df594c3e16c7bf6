"""zerg's counters for Prometheus, through ``prometheus_client`` (the ``metrics`` extra).

Why: ``Engine.stats()`` is a Python API; monitoring scrapes text.  This module
turns the stats of every reactor (every worker's, under ``workers > 1``: the
supervisor aggregates them) into Prometheus metrics with the ecosystem's own
library, not a hand-written exposition format.

Use it as a collector in your registry::

    from prometheus_client import REGISTRY
    from zerg.metrics import ZergCollector
    REGISTRY.register(ZergCollector(engine))

or serve it on its own port::

    from zerg.metrics import start_metrics_server
    start_metrics_server(engine, 9108)          # http://127.0.0.1:9108/metrics

Every metric has the labels ``worker`` and ``reactor``;
``zerg_connections_closed_total`` also ``reason`` (``Connection.close_reason``).
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ImportError as exc:      # pragma: no cover - exercised without the extra only
    raise ImportError("zerg.metrics needs prometheus_client: pip install 'zerg[metrics]'"
                      ) from exc

from zerg._engine import Engine

__all__ = ["ZergCollector", "start_metrics_server"]

# ReactorStats field -> (metric name, help); counters end in _total.
_COUNTERS = {
    "accepted": ("zerg_connections_accepted_total", "Connections accepted."),
    "rejected": ("zerg_connections_rejected_total",
                 "Connections closed at once (max_connections, or stopping)."),
    "proxy_rejected": ("zerg_proxy_rejected_total",
                       "Connections closed for a missing, malformed or late PROXY header."),
    "tls_failed": ("zerg_tls_handshakes_failed_total",
                   "TLS handshakes that failed or timed out (EngineOptions.ssl)."),
    "bytes_in": ("zerg_received_bytes_total", "Bytes received."),
    "bytes_out": ("zerg_sent_bytes_total", "Bytes the kernel took from sends."),
    "sends": ("zerg_sends_total", "Send requests submitted."),
    "cqes": ("zerg_completions_total", "io_uring completions harvested."),
    "waits": ("zerg_ring_waits_total", "io_uring_enter calls that waited."),
}
_GAUGES = {
    "connections": ("zerg_connections", "Connections open now."),
    "slots_in_use": ("zerg_receive_slots_in_use", "Receive slots not in the kernel's hands."),
    "slots_total": ("zerg_receive_slots", "Receive slots in the buffer ring."),
    "write_segments_in_use": ("zerg_write_segments_in_use",
                              "Write segments staged, in flight or lent."),
    "receive_paused": ("zerg_receive_paused_connections",
                       "Connections whose receive max_read_buffer holds back."),
}


class ZergCollector(Collector):
    """A ``prometheus_client`` collector of one engine's counters (read at each
    scrape from ``Engine.stats()``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = self._engine.stats()
        labels = ["worker", "reactor"]
        for field, (name, doc) in _COUNTERS.items():
            c = CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
            for st in stats:
                c.add_metric([str(st.worker), str(st.index)], float(getattr(st, field)))
            yield c
        for field, (name, doc) in _GAUGES.items():
            g = GaugeMetricFamily(name, doc, labels=labels)
            for st in stats:
                g.add_metric([str(st.worker), str(st.index)], float(getattr(st, field)))
            yield g
        closed = CounterMetricFamily("zerg_connections_closed",
                                     "Connections closed, by reason (Connection.close_reason).",
                                     labels=[*labels, "reason"])
        for st in stats:
            for reason, n in sorted(st.closed_by.items()):
                closed.add_metric([str(st.worker), str(st.index), reason], float(n))
        yield closed


def start_metrics_server(engine: Engine, port: int, addr: str = "127.0.0.1",
                         registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Serve ``engine``'s metrics at ``http://addr:port/metrics`` from a thread
    (``prometheus_client.start_http_server``); returns the registry used (a new
    one unless given, so the process's default metrics are not mixed in)."""
    reg = registry if registry is not None else CollectorRegistry()
    reg.register(ZergCollector(engine))
    start_http_server(port, addr, registry=reg)
    return reg
