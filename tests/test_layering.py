"""Layering guard: zerg's modules form an acyclic graph and keep their privates to themselves.

Every module of the package (``zerg/**/*.py``) is parsed with ``ast``; nothing of
zerg is imported, so this runs (and reports) even when the package cannot be
imported at all.

Import cycles
    An edge ``a -> b`` is any import of zerg module ``b`` by zerg module ``a``:
    ``import zerg.b``, ``from zerg.b import x``, ``from zerg import b`` (``b`` a
    submodule), relative imports, and the implicit import of a *foreign* package's
    ``__init__`` (``from zerg.adapters import _x`` in ``zerg._engine`` first runs
    ``zerg/adapters/__init__.py``; a module's own ancestor packages are already
    importing, so they are no edge).  Imports under ``if TYPE_CHECKING:`` are
    type-only and no edge.  Imports inside functions are edges (a deferred import
    still ties the two modules together), but cycles that need one are listed
    separately.  The ``__init__`` facades import everything by design, so a cycle
    never *starts* from one: cycles are searched among the other modules, and an
    edge *into* a facade is reported as a cycle when the facade leads back to the
    importer.  Inside the package nothing may import names from the package root
    ``zerg/__init__.py`` at all (import from the defining module instead).

Private access
    A module may not reach into another module's underscore names (single
    leading underscore, or ``__x`` without trailing dunder): neither
    ``from zerg.m import _name`` / ``m._name`` for another zerg module ``m``, nor
    ``expr._name`` (or ``getattr(expr, "_name")``) when ``_name`` is defined
    nowhere in the accessing module.  "Defined in M" means: a module-level or
    class-level name of M, any function/method/class name in M, an entry of a
    ``__slots__`` in M, an attribute assigned through ``self``/``cls`` (the first
    parameter of a method) in M, or a parameter name in M.  Re-binding another
    object's private (``_x = Other._x``) does not define it.  Attributes of
    objects imported from outside the package (``os._exit``, the compiled cffi
    module's ``ffi``/``lib``) are not zerg's layering business, and a few
    stdlib-protocol names are allowed explicitly (``ALLOWED_FOREIGN_PRIVATES``).

The checks are name-based, not type-based: an access ``x._name`` in a module that
itself defines some ``_name`` passes.  Good enough to catch ``conn._reactor`` or
``seq._segs`` used outside their defining module.
"""

from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import zerg

# The package under test: this tree's, or the installed one (make test-matrix).
PACKAGE_DIR = Path(zerg.__file__).resolve().parent

# Underscore names that belong to stdlib objects zerg uses, not to zerg modules.
# Keep this short: every entry is a public protocol that merely starts with "_".
ALLOWED_FOREIGN_PRIVATES: frozenset[str] = frozenset({
    # collections.namedtuple / typing.NamedTuple API (underscored to avoid field clashes);
    # e.g. selectors.SelectorKey._replace in zerg/_selector.py.
    "_asdict",
    "_fields",
    "_make",
    "_replace",
    # io.IOBase's documented-by-use helper for RawIOBase subclasses (ConnectionStream).
    "_checkClosed",
    # asyncio.Handle's fields and the formatter its _run uses: zerg._reactor.Handle
    # (a subclass) reports a failed callback exactly as asyncio.Handle._run does.
    "_args",
    "_format_callback_source",
    # asyncio.Handle._run, how an event loop runs a ready handle: ReactorLoop._run_debug
    # runs one as asyncio's _run_once does in debug mode.
    "_run",
    # asyncio's future protocol (asyncio.isfuture, Task.__step): zerg._conntask.ConnTask
    # waits on any future-like object the way asyncio.Task does.
    "_asyncio_future_blocking",
    # ssl.SSLObject's C object, which its read/write/pending wrap one-to-one in 3.11-3.13:
    # zerg._tls calls it directly (three Python frames less per TLS request).
    "_sslobj",
})

_CYCLE_LIMIT = 200  # elementary cycles listed at most; more means a tangle anyway
_COMPILED_SUFFIXES = (".so", ".pyd")


# -- the package ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str  # dotted: "zerg._connection", "zerg.adapters" for zerg/adapters/__init__.py
    shown: str  # path as printed: "zerg/_connection.py"
    is_package: bool  # an __init__.py
    tree: ast.Module


