"""Sphinx configuration of the jaxmargin documentation.

Build (from the repository root, with the ``docs`` extra installed):
  python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Document the checkout being built, also when an older jaxmargin is installed.
sys.path.insert(0, str(ROOT))

import jaxmargin  # noqa: E402  (needs the path above)

project = "jaxmargin"
author = "The jaxmargin authors"
copyright = "The jaxmargin authors"  # noqa: A001  (Sphinx's name)
version = release = jaxmargin.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "figures"]

# MyST: $...$ and $$...$$ math, ::: fences for callouts, and anchors for
# the section links between pages.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# Google-style docstrings only.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Returns: The loss in the input dtype: shape ..." reads as one sentence
# ("*The loss in the input dtype* -- shape ...") instead of a bogus return type.
napoleon_use_rtype = False
# The signatures say it once; the Args sections already describe the types.
autodoc_typehints = "none"
autodoc_member_order = "bysource"

html_theme = "furo"
html_title = f"jaxmargin {release}"
html_static_path = ["_static"]


def _module_signature(app, what, name, obj, options, signature, return_annotation):
  """The constructor arguments of a Flax loss module, as torch's docs show them.

  NNX's metaclass hides ``__init__`` behind ``(*args, **kwargs)``, and linen's
  dataclass adds its ``parent`` and ``name`` fields; show neither.
  """
  del app, options, signature, return_annotation
  if what != "class" or not name.startswith(("jaxmargin.nnx.", "jaxmargin.linen.")):
    return None
  params = [p.replace(annotation=inspect.Parameter.empty)
            for p in inspect.signature(obj.__init__).parameters.values()
            if p.name not in ("self", "parent", "name")]
  return str(inspect.Signature(params)), None


def setup(app):
  app.connect("autodoc-process-signature", _module_signature)
