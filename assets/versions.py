"""Asset code versions derived from the `ml/` modules an asset wraps.

Each such module declares `VERSION = "<n>"`, bumped when its output changes (the record in
`tests/module_versions.json` makes a logic change without a bump fail the tests). An asset's
`code_version` names the versions of every module it calls, found in the source by
`derived_code_version` (never listed by hand), so Dagster marks partitions built by older logic as stale. The version is read from the module's source, not by importing it: the
modules pull pandas and torch, which the code location must not load.
"""

import ast
import functools
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import dagster as dg

_VERSION_LINE = re.compile(r"^VERSION = \"([^\"\n]+)\"", re.MULTILINE)


def code_version(*modules: str) -> str:
    """`code_version("ml.features", "ml.preprocess")` → "features-3+preprocess-1"."""
    if not modules:
        raise ValueError("code_version: name at least one versioned module, e.g. code_version('ml.features')")
    return "+".join(f"{module.rsplit('.', 1)[-1]}-{module_version(module)}" for module in modules)


@functools.cache
def module_version(module: str) -> str:
    """The `VERSION = "<n>"` a module declares at its top level (column 0), read from its source file."""
    path = module_path(module)
    found = _VERSION_LINE.search(path.read_text())
    if found is None:
        raise ValueError(
            f"{path}: no top-level `VERSION = \"<n>\"`; an asset's code_version is derived from it. "
            f"Add one and record it with `python -m tests.record_module_versions`"
        )
    return found.group(1)


def module_path(module: str) -> Path:
    """The source file of a module, found without executing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ValueError(f"code_version: no Python source for module {module!r}")
    return Path(spec.origin)


def derived_code_version(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``asset`` with the code version of every versioned `ml/` module its function calls.

    Stack it above ``@dg.asset``. What counts as called, read from the source (nothing is imported):
    the ``ml`` imports in the function and in the same module's functions it calls, the `ml` imports
    of the resource classes it is given, and every `ml` module those import in turn. A change to the
    verdict (``ml.promotion``, called through ``ml.evaluation``) so marks the model stale.
    """
    version = code_version(*sorted(m for m in ml_modules_called(asset.op.compute_fn.decorated_fn) if _versioned(m)))
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))


def ml_modules_called(fn: Callable) -> set[str]:
    """The `ml` modules ``fn`` reaches: directly, through its module's helpers and resources, and transitively."""
    source = _module_tree(fn.__module__)
    functions = {n.name: n for n in source.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    imported = _imported_names(source)
    found: set[str] = set()
    pending, seen = [fn.__name__], set()
    while pending:
        name = pending.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in _body_and_annotations(functions[name]):
            found |= _ml_imports_of(node)
            if isinstance(node, ast.Name):
                pending.append(node.id)
                origin = imported.get(node.id)
                if origin and origin.startswith(("ml.", "resources.")):
                    found |= {origin} if origin.startswith("ml.") else _ml_imports_in(_module_tree(origin))
    return _closure(found)


def _body_and_annotations(definition: ast.FunctionDef | ast.ClassDef):
    """The nodes a definition runs (decorators and default values aside), its parameters' names left out."""
    arguments = [*definition.args.args, *definition.args.kwonlyargs] if isinstance(definition, ast.FunctionDef) else []
    parameters = {a.arg for a in arguments}
    roots = [*definition.body, *(a.annotation for a in arguments if a.annotation)]
    for root in roots:
        for node in ast.walk(root):
            if not (isinstance(node, ast.Name) and node.id in parameters):
                yield node


def _closure(modules: set[str]) -> set[str]:
    done: set[str] = set()
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in done or importlib.util.find_spec(module) is None:
            continue
        done.add(module)
        pending.extend(_ml_imports_in(_module_tree(module)) - done)
    return done


@functools.cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse(module_path(module).read_text())


def _ml_imports_in(tree: ast.AST) -> set[str]:
    """Every `ml` import in ``tree`` that runs (those under ``if TYPE_CHECKING:`` are for annotations only)."""
    found, pending = set(), [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        found |= _ml_imports_of(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def _ml_imports_of(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.startswith("ml.")}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "ml":
            return {f"ml.{a.name}" for a in node.names}
        if node.module.startswith("ml."):
            return {node.module}
    return set()


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Top-level ``from x import y`` of a module: ``{y: "x"}`` (``{y: "ml.y"}`` for ``from ml import y``)."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"ml.{alias.name}" if node.module == "ml" else node.module
    return names


def _versioned(module: str) -> bool:
    return _VERSION_LINE.search(module_path(module).read_text()) is not None
