"""The promotion decision (ml/promotion.py): metrics, the paired gain over the champion and behavioural results
in, a verdict with reasons out."""

from ml.evaluate import BehaviouralResult
from ml.evidence import Interval
from ml.promotion import KEEP_CHAMPION, PROMOTE, REJECT, judge

OK = BehaviouralResult("invariance", True, "max change 0.0")
BAD = BehaviouralResult("directional", False, "rain lowered delay for 12% of flights")


def gain(estimate: float, half: float) -> Interval:
    return Interval(estimate, estimate - half, estimate + half, 0.95, 20_000)


def test_no_champion_a_candidate_at_the_baseline_passes():
    verdict = judge(0.70, 0.705, None, [OK])
    assert verdict.passed and verdict.beats_champion and verdict.reasons == ()


def test_each_failed_gate_gives_its_reason():
    verdict = judge(0.60, 0.70, gain(-0.12, 0.01), [OK, BAD], champion_version="3")
    assert not verdict.passed
    assert (verdict.beats_baseline, verdict.beats_champion, verdict.behaves) == (False, False, False)
    assert verdict.reasons == (
        "ROC AUC 0.6000 < baseline 0.7000 - 0.01",
        "ROC AUC gain over champion v3 -0.1200 [-0.1300, -0.1100] (95% CI, 20,000 flights) is not above 0.005",
        "directional: rain lowered delay for 12% of flights",
    )


def test_a_gain_inside_the_noise_keeps_the_champion_and_one_beyond_it_promotes():
    assert not judge(0.74, 0.70, gain(0.004, 0.006), [OK], champion_version="3").beats_champion
    assert judge(0.74, 0.70, gain(0.004, 0.006), [OK], champion_version="3").outcome == KEEP_CHAMPION
    assert judge(0.74, 0.70, gain(0.012, 0.006), [OK], champion_version="3").outcome == PROMOTE
    assert not judge(0.74, 0.70, gain(0.012, 0.006), [OK], promotion_margin=0.01).beats_champion, "a margin raises the bar"
    assert judge(0.74, 0.70, gain(0.012, 0.006), [OK], promotion_margin=0.0).beats_champion
    assert not judge(0.70, 0.75, None, [], baseline_tolerance=0.01).beats_baseline
    assert judge(0.70, 0.75, None, [], baseline_tolerance=0.1).passed


def test_outcome_tells_a_sound_candidate_that_is_not_better_from_a_faulty_one():
    assert judge(0.72, 0.70, gain(0.02, 0.01), [OK]).outcome == PROMOTE
    assert judge(0.70, 0.70, gain(0.0, 0.01), [OK], champion_version="3").outcome == KEEP_CHAMPION
    assert judge(0.60, 0.70, None, [OK]).outcome == REJECT, "below the baseline with no champion: nothing would serve"
    assert judge(0.60, 0.70, gain(-0.1, 0.01), [OK], champion_version="3").outcome == KEEP_CHAMPION, "the champion stays"
    assert judge(0.72, 0.70, gain(0.02, 0.01), [BAD]).outcome == REJECT
