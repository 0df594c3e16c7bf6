"""zerg.metrics (issue 16): the engine's counters in the Prometheus text format,
through prometheus_client -- as a collector, and scraped over HTTP."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from conftest import echo_handler, recv_exact, serving, wait_for
from prometheus_client import CollectorRegistry, generate_latest
from test_listen import unix_connect

from zerg.metrics import ZergCollector, start_metrics_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_collector_exposes_counters_gauges_and_close_reasons() -> None:
    with serving(echo_handler) as srv:
        for i in range(3):
            with srv.connect() as s:
                s.sendall(b"m%d" % i)
                assert recv_exact(s, 2) == b"m%d" % i
        wait_for(lambda: srv.engine.stats()[0].closed_by.get("peer_eof") == 3)
        registry = CollectorRegistry()
        registry.register(ZergCollector(srv.engine))
        text = generate_latest(registry).decode()
        assert 'zerg_connections_accepted_total{reactor="0",worker="0"} 3.0' in text
        assert 'zerg_received_bytes_total{reactor="0",worker="0"} 6.0' in text
        assert ('zerg_connections_closed_total{reactor="0",reason="peer_eof",worker="0"} 3.0'
                in text)
        assert 'zerg_connections{reactor="0",worker="0"} 0.0' in text
        assert "# TYPE zerg_receive_slots gauge" in text


def test_metrics_over_http_cover_every_worker(sock_dir: Path) -> None:
    path = sock_dir / "m.sock"
    with serving(echo_handler, unix_path=str(path), workers=2) as srv:
        wait_for(lambda: {st.worker for st in srv.engine.stats()} == {0, 1}, timeout=10)
        with unix_connect(path) as s:
            s.sendall(b"x")
            assert recv_exact(s, 1) == b"x"
        port = _free_port()
        start_metrics_server(srv.engine, port)
        wait_for(lambda: sum(st.accepted for st in srv.engine.stats()) == 1, timeout=5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'worker="0"' in text and 'worker="1"' in text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("zerg_connections_accepted_total{"))
        assert total == 1.0
