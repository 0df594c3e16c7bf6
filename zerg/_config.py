"""Frozen, validated configuration.

Every field is checked when the object is built, so a bad value fails where it
is written, with a ``ValueError`` that names the field and the allowed range,
instead of deep inside the kernel as an ``EINVAL``.
"""

from __future__ import annotations

import ipaddress
import os
import ssl as _stdlib_ssl
from dataclasses import dataclass, field
from typing import Final, Literal

MAX_RING_ENTRIES: Final = 32768
MAX_BATCH_CQES: Final = 4096

IPVersion = Literal["ipv4", "ipv6", "dual"]
LoopMode = Literal["submit_and_wait", "enter_ext_arg"]
Handoff = Literal["msg_ring", "queue"]


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def _check_pow2(name: str, value: int, lo: int, hi: int) -> None:
    _check_int(name, value, lo, hi)
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two in [{lo}, {hi}], got {value}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_float(name: str, value: object, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


@dataclass(frozen=True, slots=True)
class ReactorConfig:
    """Per-reactor settings: its io_uring, its buffer ring and its slab pool.

    Memory: the receive side reserves ``buffer_ring_entries * recv_buffer_size``
    bytes of address space per reactor (pages become resident as the kernel
    fills them).  Write segments of ``write_buffer_size`` are taken from the
    same pool on demand and given back after each send completes, so an idle
    connection holds none.
    """

    ring_entries: int = 4096
    """Submission queue size (the completion queue is twice this)."""
    recv_buffer_size: int = 16384
    """Bytes per provided receive buffer (one slot, one recv completion)."""
    buffer_ring_entries: int = 1024
    """Slots in the provided buffer ring; a power of two."""
    batch_cqes: int = 512
    """Most completions taken from the ring by one harvest call."""
    max_connections: int = 65536
    """Connections one reactor serves at once."""
    cq_timeout_ns: int = 50_000_000
    """Longest one wait in ``io_uring_enter`` when asyncio has no timer due."""
    incremental_buffers: bool = False
    """Let several receives share one slot (``IOU_PBUF_RING_INC``, Linux 6.12)."""
    sqpoll: bool = False
    """A kernel thread polls the submission queue (``IORING_SETUP_SQPOLL``)."""
    sq_thread_cpu: int | None = None
    """Pin the SQPOLL thread to this CPU (``IORING_SETUP_SQ_AFF``)."""
    sq_thread_idle_ms: int = 1000
    """Idle time before the SQPOLL thread sleeps."""
    single_issuer: bool = True
    """``IORING_SETUP_SINGLE_ISSUER``: only the reactor thread submits."""
    defer_taskrun: bool = True
    """``IORING_SETUP_DEFER_TASKRUN``: completions run only when the reactor waits."""
    write_buffer_size: int = 32768
    """Bytes per write segment taken from the slab pool."""
    max_write_buffer: int = 16 * 1024 * 1024
    """Most bytes one connection may have staged or in flight."""
    loop_mode: LoopMode = "submit_and_wait"
    """How a loop iteration submits and waits: liburing's ``submit_and_wait``
    (with a timeout), or ``"enter_ext_arg"``: one direct ``io_uring_enter``
    whose extended argument carries the timeout (Linux 5.11)."""
    max_read_buffer: int = 4 * 1024 * 1024
    """Most received bytes one connection may hold unconsumed.  Past it the
    connection stops receiving (its multishot recv is cancelled, not re-armed)
    until the handler consumes down to half; the peer is slowed by TCP flow
    control, and the shared buffer ring stays available to others."""
    max_read_chunk: int = 256 * 1024
    """Fairness: most received bytes one read hands a handler at once (as
    uvloop and asyncio bound ``data_received``).  A connection with more
    waiting gets the rest in later reads, and its next read first lets the
    loop run once, so one flooding client cannot hold the reactor."""
    idle_timeout_s: float | None = None
    """Close connections that receive nothing for this long (None: never)."""
    max_write_memory: int | None = None
    """Write memory one reactor may stage across all its connections (None: an
    eighth of the machine's RAM).  Past it, writes that would take their
    connection past the write pause mark are refused (``WriteBufferFullError``:
    back-pressure, nothing lost; ``flush()`` waits for room), so the biggest
    writers are the ones slowed and small replies still go through.  A
    ``BufferWriter``'s ``get_memory`` counts its unflushed segments and is
    refused the same way."""
    close_timeout_s: float | None = 30.0
    """How long a closing connection may take to hand its last bytes to a peer
    that does not read them; then it is aborted and its memory and fd are
    released (None: wait for ever)."""

    def __post_init__(self) -> None:
        _check_int("ring_entries", self.ring_entries, 2, MAX_RING_ENTRIES)
        _check_int("recv_buffer_size", self.recv_buffer_size, 64, 1 << 24)
        _check_pow2("buffer_ring_entries", self.buffer_ring_entries, 1, MAX_RING_ENTRIES)
        _check_int("batch_cqes", self.batch_cqes, 1, MAX_BATCH_CQES)
        _check_int("max_connections", self.max_connections, 1, 1 << 20)
        _check_int("cq_timeout_ns", self.cq_timeout_ns, 1000, 60 * 1_000_000_000)
        _check_bool("incremental_buffers", self.incremental_buffers)
        _check_bool("sqpoll", self.sqpoll)
        if self.sq_thread_cpu is not None:
            _check_int("sq_thread_cpu", self.sq_thread_cpu, 0, 4095)
            if not self.sqpoll:
                raise ValueError("sq_thread_cpu needs sqpoll=True (it pins the SQPOLL thread)")
        _check_int("sq_thread_idle_ms", self.sq_thread_idle_ms, 0, 600_000)
        _check_bool("single_issuer", self.single_issuer)
        _check_bool("defer_taskrun", self.defer_taskrun)
        if self.defer_taskrun and not self.single_issuer:
            raise ValueError("defer_taskrun=True needs single_issuer=True (a kernel rule)")
        if self.sqpoll and self.defer_taskrun:
            raise ValueError(
                "sqpoll=True needs defer_taskrun=False (the kernel refuses DEFER_TASKRUN "
                "with SQPOLL): pass ReactorConfig(sqpoll=True, defer_taskrun=False)"
            )
        if self.loop_mode not in ("submit_and_wait", "enter_ext_arg"):
            raise ValueError(
                f"loop_mode must be 'submit_and_wait' or 'enter_ext_arg', got {self.loop_mode!r}"
            )
        _check_int("write_buffer_size", self.write_buffer_size, 512, 1 << 24)
        _check_int("max_write_buffer", self.max_write_buffer, self.write_buffer_size, 1 << 34)
        _check_int("max_read_buffer", self.max_read_buffer, self.recv_buffer_size, 1 << 34)
        if self.idle_timeout_s is not None:
            _check_float("idle_timeout_s", self.idle_timeout_s, 0.001, 86400.0)
        _check_int("max_read_chunk", self.max_read_chunk, self.recv_buffer_size, 1 << 34)
        if self.max_write_memory is not None:
            _check_int("max_write_memory", self.max_write_memory, self.write_buffer_size,
                       1 << 44)
        if self.close_timeout_s is not None:
            _check_float("close_timeout_s", self.close_timeout_s, 0.001, 86400.0)


@dataclass(frozen=True, slots=True)
class AcceptorConfig:
    """Settings of the accepting side (its own ring when ``reactor_count > 1``)."""

    ring_entries: int = 256
    """Submission queue size of the acceptor's ring."""
    batch_sqes: int = 64
    """Most hand-offs the acceptor prepares before it submits them; a burst of
    accepts leaves in batches of this size instead of waiting for the next
    loop iteration."""
    cq_timeout_ns: int = 50_000_000
    """Longest one wait of the acceptor thread."""
    ip_version: IPVersion = "ipv4"
    """``"ipv4"``, ``"ipv6"`` or ``"dual"`` (IPv6 socket that also accepts IPv4)."""
    sqpoll: bool = False
    """Use an SQPOLL thread for the acceptor's ring."""
    handoff: Handoff = "msg_ring"
    """How accepted fds reach reactors: ``IORING_OP_MSG_RING`` (lock-free, a
    CQE in the target ring) or ``"queue"`` (a thread-safe queue + wake-up)."""

    def __post_init__(self) -> None:
        _check_int("ring_entries", self.ring_entries, 2, MAX_RING_ENTRIES)
        _check_int("batch_sqes", self.batch_sqes, 1, 4096)
        _check_int("cq_timeout_ns", self.cq_timeout_ns, 1000, 60 * 1_000_000_000)
        if self.ip_version not in ("ipv4", "ipv6", "dual"):
            raise ValueError(
                f"ip_version must be 'ipv4', 'ipv6' or 'dual', got {self.ip_version!r}"
            )
        _check_bool("sqpoll", self.sqpoll)
        if self.handoff not in ("msg_ring", "queue"):
            raise ValueError(f"handoff must be 'msg_ring' or 'queue', got {self.handoff!r}")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Where to listen and how many reactors serve the connections."""

    ip: str = "0.0.0.0"
    """Address to bind; must match ``acceptor.ip_version``."""
    port: int = 8080
    """TCP port, 0 for an ephemeral one (read it back from ``Engine.port``)."""
    backlog: int = 4096
    """listen() backlog (the kernel caps it at ``net.core.somaxconn``)."""
    reactor_count: int = 1
    """Reactors (each one thread, one ring, one asyncio loop)."""
    reactor: ReactorConfig = field(default_factory=ReactorConfig)
    """Settings every reactor uses."""
    acceptor: AcceptorConfig = field(default_factory=AcceptorConfig)
    """Settings of the accepting side."""
    shutdown_timeout_s: float = 5.0
    """Grace period for handlers after ``stop()`` before they are cancelled."""
    reuse_port: bool = False
    """Set ``SO_REUSEPORT`` so several processes can listen on one port."""
    workers: int = 1
    """Processes, each with its own reactors (and, on a TCP port, its own
    ``SO_REUSEPORT`` listener; over ``unix_path``/``listen_fd`` they share one):
    the way to use every core under the GIL.  The calling process supervises
    them: Ctrl-C / ``stop()`` stops all, a worker that dies is restarted,
    SIGHUP (``Engine.restart_workers()``) replaces them one at a time, and
    its ``Engine.stats()`` lists every worker's reactors."""
    worker_threads: int = 64
    """Threads that run plain ``def handler(conn)`` handlers (one per connection
    at a time; further connections wait for a free thread)."""
    unix_path: str | None = None
    """Listen on a UNIX stream socket at this path instead of ``ip:port``.  A
    stale socket file (nothing accepts there) is replaced; a live one, or any
    other file, is an error.  The file is removed when the engine closes.
    With ``workers > 1`` the workers share this one socket."""
    proxy_protocol: bool = False
    """Every connection starts with a PROXY protocol header (v1 or v2: haproxy's
    ``send-proxy``/``send-proxy-v2``, nginx ``proxy_protocol on``); it is read
    before the handler starts, and ``conn.peername`` is the client it names.  A
    connection whose header is missing, malformed or later than
    ``proxy_header_timeout_s`` is closed and counted (``ReactorStats.proxy_rejected``).
    Only for listeners that nothing but the balancer can reach: the header is
    taken on trust."""
    proxy_header_timeout_s: float = 5.0
    """How long a new connection may take to send its PROXY header."""
    listen_fd: int | None = None
    """Serve an already-open stream socket (TCP or UNIX) instead of binding
    one: an fd passed in, or one systemd passed (``zerg.systemd_listen_fds()``).
    The engine works on a duplicate, so the caller's fd stays open, and on stop
    it stops accepting without shutting the socket down (others may hold it).
    A socket that is bound but not listening yet gets ``listen(backlog)``.
    ``ip``/``port`` are not used; with ``workers > 1`` the workers share it."""
    ssl: _stdlib_ssl.SSLContext | None = None
    """Serve TLS with this server context (e.g.
    ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` with
    ``load_cert_chain(...)``; ALPN, client certificates and SNI as configured
    there).  Handlers and ``Protocol.connection_made`` run once the handshake
    finished; ``conn.tls`` tells what it agreed.  A failed or late handshake
    closes that connection only and counts in ``ReactorStats.tls_failed``.
    Its ``sni_callback`` (if any) must be set before serving: zerg chains to
    it to record the name the client asked for."""
    tls_handshake_timeout_s: float = 10.0
    """How long a new connection may take to finish its TLS handshake."""

    def __post_init__(self) -> None:
        if not isinstance(self.ip, str):
            raise ValueError(f"ip must be a string address, got {self.ip!r}")
        try:
            addr = ipaddress.ip_address(self.ip)
        except ValueError:
            raise ValueError(
                f"ip must be a literal IPv4 or IPv6 address, got {self.ip!r}"
            ) from None
        _check_int("port", self.port, 0, 65535)
        _check_int("backlog", self.backlog, 1, 1 << 20)
        _check_int("reactor_count", self.reactor_count, 1, 256)
        if not isinstance(self.reactor, ReactorConfig):
            raise ValueError(f"reactor must be a ReactorConfig, got {type(self.reactor).__name__}")
        if not isinstance(self.acceptor, AcceptorConfig):
            raise ValueError(
                f"acceptor must be an AcceptorConfig, got {type(self.acceptor).__name__}"
            )
        _check_float("shutdown_timeout_s", self.shutdown_timeout_s, 0.0, 3600.0)
        _check_bool("reuse_port", self.reuse_port)
        _check_int("worker_threads", self.worker_threads, 1, 4096)
        _check_int("workers", self.workers, 1, 1024)
        _check_bool("proxy_protocol", self.proxy_protocol)
        _check_float("proxy_header_timeout_s", self.proxy_header_timeout_s, 0.001, 3600.0)
        if self.unix_path is not None:
            if not isinstance(self.unix_path, str) or not self.unix_path or "\0" in self.unix_path:
                raise ValueError(f"unix_path must be a file path, got {self.unix_path!r}")
            if len(os.fsencode(self.unix_path)) > _UNIX_PATH_MAX:
                raise ValueError(f"unix_path is {len(os.fsencode(self.unix_path))} bytes long; "
                                 f"a UNIX socket path has at most {_UNIX_PATH_MAX}")
        if self.listen_fd is not None:
            _check_int("listen_fd", self.listen_fd, 0, 1 << 30)
            if self.unix_path is not None:
                raise ValueError("give unix_path or listen_fd, not both")
        if self.ssl is not None:
            if not isinstance(self.ssl, _stdlib_ssl.SSLContext):
                raise TypeError(
                    f"ssl must be an ssl.SSLContext (e.g. ssl.create_default_context("
                    f"ssl.Purpose.CLIENT_AUTH) with load_cert_chain(...)), got "
                    f"{type(self.ssl).__name__}")
            if self.ssl.protocol == _stdlib_ssl.PROTOCOL_TLS_CLIENT:
                raise ValueError(
                    "ssl is a client-side context (PROTOCOL_TLS_CLIENT, which "
                    "ssl.create_default_context() makes by default); a server needs "
                    "ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) or "
                    "ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)")
        _check_float("tls_handshake_timeout_s", self.tls_handshake_timeout_s, 0.001, 3600.0)
        want_v6 = self.acceptor.ip_version != "ipv4"
        if (addr.version == 6) != want_v6:
            raise ValueError(
                f"ip {self.ip!r} is IPv{addr.version} but acceptor.ip_version is "
                f"{self.acceptor.ip_version!r}"
            )


_UNIX_PATH_MAX = 107     # sizeof(sockaddr_un.sun_path) - 1 on Linux


def _default_write_memory() -> int:
    """An eighth of the machine's RAM (1 GiB where it cannot be read)."""
    try:
        return max(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8, 1 << 26)
    except (ValueError, OSError):
        return 1 << 30


@dataclass(frozen=True, slots=True)
class PipeOptions:
    """Every threshold of a connection's pipes, in one place (.NET's ``PipeOptions``).

    Derived once per reactor from its ``ReactorConfig``; the input pipe, the
    output pipe and the adapters read their limits here and nowhere else.
    """

    slot_size: int
    """Bytes per receive slot (``recv_buffer_size``)."""
    segment_size: int
    """Bytes per write segment (``write_buffer_size``)."""
    max_read_buffer: int
    """Unconsumed received bytes above which receiving pauses."""
    resume_read_at: int
    """Receiving resumes once unconsumed bytes fall to this (half the pause mark)."""
    max_write_buffer: int
    """Staged + in-flight bytes past which writes raise ``WriteBufferFullError``."""
    write_pause_at: int = 65536
    """``flush()`` returns at once while staged + in-flight bytes are at most this
    (asyncio's default high-water mark) ..."""
    write_resume_at: int = 16384
    """... and otherwise waits until they fell to this (a quarter, as asyncio)."""
    compact_min_slots: int = 8
    """A buffer holding more slots than this may be compacted ..."""
    compact_fill_divisor: int = 4
    """... when its bytes fill less than 1/divisor of the slots it holds."""
    stream_high_water: int = 0
    """``ConnectionStream.write`` waits for the send once this much is pending."""
    close_timeout_s: float | None = None
    """A closing connection still sending after this long is aborted."""
    max_write_memory: int = 0
    """Write memory of the whole reactor (0: no limit); see ``ReactorConfig``."""
    read_chunk_items: int = 1 << 30
    """Most received items one read hands out (``max_read_chunk`` in slots)."""
    max_held_slots: int = 1 << 30
    """Receive slots one connection may hold (taken or not) before it stops
    receiving: ``max_read_buffer`` counted in whole slots, since a slot
    holding one byte still takes a whole slot of the shared ring."""
    max_pinned_slots: int = 1 << 30
    """Receive slots one connection's sends may pin (``Connection.forward``):
    past this a Protocol gets ``pause_writing`` and further forwards are
    copied, so a destination that stops reading cannot hold the shared ring
    (an eighth of it, at least 4)."""

    @classmethod
    def from_config(cls, cfg: ReactorConfig) -> PipeOptions:
        return cls(
            slot_size=cfg.recv_buffer_size,
            segment_size=cfg.write_buffer_size,
            max_read_buffer=cfg.max_read_buffer,
            resume_read_at=cfg.max_read_buffer // 2,
            max_write_buffer=cfg.max_write_buffer,
            write_pause_at=min(65536, cfg.max_write_buffer),
            write_resume_at=min(65536, cfg.max_write_buffer) // 4,
            stream_high_water=4 * cfg.write_buffer_size,
            close_timeout_s=cfg.close_timeout_s,
            read_chunk_items=max(1, cfg.max_read_chunk // cfg.recv_buffer_size),
            max_write_memory=(cfg.max_write_memory if cfg.max_write_memory is not None
                              else _default_write_memory()),
            max_held_slots=max(1, cfg.max_read_buffer // cfg.recv_buffer_size),
            max_pinned_slots=max(4, cfg.buffer_ring_entries // 8),
        )

    def should_compact(self, held_slots: int, nbytes: int) -> bool:
        """True when ``nbytes`` spread over ``held_slots`` slots waste the ring:
        a peer trickling a message one small recv at a time."""
        return (held_slots > self.compact_min_slots
                and nbytes * self.compact_fill_divisor < held_slots * self.slot_size)
