"""Docstring examples run, and public docstrings have the required sections."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softjax

MODULES = ["softjax"] + sorted(
  info.name
  for info in pkgutil.walk_packages(softjax.__path__, softjax.__name__ + ".")
)
OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS

# module -> reason, for docstring examples known to be wrong in softjax.
# strict: the test fails once the example is fixed, so the entry gets removed.
KNOWN_FAILURES: dict[str, str] = {}
# Modules whose examples take seconds (they train or compile attention and
# vocabulary-sized losses): run in the full suite only (the slow marker).
SLOW = {
  "softjax._attention.blockwise",
  "softjax._attention.dense",
  "softjax._losses.linear",
}


def _find(name):
  module = importlib.import_module(name)
  globs = dict(jnp=jnp, jax=jax, np=np, softjax=softjax)
  finder = doctest.DocTestFinder(exclude_empty=True)
  return finder.find(module, name, extraglobs=globs)


def _params():
  for name in MODULES:
    marks = (pytest.mark.slow,) if name in SLOW else ()
    if name in KNOWN_FAILURES:
      marks += (pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name]),)
    yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_module_doctests(name):
  report = []
  runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
  for test in _find(name):
    runner.run(test, out=report.append)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, "".join(report)


def test_package_has_examples():
  # Guards against the walk above silently finding nothing to run.
  count = sum(len(t.examples) for name in MODULES for t in _find(name))
  assert count > 0


@pytest.mark.parametrize("name", softjax.__all__)
def test_public_docstring_sections(name):
  doc = inspect.getdoc(getattr(softjax, name))
  assert doc, f"softjax.{name} has no docstring"
  for section in ("Args:", "Returns:", "Example", "References"):
    assert section in doc, f"softjax.{name} docstring lacks {section!r}"
