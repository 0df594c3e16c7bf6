"""A Redis-protocol (RESP2) key-value server on zerg's PipeReader.

    python examples/resp.py --host 127.0.0.1 --port 6380
    redis-cli -p 6380 set greeting hello

Enough Redis for redis-cli and redis-benchmark: PING ECHO SET GET DEL EXISTS INCR MGET MSET
COMMAND CONFIG QUIT, on one in-memory dict per process whose keys expire lazily.

The parser (the part worth copying) reads the zero-copy ``BufferSequence`` that
``PipeReader.read()`` returns through a ``zerg.SequenceReader``: a length line is one
``try_read_bytes_to(b"\n")``, a value one ``try_read_bytes(n)``; nothing else is copied.  It
is resumable: the arguments read so far and what comes next live in a small state object, so
a command whose bytes end mid-way goes on where it stopped at the next read (a 1M-argument
command costs O(its bytes)), and a large value streams into a bytearray instead of pinning
receive slots until it is whole (enough of those would drain the buffer ring).  When the
bytes end mid-command, ``advance_to(consumed, len(buf))`` marks all of them examined: the
next read() waits for more.

Pipelining: the handler parses and executes one command at a time and stages its reply with
``conn.write()``.  Once the staged replies pass the connection's high-water mark
(``conn.get_write_buffer_limits()``), it stops parsing, ``advance_to(consumed, consumed)``
(so the next read() returns the unparsed commands at once), ``await conn.flush()`` sends
them, and it goes on: any number of pipelined commands are answered in order with bounded
memory, and a flooding client lets the others run between batches.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import re
import time
from collections.abc import Callable
from typing import Final

import zerg
from zerg.adapters import PipeReader

MAX_BULK: Final = 64 * 1024 * 1024  # longest bulk string (Redis: 512 MiB)
MAX_ARGS: Final = 1024 * 1024  # most arguments in one command
MAX_INLINE: Final = 64 * 1024  # longest inline command or length line
# An incomplete bulk this long is copied out as it arrives: receive slots are shared by every
# connection of a reactor, and clients waiting to finish big values must not pin them all.
SPILL: Final = 16 * 1024

Command = list[bytes]
_INT64: Final = re.compile(rb"-?(0|[1-9][0-9]{0,18})")  # what INCR accepts, like Redis


class ProtocolError(Exception):
    """The peer broke RESP: reply ``-ERR Protocol error: ...`` and close."""


class RespParser:
    """Turns RESP2 bytes into commands (lists of bytes); one per connection."""

    __slots__ = ("_args", "_bulk", "_part", "_scan", "_want")

    def __init__(self) -> None:
        self._args: Command = []  # arguments of the command being read
        self._want = 0  # arguments still due; 0 = between commands
        self._bulk = -1  # length of the bulk body that comes next; -1 = a line comes next
        self._part: bytearray | None = None  # body so far of a large, incomplete bulk
        self._scan = 0  # bytes of the next line an earlier read searched in vain

    def next_command(self, sr: zerg.SequenceReader) -> Command | None:
        """The next complete command from ``sr``, or None when ``sr`` ends first: what it
        read of the command is in the parser's state, the rest must come with more bytes.
        Raises ProtocolError."""
        args = self._args
        while True:
            if self._want == 0:  # between commands: "*<count>\r\n"
                try:
                    count = sr.try_read_decimal(b"*")
                except ValueError:  # inline commands, *-1, errors
                    words = self._other(sr)
                    if words is None:
                        return None
                    if words:
                        return words
                    continue
                if count is None:
                    return None
                if count > MAX_ARGS:
                    raise ProtocolError("invalid multibulk length")
                self._want = count  # (*0 is ignored, as Redis does)
                continue
            if self._bulk >= 0:  # a body that did not fit in an earlier read
                value = self._body(sr)
                if value is None:
                    return None
            else:  # an argument: "$<n>\r\n", then n bytes and \r\n
                try:
                    n = sr.try_read_decimal(b"$")
                except ValueError:
                    raise ProtocolError("invalid bulk length" if sr.is_next(b"$") else
                                        f"expected '$', got {_show(sr.unread[:1].tobytes())}"
                                        ) from None
                if n is None:
                    return None
                if n > MAX_BULK:
                    raise ProtocolError("invalid bulk length")
                value = sr.try_read_bytes(n)
                if value is None or not sr.is_next(b"\r\n", True):
                    if value is None or sr.remaining < 2:  # not all here: _body waits
                        sr.rewind(0 if value is None else n)  # (or streams it)
                        self._bulk = n
                        continue
                    raise ProtocolError("bulk length does not match the data")
            args.append(value)
            self._want -= 1
            if self._want == 0:
                self._args = []
                return args

    def _other(self, sr: zerg.SequenceReader) -> Command | None:
        """A line between commands that is not ``*<count>``: an inline command (its
        words), ``*-1`` or an empty line (no words), or a protocol error; None until
        the line is whole."""
        line = sr.try_read_bytes_to(b"\n") if not self._scan else self._line(sr)
        if line is None:
            self._no_line(sr)
            return None
        if line[:1] != b"*":  # an inline command: "PING\r\n" (telnet)
            return line.split()  # split() also drops the '\r'
        # A "*<count>\r" line here is one try_read_decimal refused: only *-1 is fine.
        if line != b"*-1\r":
            raise ProtocolError("invalid multibulk length")
        return []

    def _body(self, sr: zerg.SequenceReader) -> bytes | None:
        """The bulk body due (``_bulk`` bytes and \r\n), or None until it is here; a large
        one is copied out as it arrives (``_spill``)."""
        n = self._bulk
        if self._part is None and (n < SPILL or sr.remaining >= n + 2):
            if sr.remaining < n + 2:
                return None
            value = sr.try_read_bytes(n) or b""  # (never None: the bytes are here)
            if not sr.is_next(b"\r\n", True):
                raise ProtocolError("bulk length does not match the data")
        else:
            spilled = self._spill(sr)
            if spilled is None:
                return None
            value = spilled
        self._bulk = -1
        return value

    def _no_line(self, sr: zerg.SequenceReader) -> None:
        """No complete line: refuse one already too long, else remember how far the
        search looked (never search these bytes again)."""
        if sr.remaining > MAX_INLINE:
            inline = self._want == 0 and not sr.is_next(b"*")
            raise ProtocolError("too big inline request" if inline else "too big count string")
        self._scan = sr.remaining

    def _line(self, sr: zerg.SequenceReader) -> bytes | None:
        """The next line, its search resumed where an earlier read's stopped (``_scan``
        bytes of it were searched): a slowly dripped line costs O(its bytes)."""
        end = sr.sequence.find(b"\n", sr.consumed + self._scan)
        if end < 0:
            return None
        self._scan = 0
        line = sr.try_read_bytes(end + 1 - sr.consumed)
        return line and line[:-1]

    def _spill(self, sr: zerg.SequenceReader) -> bytes | None:
        """Copy what is here of a large bulk body into ``_part`` and consume it; the value
        once it is whole."""
        part = self._part
        if part is None:
            part = self._part = bytearray()
        take = min(self._bulk + 2 - len(part), sr.remaining)
        for segment in sr.unread[:take]:  # memoryviews over the receive slots
            part += segment
        sr.advance(take)
        if len(part) < self._bulk + 2:
            return None
        self._part = None
        if part[-2:] != b"\r\n":
            raise ProtocolError("bulk length does not match the data")
        del part[-2:]
        return bytes(part)


# -- the store and the commands ------------------------------------------------------------

DATA: Final[dict[bytes, bytes]] = {}  # shared by every connection of the process
EXPIRES: Final[dict[bytes, float]] = {}  # key -> deadline on time.monotonic()

OK: Final = b"+OK\r\n"
NIL: Final = b"$-1\r\n"
EMPTY: Final = b"*0\r\n"
NOT_INT: Final = b"-ERR value is not an integer or out of range\r\n"
SYNTAX: Final = b"-ERR syntax error\r\n"
CONFIG: Final = {"save": b"", "appendonly": b"no"}  # what redis-benchmark asks for


def _show(raw: bytes, limit: int = 128) -> str:
    """Quote client bytes for an error line (no \\r or \\n may reach the protocol)."""
    return "'" + raw[:limit].decode("latin-1").replace("\r", " ").replace("\n", " ") + "'"


def _err(message: str) -> bytes:
    return b"-ERR " + message.encode("latin-1") + b"\r\n"


def _bulk(value: bytes | None) -> bytes:
    return NIL if value is None else b"$%d\r\n%b\r\n" % (len(value), value)


def _array(items: list[bytes | None]) -> bytes:
    return b"*%d\r\n%b" % (len(items), b"".join(_bulk(v) for v in items))


def _int64(raw: bytes) -> int | None:
    if _INT64.fullmatch(raw) and -(2**63) <= (n := int(raw)) < 2**63:
        return n
    return None


def _arity(name: str) -> bytes:
    return _err(f"wrong number of arguments for '{name}' command")


def _lookup(key: bytes) -> bytes | None:
    """The live value of ``key``; an expired key is deleted on the way (lazy expiry)."""
    if EXPIRES and (deadline := EXPIRES.get(key)) is not None and deadline <= time.monotonic():
        del EXPIRES[key]
        DATA.pop(key, None)
        return None
    return DATA.get(key)


def cmd_ping(a: Command) -> bytes:
    if len(a) > 2:
        return _arity("ping")
    return b"+PONG\r\n" if len(a) == 1 else _bulk(a[1])


def cmd_get(a: Command) -> bytes:
    value = _lookup(a[1])
    return NIL if value is None else b"$%d\r\n%b\r\n" % (len(value), value)


def cmd_set(a: Command) -> bytes:
    """SET key value [EX seconds | PX milliseconds] [NX | XX]"""
    ttl: float | None = None
    nx = xx = False
    i = 3
    while i < len(a):
        opt = a[i].upper()
        if opt in (b"EX", b"PX") and ttl is None and i + 1 < len(a):
            n = _int64(a[i + 1])
            if n is None:
                return NOT_INT
            if n <= 0:
                return _err("invalid expire time in 'set' command")
            ttl = n if opt == b"EX" else n / 1000
            i += 2
        elif (opt == b"NX" and not xx) or (opt == b"XX" and not nx):
            nx, xx = nx or opt == b"NX", xx or opt == b"XX"
            i += 1
        else:
            return SYNTAX
    key = a[1]
    if (nx or xx) and (_lookup(key) is not None) == nx:
        return NIL  # NX and the key exists, or XX and it does not
    DATA[key] = a[2]
    if ttl is None:
        EXPIRES.pop(key, None)
    else:
        EXPIRES[key] = time.monotonic() + ttl
    return OK


def cmd_del(a: Command) -> bytes:
    count = 0
    for key in a[1:]:
        if _lookup(key) is not None:
            del DATA[key]
            EXPIRES.pop(key, None)
            count += 1
    return b":%d\r\n" % count


def cmd_incr(a: Command) -> bytes:
    old = _lookup(a[1])
    n = 0 if old is None else _int64(old)
    if n is None:
        return NOT_INT
    if n == 2**63 - 1:
        return _err("increment or decrement would overflow")
    DATA[a[1]] = b"%d" % (n + 1)  # keeps its expiry, as in Redis
    return b":%d\r\n" % (n + 1)


def cmd_mset(a: Command) -> bytes:
    if len(a) % 2 == 0:
        return _arity("mset")
    for i in range(1, len(a), 2):
        DATA[a[i]] = a[i + 1]
        EXPIRES.pop(a[i], None)
    return OK


def cmd_command(a: Command) -> bytes:
    """Just enough introspection for redis-cli: no command docs, an honest count."""
    if len(a) == 1:
        return EMPTY
    sub = a[1].lower()
    if sub == b"count":
        return b":%d\r\n" % (len(COMMANDS) + 1)  # + QUIT
    if sub in (b"docs", b"info", b"list"):
        return EMPTY
    return _err(f"unknown subcommand {_show(a[1])}. Try COMMAND HELP.")


def cmd_config(a: Command) -> bytes:
    """CONFIG GET pattern...: name/value pairs from the few settings clients ask about."""
    if a[1].lower() != b"get":
        return _err(f"unknown subcommand {_show(a[1])}. Try CONFIG HELP.")
    if len(a) < 3:
        return _arity("config|get")
    pats = [p.decode("latin-1").lower() for p in a[2:]]
    found = [k for k in CONFIG if any(fnmatch.fnmatchcase(k, p) for p in pats)]
    return _array([x for k in found for x in (k.encode(), CONFIG[k])])


# name -> (function, arity): n means exactly n words (with the name), -n at least n.
COMMANDS: Final[dict[bytes, tuple[Callable[[Command], bytes], int]]] = {
    b"ping": (cmd_ping, -1),
    b"echo": (lambda a: _bulk(a[1]), 2),
    b"get": (cmd_get, 2),
    b"set": (cmd_set, -3),
    b"del": (cmd_del, -2),
    b"exists": (lambda a: b":%d\r\n" % sum(_lookup(k) is not None for k in a[1:]), -2),
    b"incr": (cmd_incr, 2),
    b"mget": (lambda a: _array([_lookup(k) for k in a[1:]]), -2),
    b"mset": (cmd_mset, -3),
    b"command": (cmd_command, -1),
    b"config": (cmd_config, -2),
}


# The names as clients send them (redis-benchmark and most clients: upper case) and as
# listed: found without lower(); any other spelling is lowered first.
_BY_NAME: Final = {**COMMANDS, **{name.upper(): entry for name, entry in COMMANDS.items()}}


def execute(a: Command) -> bytes | None:
    """The reply to one command; None for QUIT (reply +OK, then close)."""
    entry = _BY_NAME.get(a[0]) or COMMANDS.get(a[0].lower())
    if entry is None:
        if a[0].lower() == b"quit":
            return None
        shown = ""
        for arg in a[1:]:  # like Redis: quote arguments until 128 characters are shown
            if len(shown) >= 128:
                break
            shown += _show(arg, 128 - len(shown)) + " "
        return _err(f"unknown command {_show(a[0])}, with args beginning with: {shown}")
    fn, arity = entry
    if (len(a) != arity) if arity >= 0 else (len(a) < -arity):
        return _arity(a[0].lower().decode("latin-1"))
    return fn(a)


# -- the connection handler ------------------------------------------------------------------

async def handle(conn: zerg.Connection) -> None:
    """Serve one client until it quits, hangs up or breaks the protocol."""
    reader = PipeReader(conn)
    parser = RespParser()
    high_water = conn.get_write_buffer_limits()[1]
    try:
        while True:
            result = await reader.read()
            sr = zerg.SequenceReader(result.buffer)
            error: ProtocolError | None = None
            big = b""  # a reply larger than the high-water mark: sent in pieces below
            incomplete = closing = False
            # Answer command by command until the bytes run out or the staged replies pass
            # the high-water mark; then send them, and parse on from there.
            room = high_water - conn.pending_write_bytes  # what this batch may stage
            while room >= 0 and not (big or closing):
                try:
                    args = parser.next_command(sr)
                except ProtocolError as exc:  # answered after the commands before it
                    error = exc
                    break
                if args is None:
                    incomplete = True  # the rest is part of a command: wait for more
                    break
                reply = execute(args)
                if reply is None:  # QUIT: answer, ignore what follows, hang up
                    reply, closing = OK, True
                if len(reply) > high_water:
                    big = reply
                else:
                    conn.write(reply)
                    room -= len(reply)
            # The commands own their bytes: the slots go back before the replies are sent.
            # After an incomplete command everything was examined and the next read() waits
            # for more bytes; otherwise it returns the unparsed commands at once.
            done = sr.consumed
            reader.advance_to(done, len(result.buffer) if incomplete else done)
            if error is not None:
                conn.write(_err(f"Protocol error: {error}"))
            if big:  # (rare: tested first, as the view and the range cost every read)
                piece = memoryview(big)
                for i in range(0, len(big), high_water):
                    await conn.flush()
                    conn.write(piece[i : i + high_water])
            await conn.flush()  # waits only while more than the high-water mark is out
            if closing or error is not None or (result.is_completed and incomplete):
                break
    except OSError:
        pass  # the peer went away while we were answering
    finally:
        reader.complete()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6380)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # One reactor: every handler runs on one thread, so the store needs no lock.
    opts = zerg.EngineOptions(ip=args.host, port=args.port, reactor_count=1)
    with zerg.Engine(opts) as engine:
        engine.listen()
        print(f"resp: listening on {args.host}:{engine.port}", flush=True)
        engine.serve(handle)


if __name__ == "__main__":
    main()
