"""Render docs/_static/architecture.svg: zerg's architecture as boxes and arrows.

    python docs/make_diagram.py

The picture's source is this file (stdlib only, deterministic output), so the
docs build needs no Graphviz and no network.  ``docs/conf.py`` warns when the
committed SVG differs from ``render()``, which fails a ``-W`` build: edit
here, run the script, commit both.

The picture is read bottom up, like the layers: the network and the accept
path at the bottom, then the shim and the kernel, the reactor, the seam, the
connection, the duplex pipe's faces, and the adapters on top.  The right-hand
column holds what sits beside the stack: the start strategies, the other
reactors and the acceptor thread.  Keep the figure's alt text in
``docs/architecture.rst`` in step with it.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

WIDTH = 1000
HEIGHT = 910
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

# fill, stroke
KERNEL = ("#fdf1dc", "#b7791f")
THREAD = ("#eef4fb", "#2b6cb0")
CONN = ("#f6f1fc", "#6b46c1")
SEAM = ("#fffdf0", "#718096")
PART = ("#ffffff", "#4a5568")
USER = ("#eefaf0", "#2f855a")

# The two columns.
LEFT, RIGHT = 20, 670          # the layer stack
COL, COL_END = 700, 980        # beside it


class Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def box(self, x: int, y: int, w: int, h: int, title: str, lines: tuple[str, ...] = (),
            colors: tuple[str, str] = PART, title_top: bool = False,
            dashed: bool = False) -> None:
        fill, stroke = colors
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"{dash}/>')
        n = 1 + len(lines)
        ty = y + 18 if title_top else y + h // 2 - (n - 1) * 8 + 5
        self.text(x + w // 2, ty, title, bold=True)
        for i, line in enumerate(lines):
            self.text(x + w // 2, ty + 16 * (i + 1), line, size=11)

    def text(self, x: int, y: int, s: str, *, bold: bool = False, size: int = 12,
             anchor: str = "middle", italic: bool = False) -> None:
        weight = ' font-weight="bold"' if bold else ""
        style = ' font-style="italic"' if italic else ""
        self.parts.append(
            f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}"{weight}{style}>'
            f"{escape(s)}</text>")

    def arrow(self, x1: int, y1: int, x2: int, y2: int, label: str = "", *,
              dashed: bool = False, dx: int = 6, anchor: str = "start") -> None:
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        self.parts.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#2d3748" '
            f'stroke-width="1.5" marker-end="url(#head)"{dash}/>')
        if label:
            self.text((x1 + x2) // 2 + dx, (y1 + y2) // 2 + 4, label, size=11,
                      anchor=anchor, italic=True)

    def document(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="{FONT}" fill="#1a202c">\n'
            "<defs><marker id=\"head\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" "
            "markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">"
            "<path d=\"M0,0 L10,5 L0,10 z\" fill=\"#2d3748\"/></marker></defs>\n"
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>\n'
        )
        return head + "\n".join(self.parts) + "\n</svg>\n"


def _row(x0: int, x1: int, n: int, gap: int = 10) -> list[tuple[int, int]]:
    """``n`` boxes side by side between ``x0`` and ``x1``: their (x, width)."""
    w = (x1 - x0 - gap * (n - 1)) // n
    return [(x0 + i * (w + gap), w) for i in range(n)]


def render() -> str:
    """The SVG text (deterministic: same input, same bytes)."""
    s = Svg()

    # ---- level 3: the adapters, and levels 1-2 straight on the connection.
    (lx, lw), (px, pw), (sx, sw), (bx, bw) = _row(LEFT, RIGHT, 4)
    top = 16
    s.box(lx, top, lw, 56, "levels 1 and 2", ("conn.read, try_get_ring,",
                                                "get_sequence, write, flush"), colors=USER)
    s.box(px, top, pw, 56, "PipeReader", ("a thin view of", "conn.input"), colors=USER)
    s.box(sx, top, sw, 56, "ConnectionStream", ("worker threads; copies",
                                                "on the reactor thread"), colors=USER)
    s.box(bx, top, bw, 56, "BufferWriter", ("fills lent segments;", "conn.output.enqueue"),
          colors=USER)
    s.text(COL, 40, "level 3: zerg.adapters", size=11, anchor="start", italic=True)
    s.text(COL, 56, "(levels 1 and 2 call the connection)", size=11, anchor="start",
           italic=True)

    # ---- the duplex pipe's two faces.
    faces = 96
    half = (RIGHT - px - 10) // 2
    ix, ox = px, px + half + 10
    s.box(ix, faces, half, 56, "conn.input: PipeInput",
          ("read, try_read, advance_to,", "cancel_pending_read, complete"))
    s.box(ox, faces, half, 56, "conn.output: PipeOutput",
          ("write, get_memory / advance,", "flush, lend / enqueue"))
    s.text(COL, 116, "the duplex pipe: Connection.input and", size=11, anchor="start",
           italic=True)
    s.text(COL, 132, "Connection.output (.NET PipeReader /", size=11, anchor="start",
           italic=True)
    s.text(COL, 148, "IBufferWriter semantics)", size=11, anchor="start", italic=True)
    s.arrow(px + pw // 2, top + 56, px + pw // 2, faces)
    s.arrow(sx + 30, top + 56, sx + 20, faces)
    s.arrow(sx + sw - 30, top + 56, sx + sw - 20, faces)
    s.arrow(bx + bw // 2, top + 56, bx + bw // 2, faces)

    # ---- the connection: transport core + two pipes.
    conn_y, conn_h = 176, 178
    s.box(LEFT, conn_y, RIGHT - LEFT, conn_h, "", colors=CONN)
    s.text(lx + lw // 2 + 12, conn_y + 20, "connection (zerg._connection)", bold=True,
           anchor="start")
    inner = conn_y + 32
    (cx, cw), (inx, inw), (outx, outw) = _row(LEFT + 14, RIGHT - 14, 3)
    s.box(cx, inner, cw, 100, "transport core", (
        "owns the fd, the receive state",
        "(one table) and the close state;",
        "the only code that prepares",
        "requests for its socket"))
    s.box(inx, inner, inw, 100, "InputPipe", (
        "received RingItems, their",
        "SlotLease, the reader's buffer;",
        "relieve / compact copy",
        "bytes off the shared ring"))
    s.box(outx, inner, outw, 100, "OutputPipe", (
        "write segments, the one send",
        "in flight, flush waiters;",
        "WriteBufferFullError past",
        "max_write_buffer"))
    s.arrow(lx + lw // 2, top + 56, lx + lw // 2, inner, "levels 1-2", dx=6)
    s.arrow(inx + inw // 2, faces + 56, inx + inw // 2, inner)
    s.arrow(outx + outw // 2, faces + 56, outx + outw // 2, inner)
    s.text(LEFT + 14, conn_y + 152, "The pipes answer the core by return value and never "
           "call the transport.", size=11, anchor="start", italic=True)
    s.text(LEFT + 14, conn_y + 168, "ProtocolConnection: the same core as its own sink; "
           "bytes go straight to data_received.", size=11, anchor="start", italic=True)

    # ---- the seam.  Arrows first: the interface boxes sit on top of them.
    seam_y, seam_h = 374, 96
    react_y = 490
    (kx, kw), (hx, hw) = _row(LEFT + 14, RIGHT - 14, 2, gap=20)
    s.arrow(kx + kw // 2, react_y, kx + kw // 2, conn_y + conn_h)
    s.arrow(hx + hw // 2, conn_y + conn_h, hx + hw // 2, react_y)
    s.box(LEFT, seam_y, RIGHT - LEFT, seam_h, "", colors=SEAM, dashed=True)
    s.text(LEFT + 14, seam_y + 18, "the seam (zerg._seam): each side knows only an interface "
           "of the other", bold=True, anchor="start")
    s.box(kx, seam_y + 30, kw, 56, "CompletionSink: reactor -> connection", (
        "on_recv, on_recv_end, on_send, on_slots_free,",
        "relieve, send_pending, idle_since, close, abort"))
    s.box(hx, seam_y + 30, hw, 56, "ConnectionHost: connection -> reactor", (
        "submitter, slots, pool, options, loop, now;",
        "opened, want_send, closed, sink_failed"))

    # ---- the reactor: loop + selector + dispatch, ring + codec, slots, pool.
    react_h = 214
    s.box(LEFT, react_y, RIGHT - LEFT, react_h, "", colors=THREAD)
    s.text(LEFT + 14, react_y + 20, "reactor 0 (zerg._reactor): one thread, one asyncio loop",
           bold=True, anchor="start")
    r1 = react_y + 32
    s.box(LEFT + 14, r1, 400, 64, "UringSelector.select()", (
        "one io_uring_enter per loop iteration: submits everything",
        "prepared and waits; POLL_ADD for asyncio's own fds"))
    s.box(LEFT + 424, r1, RIGHT - 14 - LEFT - 424, 64, "dispatch", (
        "op picks the branch, key the",
        "sink (the connections map)"))
    r2 = r1 + 74
    (gx, gw), (rx, rw), (spx, spw) = _row(LEFT + 14, RIGHT - 14, 3)
    s.box(gx, r2, gw, 92, "Ring + user_data codec", (
        "Op, encode / decode, msg_key;",
        "harvest into flat arrays;",
        "RingSubmitter: recv, send,",
        "cancel, close"))
    s.box(rx, r2, rw, 92, "RecvSlots", (
        "on_cqe, view, give_back;",
        "flush: one batch a loop",
        "iteration; park + relief",
        "when the ring runs dry"))
    s.box(spx, r2, spw, 92, "SlabPool", (
        "one mmap of receive slots;",
        "write segments on demand,",
        "recycled last in, first out"))

    # ---- the shim and the kernel.
    k_y, k_h = 728, 72
    (nx, nw), (brx, brw), (ux, uw) = _row(LEFT, RIGHT, 3)
    s.box(nx, k_y, nw, k_h, "native shim (cffi)", (
        "no policy; zu_harvest splits",
        "op / key / bid in C; enter errors:",
        "harmless -> 0, the rest raised"))
    s.box(brx, k_y, brw, k_h, "provided buffer ring", (
        "the receive slots, shared by",
        "every connection; ENOBUFS",
        "when none is free"), colors=KERNEL)
    s.box(ux, k_y, uw, k_h, "io_uring", ("SQ / CQ: multishot accept,", "recv, send, cancel, poll"),
          colors=KERNEL)
    s.arrow(gx + gw // 2, r2 + 92, gx + gw // 2, k_y)
    s.arrow(rx + rw // 2, r2 + 92, rx + rw // 2, k_y)

    # ---- the network and the accept path.
    acc_y = 836
    s.box(LEFT, acc_y, 150, 36, "TCP clients", colors=USER)
    s.box(LEFT + 190, acc_y, 300, 56, "listening socket: Engine.listen()",
          ("one per process with EngineOptions.workers",), colors=KERNEL)
    s.arrow(LEFT + 150, acc_y + 18, LEFT + 190, acc_y + 18)
    s.arrow(LEFT + 460, acc_y, LEFT + 460, k_y + k_h, "multishot accept (reactor_count = 1)",
            dx=-8, anchor="end")
    ac_y = 770
    s.box(COL, ac_y, COL_END - COL, 86, "acceptor thread", (
        "reactor_count = N > 1: its own io_uring;",
        "each fd to the next reactor, round-robin,",
        "by IORING_OP_MSG_RING or queue + wake-up"), colors=THREAD)
    s.arrow(LEFT + 490, acc_y + 10, COL, acc_y + 10)
    s.arrow(COL, ac_y + 16, RIGHT, k_y + 44)

    # ---- beside the stack: the start strategies and the other reactors.
    st_y = 236
    s.box(COL, st_y, COL_END - COL, 232, "StartStrategy (zerg._start)", (), colors=USER,
          title_top=True)
    mid = (COL + COL_END) // 2
    s.text(mid, st_y + 36, "picked once by Engine.serve();", size=11, italic=True)
    s.text(mid, st_y + 52, "start(host, id, fd) makes the sink", size=11, italic=True)
    for i, (name, line) in enumerate((
            ("TaskStart", "async def handler: a Task on the loop"),
            ("ThreadStart", "def handler: on a worker thread"),
            ("ProtocolStart", "zerg.Protocol: a ProtocolConnection"))):
        s.box(COL + 12, st_y + 64 + 54 * i, COL_END - COL - 24, 46, name, (line,))
    s.arrow(RIGHT - 14, r1 + 40, COL, st_y + 200, "new fd", dx=8)
    s.arrow(COL, st_y + 20, RIGHT, st_y + 20)

    rs_y = 512
    s.box(COL, rs_y, COL_END - COL, react_y + react_h - rs_y, "reactors 1 .. N-1", (),
          colors=THREAD, title_top=True)
    for i, line in enumerate(("one thread each, the same stack:",
                              "own io_uring, buffer ring, RecvSlots,",
                              "SlabPool, connections, asyncio loop.",
                              "Reactor 0 runs on the thread that",
                              "called Engine.serve().")):
        s.text(mid, rs_y + 40 + 16 * i, line, size=11)
    for i, line in enumerate(("With the GIL, more reactors help when",
                              "handlers wait; processes",
                              "(EngineOptions.workers) use more cores.")):
        s.text(mid, rs_y + 132 + 16 * i, line, size=11, italic=True)
    s.arrow(COL_END - 60, ac_y, COL_END - 60, react_y + react_h, "fd", dx=8)
    return s.document()


def main() -> None:
    out = Path(__file__).resolve().parent / "_static" / "architecture.svg"
    out.parent.mkdir(exist_ok=True)
    out.write_text(render())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
