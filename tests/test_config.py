"""Configuration is validated where it is written, naming the field."""

from __future__ import annotations

import dataclasses

import pytest

import zerg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ring_entries": 0}, r"ring_entries must be in \[2, 32768\]"),
        ({"ring_entries": 1 << 20}, "ring_entries"),
        ({"buffer_ring_entries": 1000}, "buffer_ring_entries must be a power of two"),
        ({"buffer_ring_entries": 65536}, "buffer_ring_entries"),
        ({"recv_buffer_size": 10}, "recv_buffer_size"),
        ({"batch_cqes": 5000}, r"batch_cqes must be in \[1, 4096\]"),
        ({"max_connections": 0}, "max_connections"),
        ({"cq_timeout_ns": -1}, "cq_timeout_ns"),
        ({"sqpoll": "yes"}, "sqpoll must be True or False"),
        ({"sq_thread_cpu": 1}, "sq_thread_cpu needs sqpoll=True"),
        ({"defer_taskrun": True, "single_issuer": False}, "defer_taskrun=True needs single_issuer"),
        ({"write_buffer_size": 100}, "write_buffer_size"),
        ({"max_write_buffer": 1000}, "max_write_buffer"),
        ({"ring_entries": 2.5}, "ring_entries must be an int"),
        ({"ring_entries": True}, "ring_entries must be an int"),
    ],
)
def test_reactor_config_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zerg.ReactorConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 65536}, r"port must be in \[0, 65535\]"),
        ({"port": -1}, "port"),
        ({"ip": "localhost"}, "ip must be a literal"),
        ({"ip": "::1"}, "is IPv6 but acceptor.ip_version is 'ipv4'"),
        ({"reactor_count": 0}, "reactor_count"),
        ({"backlog": 0}, "backlog"),
        ({"shutdown_timeout_s": -1}, "shutdown_timeout_s"),
        ({"reactor": {"ring_entries": 8}}, "reactor must be a ReactorConfig"),
    ],
)
def test_engine_options_reject(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zerg.EngineOptions(**kwargs)  # type: ignore[arg-type]


def test_acceptor_config_rejects() -> None:
    with pytest.raises(ValueError, match="ip_version must be"):
        zerg.AcceptorConfig(ip_version="ipv5")  # type: ignore[arg-type]


def test_configs_are_frozen() -> None:
    cfg = zerg.ReactorConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ring_entries = 8  # type: ignore[misc]


def test_ipv6_listen_when_asked() -> None:
    opts = zerg.EngineOptions(ip="::1", port=0, acceptor=zerg.AcceptorConfig(ip_version="ipv6"))
    with zerg.Engine(opts) as engine:
        engine.listen()
        assert engine.port > 0
