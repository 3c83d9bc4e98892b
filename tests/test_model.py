"""The PyTorch model unit: shapes, safe save/load, unknown categories, training on a real slice."""


import numpy as np
import pandas as pd
import pytest
import torch

from ml.contracts import AIRPORTS, FLIGHTS, PLANES, WEATHER
from ml.dataset import TEST, TRAIN, VALIDATION, WindowSpec, assign_splits, split_days
from ml.evaluate import behavioural_suite, classification_metrics, labels
from ml.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, build_features
from ml.model import WEIGHTS_FILE, ModelConfig, ModelUnit
from ml.parsing import parse_frame
from ml.preprocess import UNKNOWN_INDEX, Preprocessor
from ml.reference_data import read_table
from ml.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def three_weeks() -> pd.DataFrame:
    """Real features of 2013-01-01..21, split by time."""
    flights, weather = read_table("flights"), read_table("weather")
    keep = lambda t: t[(t.month == "1") & (t.day.astype(int) <= 21)].reset_index(drop=True)  # noqa: E731
    features = build_features(
        parse_frame(keep(flights), FLIGHTS, "f").frame,
        parse_frame(keep(weather), WEATHER, "w").frame,
        parse_frame(read_table("planes"), PLANES, "p").frame,
        parse_frame(read_table("airports"), AIRPORTS, "a").frame,
    )
    days = sorted(features["date"].unique())
    return assign_splits(features, split_days(days, WindowSpec(validation_days=3, test_days=4)))


@pytest.fixture(scope="module")
def trained(three_weeks):
    parts = {s: three_weeks[three_weeks.split == s] for s in (TRAIN, VALIDATION, TEST)}
    return train_model(parts[TRAIN], parts[VALIDATION], TrainConfig(epochs=6, patience=2)), parts


def test_network_output_shape(three_weeks):
    pre = Preprocessor.fit(three_weeks, CATEGORICAL_FEATURES, NUMERIC_FEATURES)
    unit = ModelUnit.create(pre, ModelConfig())
    cats, numbers = pre.transform(three_weeks.head(7))
    assert cats.shape == (7, len(CATEGORICAL_FEATURES)) and numbers.shape == (7, 2 * len(NUMERIC_FEATURES))
    logits = unit.network(torch.from_numpy(cats), torch.from_numpy(numbers))
    assert logits.shape == (7,)


def test_unknown_carrier_and_airport_use_the_unknown_bucket(three_weeks):
    pre = Preprocessor.fit(three_weeks, CATEGORICAL_FEATURES, NUMERIC_FEATURES)
    odd = three_weeks.head(2).assign(carrier="ZZ", dest="XYZ")
    cats, _ = pre.transform(odd)
    assert (cats[:, 0] == UNKNOWN_INDEX).all() and (cats[:, 2] == UNKNOWN_INDEX).all()
    assert np.isfinite(ModelUnit.create(pre, ModelConfig()).predict_proba(odd)).all()


def test_training_learns_and_is_reproducible(trained, three_weeks):
    result, parts = trained
    auc = classification_metrics(labels(parts[TEST]), result.unit.predict_proba(parts[TEST]))["roc_auc"]
    assert auc > 0.6, auc
    assert result.best_epoch >= 1 and result.history[0].samples_per_s > 0
    again = train_model(parts[TRAIN], parts[VALIDATION], TrainConfig(epochs=6, patience=2))
    np.testing.assert_allclose(
        again.unit.predict_proba(parts[TEST]), result.unit.predict_proba(parts[TEST]), rtol=1e-5
    )


def test_the_ensemble_is_the_mean_of_members_trained_apart(trained):
    """Each member keeps its own best epoch and differs from the others; the unit's logit is their mean."""
    from ml.model import members

    result, parts = trained
    nets = members(result.unit.network)
    assert len(nets) == ModelConfig().members == 3
    assert sorted({s.member for s in result.history}) == [0, 1, 2]
    cats, numbers = (torch.from_numpy(a) for a in result.unit.preprocessor.transform(parts[TEST].head(200)))
    with torch.no_grad():
        each = torch.stack([net(cats, numbers) for net in nets])
        whole = result.unit.network(cats, numbers)
    assert float((each[0] - each[1]).abs().max()) > 1e-3  # not one network three times
    torch.testing.assert_close(whole, each.mean(dim=0))
    expected = torch.sigmoid(whole / result.unit.temperature).numpy()
    np.testing.assert_allclose(result.unit.predict_proba(parts[TEST].head(200)), expected, rtol=1e-5)


