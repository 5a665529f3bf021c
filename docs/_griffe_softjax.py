"""Griffe extension for the softjax docs: reST markup to Markdown, and checks.

The docstrings in ``softjax/*.py`` are written for both ``help()`` and this
site, in Google style with a little reST. At docs build time (the files are
never modified) this extension rewrites, in every docstring of the package:

* ``.. math::`` blocks to ``$$ ... $$`` (rendered by ``pymdownx.arithmatex``
  in generic mode, then MathJax), and inline ``:math:`x``` to ``$x$``;
* ``:func:``, ``:mod:``, ``:class:`` (and the other Python-domain roles) to a
  cross-reference when the target is documented on the site, else to a code
  span; ``~name`` shows the last component, ``title <target>`` the title;
* a reST literal block (a paragraph ending in ``::`` followed by an indented
  block) to a fenced Python code block;
* the lines of a ``References:`` section to a list, one reference per item;
* an ``Example:`` section title to ``Examples:``, the Google-style section
  whose doctests griffe renders as code.

Shared text (``{key}`` placeholders, see ``softjax/_core/docs.py``) is filled in
first, as ``softjax._core.docs.shared`` does at import.

It also checks the public API (``__all__`` of ``softjax`` and of its public
submodules, or their public functions when there is no ``__all__``): every
object must have a docstring that documents each of its parameters, and
every role must resolve. A failed check is logged as a warning on a
``mkdocs.*`` logger, so ``mkdocs build --strict`` fails on it.

Configured in ``mkdocs.yml`` under the python handler's ``options``::

    extensions:
      - docs/_griffe_softjax.py
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import re
from typing import Any

import griffe

# A child of the "mkdocs" logger: mkdocs counts its warnings in strict mode.
logger = logging.getLogger("mkdocs.plugins.softjax_docs")

PACKAGE = "softjax"


def _load_docs_module():
  """softjax/_core/docs.py from the checkout (not an installed softjax)."""
  path = (
    pathlib.Path(__file__).resolve().parents[1] / PACKAGE / "_core" / "docs.py"
  )
  spec = importlib.util.spec_from_file_location("_softjax_docs", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# The text that several docstrings share (placeholders such as ``{axis}``),
# filled in exactly as softjax does at import.
fill_shared_text = _load_docs_module().fill

_ROLE = re.compile(
  r":(?:py:)?(?P<role>math|func|meth|mod|class|attr|data|obj|exc|const)"
  r":`(?P<body>[^`]+)`"
)
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_MATH_DIRECTIVE = re.compile(
  r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$"
)
_LITERAL_INTRO = re.compile(r"^(?P<text>.*\S)?(?P<sep>[ \t]*)::[ \t]*$")
_EXAMPLE = re.compile(r"^[ \t]*Example:[ \t]*$")
_SECTION = re.compile(r"^(?P<indent>[ \t]*)References:[ \t]*$")
# A reference ends with its year: "ICML 2016.", "JMLR 21(35), 2020.".
_REFERENCE_END = re.compile(r"(?<=\b(?:1[89]|20)\d\d\.)\s+")


def _indent_of(line: str) -> int:
  return len(line) - len(line.lstrip(" \t"))


def _block(lines: list[str], start: int, base: int) -> int:
  """End (exclusive) of the block after ``start`` indented deeper than ``base``.

  Blank lines belong to the block only when an indented line follows them.
  """
  end = start
  j = start
  while j < len(lines):
    if not lines[j].strip():
      j += 1
      continue
    if _indent_of(lines[j]) <= base:
      break
    j += 1
    end = j
  return end


def _dedent(block: list[str]) -> list[str]:
  width = min((_indent_of(line) for line in block if line.strip()), default=0)
  return [line[width:] if line.strip() else "" for line in block]


def convert_blocks(text: str) -> str:
  """``.. math::``, literal blocks and References sections to Markdown."""
  lines = text.split("\n")
  out: list[str] = []
  i = 0
  while i < len(lines):
    line = lines[i]
    base = _indent_of(line)
    pad = line[:base]
    math = _MATH_DIRECTIVE.match(line)
    if math:
      end = _block(lines, i + 1, base)
      body = _dedent(lines[i + 1 : end])
      if math.group("rest").strip():
        body.insert(0, math.group("rest").strip())
      body = [line for line in body if line.strip()]
      if out and out[-1].strip():
        out.append("")
      out.append(pad + "$$")
      out.extend(pad + line for line in body)
      out.append(pad + "$$")
      if end < len(lines) and lines[end].strip():
        out.append("")
      i = end
      continue
    literal = _LITERAL_INTRO.match(line)
    if literal and not line.lstrip().startswith(".."):
      end = _block(lines, i + 1, base)
      body = _dedent(lines[i + 1 : end])
      while body and not body[0].strip():
        body.pop(0)
      if body:
        text_part = literal.group("text")
        if text_part is not None:
          # "for example::" shows "for example:"; "text ::" shows "text".
          out.append(text_part + ("" if literal.group("sep") else ":"))
        out.append("")
        out.append(pad + "```python")
        out.extend((pad + line) if line else "" for line in body)
        out.append(pad + "```")
        if end < len(lines) and lines[end].strip():
          out.append("")
        i = end
        continue
    if _EXAMPLE.match(line):
      # Google style's section is "Examples:"; griffe reads a lone
      # "Example:" as an admonition and would not render the doctests.
      out.append(line.replace("Example:", "Examples:"))
      i += 1
      continue
    if _SECTION.match(line):
      end = _block(lines, i + 1, base)
      body = " ".join(
        line.strip() for line in lines[i + 1 : end] if line.strip()
      )
      refs = [r for r in _REFERENCE_END.split(body) if r.strip()]
      out.append(line)
      inner = pad + "    "
      if len(refs) > 1:
        out.extend(f"{inner}- {r}" for r in refs)
      else:
        out.extend(lines[i + 1 : end])
      i = end
      continue
    out.append(line)
    i += 1
  return "\n".join(out)


class SoftjaxDocs(griffe.Extension):
  """Rewrites reST markup in softjax's docstrings and checks the public API."""

  def __init__(self, package: str = PACKAGE) -> None:
    super().__init__()
    self.package = package

  # -- public API --------------------------------------------------------

  def _public_modules(self, pkg: griffe.Module) -> list[griffe.Module]:
    modules = [pkg]
    for name, member in pkg.members.items():
      if name.startswith("_") or member.is_alias:
        continue
      if member.is_module:
        modules.append(member)
    return modules

  @staticmethod
  def _public_names(module: griffe.Module) -> list[str]:
    if module.exports is not None:
      return [e if isinstance(e, str) else e.name for e in module.exports]
    return [
      n
      for n, m in module.members.items()
      if not n.startswith("_")
      and not m.is_alias
      and (m.is_function or m.is_class)
    ]

  def _documented(self, pkg: griffe.Module) -> dict[str, Any]:
    """Every identifier the API pages render: ``path -> object``."""
    found: dict[str, Any] = {}
    for module in self._public_modules(pkg):
      found[module.path] = module
      for name in self._public_names(module):
        if name in module.members:
          found[f"{module.path}.{name}"] = module.members[name]
    return found

  # -- roles ---------------------------------------------------------------

  def _resolve(
    self, target: str, where: griffe.Object, documented: dict[str, Any]
  ) -> str | None:
    target = target.lstrip(".")
    candidates = [target, f"{where.module.path}.{target}"]
    if where.module.path.rsplit(".", 1)[-1].startswith("_"):
      candidates.append(f"{where.module.path.rsplit('.', 1)[0]}.{target}")
    candidates.append(f"{self.package}.{target}")
    candidates.extend(
      f"{m}.{target}"
      for m in documented
      if isinstance(documented[m], griffe.Module)
    )
    for c in candidates:
      if c in documented:
        return c
    return None

  def convert_roles(
    self, text: str, where: griffe.Object, documented: dict[str, Any]
  ) -> str:
    rendered = {
      o.final_target.path if o.is_alias else o.path for o in documented.values()
    }

    def replace(m: re.Match[str]) -> str:
      role, body = m.group("role"), m.group("body")
      if role == "math":
        return f"${body}$"
      titled = _TITLED.match(body)
      if titled:
        title, target = titled.group("title"), titled.group("target")
      else:
        target = body
        short = target.startswith("~")
        target = target.lstrip("~")
        title = target.rsplit(".", 1)[-1] if short else target
        if role in ("func", "meth"):
          title += "()"
      resolved = self._resolve(target, where, documented)
      if resolved is None:
        first = target.lstrip("~.").split(".", 1)[0]
        # Only what the site shows must resolve; private helpers' roles
        # become code spans.
        if where.path in rendered and (
          "." not in target.lstrip("~.") or first == self.package
        ):
          logger.warning(
            "%s: docstring role :%s:`%s` does not resolve to an object "
            "documented on the site.",
            where.path,
            role,
            body,
          )
        return f"`{title}`"
      return f"[`{title}`][{resolved}]"

    return _ROLE.sub(replace, text)

  # -- checks --------------------------------------------------------------

  @staticmethod
  def _check_docstring(path: str, obj: Any) -> None:
    target = obj.final_target if obj.is_alias else obj
    doc = target.docstring
    if doc is None or not doc.value.strip():
      logger.warning("%s: public object has no docstring.", path)
      return
    if not target.is_function:
      return
    documented: set[str] = set()
    for section in doc.parsed:
      if section.kind is griffe.DocstringSectionKind.parameters:
        documented.update(p.name for p in section.value)
    for param in target.parameters:
      if param.name in ("self", "cls"):
        continue
      if param.name not in documented:
        logger.warning(
          "%s: parameter %r is not documented in its docstring "
          "(Args: section).",
          path,
          param.name,
        )

  # -- griffe hook ---------------------------------------------------------

  def on_package(
    self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any
  ) -> None:
    del loader, kwargs
    if pkg.name != self.package:
      return
    documented = self._documented(pkg)
    seen: set[int] = set()

    def visit(obj: griffe.Object) -> None:
      if id(obj) in seen:
        return
      seen.add(id(obj))
      if obj.docstring is not None:
        text = convert_blocks(fill_shared_text(obj.docstring.value))
        obj.docstring.value = self.convert_roles(text, obj, documented)
        # Drop a parse cached before the rewrite, if any.
        obj.docstring.__dict__.pop("parsed", None)
      for member in obj.members.values():
        if not member.is_alias:
          visit(member)

    visit(pkg)
    for module in self._public_modules(pkg):
      names = self._public_names(module)
      if module is not pkg and module.docstring is None:
        logger.warning("%s: public module has no docstring.", module.path)
      for name in names:
        if name not in module.members:
          logger.warning(
            "%s: %r is in __all__ but not defined.", module.path, name
          )
          continue
        self._check_docstring(f"{module.path}.{name}", module.members[name])
