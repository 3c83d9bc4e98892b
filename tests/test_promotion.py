"""Champion promotion is compare-and-swap: concurrent promotions produce exactly one champion."""

import threading

import pytest

from resources.mlflow_registry import CHAMPION_ALIAS, PromotionConflict


def _versions(registry, count: int) -> list[str]:
    client = registry.client()
    client.create_registered_model(registry.model_name)
    return [
        str(client.create_model_version(registry.model_name, source=f"file:///models/candidate-{i}").version)
        for i in range(count)
    ]


def test_two_concurrent_promotions_yield_one_champion(mlflow_registry):
    first, second = _versions(mlflow_registry, 2)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def promote(version: str) -> None:
        barrier.wait()
        try:
            outcomes[version] = mlflow_registry.promote(version, None, promoted_by=f"run-{version}", reason="race")
        except PromotionConflict as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=promote, args=(v,)) for v in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [v for v, o in outcomes.items() if not isinstance(o, Exception)]
    losers = [v for v, o in outcomes.items() if isinstance(o, PromotionConflict)]
    assert len(winners) == 1 and len(losers) == 1
    client = mlflow_registry.client()
    champion = client.get_model_version_by_alias(mlflow_registry.model_name, CHAMPION_ALIAS)
    assert str(champion.version) == winners[0]
    assert champion.tags["previous_version"] == "none"
    assert champion.tags["promoted_by"] == f"run-{winners[0]}"
    assert "promoted_by" not in client.get_model_version(mlflow_registry.model_name, losers[0]).tags


def test_promotion_against_a_stale_champion_is_refused(mlflow_registry):
    v1, v2, v3 = _versions(mlflow_registry, 3)
    mlflow_registry.promote(v1, None, promoted_by="a", reason="first")
    assert mlflow_registry.promote(v2, v1, promoted_by="b", reason="better") == v1
    with pytest.raises(PromotionConflict, match=f"champion is v{v2}, but v{v3} was evaluated against v{v1}"):
        mlflow_registry.promote(v3, v1, promoted_by="c", reason="judged against an old champion")
    assert mlflow_registry.champion_version() == v2


def test_promotion_takes_typed_candidates_and_champion_reads_back(mlflow_registry):
    v1, v2 = _versions(mlflow_registry, 2)
    assert mlflow_registry.champion() is None
    first = mlflow_registry.candidate(v1)
    assert not first.passed and first.evaluated_against is None and first.test_roc_auc is None, "no verdict recorded"
    assert mlflow_registry.promote(first, None, promoted_by="a", reason="first") is None
    assert mlflow_registry.promote(mlflow_registry.candidate(v2), mlflow_registry.champion(), promoted_by="b",
                                   reason="better") == v1
    champion = mlflow_registry.champion()
    assert champion.version == v2 and champion.model_uri == mlflow_registry.model_uri(v2)
