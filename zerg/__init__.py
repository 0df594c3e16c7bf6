"""zerg: high-performance io_uring TCP servers for Python.

A reactor is an asyncio event loop whose selector is io_uring: connections
are accepted with multishot accept and fed by multishot recv into provided
buffer rings, and handlers are ordinary coroutines.  See the README for the
three API levels.
"""

from __future__ import annotations

from zerg._acceptor import AcceptorStats
from zerg._buffers import BufferSequence
from zerg._config import AcceptorConfig, EngineOptions, ReactorConfig
from zerg._connect import connect
from zerg._connection import Connection, PipeInput, PipeOutput, RingItem, RingSnapshot
from zerg._engine import Engine, run
from zerg._errors import UnsupportedKernelError, WriteBufferFullError
from zerg._listen import systemd_listen_fds
from zerg._probe import KernelFeatures, probe
from zerg._protocol import Protocol
from zerg._reactor import ReactorStats
from zerg._seqreader import SequenceReader
from zerg._standalone import new_event_loop
from zerg._start import AsyncHandler, Handler, SyncHandler
from zerg._tlsinfo import TlsInfo

__all__ = [
    "AcceptorConfig",
    "AcceptorStats",
    "AsyncHandler",
    "BufferSequence",
    "Connection",
    "Engine",
    "EngineOptions",
    "Handler",
    "KernelFeatures",
    "PipeInput",
    "PipeOutput",
    "Protocol",
    "ReactorConfig",
    "ReactorStats",
    "RingItem",
    "RingSnapshot",
    "SequenceReader",
    "SyncHandler",
    "TlsInfo",
    "UnsupportedKernelError",
    "WriteBufferFullError",
    "connect",
    "new_event_loop",
    "probe",
    "run",
    "systemd_listen_fds",
]

__version__ = "0.1.0"
