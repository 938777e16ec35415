"""The one rule that picks a setting (a merging λ, a retention strength, anything tuned), always
on the calibration split (test metrics never enter). Every knob trades target against retained
accuracy, and picking by overall accuracy drives every method toward "do not move from the
baseline", so the default rule is constrained:

* ``target_at_retained`` (default): among the settings whose retained accuracy is at least the
  baseline's minus ``delta`` (a fraction: 0.01 = 1 percentage point), the highest target accuracy;
  when none qualifies, the best retained accuracy, flagged as a fallback;
* ``overall``: the highest overall accuracy.
Ties go to the earlier candidate (callers list grids from the smallest step away from the baseline,
e.g. λ ascending). No torch: ``compare.py`` applies the same function to finished runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

RULES = ("target_at_retained", "overall")
#: Candidate keys the rule reads (fractions in [0, 1], on the calibration split).
ACC, TARGET, RETAINED = "acc", "acc_target", "acc_retained"


@dataclass(frozen=True)
class Selection:
    """The chosen candidate (its index in the list given) and how it was chosen."""

    index: int
    rule: str
    delta: float
    fallback: bool  # True: no candidate kept retained accuracy within delta; best retained taken

    def describe(self) -> dict[str, Any]:
        """For ``metrics.json`` and reports."""
        return {"rule": self.rule, "delta": self.delta, "fallback": self.fallback, "split": "calibration"}


def check_rule(rule: str, delta: float) -> None:
    """Raise ``ValueError`` (one line) for an unknown rule or a delta outside [0, 1]."""
    if rule not in RULES:
        raise ValueError(f"selection.rule={rule!r} is unknown; choose one of {list(RULES)}")
    if not isinstance(delta, (int, float)) or not 0 <= float(delta) <= 1:
        raise ValueError(f"selection.delta={delta!r} must be a fraction in [0, 1] (0.01 = 1 percentage point)")


def config_defaults() -> tuple[str, float]:
    """The ``selection`` rule and delta that ``conf/train.yaml`` sets, the one place they are defined (for
    readers of runs that carry no ``selection`` config)."""
    from omegaconf import OmegaConf

    from seqft_lightning.resolvers import project_root

    node = OmegaConf.load(f"{project_root()}/conf/train.yaml").selection
    return str(node.rule), float(node.delta)


def score(candidate: Mapping[str, float], baseline_retained: float, rule: str, delta: float) -> float:
    """The rule as one number to maximise (for a sweeper such as Optuna): ``overall``, the accuracy;
    ``target_at_retained``, the target accuracy when retained accuracy is within ``delta`` of the
    baseline's, else a negative number that grows with retained accuracy (as the fallback does)."""
    check_rule(rule, delta)
    if rule == "overall":
        return float(candidate[ACC])
    floor = baseline_retained - delta
    if candidate[RETAINED] >= floor - 1e-12:
        return float(candidate[TARGET])
    return float(candidate[RETAINED] - floor - 1e-6)


def select(candidates: Sequence[Mapping[str, float]], baseline_retained: float, rule: str, delta: float) -> Selection:
    """Pick one of ``candidates`` (calibration ``acc``, ``acc_target``, ``acc_retained``) by ``rule``;
    ``baseline_retained`` is the baseline's calibration retained accuracy."""
    check_rule(rule, delta)
    if not candidates:
        raise ValueError("select() needs at least one candidate")
    order = range(len(candidates))
    if rule == "overall":
        return Selection(max(order, key=lambda i: (candidates[i][ACC], -i)), rule, float(delta), False)
    qualified = [i for i in order if candidates[i][RETAINED] >= baseline_retained - delta - 1e-12]
    if qualified:
        best = max(qualified, key=lambda i: (candidates[i][TARGET], candidates[i][RETAINED], -i))
        return Selection(best, rule, float(delta), False)
    best = max(order, key=lambda i: (candidates[i][RETAINED], candidates[i][TARGET], -i))
    return Selection(best, rule, float(delta), True)
