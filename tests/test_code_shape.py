"""The package's shape: small functions, and no module using another's privates.

These guard the structure described in docs/internals.md: every function
short enough to read at once, and modules that talk to each other only
through names without a leading underscore.
"""

from __future__ import annotations

import ast
import io
import pathlib
import tokenize

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "softjax"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 60


def _code_lines(source: str, node: ast.AST) -> int:
  """Lines of ``node`` holding code: no docstring, comment or blank line."""
  skip = set()
  body = getattr(node, "body", [])
  if (
    body
    and isinstance(body[0], ast.Expr)
    and isinstance(body[0].value, ast.Constant)
    and isinstance(body[0].value.value, str)
  ):
    skip.update(range(body[0].lineno, body[0].end_lineno + 1))
  code = set()
  tokens = tokenize.generate_tokens(io.StringIO(source).readline)
  for tok in tokens:
    if tok.type in (
      tokenize.COMMENT,
      tokenize.NL,
      tokenize.NEWLINE,
      tokenize.INDENT,
      tokenize.DEDENT,
      tokenize.ENDMARKER,
    ):
      continue
    for line in range(tok.start[0], tok.end[0] + 1):
      if node.lineno <= line <= node.end_lineno:
        code.add(line)
  return len(code - skip)


def _functions(path: pathlib.Path):
  source = path.read_text(encoding="utf-8")
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield node, source


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_function_over_sixty_lines_of_code(path):
  long = {
    f"{node.name} (line {node.lineno})": n
    for node, source in _functions(path)
    if (n := _code_lines(source, node)) > MAX_LINES
  }
  assert not long, f"{path.name}: functions over {MAX_LINES} lines: {long}"


def _private_uses(path: pathlib.Path) -> list[str]:
  """``module._name`` and ``from module import _name`` across softjax."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  modules = {}  # local alias -> softjax module name
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      if node.module.startswith("softjax"):
        for alias in node.names:
          name = alias.asname or alias.name
          if node.module == "softjax":
            modules[name] = alias.name
          elif alias.name.startswith("_"):
            found.append(f"from {node.module} import {alias.name}")
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and isinstance(node.value, ast.Name)
      and node.value.id in modules
      and node.attr.startswith("_")
      and not node.attr.startswith("__")
    ):
      found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
  return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_use_only_each_others_public_names(path):
  assert not _private_uses(path), _private_uses(path)


def test_the_checks_find_what_they_look_for(tmp_path):
  long_body = "\n".join(f"  x{i} = {i}" for i in range(MAX_LINES + 1))
  source = f'def f():\n  """Doc."""\n  # why\n\n{long_body}\n'
  (node,) = [
    n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)
  ]
  assert _code_lines(source, node) == MAX_LINES + 2  # def line + body
  bad = tmp_path / "bad.py"
  bad.write_text(
    "from softjax import _core\nfrom softjax._core import _x\n"
    "y = _core._secret(1)\n"
  )
  assert _private_uses(bad) == [
    "from softjax._core import _x",
    "_core._secret (line 3)",
  ]
