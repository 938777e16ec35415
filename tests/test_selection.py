"""The one selection rule, against hand-worked candidates (fractions, calibration split)."""

from __future__ import annotations

import pytest

from seqft_lightning.selection import check_rule
from seqft_lightning.selection import config_defaults
from seqft_lightning.selection import score as _score
from seqft_lightning.selection import select as _select

RULE, DELTA = config_defaults()  # conf/train.yaml's selection


def select(candidates, baseline_retained, rule=RULE, delta=DELTA):
    return _select(candidates, baseline_retained, rule, delta)


def score(candidate, baseline_retained, rule=RULE, delta=DELTA):
    return _score(candidate, baseline_retained, rule, delta)


def test_the_defaults_are_the_configs():
    assert (RULE, DELTA) == ("target_at_retained", 0.01)


def c(acc, target, retained):
    return {"acc": acc, "acc_target": target, "acc_retained": retained}


# baseline retained 0.970, delta 0.01 -> floor 0.960
CANDIDATES = [
    c(0.965, 0.969, 0.970),  # barely moves
    c(0.968, 0.980, 0.962),  # qualifies, higher target
    c(0.972, 0.990, 0.955),  # best overall and best target, but loses 1.5 pp retained
    c(0.960, 0.985, 0.950),
]


def test_target_at_retained_takes_the_best_target_within_delta():
    chosen = select(CANDIDATES, baseline_retained=0.970, delta=0.01)
    assert chosen.index == 1 and not chosen.fallback
    assert chosen.describe() == {"rule": "target_at_retained", "delta": 0.01, "fallback": False, "split": "calibration"}


def test_a_wider_delta_admits_more_and_overall_picks_overall():
    assert select(CANDIDATES, 0.970, delta=0.02).index == 2
    assert select(CANDIDATES, 0.970, rule="overall").index == 2
    assert select([c(0.9, 0.9, 0.9), c(0.95, 0.5, 0.99)], 0.0, rule="overall").index == 1


def test_fallback_is_the_best_retained_and_flagged():
    chosen = select(CANDIDATES[2:], baseline_retained=0.970, delta=0.01)
    assert chosen.index == 0 and chosen.fallback  # 0.955 > 0.950


def test_ties_go_to_the_earlier_candidate():
    same = [c(0.9, 0.95, 0.97), c(0.9, 0.95, 0.97)]
    assert select(same, 0.97).index == 0 and select(same, 0.97, rule="overall").index == 0
    # equal target: the higher retained wins before order
    assert select([c(0.9, 0.95, 0.965), c(0.9, 0.95, 0.97)], 0.97).index == 1


def test_score_orders_settings_as_select_does():
    scores = [score(x, 0.970) for x in CANDIDATES]
    assert scores.index(max(scores)) == select(CANDIDATES, 0.970).index
    assert scores[1] == pytest.approx(0.980) and scores[2] < 0 and scores[2] > scores[3]
    assert score(CANDIDATES[2], 0.970, rule="overall") == pytest.approx(0.972)


@pytest.mark.parametrize("rule, delta", [("test_acc", 0.01), ("overall", -0.1), ("overall", 2)])
def test_bad_rules_are_refused(rule, delta):
    with pytest.raises(ValueError, match="selection"):
        check_rule(rule, delta)
