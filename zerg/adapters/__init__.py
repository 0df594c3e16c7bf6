"""Level-3 adapters over a zerg connection.

- ``PipeReader``: System.IO.Pipelines' reader (async, zero-copy) for parsers.
- ``ConnectionStream``: an ``io.RawIOBase`` for stdlib code on worker threads.
- ``BufferWriter``: .NET's ``IBufferWriter<byte>``: fill slab memory in place.
"""

from __future__ import annotations

from zerg.adapters._pipereader import PipeReader, ReadResult
from zerg.adapters._stream import ConnectionStream
from zerg.adapters._writer import BufferWriter

__all__ = ["BufferWriter", "ConnectionStream", "PipeReader", "ReadResult"]
