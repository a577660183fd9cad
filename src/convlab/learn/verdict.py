"""Does a conv implementation learn? Three pieces of evidence, each with a stated rule.

1. Its weights move: mean relative drift ||W - W0|| / ||W0|| of every conv layer
   after full training (probe=none) is above `DRIFT_MIN`. A zeroed or detached
   weight gradient leaves drift exactly 0.
2. Training the convs pays: test accuracy of full training (probe=none) minus
   conv-frozen-at-init (probe=frozen_conv), the random-features baseline where
   the FC layers do all the work. Holds when the whole two-sided 95% Welch
   confidence interval of the difference is above 0.
3. The convs learn on their own: with the FC layers frozen at init
   (probe=frozen_fc) only the convs can fit the labels; a conv with wrong
   gradients stays near chance. Holds when the whole two-sided 95% t interval of
   the mean accuracy is above chance + `NEAR_CHANCE_MARGIN`.

"learn" needs all three. With fewer than 2 seeds in a group there is no
interval: rules 2 and 3 fall back to the point estimate and the verdict is
marked provisional.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from convlab.learn.stats import mean_interval, summarize, welch_difference

CHANCE = 0.10  # MNIST and Fashion-MNIST both have 10 balanced classes
NEAR_CHANCE_MARGIN = 0.10  # frozen_fc must clear 20%: bias-only learning or noise stays below
DRIFT_MIN = 1e-3
CONFIDENCE = 0.95
REQUIRED_PROBES = ("none", "frozen_conv", "frozen_fc")


@dataclass(frozen=True)
class Verdict:
    """learns: True / False, or None when a probe is missing; text: one line for the report."""

    learns: bool | None
    provisional: bool
    text: str


def _pct_interval(interval: tuple[float, float] | None, scale: float = 100.0) -> str:
    if interval is None:
        return "no CI: n < 2"
    return f"{CONFIDENCE:.0%} CI {interval[0] * scale:.1f} to {interval[1] * scale:.1f}"


def _drift_clause(drift: Mapping[str, Sequence[float]]) -> tuple[bool, str]:
    means = {layer: summarize(values).mean for layer, values in drift.items() if values}
    listed = ", ".join(f"{layer} {mean:.3f}" for layer, mean in sorted(means.items()))
    if not means:
        return False, "conv weight drift not recorded"
    if all(mean > DRIFT_MIN for mean in means.values()):
        return True, f"conv weights moved (drift {listed})"
    return False, f"conv weights did not move (drift {listed}; needs > {DRIFT_MIN:g})"


def _baseline_clause(full: Sequence[float], frozen_conv: Sequence[float]) -> tuple[bool, str]:
    diff = welch_difference(full, frozen_conv, CONFIDENCE)
    interval = None if diff.low is None else (diff.low, diff.high)
    passed = diff.estimate > 0 if diff.low is None else diff.low > 0
    p_text = "" if diff.p_value is None else f", Welch p={diff.p_value:.2g}"
    detail = f"{diff.estimate * 100:+.1f} pp ({_pct_interval(interval)}{p_text}, n={diff.n_a}+{diff.n_b})"
    if passed:
        return True, f"full training beats frozen_conv by {detail}"
    return False, f"no clear gain over frozen_conv: {detail}"


def _frozen_fc_clause(frozen_fc: Sequence[float]) -> tuple[bool, str]:
    mean = summarize(frozen_fc).mean
    interval = mean_interval(frozen_fc, CONFIDENCE)
    threshold = CHANCE + NEAR_CHANCE_MARGIN
    passed = mean > threshold if interval is None else interval[0] > threshold
    detail = f"{mean:.1%} ({_pct_interval(interval)}, n={len(frozen_fc)}, chance {CHANCE:.0%})"
    if passed:
        return True, f"frozen_fc reaches {detail}"
    return False, f"frozen_fc stays near chance: {detail}, needs > {threshold:.0%}"


def judge(
    name: str, accuracies: Mapping[str, Sequence[float]], drift: Mapping[str, Sequence[float]]
) -> Verdict:
    """accuracies: probe -> test accuracy (fraction) per seed; drift: conv layer -> drift per none seed."""
    missing = [probe for probe in REQUIRED_PROBES if not accuracies.get(probe)]
    if missing:
        return Verdict(None, True, f"{name}: cannot judge: no runs for probe {', '.join(missing)}")
    clauses = [
        _baseline_clause(accuracies["none"], accuracies["frozen_conv"]),
        _frozen_fc_clause(accuracies["frozen_fc"]),
        _drift_clause(drift),
    ]
    learns = all(passed for passed, _ in clauses)
    provisional = min(len(accuracies[probe]) for probe in REQUIRED_PROBES) < 2
    if learns:
        text = f"{name}: conv layers learn — " + "; ".join(clause for _, clause in clauses)
    else:
        failed = [clause for passed, clause in clauses if not passed]
        held = [clause for passed, clause in clauses if passed]
        text = f"{name}: conv layers NOT shown to learn — " + "; ".join(failed)
        if held:
            text += " (what held: " + "; ".join(held) + ")"
    if provisional:
        text += " [provisional: fewer than 2 seeds, no confidence interval]"
    return Verdict(learns, provisional, text)
