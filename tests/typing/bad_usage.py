"""Planted mistakes: ``mypy --strict`` must report each one, and nothing else.

Only type-checked (by tests/test_typing.py), never run.  Every mistake sits on
its own line, marked ``# E: <error-code>``: the test asserts that mypy reports
exactly that code on exactly that line, and no error on any unmarked line.

``# E-pending: <code>`` marks a mistake that the current public types cannot
catch yet (the parameter is typed ``Any``).  The test expects those to pass
unnoticed today and fails as soon as one is caught, so the marker is turned
into ``# E:`` when the type is made precise.
"""

from __future__ import annotations

import zerg
from zerg.adapters import BufferWriter, ConnectionStream, PipeReader, ReadResult

# -- configuration -----------------------------------------------------------------


def bad_config() -> list[object]:
    return [
        zerg.EngineOptions(port="8080"),  # E: arg-type
        zerg.EngineOptions(reactors=2),  # E: call-arg
        zerg.EngineOptions(reactor=zerg.AcceptorConfig()),  # E: arg-type
        zerg.ReactorConfig(ring_entries=4096.0),  # E: arg-type
        zerg.ReactorConfig(sq_thread_cpu="0"),  # E: arg-type
        zerg.AcceptorConfig(ip_version="ipv5"),  # E: arg-type
        zerg.EngineOptions(shutdown_timeout_s=None),  # E: arg-type
        zerg.EngineOptions(workers=2.0),  # E: arg-type
        zerg.ReactorConfig(loop_mode="busy_poll"),  # E: arg-type
        zerg.AcceptorConfig(handoff="pipe"),  # E: arg-type
    ]


def frozen(opts: zerg.EngineOptions, cfg: zerg.ReactorConfig) -> None:
    opts.port = 9000  # E: misc
    cfg.batch_cqes = 1  # E: misc


# -- level 1 -----------------------------------------------------------------------


async def level1(conn: zerg.Connection) -> memoryview:
    snap = await conn.read()
    return conn.try_get_ring(snap).view  # E: union-attr


async def forgot_await(conn: zerg.Connection) -> object:
    snap = conn.read()
    return snap.is_closed  # E: attr-defined


async def dropped_coroutine(conn: zerg.Connection) -> None:
    conn.flush()  # E: unused-coroutine


async def await_non_awaitable(conn: zerg.Connection, snap: zerg.RingSnapshot) -> None:
    await conn.get_sequence(snap)  # E: misc


def wrong_ring_calls(conn: zerg.Connection, snap: zerg.RingSnapshot) -> None:
    conn.return_ring(snap)  # E: arg-type
    snap.tail = 0  # E: misc


def read_takes_no_timeout(conn: zerg.Connection) -> object:
    return conn.read(timeout=1.0)  # E: call-arg


def write_str(conn: zerg.Connection) -> None:
    conn.write("text is not bytes")  # E: arg-type


def write_in_place(conn: zerg.Connection) -> None:
    conn.get_buffer(b"64")  # E: arg-type


# -- level 2 -----------------------------------------------------------------------


def sequence_misuse(seq: zerg.BufferSequence) -> list[object]:
    return [
        seq.find("\r\n"),  # E: arg-type
        seq.startswith("GET"),  # E: arg-type
        seq[0].decode(),  # E: attr-defined
        zerg.BufferSequence("text"),  # E: arg-type
        next(iter(seq)).decode(),  # E: attr-defined
    ]


def slice_is_not_bytes(seq: zerg.BufferSequence) -> bytes:
    return seq[1:3]  # E: return-value


# -- level 3 -----------------------------------------------------------------------


async def read_result_misuse(reader: PipeReader) -> bytes:
    result = await reader.read()
    if result.is_complete:  # E: attr-defined
        reader.advance_to("3")  # E: arg-type
    result.buffer = zerg.BufferSequence()  # E: misc
    return result.buffer  # E: return-value


def read_result_fields() -> object:
    return ReadResult(b"raw bytes", is_completed=False, is_canceled=False)  # E: arg-type


def read_result_unpacking(result: ReadResult) -> bytes:
    buffer, completed, canceled = result
    return buffer if completed or canceled else b""  # E: return-value


def try_read_may_be_none(reader: PipeReader) -> int:
    return len(reader.try_read().buffer)  # E: union-attr


async def await_try_read(reader: PipeReader) -> object:
    return await reader.try_read()  # E: misc


def stream_misuse(conn: zerg.Connection) -> None:
    ConnectionStream(conn, timeout="30")  # E: arg-type
    ConnectionStream(conn).write("text")  # E: arg-type


async def writer_misuse(conn: zerg.Connection) -> None:
    writer = BufferWriter(conn)
    writer.get_memory("64")  # E: arg-type
    writer.write("text")  # E: arg-type
    writer.flush()  # E: unused-coroutine


# -- the Protocol fast path --------------------------------------------------------


class WrongReturn(zerg.Protocol):
    def data_received(self, conn: zerg.Connection, seq: zerg.BufferSequence) -> str:  # E: override
        return "consumed"


class WrongArgument(zerg.Protocol):
    def eof_received(self, conn: int) -> bool:  # E: override
        return False


class AsyncCallback(zerg.Protocol):
    async def connection_made(self, conn: zerg.Connection) -> None:  # E: override
        pass


# -- engine ------------------------------------------------------------------------


async def returns_value(conn: zerg.Connection) -> int:
    return 0


def takes_str(conn: str) -> None:
    pass


def engine_misuse(engine: zerg.Engine) -> None:
    engine.serve(42)  # E: arg-type
    engine.serve(zerg.Protocol)  # E: arg-type
    engine.serve(returns_value)  # E: arg-type
    engine.serve(takes_str)  # E: arg-type
    engine.port = 8080  # E: misc
    zerg.run(WrongReturn(), zerg.ReactorConfig())  # E: arg-type
    zerg.Engine(zerg.ReactorConfig())  # E: arg-type


def stats_misuse(engine: zerg.Engine) -> object:
    return engine.stats()[0].slots_used  # E: attr-defined


def acceptor_stats_may_be_none(engine: zerg.Engine) -> int:
    return engine.acceptor_stats().accepted  # E: union-attr


def kernel_misuse() -> object:
    feats = zerg.probe()
    feats.release = (6, 1)  # E: misc
    return feats.release >= "6.1"  # E: operator


def raise_wrongly() -> None:
    raise zerg.UnsupportedKernelError("io_uring")  # E: call-arg
