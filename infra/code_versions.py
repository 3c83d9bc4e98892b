"""Which versioned modules a function reaches, read from the source: what asset code versions are made of.

A versioned module declares ``VERSION = "<n>"`` at its top level, bumped when its output changes. The
modules a function reaches are found without importing anything (they pull pandas and torch, which a
code location must not load): its own imports, the functions of its module it calls, the modules it
takes classes from (resources, and the services they drive), and everything those import in turn.
Imports under ``if TYPE_CHECKING:`` do not count; nor do a function's parameters that shadow a name.
"""

import ast
import functools
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

_PACKAGES = ("ml", "resources", "serving", "streaming")
_FOLLOWED = tuple(f"{p}." for p in _PACKAGES)
"""What an asset's code reaches `ml/` through: its resources, and the services they drive."""
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


def versioned_modules_reached(fn: Callable) -> list[str]:
    """The versioned `ml` modules ``fn`` reaches, sorted."""
    return sorted(m for m in ml_modules_called(fn) if _versioned(m))


def versioned_modules_of_service(module: str) -> list[str]:
    """The versioned `ml` modules a service module (``"streaming.processor"``) reaches, sorted."""
    return sorted(m for m in _closure({module}) if m.startswith("ml.") and _versioned(m))


def ml_modules_called(fn: Callable) -> set[str]:
    """The `ml` modules ``fn`` reaches: directly, through its module's helpers and resources, and transitively."""
    source = _module_tree(fn.__module__)
    functions = {n.name: n for n in source.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    imported = _imported_names(source)
    found: set[str] = set()
    pending, seen = [_definition_of(fn, source)], set()
    while pending:
        definition = pending.pop()
        if definition is None or id(definition) in seen:
            continue
        seen.add(id(definition))
        for node in _body_and_annotations(definition):
            found |= _imports_of(node)
            if isinstance(node, ast.Name):
                pending.append(functions.get(node.id))
                origin = imported.get(node.id)
                if origin and origin.startswith(_FOLLOWED):
                    found.add(origin)
    return {m for m in _closure(found) if m.startswith("ml.")}


def _definition_of(fn: Callable, tree: ast.Module) -> ast.FunctionDef:
    """``fn``'s ``def`` in its module's tree, at the top level or nested (an asset made by a factory)."""
    line = fn.__code__.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == fn.__name__ and line in (
                node.lineno, *(d.lineno for d in node.decorator_list)):
            return node
    raise ValueError(f"code_version: no source for {fn.__module__}.{fn.__qualname__}")


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
    """``modules`` and every project module they import, transitively."""
    done: set[str] = set()
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in done or importlib.util.find_spec(module) is None:
            continue
        done.add(module)
        pending.extend(_module_imports(module) - done)
    return done


@functools.cache
def _module_imports(module: str) -> frozenset[str]:
    return frozenset(_imports_in(_module_tree(module)))


@functools.cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse(module_path(module).read_text())


def _imports_in(tree: ast.AST) -> set[str]:
    """Every import of a followed module in ``tree`` that runs (those under ``if TYPE_CHECKING:`` are for annotations only)."""
    found, pending = set(), [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        found |= _imports_of(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def _imports_of(node: ast.AST) -> set[str]:
    """The followed modules an import statement names (``from ml import x`` names ``ml.x``)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.startswith(_FOLLOWED)}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module in _PACKAGES:
            return {f"{node.module}.{a.name}" for a in node.names}
        if node.module.startswith(_FOLLOWED):
            return {node.module}
    return set()


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Top-level ``from x import y`` of a module: ``{y: "x"}`` (``{y: "ml.y"}`` for ``from ml import y``)."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}" if node.module in _PACKAGES else node.module
    return names


def _versioned(module: str) -> bool:
    return _VERSION_LINE.search(module_path(module).read_text()) is not None
