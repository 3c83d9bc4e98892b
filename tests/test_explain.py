"""Explanations of single predictions (ml/explain.py) and `POST /explain` through the service's ASGI app."""

import numpy as np
import pandas as pd
import pytest

from serving.schema import records_from_features
from tests.serving_helpers import TOKEN, january_features, train_small_unit


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """Real features of 2013-01-01..20: the training days include rain (the 1st to the 10th are dry, and
    the model clips every number to its training range)."""
    return january_features(last_day=20)


@pytest.fixture(scope="module")
def trained(features, tmp_path_factory):
    """(unit dir, unit): a small real model trained on real January days."""
    return train_small_unit(features, tmp_path_factory.mktemp("unit"))


@pytest.fixture(scope="module")
def records(features) -> list[dict]:
    return records_from_features(features.sample(n=40, random_state=3).reset_index(drop=True))


def test_explanations_name_the_units_features_and_add_up_to_the_logit(trained, records):
    from ml.explain import attributions, explain_records

    _, unit = trained
    features, per_feature, logits, base_logits = attributions(unit, records, steps=64)
    assert features == [*unit.preprocessor.categorical, *unit.preprocessor.numeric]
    gaps = np.abs(per_feature.sum(axis=1) - (logits - base_logits))
    assert gaps.max() < 0.02 * max(1.0, np.abs(logits - base_logits).max()), "integrated gradients' completeness"

    explained = explain_records(unit, records, top_k=4)
    assert np.allclose([e.delay_probability for e in explained], unit.predict_records(records), atol=1e-6)
    for e in explained:
        sizes = [abs(c.attribution) for c in e.contributions]
        assert len(sizes) == 4 and sizes == sorted(sizes, reverse=True)
        assert {c.feature for c in e.contributions} <= set(features)


def test_heavy_precipitation_at_the_origin_contributes_positively(trained, records):
    from ml.explain import attributions

    _, unit = trained
    wet = [{**r, "precip": 0.5} for r in records]
    features, per_feature, _, _ = attributions(unit, wet)
    assert (per_feature[:, features.index("precip")] > 0).all(), "0.5 in/h at the origin pushes towards late"
    dry = [{**r, "precip": 0.0} for r in records]
    _, dry_attribution, _, _ = attributions(unit, dry)
    assert (per_feature[:, features.index("precip")] > dry_attribution[:, features.index("precip")]).all()


def test_flight_number_contributes_nothing(trained, records):
    from ml.explain import attributions

    _, unit = trained
    features, per_feature, _, _ = attributions(unit, records)
    renumbered = [{**r, "flight": (int(r["flight"]) % 9000) + 1000} for r in records]
    _, again, _, _ = attributions(unit, renumbered)
    assert "flight" not in features and "date" not in features
    assert np.array_equal(per_feature, again), "the flight number is an identifier, not a feature"


def test_a_missing_value_is_attributed_to_its_feature(trained, records):
    """A missing number's flag column is summed into the feature: a missing pressure is explained as 'pressure'."""
    from ml.explain import attributions

    _, unit = trained
    present = [{**r, "pressure": 1013.0} for r in records[:10]]
    missing = [{**r, "pressure": None} for r in records[:10]]
    features, with_value, _, _ = attributions(unit, present)
    _, without, _, _ = attributions(unit, missing)
    column = features.index("pressure")
    assert not np.allclose(with_value[:, column], without[:, column])
    assert np.abs(without[:, column]).max() > 0


@pytest.fixture
def service(service_model, tmp_path, monkeypatch):
    """The service class, called directly, serving the session's in-process model (its ASGI app can be built
    once per process: tests/test_serving.py does, and the served-process test covers /explain over HTTP)."""
    monkeypatch.setenv("SERVICE_API_TOKEN", TOKEN)
    monkeypatch.setenv("PREDICTION_LOG_URL", str(tmp_path / "predictions"))
    from serving.service import FlightDelay

    instance = FlightDelay()
    yield instance
    instance.close_prediction_log()


def test_explain_endpoint_scores_like_predict_and_is_bounded(service, records):
    from pydantic import ValidationError

    from serving.explain import MAX_EXPLAIN_FLIGHTS, ExplainRequest
    from serving.schema import Flight
    from serving.service import EXPLAIN_SLOTS

    flights = [Flight(**r) for r in records[:3]]
    explained = service.explain(flights=flights, top_k=3)
    predicted = service.score(flights)
    assert np.allclose([e.delay_probability for e in explained], [p.delay_probability for p in predicted], atol=1e-6)
    assert all(len(e.contributions) == 3 and e.model_version == predicted[0].model_version for e in explained)

    with pytest.raises(ValidationError, match="at most"):
        ExplainRequest(flights=[records[0]] * (MAX_EXPLAIN_FLIGHTS + 1))
    with pytest.raises(ValidationError):
        ExplainRequest(flights=[{**records[0], "dep_delay": 5}])
    with pytest.raises(ValidationError):
        ExplainRequest(flights=[])

    assert EXPLAIN_SLOTS.try_acquire()  # the worker's explanation slot is taken
    try:
        busy = service.explain(flights=flights[:1], top_k=3)
    finally:
        EXPLAIN_SLOTS.release()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert len(service.explain(flights=flights[:1], top_k=3)) == 1, "the slot is free again"
