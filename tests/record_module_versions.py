"""Record each versioned `ml/` module's VERSION and the hash of its logic in tests/module_versions.json.

    python -m tests.record_module_versions                       # after bumping VERSION
    python -m tests.record_module_versions --keep-version ml.x   # a refactor that changes no output

The hash is of the module's syntax tree without docstrings, other bare strings and the VERSION line,
so comments, docstrings and formatting do not count; any other edit does. Recording a changed hash
under an unchanged VERSION is refused unless `--keep-version` names the module: a logic change must
move the versions of the assets built on it (`assets/versions.py`).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path

from infra.code_versions import module_path, module_version

ROOT = Path(__file__).resolve().parent.parent
RECORD = Path(__file__).resolve().parent / "module_versions.json"
PACKAGE = "ml"


def versioned_modules() -> list[str]:
    """Every module of `ml/` that declares a top-level VERSION."""
    found = []
    for path in sorted((ROOT / PACKAGE).glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(_is_version(node) for node in tree.body):
            found.append(f"{PACKAGE}.{path.stem}")
    return found


def normalised_hash(source: str) -> str:
    """SHA-256 (16 hex) of the code's syntax tree without bare strings and the VERSION line."""
    tree = ast.parse(source)
    tree.body = [node for node in tree.body if not _is_version(node)]
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if isinstance(statements, list) and statements and isinstance(statements[0], ast.stmt):
                kept = [s for s in statements if not _is_bare_string(s)]
                setattr(node, field, kept or ([ast.Pass()] if field == "body" else []))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def current(module: str) -> dict[str, str]:
    return {"version": module_version(module), "source_hash": normalised_hash(module_path(module).read_text())}


def load_record() -> dict[str, dict[str, str]]:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {}


def unbumped(record: dict[str, dict[str, str]], keep: frozenset[str] = frozenset()) -> list[str]:
    """Modules whose logic changed since the record while their VERSION did not."""
    out = []
    for module in versioned_modules():
        now, then = current(module), record.get(module)
        if then and module not in keep and now["source_hash"] != then["source_hash"] and now["version"] == then["version"]:
            out.append(module)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-version", action="append", default=[], metavar="MODULE",
                        help="record a changed hash under the same VERSION (a refactor that changes no output)")
    args = parser.parse_args(argv)
    record = load_record()
    refused = unbumped(record, frozenset(args.keep_version))
    if refused:
        for module in refused:
            print(
                f"{module_path(module).relative_to(ROOT)}: logic changed but VERSION is still "
                f"{module_version(module)!r}: bump VERSION (or pass --keep-version {module} if no output changes)",
                file=sys.stderr,
            )
        return 1
    new = {module: current(module) for module in versioned_modules()}
    RECORD.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
    for module, entry in new.items():
        if record.get(module) != entry:
            print(f"{module}: {record.get(module)} -> {entry}")
    return 0


def _is_version(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["VERSION"]


def _is_bare_string(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


if __name__ == "__main__":
    sys.exit(main())
