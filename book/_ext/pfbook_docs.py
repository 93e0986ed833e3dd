"""Sphinx glue for the book's API reference (loaded through ``local_extensions`` in ``_config.yml``).

* ``autodoc-process-docstring``: the package's docstrings are plain text with a little reST. Two habits of
  that text are read here instead of being rewritten in the code: a NumPy-style ``Parameters`` block of
  ``name : description`` lines becomes a field list, and ``|V|`` outside inline literals is an absolute
  value, not a reST substitution.
* ``missing-reference``: a ``:func:``/``:class:``/... role in a docstring names an object as the code of that
  module would (``evaluate`` imported from a sibling module, ``pfbook.diffusion.GradientGuidance`` re-exported
  by its package). Such a reference resolves to the object's own documented name, found by importing it;
  a bare name that no namespace knows resolves only if exactly one documented ``pfbook`` object has it.
  Anything else stays unresolved, so a wrong name still fails the ``-n`` build.
"""

from __future__ import annotations

import importlib
import re

_PARAM = re.compile(r"^(\s*)(\*{0,2}\w+)\s+:\s+(.*)$")
_LITERAL = re.compile(r"(``.+?``|`[^`]+`)")
_TABLE = re.compile(r"\s*(\|\s|\|$|\+[-=])")


def _numpy_parameters(lines: list[str]) -> None:
    """``Parameters`` / ``----------`` followed by ``name : text`` lines -> ``:param name: text``."""
    i = 0
    while i < len(lines) - 1:
        if lines[i].strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            j = i + 2
            out = []
            while j < len(lines) and lines[j].strip():
                m = _PARAM.match(lines[j])
                if m and m.group(1) == indent:
                    out.append(f"{indent}:param {m.group(2)}: {m.group(3)}")
                else:  # a continuation line: keep it inside the field
                    out.append(f"{indent}    {lines[j].strip()}")
                j += 1
            lines[i:j] = out
            i += len(out)
        else:
            i += 1


def _escape_bars(line: str) -> str:
    """``|`` outside inline literals and roles is text (``|V|``), not a substitution reference."""
    if _TABLE.match(line):  # a reST table or line block: leave it
        return line
    parts = _LITERAL.split(line)
    return "".join(p if k % 2 else p.replace("|", r"\|") for k, p in enumerate(parts))


def process_docstring(app, what, name, obj, options, lines):
    if not name.startswith("pfbook"):
        return
    _numpy_parameters(lines)
    lines[:] = [_escape_bars(line) for line in lines]


def _canonical(target: str, module: str | None, cls: str | None) -> str | None:
    """The documented name of what ``target`` means in ``module`` (and ``cls``), or None."""
    candidates = []
    if module:
        if cls:
            candidates.append(f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
    candidates.append(target)
    for dotted in candidates:
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            if isinstance(obj, type(importlib)):
                return obj.__name__
            mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
            if isinstance(mod, str) and isinstance(qual, str) and mod.startswith("pfbook"):
                return f"{mod}.{qual}"
            break
    return None


def missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    module, cls = node.get("py:module"), node.get("py:class")
    if not (target.startswith("pfbook") or (module or "").startswith("pfbook") or "." not in target):
        return None
    domain = env.get_domain("py")
    name = _canonical(target, module, cls)
    if name is None and "." not in target:
        found = [full for full in domain.objects if full.startswith("pfbook.") and full.rsplit(".", 1)[-1] == target]
        name = found[0] if len(found) == 1 else None
    if name is None or name == target or name not in domain.objects and name not in domain.modules:
        return None
    node = node.deepcopy()
    node["reftarget"] = name
    node["refspecific"] = False
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], name, node, contnode)


def setup(app):
    app.connect("autodoc-process-docstring", process_docstring)
    app.connect("missing-reference", missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