def test_the_fused_scorer_gives_the_members_mean_and_follows_new_weights(trained):
    """Scoring runs the ensemble folded into one network (``FusedEnsemble``): the same logits as the members
    one by one, unknown categories and missing numbers included, and never stale after weights change."""
    from ml.model import FusedEnsemble, members

    result, parts = trained
    unit = result.unit
    frame = parts[TEST].head(300).reset_index(drop=True).copy()
    frame.loc[0, "carrier"] = "ZZ"
    frame.loc[1, ["temp", "precip"]] = np.nan
    cats, numbers = (torch.from_numpy(a) for a in unit.preprocessor.transform(frame))
    with torch.no_grad():
        torch.testing.assert_close(FusedEnsemble(unit.network)(cats, numbers), unit.network(cats, numbers), rtol=1e-5, atol=1e-5)
    assert isinstance(unit.scorer(), FusedEnsemble) and unit.scorer() is unit.scorer()
    before = unit.predict_proba(frame)
    with torch.no_grad():
        members(unit.network)[1].mlp[-1].bias.add_(3.0)  # one member now says "late" far more often
    try:
        after = unit.predict_proba(frame)
        assert (after > before).all()
        with torch.no_grad():
            expected = torch.sigmoid(unit.network(cats, numbers) / unit.temperature).numpy()
        np.testing.assert_allclose(after, expected, rtol=1e-5)
    finally:
        with torch.no_grad():
            members(unit.network)[1].mlp[-1].bias.sub_(3.0)


def test_a_unit_saved_before_ensembles_loads_as_one_network(trained, tmp_path):
    """A registered champion from before ``members`` existed (one network, no ``members`` in unit.json) still loads."""
    import json

    from ml.model import DelayNet

    _, parts = trained
    pre = Preprocessor.fit(parts[TRAIN], CATEGORICAL_FEATURES, NUMERIC_FEATURES)
    single = ModelUnit.create(pre, ModelConfig(members=1))
    single.save(tmp_path / "old")
    description = json.loads((tmp_path / "old" / "unit.json").read_text())
    del description["config"]["members"]
    (tmp_path / "old" / "unit.json").write_text(json.dumps(description))
    loaded = ModelUnit.load(tmp_path / "old")
    assert isinstance(loaded.network, DelayNet)
    np.testing.assert_array_equal(loaded.predict_proba(parts[TEST]), single.predict_proba(parts[TEST]))


def test_save_and_load_give_equal_predictions_with_weights_only(trained, tmp_path):
    result, parts = trained
    result.unit.save(tmp_path / "unit")
    # the weights file is a plain state_dict: loadable with weights_only=True, no pickled classes
    state = torch.load(tmp_path / "unit" / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = ModelUnit.load(tmp_path / "unit")
    np.testing.assert_array_equal(loaded.predict_proba(parts[TEST]), result.unit.predict_proba(parts[TEST]))


def test_precipitation_can_only_raise_the_delay_probability(trained):
    result, parts = trained
    sample = parts[TEST].head(300)
    previous = result.unit.predict_proba(sample.assign(precip=0.0))
    for rain in (0.01, 0.05, 0.2, 1.0, 5.0):
        current = result.unit.predict_proba(sample.assign(precip=rain))
        assert (current >= previous - 1e-6).all()
        previous = current


def test_behavioural_suite_on_the_trained_model(trained):
    result, parts = trained
    outcomes = {b.name: b for b in behavioural_suite(result.unit.predict_proba, parts[TEST].head(500))}
    assert outcomes["invariance_flight_number"].passed
    assert outcomes["directional_precipitation"].passed


def test_behavioural_suite_catches_a_model_that_reads_the_flight_number(three_weeks):
    sample = three_weeks.head(200)
    by_number = lambda f: (f["flight"].astype(float).to_numpy() % 7) / 7  # noqa: E731
    outcomes = {b.name: b for b in behavioural_suite(by_number, sample)}
    assert not outcomes["invariance_flight_number"].passed
    rain_hater = lambda f: 1 - np.clip(f["precip"].astype(float).fillna(0).to_numpy(), 0, 1)  # noqa: E731
    assert not {b.name: b for b in behavioural_suite(rain_hater, sample)}["directional_precipitation"].passed


def test_scoring_records_equals_scoring_the_frame(trained):
    """The online path (a list of mappings, no DataFrame) gives the batch path's numbers, unknowns and nulls included."""
    result, parts = trained
    frame = parts[TEST].head(300).reset_index(drop=True).copy()
    frame.loc[0, "carrier"] = "ZZ"
    frame.loc[1, "temp"] = np.nan
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]
    assert np.array_equal(result.unit.predict_records(records), result.unit.predict_proba(frame))


def test_a_unit_is_verified_by_its_digest_before_it_is_loaded(trained, tmp_path):
    import torch

    from ml.model import UnitIntegrityError, unit_digest, verify_unit

    unit_dir = trained[0].unit.save(tmp_path / "unit")
    digest = unit_digest(unit_dir)
    verify_unit(unit_dir, digest)
    assert ModelUnit.load(unit_dir, expected_digest=digest) is not None

    (unit_dir / "unit.json").write_text((unit_dir / "unit.json").read_text().replace('"dropout"', '"dropout" '))
    with pytest.raises(UnitIntegrityError, match="does not match the registered"):
        ModelUnit.load(unit_dir, expected_digest=digest)

    pickled = tmp_path / "pickled"
    trained[0].unit.save(pickled)
    marker = tmp_path / "marker"
    torch.save({"payload": _Payload(str(marker))}, pickled / "weights.pt")
    with pytest.raises(UnitIntegrityError, match="not plain tensor weights"):
        ModelUnit.load(pickled)
    assert not marker.exists()


