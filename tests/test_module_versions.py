"""Versions that move with the code: an `ml/` module whose logic changed must bump its VERSION.

Each asset's `code_version` is derived from the VERSIONs of the `ml/` modules it wraps
(`assets/versions.py`), so a change that forgets the bump leaves Dagster calling old partitions
current. `tests/module_versions.json` records each module's VERSION with a hash of its logic.
"""

import pytest

from assets.versions import code_version, module_version
from tests.record_module_versions import RECORD, current, load_record, normalised_hash, versioned_modules

UPDATE = "update the record with `python -m tests.record_module_versions`"
NOT_YET_DERIVED: set[str] = set()
"""The promotion decision still lives in assets/; its code_version derives from ml/ once it moves there."""


def test_every_versioned_module_is_recorded():
    missing = set(versioned_modules()) - set(load_record())
    stale = set(load_record()) - set(versioned_modules())
    assert not missing and not stale, (
        f"{RECORD.name} is out of date: not recorded {sorted(missing)}, no longer versioned {sorted(stale)}; {UPDATE}"
    )


@pytest.mark.parametrize("module", versioned_modules())
def test_changed_logic_comes_with_a_new_version(module):
    then, now = load_record().get(module), current(module)
    if then is None:
        pytest.fail(f"{module} is not in {RECORD.name}; {UPDATE}")
    path = module.replace(".", "/") + ".py"
    if now["source_hash"] != then["source_hash"] and now["version"] == then["version"]:
        pytest.fail(
            f"{path} changed since {RECORD.name} but its VERSION is still {now['version']!r}: "
            f"bump VERSION in {path} (the assets built on it become stale) and {UPDATE}. "
            f"A refactor that changes no output: `python -m tests.record_module_versions --keep-version {module}`"
        )
    assert now == then, f"{path}: VERSION {then['version']!r} -> {now['version']!r}; {UPDATE}"


def test_every_asset_code_version_names_current_module_versions():
    from pipelines.definitions import defs

    versions = {m.rsplit(".", 1)[-1]: module_version(m) for m in versioned_modules()}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        name, declared = key.to_user_string(), graph.get(key).code_version
        if name in NOT_YET_DERIVED:
            continue
        parts = dict(part.rsplit("-", 1) for part in (declared or "").split("+") if "-" in part)
        assert parts and all(versions.get(m) == v for m, v in parts.items()), (
            f"{name}: code_version {declared!r} is not derived from ml/ VERSIONs {versions}; "
            "use code_version(\"ml.<module>\", …) from assets/versions.py"
        )


def test_code_version_names_each_module_and_its_version():
    from ml import features, preprocess

    assert code_version("ml.features", "ml.preprocess") == f"features-{features.VERSION}+preprocess-{preprocess.VERSION}"


def test_a_module_without_version_is_refused():
    with pytest.raises(ValueError, match="no top-level `VERSION"):
        module_version("ml")  # the package itself declares none


def test_docstrings_comments_and_version_do_not_count_but_logic_does():
    base = 'import x\nVERSION = "1"\n\ndef f(a):\n    return a + 1\n'
    reworded = (
        '"""A module."""\nimport x  # why\nVERSION = "2"\n"""Bump me."""\n\n\n'
        'def f(a):\n    """Add one."""\n    # because\n    return a + 1\n'
    )
    assert normalised_hash(base) == normalised_hash(reworded)
    assert normalised_hash(base) != normalised_hash(base.replace("a + 1", "a + 2"))
    assert normalised_hash('def f():\n    """Doc only."""\n') == normalised_hash("def f():\n    pass\n")
