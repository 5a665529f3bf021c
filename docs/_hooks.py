"""MkDocs hooks for the softjax site (``hooks:`` in ``mkdocs.yml``).

* Figures: ``docs/figures.py`` draws them with softjax (the attention
  memory figure from ``docs/benchmarks/attention.json``); they are added to
  the site as generated files (nothing is written into ``docs/``). They are
  cached under ``.cache/docs-figures/``, keyed by a hash of ``figures.py``,
  that json, the softjax sources and the jax and matplotlib versions.
* API coverage: every public function (``__all__`` of ``softjax`` and of each
  public submodule) must have a ``::: identifier`` directive in
  ``docs/api/*.md``, and every public submodule a page; otherwise a warning
  fails ``mkdocs build --strict``. The docstring checks themselves are in
  ``docs/_griffe_softjax.py``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
import re
import sys
from typing import Any

import griffe
from mkdocs.structure.files import File
from mkdocs.structure.files import Files

logger = logging.getLogger("mkdocs.plugins.softjax_docs")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
CACHE = ROOT / ".cache" / "docs-figures"
_DIRECTIVE = re.compile(r"^:::[ \t]+(?P<ident>[\w.]+)[ \t]*$", re.M)


def _load(name: str, path: Path) -> Any:
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def _figures_key() -> str:
  h = hashlib.sha256()
  sources = [
    DOCS / "figures.py",
    DOCS / "benchmarks" / "attention.json",
    *sorted((ROOT / "softjax").rglob("*.py")),
  ]
  for path in sources:
    h.update(path.name.encode())
    h.update(path.read_bytes())
  for dist in ("jax", "jaxlib", "matplotlib"):
    try:
      h.update(importlib.metadata.version(dist).encode())
    except importlib.metadata.PackageNotFoundError:
      pass
  return h.hexdigest()[:16]


def _figures() -> dict[str, bytes]:
  folder = CACHE / _figures_key()
  names = [
    "normalisers",
    "support",
    "temperature",
    "attention_memory",
    "linear_loss_memory",
  ]
  if all((folder / f"{n}.png").is_file() for n in names):
    return {f"img/{n}.png": (folder / f"{n}.png").read_bytes() for n in names}
  figures = _load("_softjax_docs_figures", DOCS / "figures.py")
  rendered = figures.render(names)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    for path, data in rendered.items():
      (folder / Path(path).name).write_bytes(data)
  except OSError as e:  # A read-only checkout still builds.
    logger.info("softjax docs: figure cache not written (%s)", e)
  return rendered


def _check_api_pages() -> None:
  ext = _load("_softjax_docs_griffe", DOCS / "_griffe_softjax.py")
  checker = ext.SoftjaxDocs()
  pkg = griffe.load("softjax", search_paths=[str(ROOT)], resolve_aliases=False)
  pages = {
    p: p.read_text(encoding="utf-8")
    for p in sorted((DOCS / "api").glob("*.md"))
  }
  rendered = {
    m.group("ident")
    for text in pages.values()
    for m in _DIRECTIVE.finditer(text)
  }
  for module in checker._public_modules(pkg):  # pylint: disable=protected-access
    for name in checker._public_names(module):  # pylint: disable=protected-access
      ident = f"{module.path}.{name}"
      if ident not in rendered:
        logger.warning(
          "softjax docs: public %s has no '::: %s' in docs/api/*.md.",
          ident,
          ident,
        )


def on_files(files: Files, config: Any) -> Files:
  _check_api_pages()
  for path, data in _figures().items():
    existing = files.get_file_from_path(path)
    if existing is not None:  # e.g. the committed docs/img/normalisers.png
      files.remove(existing)
    files.append(File.generated(config, path, content=data))
  return files
