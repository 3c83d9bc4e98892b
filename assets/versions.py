"""Asset code versions derived from the `ml/` modules an asset wraps.

Each such module declares `VERSION = "<n>"`, bumped when its output changes (the record in
`tests/module_versions.json` makes a logic change without a bump fail the tests). An asset's
`code_version` names the versions of the modules it wraps, so Dagster marks partitions built by
older logic as stale. The version is read from the module's source, not by importing it: the
modules pull pandas and torch, which the code location must not load.
"""

import functools
import importlib.util
import re
from pathlib import Path

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
