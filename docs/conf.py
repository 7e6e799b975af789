"""Sphinx configuration of the statemix-sk documentation.

Build it from the repository root with the ``docs`` extra installed::

    python -m sphinx -W -b html docs docs/_build/html

The example gallery runs every ``examples/plot_*.py`` script. Each reads
``STATEMIX_EXAMPLES_SIZE``: ``tiny`` (seconds each; what CI uses), ``small`` (the
default: about a minute each on two cores) or ``full`` (the published experiment
sizes: hours). ``-D plot_gallery=0`` skips running them altogether.

sphinx-gallery reruns only the scripts that changed since the last build; this
file also reruns all of them when the size differs from the last successful
build's (recorded in ``auto_examples/.size``), so that no page shows figures of
another size.
"""

import os
import sys
from pathlib import Path

import statemix_sk

HERE = Path(__file__).resolve().parent
# The gallery's sort key lives beside this file (sphinx-gallery imports it by name).
sys.path.insert(0, str(HERE))

project = "statemix-sk"
author = "statemix-sk developers"
copyright = "statemix-sk developers, BSD-3-Clause"
version = release = statemix_sk.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
language = "en"

# -- API reference -------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's type lines say it better
autosummary_generate = False  # the API pages are written by hand (automodule)
# numpydoc would add a table of every method, inherited ones from scikit-learn
# included; the pages document the methods in full instead.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML ----------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"statemix-sk {release}"
html_static_path = []
html_theme_options = {
    "description": "Learn state-space dynamics with differentiable particle filters",
    "fixed_sidebar": True,
    "show_relbars": True,
    # Wide enough for the examples' 88-column code without scrolling.
    "page_width": "1240px",
    "sidebar_width": "230px",
}
html_sidebars = {
    "**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]
}

# -- Example gallery -----------------------------------------------------------------
size = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
if size not in ("tiny", "small", "full"):
    raise ValueError(
        f"STATEMIX_EXAMPLES_SIZE must be tiny, small or full, got {size!r}."
    )

_size_marker = HERE / "auto_examples" / ".size"
_same_size = _size_marker.exists() and _size_marker.read_text().strip() == size

sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"[\\/]plot_",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    # Stop at the first failing example: a broken example should fail the build
    # (and CI) with its traceback, not after every other example has run.
    "abort_on_example_error": True,
    "min_reported_time": 1,
    "show_memory": False,
    "first_notebook_cell": None,
    "run_stale_examples": not _same_size,
}


def _record_size(app, exception):
    """After a successful build, record the size its examples ran at."""
    if exception is None and app.config.sphinx_gallery_conf.get("plot_gallery"):
        _size_marker.parent.mkdir(parents=True, exist_ok=True)
        _size_marker.write_text(size + "\n")


def setup(app):
    """Connect the size bookkeeping to the build."""
    app.connect("build-finished", _record_size)
