"""Versions that move with the code: an `ml/` module whose logic changed must bump its VERSION.

Each asset's `code_version` is derived from the VERSIONs of the `ml/` modules it wraps
(`assets/versions.py`), so a change that forgets the bump leaves Dagster calling old partitions
current. `tests/module_versions.json` records each module's VERSION with a hash of its logic.
"""

import pytest

from infra.code_versions import code_version, module_version
from tests.record_module_versions import RECORD, current, load_record, normalised_hash, versioned_modules

UPDATE = "update the record with `python -m tests.record_module_versions`"


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


def _not_named(asset_key, declared: str | None, fn) -> set[str]:
    """Versioned `ml` modules ``fn`` calls that ``declared`` does not name at their current VERSION."""
    from infra.code_versions import ml_modules_called
    from tests.record_module_versions import versioned_modules

    named = dict(part.rsplit("-", 1) for part in (declared or "").split("+") if "-" in part)
    called = ml_modules_called(fn) & set(versioned_modules())
    return {m for m in called if named.get(m.rsplit(".", 1)[-1]) != module_version(m)}


def test_every_asset_code_version_names_every_versioned_module_it_calls():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    checked = 0
    for assets_def in graph.assets_defs:
        if not assets_def.is_executable or assets_def.node_def is None:
            continue
        fn = assets_def.op.compute_fn.decorated_fn
        for key in assets_def.keys:
            missing = _not_named(key, assets_def.code_versions_by_key.get(key), fn)
            assert not missing, (
                f"{key.to_user_string()}: calls {sorted(missing)} but its code_version "
                f"{assets_def.code_versions_by_key.get(key)!r} does not name them; stack @derived_code_version "
                "(assets/versions.py) above its @dg.asset"
            )
            checked += 1
    assert checked >= 12


def test_a_hand_written_code_version_that_misses_a_called_module_is_caught(tmp_path, monkeypatch):
    """The check above fails where it should; the derivation follows helpers and their local imports."""
    import importlib

    from assets.versions import derived_code_version

    (tmp_path / "hand_assets.py").write_text(
        "import dagster as dg\n"
        "from ml.gates import DRIFT_COLUMNS\n\n"
        "def _verdict():\n    from ml.promotion import judge\n    return judge\n\n"
        "@dg.asset(code_version='gates-1')\n"
        "def hand():\n    _verdict()\n    return DRIFT_COLUMNS\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    hand = importlib.import_module("hand_assets").hand
    fn = hand.op.compute_fn.decorated_fn
    assert "ml.promotion" in _not_named(hand.key, hand.code_versions_by_key[hand.key], fn)
    derived = derived_code_version(hand)
    assert not _not_named(hand.key, derived.code_versions_by_key[hand.key], fn)
    assert f"promotion-{module_version('ml.promotion')}" in derived.code_versions_by_key[hand.key]


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
