"""Integration cost, the static part: what a user writes and what they must tune to adopt an engine.

Read from an adapter's optional class attributes (docs/engines.md):

``workflow_code``     the files (relative to the adapter's package directory) that hold the workflow
                      as a user of the engine writes it. ``"file.py"`` counts the whole file;
                      ``"file.py:name,name"`` only those top-level definitions (Python: functions and
                      classes, decorators included; Go: ``func`` declarations, methods by name).
                      Counted: non-blank lines that are not comments (nor docstrings, in Python).
``changed_defaults``  for each setting the adapter sets away from the engine's own default, that
                      default (``None`` where the engine has no default and the user must choose).
                      Only keys whose value in the run's settings differs from it are reported.

The services a user must operate are the adapter's ``services``; their idle CPU and memory are
measured by the run stage (harness/run/idle.py).
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_GO_FUNC = re.compile(r"^func\s+(?:\([^)]*\)\s*)?([A-Za-z_]\w*)\s*[\[(]")


def _python_docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def _python_code_lines(text: str) -> set[int]:
    """Line numbers holding a token other than a comment, a newline or indentation."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def count_python(text: str, names: list[str] | None = None) -> int:
    tree = ast.parse(text)
    code = _python_code_lines(text) - _python_docstring_lines(tree)
    if names is None:
        return len(code)
    wanted: set[int] = set()
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name in names:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            wanted.update(range(first, (node.end_lineno or node.lineno) + 1))
            found.add(node.name)
    missing = set(names) - found
    if missing:
        raise ValueError(f"no top-level definition named {sorted(missing)}")
    return len(code & wanted)


def count_go(text: str, names: list[str] | None = None) -> int:
    lines = text.splitlines()
    keep: list[str] = []
    if names is None:
        keep = lines
    else:
        found: set[str] = set()
        i = 0
        while i < len(lines):
            m = _GO_FUNC.match(lines[i])
            if m and m.group(1) in names:
                found.add(m.group(1))
                j = i
                while j < len(lines) and not (lines[j] == "}" or (j == i and lines[j].rstrip().endswith("}"))):
                    j += 1
                keep += lines[i : j + 1]
                i = j + 1
                continue
            i += 1
        missing = set(names) - found
        if missing:
            raise ValueError(f"no func named {sorted(missing)}")
    return sum(1 for line in keep if line.strip() and not line.strip().startswith("//"))


def count_file(path: Path, names: list[str] | None = None) -> int:
    """Non-blank, non-comment lines of ``path`` (of the named top-level definitions only, if given)."""
    text = path.read_text()
    if path.suffix == ".py":
        return count_python(text, names)
    if path.suffix == ".go":
        return count_go(text, names)
    raise ValueError(f"{path}: cannot count lines of a {path.suffix or 'suffix-less'} file")


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def workflow_code(engine: Any) -> dict[str, int]:
    """``{"engines/dbos/worker.py:durabench_step,durabench_workflow": 17, ...}`` for an adapter."""
    declared = tuple(getattr(engine, "workflow_code", ()))
    if not declared:
        return {}
    base = Path(inspect.getfile(type(engine))).resolve().parent
    out: dict[str, int] = {}
    for entry in declared:
        file, _, names = str(entry).partition(":")
        path = base / file
        try:
            n = count_file(path, [x.strip() for x in names.split(",")] if names else None)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{type(engine).__name__}.workflow_code entry {entry!r}: {exc}") from exc
        out[_display(path) + (f":{names}" if names else "")] = n
    return out


def changed_defaults(engine: Any, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings this run sets away from the engine's defaults: ``{key: {"default": d, "value": v}}``."""
    declared: dict[str, Any] = dict(getattr(engine, "changed_defaults", {}))
    unknown = sorted(set(declared) - set(settings))
    if unknown:
        raise ValueError(f"{type(engine).__name__}.changed_defaults names unknown settings {unknown}")
    return {k: {"default": d, "value": settings[k]} for k, d in declared.items() if settings[k] != d}


def describe(engine: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The static integration cost of ``engine`` with ``settings`` (recorded in the manifest)."""
    code = workflow_code(engine)
    return {
        "workflow_code": code,
        "workflow_lines": sum(code.values()) if code else None,
        "services": list(engine.services),
        "changed_defaults": changed_defaults(engine, settings),
    }
