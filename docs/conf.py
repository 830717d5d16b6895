"""Sphinx configuration of the tavrida2 docs (``make docs``; warnings are errors)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tavrida2  # noqa: E402  -- after the path, so the checkout's package is documented

project = "tavrida2"
author = "the tavrida2 authors"
copyright = "the tavrida2 authors"
release = tavrida2.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown pages (MyST): ``#anchor`` links to headings down to level 3, ::: fences.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# The API reference: members in source order, base classes shown. Cross-reference
# targets outside tavrida2 (pika, jsonschema, the standard library) are not looked
# up: the build has no network, so no intersphinx, and nitpicky stays off.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "both"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False

html_theme = "alabaster"
html_title = f"tavrida2 {release}"
html_static_path: list[str] = []