class _Payload:
    """Would write a marker file if anything unpickled it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_expected_calibration_error_on_known_bins():
    from ml.evaluate import expected_calibration_error

    # bin [0.2, 0.267): 4 flights at 0.25, 1 late → gap 0; bin [0.733, 0.8): 2 flights at 0.75, none late → gap 1.5
    y = np.array([1, 0, 0, 0, 0, 0])
    p = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75])
    assert expected_calibration_error(y, p) == pytest.approx(1.5 / 6)
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    assert expected_calibration_error((rng.random(200_000) < p).astype(int), p) < 0.01


def test_temperature_is_fitted_saved_and_applied_by_every_scorer(trained, tmp_path):
    """An overconfident net (logits ×3) gets T ≈ 3 back; the saved unit scores with it, frame and records alike."""
    from ml.model import fit_temperature

    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, 50_000)
    y = (rng.random(50_000) < 1 / (1 + np.exp(-true_logits))).astype(np.float32)
    assert fit_temperature(torch.tensor(3 * true_logits), torch.tensor(y)) == pytest.approx(3.0, rel=0.05)

    result, parts = trained
    assert result.unit.temperature > 0 and result.unit.temperature != 1.0
    frame = parts[TEST].head(200).reset_index(drop=True)
    loaded = ModelUnit.load(result.unit.save(tmp_path / "unit"))
    assert loaded.temperature == result.unit.temperature
    np.testing.assert_array_equal(loaded.predict_proba(frame), result.unit.predict_proba(frame))
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]
    assert np.array_equal(loaded.predict_records(records), loaded.predict_proba(frame))
    loaded.temperature = 1.0
    assert not np.array_equal(loaded.predict_proba(frame), result.unit.predict_proba(frame))


def test_an_evaluation_judges_the_candidate_on_the_same_rows_as_the_baseline_and_the_champion(trained):
    """`ml.evaluation.evaluate_candidate`: no Dagster, no MLflow; the figures are the ones each scorer gives."""
    from ml.evaluate import Baseline
    from ml.evaluation import EvaluationSettings, evaluate_candidate
    from ml.features import FEATURE_COLUMNS
    from ml.promotion import KEEP_CHAMPION

    result, parts = trained
    unit, train, test = result.unit, parts[TRAIN], parts[TEST]
    features = [*unit.preprocessor.categorical, *unit.preprocessor.numeric]
    settings = EvaluationSettings(seed=7, behaviour_sample=500)

    alone = evaluate_candidate(unit.predict_proba, features, train, test, settings=settings)
    assert alone.metrics == classification_metrics(labels(test), unit.predict_proba(test))
    assert alone.baseline == classification_metrics(labels(test), Baseline(seed=7).fit(train).predict_proba(test))
    assert alone.champion is None and alone.champion_description() == "no champion yet"
    assert [b.name for b in alone.behaviour] == [b.name for b in behavioural_suite(unit.predict_proba, test.head(50))]
    assert alone.importance.test_roc_auc == pytest.approx(alone.roc_auc) and alone.importance.groups
    assert list(alone.example.columns) == list(FEATURE_COLUMNS) and len(alone.example) == 20
    assert len(alone.reference) == min(10_000, len(train)) and alone.test_rows == len(test)
    assert alone.summary()["champion_test_roc_auc"] == "n/a" and alone.summary()["evaluated_against_champion"] == "none"

    itself = evaluate_candidate(unit.predict_proba, features, train, test, unit.predict_proba, "3", settings)
    assert itself.champion == itself.metrics and itself.champion_gain.estimate == 0.0
    assert not itself.verdict.beats_champion and itself.verdict.outcome == KEEP_CHAMPION, "no gain: the champion stays"

    oracle = evaluate_candidate(unit.predict_proba, features, train, test, lambda f: labels(f).astype(float), "3", settings)
    assert oracle.champion["roc_auc"] == 1.0 and not oracle.verdict.beats_champion
    assert oracle.champion_gain.high < 0 and oracle.champion_gain.flights == len(test)
    assert oracle.verdict.outcome == KEEP_CHAMPION and any("champion v3" in r for r in oracle.verdict.reasons)
    assert oracle.champion_description().startswith(f"model {oracle.roc_auc:.4f} vs champion v3 1.0000, gain -")

    noisy = evaluate_candidate(lambda f: labels(f) * 0.2 + unit.predict_proba(f) * 0.8, features, train, test,
                               unit.predict_proba, "3", settings)
    assert noisy.champion_gain.low > 0 and noisy.verdict.beats_champion, "a candidate better beyond the noise"
    assert noisy.summary()["champion_gain"] == noisy.champion_gain.describe()
    assert noisy.gain_record()["test_days"] == [test["date"].min(), test["date"].max()] and alone.gain_record() is None
