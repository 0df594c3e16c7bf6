"""Sphinx configuration for zerg's documentation.

Build with ``make docs`` or ``sphinx-build -W -b html docs docs/_build/html``.
The build needs no network and no tool beyond Sphinx: the architecture
picture is a committed SVG made by ``docs/make_diagram.py`` (stdlib only).
Three checks turn drift into warnings, so a ``-W`` build fails on them:

- every name in ``zerg.__all__`` and ``zerg.adapters.__all__`` must appear
  in an autodoc (or ``data``) directive of ``api.rst``;
- the knobs described in ``guides/tuning.rst`` must be exactly the fields of
  ``zerg.ReactorConfig``;
- ``_static/architecture.svg`` must equal what ``make_diagram.py`` renders.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))   # the package, importable without an install
sys.path.insert(0, str(HERE))   # make_diagram

import zerg  # noqa: E402  (after the sys.path set-up)

project = "zerg"
author = "the zerg authors"
copyright = "the zerg authors"
release = version = zerg.__version__

extensions = ["sphinx.ext.autodoc"]
# Docstrings are plain reST (no napoleon).  Signatures carry the types.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Buffer parameters: at run time on 3.11 ``BytesLike`` is a narrow Union, but
# the type checker sees any buffer; show the name, which api.rst explains.
autodoc_type_aliases = {"BytesLike": "BytesLike"}
nitpicky = False
# No intersphinx: the build must not need the network.

templates_path: list[str] = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_theme_options = {
    "description": "io_uring TCP servers for Python",
    "fixed_sidebar": True,
}
html_show_sourcelink = False


def _check_api_coverage(app: Any) -> None:
    """Warn for every public name that ``api.rst`` does not document."""
    from sphinx.util import logging

    import zerg
    import zerg.adapters
    import zerg.http

    log = logging.getLogger("zerg.docs")
    text = (HERE / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. auto\w+:: ([\w.]+)", text, re.MULTILINE))
    # Type aliases are written by hand (``.. data:: Handler`` under ``.. module:: zerg``).
    documented |= {f"zerg.{n}" for n in re.findall(r"^\.\. data:: (\w+)", text, re.MULTILINE)}
    for mod in (zerg, zerg.adapters, zerg.http):
        for name in mod.__all__:
            if f"{mod.__name__}.{name}" not in documented:
                log.warning("public name %s.%s is missing from docs/api.rst",
                            mod.__name__, name)


def _check_diagram(app: Any) -> None:
    """Warn when the committed SVG differs from what make_diagram.py renders."""
    import make_diagram
    from sphinx.util import logging

    svg = HERE / "_static" / "architecture.svg"
    if not svg.exists() or svg.read_text() != make_diagram.render():
        logging.getLogger("zerg.docs").warning(
            "docs/_static/architecture.svg is stale: run `python docs/make_diagram.py`")


def _check_tuning_knobs(app: Any) -> None:
    """Warn when guides/tuning.rst and ReactorConfig disagree on the knobs."""
    import dataclasses

    from sphinx.util import logging

    import zerg

    text = (HERE / "guides" / "tuning.rst").read_text()
    described = set(re.findall(r"^``(\w+)``\n   ", text, re.MULTILINE))
    fields = {f.name for f in dataclasses.fields(zerg.ReactorConfig)}
    log = logging.getLogger("zerg.docs")
    for name in sorted(fields - described):
        log.warning("ReactorConfig.%s is not described in docs/guides/tuning.rst", name)
    for name in sorted(described - fields):
        log.warning("docs/guides/tuning.rst describes %s, which ReactorConfig no longer has",
                    name)


_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([^']+)'\)")


def _alias_names(app: Any, what: str, name: str, obj: object, options: Any,
                 signature: str | None, return_annotation: str | None
                 ) -> tuple[str | None, str | None]:
    """Show ``BytesLike`` where Sphinx renders an alias inside a union by its repr."""
    if signature:
        signature = _ALIAS_REPR.sub(r"\1", signature)
    if return_annotation:
        return_annotation = _ALIAS_REPR.sub(r"\1", return_annotation)
    return signature, return_annotation


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _alias_names)
    app.connect("builder-inited", _check_api_coverage)
    app.connect("builder-inited", _check_tuning_knobs)
    app.connect("builder-inited", _check_diagram)
