"""Render docs/_static/architecture.svg: zerg's architecture as boxes and arrows.

    python docs/make_diagram.py

The picture's source is this file (stdlib only, deterministic output), so the
docs build needs no Graphviz and no network.  ``docs/conf.py`` warns when the
committed SVG differs from ``render()``, which fails a ``-W`` build: edit
here, run the script, commit both.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

WIDTH = 960
HEIGHT = 730
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

# fill, stroke
KERNEL = ("#fdf1dc", "#b7791f")
THREAD = ("#eef4fb", "#2b6cb0")
PART = ("#ffffff", "#4a5568")
USER = ("#eefaf0", "#2f855a")


class Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def box(self, x: int, y: int, w: int, h: int, title: str, lines: tuple[str, ...] = (),
            colors: tuple[str, str] = PART, title_top: bool = False) -> None:
        fill, stroke = colors
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"/>')
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


def render() -> str:
    """The SVG text (deterministic: same input, same bytes)."""
    s = Svg()
    # Clients and the listening socket.
    s.box(330, 16, 300, 36, "TCP clients", colors=USER)
    s.arrow(480, 52, 480, 84)
    s.box(270, 84, 420, 44, "listening socket: Engine.listen()",
          ("one per process with EngineOptions.workers (SO_REUSEPORT)",), colors=KERNEL)

    # The two ways connections are accepted.
    s.arrow(330, 128, 200, 162)
    s.arrow(630, 128, 740, 162)
    s.text(262, 139, "reactor_count = 1", size=11, anchor="end", italic=True)
    s.text(698, 139, "reactor_count = N > 1", size=11, anchor="start", italic=True)
    s.box(40, 162, 320, 52, "multishot accept", ("on reactor 0's own ring",))
    s.box(540, 162, 380, 68, "acceptor thread: its own io_uring",
          ("multishot accept; each fd to the next reactor, round-robin,",
           "by IORING_OP_MSG_RING or a queue + loop wake-up"), colors=THREAD)
    s.arrow(200, 214, 200, 262)
    s.arrow(640, 230, 440, 262, "fd", dx=4)
    s.arrow(780, 230, 780, 262, "fd")

    # Reactor 0, in detail.
    s.box(30, 262, 530, 330, "reactor 0: the thread that called Engine.serve()", (),
          colors=THREAD, title_top=True)
    s.box(50, 294, 490, 40, "ReactorLoop: an asyncio.SelectorEventLoop",
          ("handlers, timers, other asyncio libraries run here",))
    s.box(50, 344, 490, 72, "UringSelector.select(): one io_uring_enter per iteration",
          ("submits everything prepared, waits (cq_timeout_ns at most),",
           "harvests <= batch_cqes CQEs per C call into flat arrays, dispatches",
           "to connections before asyncio runs callbacks; POLL_ADD for asyncio fds"))
    s.box(50, 428, 150, 70, "io_uring", ("SQ / CQ", "multishot recv, send,", "cancel, poll"),
          colors=KERNEL)
    s.box(210, 428, 150, 70, "provided buffer ring", ("buffer_ring_entries slots",
                                                       "ENOBUFS = back-pressure",
                                                       "(shared by connections)"),
          colors=KERNEL)
    s.box(370, 428, 170, 70, "SlabPool", ("one mmap of receive slots;", "write segments",
                                           "on demand"))
    s.box(50, 510, 490, 66, "Connection: OPEN -> CLOSING -> CLOSED",
          ("slot: kernel -> CQE -> RingItem / BufferSequence -> give back",
           "-> batched buf_ring_add + one advance (next iteration)",))

    # The other reactors.
    s.box(580, 262, 350, 330, "reactors 1 .. N-1: one thread each", (), colors=THREAD,
          title_top=True)
    for i, (y, name) in enumerate(((296, "reactor 1"), (376, "reactor 2"), (456, "reactor N-1"))):
        s.box(600 + 10 * i, y, 300, 64, name,
              ("the same: own io_uring, buffer ring,", "SlabPool, connections, asyncio loop"))
    s.text(755, 565, "With the GIL, more reactors help when handlers wait;", size=11,
           italic=True)
    s.text(755, 581, "processes (EngineOptions.workers) use more cores.", size=11,
           italic=True)

    # Handlers.
    s.arrow(295, 592, 295, 614)
    s.arrow(755, 592, 755, 614)
    s.text(480, 628, "Engine.serve(handler) runs the handler for each connection on that "
           "connection's reactor, as one of:", size=11, italic=True)
    s.box(30, 642, 260, 64, "async def handler(conn)",
          ("a Task on the reactor's loop:", "levels 1-3, PipeReader, BufferWriter"), colors=USER)
    s.box(310, 642, 280, 64, "def handler(conn)",
          ("on worker threads (worker_threads):", "ConnectionStream, blocking code"),
          colors=USER)
    s.box(610, 642, 320, 64, "a zerg.Protocol instance",
          ("callbacks straight from CQE dispatch:", "no Task, no future"), colors=USER)
    return s.document()


def main() -> None:
    out = Path(__file__).resolve().parent / "_static" / "architecture.svg"
    out.parent.mkdir(exist_ok=True)
    out.write_text(render())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