@dataclass(frozen=True)
class Package:
    name: str
    modules: dict[str, Module]  # every .py module, by dotted name
    compiled: frozenset[str]  # dotted names of extension modules (zerg._uring)

    def is_module(self, dotted: str) -> bool:
        return dotted in self.modules or dotted in self.compiled

    def contains(self, dotted: str) -> bool:
        return dotted == self.name or dotted.startswith(self.name + ".")


def load_package(pkg_dir: Path) -> Package:
    """Parse every module under ``pkg_dir`` (the package's own directory)."""
    base = pkg_dir.parent
    modules: dict[str, Module] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        rel = path.relative_to(base)
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[name] = Module(name, rel.as_posix(), is_package, tree)
    compiled = {
        ".".join((*path.relative_to(base).parent.parts, path.name.split(".")[0]))
        for path in pkg_dir.rglob("*")
        if path.suffix in _COMPILED_SUFFIXES
    }
    assert modules, f"no Python modules under {pkg_dir}"
    return Package(pkg_dir.name, modules, frozenset(compiled))


def _is_private(name: str) -> bool:
    return name.startswith("_") and name != "_" and not (
        name.startswith("__") and name.endswith("__")
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _children(node: ast.AST) -> list[tuple[ast.AST, bool]]:
    """Child nodes, each with whether it is type-only (a branch of ``if TYPE_CHECKING``)."""
    if isinstance(node, ast.If):
        test = node.test
        negated = (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
                   and _is_type_checking(test.operand))
        if negated or _is_type_checking(test):
            return [(test, False), *((stmt, not negated) for stmt in node.body),
                    *((stmt, negated) for stmt in node.orelse)]
    return [(child, False) for child in ast.iter_child_nodes(node)]


def _scoped_nodes(
    node: ast.AST, qual: tuple[str, ...] = (), in_function: bool = False,
    type_only: bool = False,
) -> Iterator[tuple[ast.AST, str | None, bool]]:
    """Every node below ``node``, with the qualified name of the function it is in (None at
    import time: module level or a class body) and whether it is type-only."""
    where = ".".join(qual) if in_function else None
    for child, only_types in _children(node):
        only_types = type_only or only_types
        yield child, where, only_types
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _scoped_nodes(child, (*qual, child.name), True, only_types)
        elif isinstance(child, ast.ClassDef):
            yield from _scoped_nodes(child, (*qual, child.name), in_function, only_types)
        else:
            yield from _scoped_nodes(child, qual, in_function, only_types)


def _from_base(module: Module, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` statement imports from."""
    if node.level == 0:
        return node.module
    parts = module.name.split(".")
    if not module.is_package:
        parts.pop()
    up = node.level - 1
    if up >= len(parts):
        return None  # beyond the top-level package
    parts = parts[: len(parts) - up]
    if node.module:
        parts.extend(node.module.split("."))
    return ".".join(parts)


def _snippet(node: ast.stmt) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 90 else text[:87] + "..."


# -- imports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSite:
    """One import statement that makes ``src`` depend on ``dst``."""

    src: str
    dst: str
    shown: str
    line: int
    statement: str
    function: str | None  # the function holding a deferred import; None at import time
    implicit: bool = False  # dst is a foreign package whose __init__ runs first

    def describe(self) -> str:
        how = f"`{self.statement}`"
        if self.implicit:
            how += f", which first runs {self.dst}'s __init__.py"
        if self.function is not None:
            how += f"; deferred: inside {self.function}()"
        return f"{self.shown}:{self.line}: {self.src} -> {self.dst}  ({how})"


@dataclass
class ModuleImports:
    """What one module's import statements bind and depend on."""

    sites: list[ImportSite] = field(default_factory=list)
    module_aliases: dict[str, str] = field(default_factory=dict)  # local name -> zerg module
    foreign_names: set[str] = field(default_factory=set)  # names bound from outside the package
    # line, statement, names imported, type-only
    root_imports: list[tuple[int, str, list[str], bool]] = field(default_factory=list)
    private_imports: list[tuple[int, str, str]] = field(default_factory=list)  # line, mod, name


def _foreign_packages(pkg: Package, src: str, dotted: str) -> list[str]:
    """Packages whose __init__ runs when ``src`` imports ``dotted``, other than ``dotted``
    itself and ``src``'s own ancestors (those are already being imported)."""
    parts = dotted.split(".")
    found = []
    for k in range(1, len(parts)):
        prefix = ".".join(parts[:k])
        mod = pkg.modules.get(prefix)
        if mod is not None and mod.is_package and not (
            src == prefix or src.startswith(prefix + ".")
        ):
            found.append(prefix)
    return found


def collect_imports(pkg: Package, module: Module) -> ModuleImports:
    out = ModuleImports()
    src = module.name

    type_only = False

    def edge(dst: str, node: ast.stmt, function: str | None, implicit: bool = False) -> None:
        if dst != src and dst in pkg.modules and not type_only:
            out.sites.append(ImportSite(src, dst, module.shown, node.lineno, _snippet(node),
                                        function, implicit))

    def edges_to(dst: str, node: ast.stmt, function: str | None) -> None:
        for parent in _foreign_packages(pkg, src, dst):
            edge(parent, node, function, implicit=True)
        edge(dst, node, function)

    # Type-only imports are no edges, but they bind names and may still import privates.
    for node, function, type_only in _scoped_nodes(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not pkg.contains(alias.name):
                    out.foreign_names.add(alias.asname or alias.name.split(".")[0])
                    continue
                target = alias.name
                while not pkg.is_module(target) and "." in target:
                    target = target.rsplit(".", 1)[0]  # import of a missing module: its parent
                if alias.asname and target in pkg.compiled:
                    out.foreign_names.add(alias.asname)
                elif alias.asname:
                    out.module_aliases[alias.asname] = target
                else:
                    out.module_aliases[pkg.name] = pkg.name
                if target == pkg.name and src != pkg.name:
                    out.root_imports.append((node.lineno, _snippet(node), [], type_only))
                edges_to(target, node, function)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            if base is None or not pkg.contains(base):
                out.foreign_names.update(a.asname or a.name for a in node.names)
                continue
            if base in pkg.compiled:  # the cffi module: ffi, lib
                out.foreign_names.update(a.asname or a.name for a in node.names)
                continue
            names_from_base = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if pkg.is_module(sub):  # a submodule, not a name of base
                    if sub in pkg.compiled:
                        out.foreign_names.add(alias.asname or alias.name)
                    else:
                        out.module_aliases[alias.asname or alias.name] = sub
                    for parent in _foreign_packages(pkg, src, sub):
                        edge(parent, node, function, implicit=True)
                    edge(sub, node, function)
                    continue
                names_from_base.append(alias.name)
                if _is_private(alias.name) and base != src:
                    out.private_imports.append((node.lineno, base, alias.name))
            if names_from_base:
                edges_to(base, node, function)
                if base == pkg.name and src != pkg.name:
                    out.root_imports.append(
                        (node.lineno, _snippet(node), names_from_base, type_only))
    return out


@dataclass(frozen=True)
class Cycle:
    nodes: tuple[str, ...]  # a, b, c for a -> b -> c -> a
    edges: tuple[tuple[ImportSite, ...], ...]  # the import statements behind each edge
    deferred: bool  # some edge exists only through imports inside functions

    def __str__(self) -> str:
        lines = [" -> ".join((*self.nodes, self.nodes[0]))]
        lines += [f"    {site.describe()}" for sites in self.edges for site in sites]
        return "\n".join(lines)


@dataclass(frozen=True)
class ImportReport:
    cycles: list[Cycle]  # closed by import-time imports only
    deferred_cycles: list[Cycle]  # need at least one import inside a function
    root_imports: list[str]  # in-package imports of names from the package root facade
    truncated: bool

    def __bool__(self) -> bool:
        return bool(self.cycles or self.deferred_cycles or self.root_imports)

    def format(self) -> str:
        parts: list[str] = []
        if self.cycles:
            parts.append(f"{len(self.cycles)} import cycle(s) between modules:")
            parts += [textwrap.indent(str(c), "  ") for c in self.cycles]
        if self.deferred_cycles:
            parts.append(f"{len(self.deferred_cycles)} import cycle(s) closed through "
                         "deferred (function-level) imports:")
            parts += [textwrap.indent(str(c), "  ") for c in self.deferred_cycles]
        if self.truncated:
            parts.append(f"  (cycle search stopped after {_CYCLE_LIMIT} cycles)")
        if self.root_imports:
            parts.append(f"{len(self.root_imports)} import(s) of the package root facade "
                         "from inside the package (import from the defining module):")
            parts += [f"  {line}" for line in self.root_imports]
        return "\n".join(parts)


def _elementary_cycles(adj: dict[str, list[str]]) -> tuple[list[tuple[str, ...]], bool]:
    """All elementary cycles, each once, starting at its smallest node."""
    order = {n: i for i, n in enumerate(sorted(adj))}
    found: list[tuple[str, ...]] = []

    def extend(start: str, path: list[str], on_path: set[str]) -> bool:
        for nxt in adj.get(path[-1], []):
            if nxt == start:
                found.append(tuple(path))
                if len(found) >= _CYCLE_LIMIT:
                    return False
            elif nxt in order and order[nxt] > order[start] and nxt not in on_path:
                path.append(nxt)
                on_path.add(nxt)
                if not extend(start, path, on_path):
                    return False
                on_path.discard(path.pop())
        return True

    for start in sorted(adj):
        if not extend(start, [start], {start}):
            return found, True
    return found, False


def _shortest_path(adj: dict[str, list[str]], start: str, goal: str) -> list[str] | None:
    prev: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in adj.get(node, []):
                if nxt in seen:
                    continue
                prev[nxt] = node
                if nxt == goal:
                    path = [goal]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return path[::-1]
                seen.add(nxt)
                nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return None


def find_import_problems(pkg_dir: Path) -> ImportReport:
    pkg = load_package(pkg_dir)
    sites: dict[tuple[str, str], list[ImportSite]] = defaultdict(list)
    root_imports: list[str] = []
    facade_origin: dict[str, str] = {}  # name re-exported by the root facade -> its module
    root = pkg.modules.get(pkg.name)
    if root is not None:
        for node in ast.walk(root.tree):
            if isinstance(node, ast.ImportFrom):
                base = _from_base(root, node)
                for alias in node.names:
                    if base is not None:
                        facade_origin[alias.asname or alias.name] = base
    for module in pkg.modules.values():
        imports = collect_imports(pkg, module)
        for site in imports.sites:
            sites[site.src, site.dst].append(site)
        for line, statement, names, type_only in imports.root_imports:
            origins = sorted({f"{n} from {facade_origin[n]}" for n in names
                              if n in facade_origin})
            hint = f"; import {', '.join(origins)}" if origins else ""
            shown = root.shown if root is not None else pkg.name
            what = "(type-only) imports" if type_only else "imports"
            root_imports.append(f"{module.shown}:{line}: `{statement}` {what} the public "
                                f"facade {shown}{hint}")

    full: dict[str, list[str]] = defaultdict(list)
    for src, dst in sorted(sites):
        full[src].append(dst)
    # Cycles among the modules proper: facades are no source side.
    core = {src: dsts for src, dsts in full.items() if not pkg.modules[src].is_package}
    raw, truncated = _elementary_cycles(core)
    # An edge into a facade closes a cycle when the facade leads back to the importer.
    seen = set(raw)
    for (src, dst) in sorted(sites):
        if pkg.modules[dst].is_package and not pkg.modules[src].is_package:
            back = _shortest_path(full, dst, src)
            if back is not None:
                cyc = (src, *back[:-1])
                if cyc not in seen:
                    seen.add(cyc)
                    raw.append(cyc)

    cycles: list[Cycle] = []
    deferred_cycles: list[Cycle] = []
    for nodes in raw:
        edges = []
        deferred = False
        for a, b in zip(nodes, (*nodes[1:], nodes[0]), strict=True):
            at_import = tuple(s for s in sites[a, b] if s.function is None)
            if at_import:
                edges.append(at_import)
            else:
                deferred = True
                edges.append(tuple(sites[a, b]))
        cycle = Cycle(nodes, tuple(edges), deferred)
        (deferred_cycles if deferred else cycles).append(cycle)
    return ImportReport(cycles, deferred_cycles, sorted(root_imports), truncated)


# -- private names --------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    name: str
    owner: str  # the class (qualified name) it belongs to, or the module's dotted name
    module: str
    shown: str
    line: int


class _DefinitionCollector(ast.NodeVisitor):
    """The names a module defines (see the module docstring for what counts)."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.names: set[str] = set()  # everything that exempts an access in this module
        self.index: list[Definition] = []  # the attribute-like ones, for "defined in"
        self._scopes: list[tuple[str, str]] = []  # ("class" | "function", qualified name)
        self._self_names: list[str] = []  # first parameters of the enclosing methods

    def _owner(self) -> str:
        for kind, qual in reversed(self._scopes):
            if kind == "class":
                return qual
        return self.module.name

    def _qual(self, name: str) -> str:
        return f"{self._scopes[-1][1]}.{name}" if self._scopes else name

    def _define(self, name: str, line: int, indexed: bool = True) -> None:
        self.names.add(name)
        if indexed:
            self.index.append(
                Definition(name, self._owner(), self.module.name, self.module.shown, line))

    def _at_attribute_level(self) -> bool:
        return not self._scopes or self._scopes[-1][0] == "class"

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._define(node.name, node.lineno, self._at_attribute_level())
        for expr in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(expr)
        self._scopes.append(("class", self._qual(node.name)))
        for stmt in node.body:
            self.visit(stmt)
        self._scopes.pop()

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        is_method = bool(self._scopes) and self._scopes[-1][0] == "class"
        self._define(node.name, node.lineno, self._at_attribute_level())
        for expr in (*node.decorator_list, node.args, *([node.returns] if node.returns else [])):
            self.visit(expr)
        positional = [*node.args.posonlyargs, *node.args.args]
        pushed = is_method and bool(positional)
        if pushed:
            self._self_names.append(positional[0].arg)
        self._scopes.append(("function", self._qual(node.name)))
        for stmt in node.body:
            self.visit(stmt)
        self._scopes.pop()
        if pushed:
            self._self_names.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_function(node)

    def visit_arg(self, node: ast.arg) -> None:
        self._define(node.arg, node.lineno, indexed=False)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            self.names.add(name)
            self.index.append(Definition(name, self.module.name, self.module.name,
                                         self.module.shown, node.lineno))

    def visit_Assign(self, node: ast.Assign) -> None:
        if self._scopes and self._scopes[-1][0] == "class" and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            for slot in _slot_names(node.value):
                self._define(slot, node.lineno)
        rebound = node.value.attr if isinstance(node.value, ast.Attribute) else None
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == rebound:
                continue  # `_x = Other._x` uses Other's private, it does not define one
            self.visit(target)
        self.visit(node.value)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store) and self._at_attribute_level():
            self._define(node.id, node.lineno)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
                and node.value.id in {"self", "cls", *self._self_names}):
            self._define(node.attr, node.lineno)
        self.generic_visit(node)


def _slot_names(value: ast.expr) -> list[str]:
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return [value.value]
    if isinstance(value, ast.Tuple | ast.List | ast.Set):
        return [e.value for e in value.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _resolve_module(pkg: Package, imports: ModuleImports, expr: ast.expr) -> str | None:
    """The zerg module ``expr`` denotes (``_threads``, ``zerg.adapters._threads``), if any."""
    if isinstance(expr, ast.Name):
        return imports.module_aliases.get(expr.id)
    if isinstance(expr, ast.Attribute):
        base = _resolve_module(pkg, imports, expr.value)
        if base is not None and pkg.is_module(f"{base}.{expr.attr}"):
            return f"{base}.{expr.attr}"
    return None


def _is_foreign(pkg: Package, imports: ModuleImports, expr: ast.expr) -> bool:
    """Whether ``expr`` is reached from an object of outside the package or of a compiled
    module: ``os._exit``, ``lib.zu_x``, ``zerg._uring.ffi._backend``."""
    while True:
        if _resolve_module(pkg, imports, expr) in pkg.compiled:
            return True
        if isinstance(expr, ast.Attribute | ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call):
            expr = expr.func
        else:
            return isinstance(expr, ast.Name) and expr.id in imports.foreign_names


def _private_uses(tree: ast.AST) -> Iterator[tuple[ast.expr, str, int]]:
    """(object, private name, line) for ``obj._name`` and ``getattr(obj, "_name")``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            yield node.value, node.attr, node.lineno
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)):
            yield node.args[0], node.args[1].value, node.lineno


def _imported_modules(pkg: Package, module: Module) -> set[str]:
    """Every zerg module ``module`` imports anywhere, type-only imports included."""
    found: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if pkg.contains(a.name))
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            if base is not None and pkg.contains(base):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _whose(name: str, defs: Iterable[Definition], near: Iterable[str] = (),
           obj: ast.expr | None = None) -> str:
    """``Owner's private `name` (defined in file)``; when the name is defined in several
    places, the classes (over ``self`` stores in plain functions) of the modules the
    accessing module imports (``near``) are named, if any."""
    defs = list(defs)
    near = set(near)
    defs = [d for d in defs if d.module in near] or defs
    defs = [d for d in defs if d.owner != d.module] or defs
    if not defs:
        of = f" of `{ast.unparse(obj)}`" if obj is not None else ""
        return (f"private `{name}`{of}, which no module of the package defines (stale? if "
                "it is a stdlib or third-party name, allow it in ALLOWED_FOREIGN_PRIVATES)")
    owners = " or ".join(f"{owner}'s" for owner in sorted({d.owner for d in defs}))
    files = ", ".join(sorted({d.shown for d in defs}))
    return f"{owners} private `{name}` (defined in {files})"


def find_private_accesses(pkg_dir: Path) -> list[str]:
    pkg = load_package(pkg_dir)
    collected: dict[str, _DefinitionCollector] = {}
    for name, module in pkg.modules.items():
        collector = _DefinitionCollector(module)
        collector.visit(module.tree)
        collected[name] = collector
    index: dict[str, list[Definition]] = defaultdict(list)
    for collector in collected.values():
        for d in collector.index:
            index[d.name].append(d)

    def module_level(mod: str, name: str) -> list[Definition]:
        return [d for d in index[name] if d.module == mod and d.owner == mod] or [
            d for d in index[name] if d.module == mod]

    found: dict[tuple[str, int, str], str] = {}
    for name, module in pkg.modules.items():
        imports = collect_imports(pkg, module)
        own = collected[name].names
        near = _imported_modules(pkg, module)
        for line, source, attr in imports.private_imports:
            found[module.shown, line, attr] = (
                f"{module.shown}:{line}: imports {_whose(attr, module_level(source, attr))}")
        for obj, attr, line in _private_uses(module.tree):
            target = _resolve_module(pkg, imports, obj)
            if target is not None:
                if pkg.is_module(f"{target}.{attr}") or target == name or target in pkg.compiled:
                    continue
                what = _whose(attr, module_level(target, attr))
            else:
                if _is_foreign(pkg, imports, obj):
                    continue  # an object from outside the package: os._exit, lib.<fn>
                if attr in ALLOWED_FOREIGN_PRIVATES or attr in own:
                    continue
                what = _whose(attr, (d for d in index[attr] if d.module != name), near, obj)
            found.setdefault((module.shown, line, attr), f"{module.shown}:{line}: uses {what}")
    return [found[key] for key in sorted(found)]


# -- the real tree --------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    report = find_import_problems(PACKAGE_DIR)
    if report:
        pytest.fail("\n" + report.format(), pytrace=False)


def test_no_cross_module_private_access() -> None:
    found = find_private_accesses(PACKAGE_DIR)
    if found:
        pytest.fail(f"\n{len(found)} access(es) to another module's private names:\n"
                    + "\n".join(found), pytrace=False)


# -- the checker itself, on tiny fake packages ----------------------------------------------


def make_package(tmp_path: Path, files: dict[str, str], name: str = "pkg") -> Path:
    pkg_dir = tmp_path / name
    for rel, source in files.items():
        path = pkg_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return pkg_dir


def test_checker_finds_a_cycle_with_each_edges_location(tmp_path: Path) -> None:
    pkg_dir = make_package(tmp_path, {
        "__init__.py": "from pkg.a import A\nfrom pkg.b import B\n",
        "a.py": "import os\nfrom pkg.b import B\n\nclass A: ...\n",
        "b.py": "from . import c\n\nclass B: ...\n",
        "c.py": "\n\nimport pkg.a\n",
    })
    report = find_import_problems(pkg_dir)
    assert [c.nodes for c in report.cycles] == [("pkg.a", "pkg.b", "pkg.c")]
    assert not report.deferred_cycles and not report.root_imports
    text = report.format()
    assert "pkg.a -> pkg.b -> pkg.c -> pkg.a" in text
    assert "pkg/a.py:2: pkg.a -> pkg.b" in text
    assert "pkg/b.py:1: pkg.b -> pkg.c" in text
    assert "pkg/c.py:3: pkg.c -> pkg.a" in text


def test_checker_exempts_type_checking_imports(tmp_path: Path) -> None:
    pkg_dir = make_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import B\n",
        "b.py": """\
            from typing import TYPE_CHECKING
            import typing
            if TYPE_CHECKING:
                from pkg.a import A
            if typing.TYPE_CHECKING:
                import pkg.a
            else:
                import os
            class B: ...
        """,
    })
    assert not find_import_problems(pkg_dir)


def test_checker_reports_deferred_cycles_separately(tmp_path: Path) -> None:
    pkg_dir = make_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import f\n",
        "b.py": """\
            class K:
                def f(self) -> None:
                    from pkg.a import thing
        """,
    })
    report = find_import_problems(pkg_dir)
    assert not report.cycles
    assert [c.nodes for c in report.deferred_cycles] == [("pkg.a", "pkg.b")]
    assert "deferred: inside K.f()" in report.format()
    assert "pkg/b.py:3: pkg.b -> pkg.a" in report.format()


def test_checker_facades(tmp_path: Path) -> None:
    # The facades import everything by design: no cycle from that alone, even though
    # a.py imports a submodule through the package name.
    pkg_dir = make_package(tmp_path, {
        "__init__.py": "from pkg.a import A\nfrom pkg.sub import S\n",
        "a.py": "from pkg import b\nfrom pkg.sub import _x\n\nclass A: ...\n",
        "b.py": "",
        "sub/__init__.py": "from pkg.sub._x import S\n",
        "sub/_x.py": "from pkg.b import *\nclass S: ...\n",
    })
    assert not find_import_problems(pkg_dir)
    # ...but importing a name from the root facade is flagged, and closes a cycle.
    (pkg_dir / "b.py").write_text("from pkg import A\n")
    report = find_import_problems(pkg_dir)
    assert report.root_imports == [
        "pkg/b.py:1: `from pkg import A` imports the public facade pkg/__init__.py; "
        "import A from pkg.a"
    ]
    # b -> the facade -> a, and a -> pkg.sub (whose __init__ runs first) -> _x -> b (via `*`).
    assert [c.nodes for c in report.cycles] == [
        ("pkg.a", "pkg.sub", "pkg.sub._x", "pkg.b", "pkg"), ("pkg.b", "pkg", "pkg.a"),
    ]
    assert "pkg/a.py:2: pkg.a -> pkg.sub  (`from pkg.sub import _x`, which first runs " in (
        report.format())
    # A foreign subpackage's __init__ runs first: b -> pkg.sub -> pkg.sub._x -> b.
    (pkg_dir / "b.py").write_text("def f() -> None:\n    import pkg.sub._x\n")
    report = find_import_problems(pkg_dir)
    assert not report.cycles and not report.root_imports
    assert [c.nodes for c in report.deferred_cycles] == [
        ("pkg.b", "pkg.sub._x"), ("pkg.b", "pkg.sub", "pkg.sub._x"),
    ]
    assert "which first runs pkg.sub's __init__.py" in report.format()


def test_checker_finds_private_accesses(tmp_path: Path) -> None:
    pkg_dir = make_package(tmp_path, {
        "__init__.py": "",
        "a.py": """\
            def _helper() -> None: ...

            class Conn:
                __slots__ = ("_slot",)

                def __init__(self, reactor: object) -> None:
                    self._reactor = reactor
                    self._slot = 1

                def _done(self) -> None: ...

            class _Hidden: ...
        """,
        "b.py": """\
            from typing import TYPE_CHECKING
            from pkg import a
            from pkg.a import Conn, _helper
            _done = Conn._done

            def use(conn: Conn) -> None:
                conn._reactor.run()
                conn._slot += 1
                getattr(conn, "_done")()
                a._helper()
                conn._nowhere

            if TYPE_CHECKING:
                from pkg.a import _Hidden
        """,
    })
    assert find_private_accesses(pkg_dir) == [
        "pkg/b.py:3: imports pkg.a's private `_helper` (defined in pkg/a.py)",
        "pkg/b.py:4: uses Conn's private `_done` (defined in pkg/a.py)",
        "pkg/b.py:7: uses Conn's private `_reactor` (defined in pkg/a.py)",
        "pkg/b.py:8: uses Conn's private `_slot` (defined in pkg/a.py)",
        "pkg/b.py:9: uses Conn's private `_done` (defined in pkg/a.py)",
        "pkg/b.py:10: uses pkg.a's private `_helper` (defined in pkg/a.py)",
        "pkg/b.py:11: uses private `_nowhere` of `conn`, which no module of the package "
        "defines (stale? if it is a stdlib or third-party name, allow it in "
        "ALLOWED_FOREIGN_PRIVATES)",
        "pkg/b.py:14: imports pkg.a's private `_Hidden` (defined in pkg/a.py)",
    ]


def test_checker_exempts_own_and_foreign_privates(tmp_path: Path) -> None:
    pkg_dir = make_package(tmp_path, {
        "__init__.py": "from pkg.a import Conn\n",
        "_uring.abi3.so": "",  # a compiled cffi module: ffi and lib are its business
        "a.py": """\
            import os
            import pkg._uring
            from collections import namedtuple
            from typing import TYPE_CHECKING

            from pkg import _b
            from pkg._uring import ffi, lib

            if TYPE_CHECKING:
                from pkg._b import Other

            _new = object.__new__
            Key = namedtuple("Key", "x")

            class Conn:
                __slots__ = ("_segs", "_seen")
                _count: int = 0

                def __init__(self, other: Other, _hint: int = 0) -> None:
                    self._reactor = other
                    self._seen = _b.make()

                @classmethod
                def _owning(cls) -> Conn:
                    me = cls.__new__(cls)
                    me._segs = []
                    return me

                def merge(this, peer: Conn) -> None:
                    this._extra = peer._reactor
                    peer._segs = this._segs + peer._segs
                    peer._seen._replace(x=1)
                    lib._zu_private(ffi._backend, this._extra, pkg._uring.lib._x)
                    view = _new(Conn)
                    view._segs = Conn._owning()._segs
                    print(view._hint, Conn._count, self_check(peer))
                    os._exit(0)

            def self_check(peer: Conn) -> bool:
                global _flag
                _flag = True
                return peer._extra is not None and pkg_level() and _flag

            def pkg_level() -> bool:
                return Key(1)._asdict() == {}
        """,
        "_b.py": """\
            class Other:
                def _own(self) -> None:
                    self._state = 0
                    self._own()

            def make() -> tuple[int]:
                return (1,)
        """,
    })
    assert find_private_accesses(pkg_dir) == []


def test_checker_names_the_likely_owner(tmp_path: Path) -> None:
    pkg_dir = make_package(tmp_path, {
        "__init__.py": "",
        "a.py": """\
            def _helper() -> None: ...

            class Conn:
                def __init__(self) -> None:
                    self._loop = None
        """,
        "b.py": """\
            class Acceptor:
                def __init__(self) -> None:
                    self._loop = None
        """,
        "c.py": """\
            import pkg.a as mod
            from pkg.a import Conn

            def _helper() -> None: ...

            def use(conn: Conn) -> None:
                mod._helper()  # c's own _helper does not make a's accessible
                print(conn._loop)
        """,
    })
    assert find_private_accesses(pkg_dir) == [
        "pkg/c.py:7: uses pkg.a's private `_helper` (defined in pkg/a.py)",
        "pkg/c.py:8: uses Conn's private `_loop` (defined in pkg/a.py)",
    ]
