"""The package's shape: small modules and functions, and clean boundaries.

These guard the structure described in docs/internals.md: every module and
function short enough to read at once, modules that talk to each other only
through names without a leading underscore, and products (``_maps``,
``_attention``, ``_losses``) that use the core and each other only through
the packages' interfaces (their ``__init__``), never another package's
modules.
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
MAX_MODULE_LINES = 600
CORE = "_core"
PRODUCTS = ("_maps", "_attention", "_losses")


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
          if node.module == "softjax" or not alias.name.startswith("_"):
            modules[name] = alias.name
          else:
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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_module_over_six_hundred_lines(path):
  n = len(path.read_text(encoding="utf-8").splitlines())
  assert n <= MAX_MODULE_LINES, f"{path}: {n} lines"


def _package_of(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> str | None:
  """``_core``, a product package, or None for the public modules."""
  rel = path.relative_to(root)
  return rel.parts[0] if len(rel.parts) > 1 else None


def _imported_modules(path: pathlib.Path) -> list[str]:
  """The softjax modules ``path`` imports from (``from X import y``: X, and
  X.y where y is a submodule: ``from softjax import _core`` is _core)."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.startswith("softjax")]
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module == "softjax":
        found += [f"softjax.{a.name}" for a in node.names]
      elif node.module.startswith("softjax"):
        found.append(node.module)
  return found


def _boundary_violations(
  path: pathlib.Path, root: pathlib.Path = PACKAGE
) -> list[str]:
  """Imports that cross a package boundary other than by its interface.

  The core imports only its own modules. A product imports its own
  modules, the core's interface (``softjax._core``) and other products'
  interfaces (``softjax._maps``), never their modules nor the public
  facades (which import the products).
  """
  own = _package_of(path, root)
  if own is None:
    return []
  bad = []
  for module in _imported_modules(path):
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 else None
    if package == own:
      continue
    if own == CORE:
      bad.append(module)  # the core depends on nothing but itself
    elif package not in (CORE,) + PRODUCTS or len(parts) > 2:
      bad.append(module)
  return bad


@pytest.mark.parametrize(
  "path",
  [p for p in MODULES if _package_of(p) is not None],
  ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_packages_meet_only_at_their_interfaces(path):
  assert not _boundary_violations(path), _boundary_violations(path)


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
  product = tmp_path / "softjax" / "_maps"
  product.mkdir(parents=True)
  (tmp_path / "softjax" / "_core").mkdir()
  crossing = product / "m.py"
  crossing.write_text(
    "from softjax import _core\nfrom softjax._core.rows import Rows\n"
    "from softjax._losses import x\nfrom softjax._losses.vocab import y\n"
    "from softjax import losses\nfrom softjax._maps.dense import z\n"
  )
  core = tmp_path / "softjax" / "_core" / "c.py"
  core.write_text("from softjax._core.rows import Rows\nimport softjax._maps\n")
  root = tmp_path / "softjax"
  assert _boundary_violations(crossing, root) == [
    "softjax._core.rows",
    "softjax._losses.vocab",
    "softjax.losses",
  ]
  assert _boundary_violations(core, root) == ["softjax._maps"]
