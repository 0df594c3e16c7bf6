"""Level-3 adapters over a zerg connection."""

from __future__ import annotations

from zerg.adapters._pipereader import PipeReader, ReadResult

__all__ = ["PipeReader", "ReadResult"]
