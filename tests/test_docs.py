"""The documentation site: strict build, API pages, math, and page examples.

* ``mkdocs build --strict`` succeeds (skipped if the ``docs`` extra, i.e.
  mkdocs, mkdocs-material and mkdocstrings-python, is not installed), and the
  API pages show every public function with rendered math.
* The checks of ``docs/_griffe_softjax.py`` (missing docstring, undocumented
  parameter, unresolved role) fire, on a tiny stand-in package.
* The ``>>>`` examples in the guide pages give the numbers the pages quote.
"""

from __future__ import annotations

import doctest
import html as html_lib
import importlib.util
import logging
import os
import pathlib
import re
import subprocess
import sys
import textwrap

from _tiers import slow_except
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOCTEST_PAGES = (
  "index.md",
  "examples.md",
  "gradients.md",
  "vocabulary.md",
  "long_context.md",
)


def _need_docs_packages() -> None:
  for module in (
    "mkdocs",
    "material",
    "mkdocstrings",
    "mkdocstrings_handlers.python",
    "griffe",
    "pymdownx",
  ):
    if importlib.util.find_spec(module) is None:
      pytest.skip(
        f"the docs extra is not installed (no module {module!r}); "
        "pip install '.[docs]' to build the site"
      )


def _public_api() -> dict[str, list[str]]:
  """``{page: [identifier, ...]}`` for every public function."""
  import softjax  # pylint: disable=import-outside-toplevel

  api = {
    "normalisers": [f"softjax.{n}" for n in softjax.__all__],
    "losses": [f"softjax.losses.{n}" for n in softjax.losses.__all__],
  }
  for name in ("attention", "checks"):
    module = getattr(softjax, name, None)
    if module is None:
      continue
    names = getattr(module, "__all__", None) or [
      n
      for n, v in vars(module).items()
      if not n.startswith("_")
      and callable(v)
      and getattr(v, "__module__", None) == module.__name__
    ]
    api[name] = [f"softjax.{name}.{n}" for n in names]
  return api


@pytest.mark.slow  # a full mkdocs build in a subprocess
def test_mkdocs_build_strict(tmp_path: pathlib.Path) -> None:
  _need_docs_packages()
  site = tmp_path / "site"
  env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "mkdocs",
      "build",
      "--strict",
      "--quiet",
      "-f",
      str(ROOT / "mkdocs.yml"),
      "-d",
      str(site),
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, (
    f"mkdocs build --strict failed ({proc.returncode}):\n"
    f"{proc.stdout}\n{proc.stderr}"
  )

  for page, identifiers in _public_api().items():
    html_path = site / "api" / page / "index.html"
    assert html_path.is_file(), f"no API page for {page}"
    html = html_path.read_text(encoding="utf-8")
    for ident in identifiers:
      assert f'id="{ident}"' in html, f"{ident} missing from api/{page}"
    # The docstrings' reST never reaches the page.
    for raw in (":math:`", ":func:`", ":mod:`", ".. math::"):
      assert raw not in html, f"unconverted {raw!r} in api/{page}"
  normalisers = (site / "api" / "normalisers" / "index.html").read_text(
    encoding="utf-8"
  )
  assert '<div class="arithmatex">' in normalisers  # display math
  assert '<span class="arithmatex">' in normalisers  # inline math
  assert "tex-mml-chtml.js" in normalisers  # MathJax, loaded at view time
  # Doctest examples render as code, not as nested blockquotes.
  assert "<blockquote>" not in normalisers
  text = html_lib.unescape(re.sub(r"<[^>]+>", "", normalisers))
  assert ">>> softjax.sparsemax(" in text
  for figure in ("normalisers", "support", "temperature"):
    assert (site / "img" / f"{figure}.png").stat().st_size > 1000
  assert "softjax dense benchmarks" not in (
    site / "benchmarks" / "index.html"
  ).read_text(encoding="utf-8")
  assert "| fwd+bwd" not in (site / "benchmarks" / "index.html").read_text(
    encoding="utf-8"
  )  # the tables are rendered, not left as text


def test_griffe_checks_fire(
  tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
  """A missing docstring or parameter doc and a bad role are warnings."""
  if importlib.util.find_spec("griffe") is None:
    pytest.skip("griffe (docs extra) is not installed")
  import griffe  # pylint: disable=import-outside-toplevel

  spec = importlib.util.spec_from_file_location(
    "_softjax_docs_griffe", DOCS / "_griffe_softjax.py"
  )
  ext = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ext)

  pkg = tmp_path / "fakepkg"
  pkg.mkdir()
  (pkg / "__init__.py").write_text(
    textwrap.dedent('''\
      """A stand-in package."""
      __all__ = ["documented", "undocumented", "half_documented"]


      def documented(x):
        """Fine; see :func:`half_documented` and :func:`nowhere`.

        .. math::
          y = x^2

        Args:
          x: the input, :math:`x \\\\ge 0`.
        """


      def undocumented(x):
        return x


      def half_documented(x, y):
        """Only x.

        Args:
          x: the input.
        """
      ''')
  )
  with caplog.at_level(logging.WARNING, logger="mkdocs.plugins.softjax_docs"):
    loaded = griffe.load(
      "fakepkg",
      search_paths=[str(tmp_path)],
      extensions=griffe.load_extensions(ext.SoftjaxDocs(package="fakepkg")),
    )
  messages = "\n".join(r.getMessage() for r in caplog.records)
  assert "fakepkg.undocumented: public object has no docstring" in messages
  assert "fakepkg.half_documented: parameter 'y' is not documented" in messages
  assert ":func:`nowhere` does not resolve" in messages
  assert ":func:`half_documented`" not in messages  # it resolves
  doc = loaded["documented"].docstring.value
  assert "$$\ny = x^2\n$$" in doc
  assert "$x \\ge 0$" in doc
  assert "[`half_documented()`][fakepkg.half_documented]" in doc


def _page_examples(page: str) -> str:
  text = (DOCS / page).read_text(encoding="utf-8")
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  return "\n".join(b for b in blocks if ">>>" in b)


@pytest.mark.parametrize(
  "page", slow_except(DOCTEST_PAGES, "index.md", "gradients.md")
)
def test_page_examples(page: str) -> None:
  source = _page_examples(page)
  assert source, f"no >>> examples in docs/{page}"
  test = doctest.DocTestParser().get_doctest(source, {}, page, page, 0)
  runner = doctest.DocTestRunner(
    optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
  )
  output: list[str] = []
  runner.run(test, out=output.append)
  assert runner.failures == 0, "".join(output)
