"""The promotion decision (ml/promotion.py): metrics and behavioural results in, a verdict with reasons out."""

from ml.evaluate import BehaviouralResult
from ml.promotion import KEEP_CHAMPION, PROMOTE, REJECT, judge

OK = BehaviouralResult("invariance", True, "max change 0.0")
BAD = BehaviouralResult("directional", False, "rain lowered delay for 12% of flights")


def test_no_champion_a_candidate_at_the_baseline_passes():
    verdict = judge(0.70, 0.705, None, [OK])
    assert verdict.passed and verdict.beats_champion and verdict.reasons == ()


def test_each_failed_gate_gives_its_reason():
    verdict = judge(0.60, 0.70, 0.72, [OK, BAD], champion_version="3")
    assert not verdict.passed
    assert (verdict.beats_baseline, verdict.beats_champion, verdict.behaves) == (False, False, False)
    assert verdict.reasons == (
        "ROC AUC 0.6000 < baseline 0.7000 - 0.01",
        "ROC AUC 0.6000 < champion v3 0.7200",
        "directional: rain lowered delay for 12% of flights",
    )


def test_tolerances_are_the_gates_and_can_be_overridden():
    assert not judge(0.71, 0.70, 0.7101, [OK]).passed, "default: not below the champion at all"
    assert judge(0.71, 0.70, 0.7101, [OK], champion_tolerance=0.001).passed
    assert not judge(0.70, 0.75, None, [], baseline_tolerance=0.01).beats_baseline
    assert judge(0.70, 0.75, None, [], baseline_tolerance=0.1).passed


def test_outcome_tells_a_sound_candidate_that_is_not_better_from_a_faulty_one():
    assert judge(0.72, 0.70, 0.71, [OK]).outcome == PROMOTE
    assert judge(0.70, 0.70, 0.71, [OK], champion_version="3").outcome == KEEP_CHAMPION
    assert judge(0.60, 0.70, None, [OK]).outcome == REJECT, "below the baseline with no champion: nothing would serve"
    assert judge(0.60, 0.70, 0.71, [OK], champion_version="3").outcome == KEEP_CHAMPION, "the champion stays"
    assert judge(0.72, 0.70, 0.71, [BAD]).outcome == REJECT
