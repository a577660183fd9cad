"""The pieces of evidence a does-it-learn verdict weighs, each a rule with a stated threshold.

Each function reads the runs of one conv implementation in one setting and returns an `Evidence`:
what the rule saw, in words that claim no more than the statistics do, and which way it points:

    SUPPORTS   the interval lies on the learning side of the rule's bar
    AGAINST    the whole interval lies on the other side (or an exact zero): a defect shown
    NOT_SHOWN  the interval straddles the bar, or there is no interval (n < 2): nothing shown either way
    ABSENT     the runs did not record this measurement

The rules (accuracies as fractions, one value per seed):

- gain: full training (probe=none) minus conv-frozen-at-init (probe=frozen_conv), the random-features
  baseline. Two-sided `CONFIDENCE` Welch-Satterthwaite interval of the difference of means.
- frozen_fc: with the FC layers frozen at init only the convs can fit the labels. Two-sided Student-t
  interval of the mean against the bar `CHANCE + NEAR_CHANCE_MARGIN`.
- drift (per conv layer): mean relative weight drift ||W - W0|| / ||W0|| of the probe=none runs
  above `DRIFT_MIN`. A zero or detached weight gradient leaves it exactly 0.
- redraw (per conv layer, or all convs at once): the test accuracy a trained network loses when that
  layer's weights are drawn again from their init, paired per seed. A network that keeps all but
  `REDRAW_KEEP` of its accuracy (whole interval below it) does not use what the layer learned. Read
  only when full training beats chance: a network at chance has nothing to lose.
- baseline: frozen_conv's interval above the bar: the network trains at all in this setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from convlab.learn.stats import mean_interval, summarize, welch_difference

CHANCE = 0.10  # MNIST and Fashion-MNIST both have 10 balanced classes
NEAR_CHANCE_MARGIN = 0.10  # the bar is 20%: bias-only learning or noise stays below
BAR = CHANCE + NEAR_CHANCE_MARGIN
DRIFT_MIN = 1e-3
REDRAW_KEEP = 0.05  # a drop smaller than 5 pp when a layer is re-drawn: the layer's weights are not used
CONFIDENCE = 0.95
LN10 = math.log(10)  # the loss of a network that spreads its bets evenly over 10 classes


class Points(Enum):
    SUPPORTS = "supports"
    AGAINST = "against"
    NOT_SHOWN = "not shown"
    ABSENT = "absent"


@dataclass(frozen=True)
class Evidence:
    """One rule's reading. rule: 'gain', 'frozen_fc', 'drift', 'redraw', 'baseline'; layer: 'conv1', ...
    or None for the whole network; text: one clause for the report."""

    rule: str
    layer: str | None
    points: Points
    text: str


def pct_interval(interval: tuple[float, float] | None) -> str:
    """'95% CI 77.5 to 82.5' (percent of fractions), or 'no CI: n < 2'."""
    if interval is None:
        return "no CI: n < 2"
    return f"{CONFIDENCE:.0%} CI {interval[0] * 100:.1f} to {interval[1] * 100:.1f}"


def zero_spread(values: Sequence[float]) -> bool:
    """n >= 2 values, all equal: an interval of width 0 that tests nothing."""
    return len(values) >= 2 and max(values) == min(values)


def degenerate(values: Sequence[float]) -> bool:
    """Zero spread at or below the bar: every seed gave the same chance-level accuracy."""
    return zero_spread(values) and values[0] <= BAR


def gain(full: Sequence[float], frozen_conv: Sequence[float]) -> Evidence:
    """Does training the convs pay? none minus frozen_conv, Welch interval and p-value."""
    if degenerate(full) and degenerate(frozen_conv):
        return Evidence(
            "gain",
            None,
            Points.NOT_SHOWN,
            f"no gain over frozen_conv shown: none {full[0]:.1%} and frozen_conv {frozen_conv[0]:.1%} in "
            "every seed (zero spread, nothing to test)",
        )
    diff = welch_difference(full, frozen_conv, CONFIDENCE)
    interval = None if diff.low is None else (diff.low, diff.high)
    p_text = "" if diff.p_value is None else f", Welch p={diff.p_value:.2g}"
    stats = f"{pct_interval(interval)}{p_text}, n={diff.n_a}+{diff.n_b}"
    if interval is not None and interval[0] > 0:
        return Evidence(
            "gain",
            None,
            Points.SUPPORTS,
            f"full training beats frozen_conv by {diff.estimate * 100:+.1f} pp ({stats})",
        )
    if interval is not None and interval[1] < 0:
        return Evidence(
            "gain",
            None,
            Points.AGAINST,
            f"full training is worse than frozen_conv by {-diff.estimate * 100:.1f} pp ({stats}): "
            "training the convs makes the network worse than leaving them at init",
        )
    return Evidence(
        "gain",
        None,
        Points.NOT_SHOWN,
        f"no gain over frozen_conv shown: {diff.estimate * 100:+.1f} pp ({stats})",
    )


def frozen_fc(values: Sequence[float]) -> Evidence:
    """Do the convs learn on their own? frozen_fc's mean interval against the 20% bar."""
    mean = summarize(values).mean
    if degenerate(values):
        return Evidence(
            "frozen_fc",
            None,
            Points.NOT_SHOWN,
            f"frozen_fc {mean:.1%} in every seed: zero spread at chance, a degenerate interval tests nothing "
            "(the network predicts one class?)",
        )
    interval = mean_interval(values, CONFIDENCE)
    stats = f"{mean:.1%} ({pct_interval(interval)}, n={len(values)})"
    if interval is not None and interval[0] > BAR:
        return Evidence(
            "frozen_fc", None, Points.SUPPORTS, f"frozen_fc reaches {stats}, above the {BAR:.0%} bar"
        )
    if interval is not None and interval[1] < BAR:
        return Evidence(
            "frozen_fc",
            None,
            Points.AGAINST,
            f"frozen_fc stays near chance: {stats}, below the {BAR:.0%} bar",
        )
    return Evidence("frozen_fc", None, Points.NOT_SHOWN, f"frozen_fc not shown above {BAR:.0%}: {stats}")


def baseline(frozen_conv: Sequence[float]) -> Evidence:
    """Does the network train at all here? frozen_conv (the FC layers on random conv features)."""
    mean = summarize(frozen_conv).mean
    interval = mean_interval(frozen_conv, CONFIDENCE)
    stats = f"{mean:.1%} ({pct_interval(interval)}, n={len(frozen_conv)})"
    if interval is not None and interval[0] > BAR:
        return Evidence("baseline", None, Points.SUPPORTS, f"frozen_conv reaches {stats}")
    if (interval is not None and interval[1] < BAR) or zero_spread(frozen_conv) and mean <= BAR:
        return Evidence("baseline", None, Points.AGAINST, f"frozen_conv stays at {stats}")
    return Evidence("baseline", None, Points.NOT_SHOWN, f"frozen_conv not shown above {BAR:.0%}: {stats}")


def drift(layer: str, values: Sequence[float]) -> Evidence:
    """Did the layer's weights move in full training? Mean drift against `DRIFT_MIN`."""
    if not values:
        return Evidence("drift", layer, Points.ABSENT, f"{layer}: weight drift not recorded")
    mean = summarize(values).mean
    if mean > DRIFT_MIN:
        return Evidence("drift", layer, Points.SUPPORTS, f"{layer}: weights moved (drift {mean:.3f})")
    return Evidence(
        "drift",
        layer,
        Points.AGAINST,
        f"{layer}: weights did not move (drift {mean:.3f}, needs > {DRIFT_MIN:g})",
    )


def redraw(layer: str | None, drops: Sequence[float], trained: bool = True) -> Evidence:
    """Does the trained network use the layer's weights? Accuracy lost when they are re-drawn, per seed.

    layer None: all conv layers re-drawn at once ("the convs"). trained: full training's interval lies
    above the bar. A network at chance has no accuracy to lose, so a small drop then shows nothing: the
    rule reads not shown rather than blame the layer's use of its weights.
    """
    what = layer or "the convs"
    if not drops:
        return Evidence("redraw", layer, Points.ABSENT, f"{what}: re-drawn accuracy not recorded")
    mean = summarize(drops).mean
    interval = mean_interval(drops, CONFIDENCE)
    stats = f"{pct_interval(interval)}, n={len(drops)}"
    if not trained:
        return Evidence(
            "redraw",
            layer,
            Points.NOT_SHOWN,
            f"{what}: re-drawing the weights costs {mean * 100:.1f} pp ({stats}); this tells nothing, since "
            "the trained network is not above chance and has no accuracy to lose",
        )
    if interval is not None and interval[0] > 0:
        return Evidence(
            "redraw",
            layer,
            Points.SUPPORTS,
            f"{what}: re-drawing the weights costs {mean * 100:.1f} pp ({stats})",
        )
    if interval is not None and interval[1] < REDRAW_KEEP:
        return Evidence(
            "redraw",
            layer,
            Points.AGAINST,
            f"{what}: re-drawing the weights keeps the accuracy (drop {mean * 100:.1f} pp, {stats}, "
            f"under {REDRAW_KEEP * 100:.0f} pp): the network does not use what {what} learned",
        )
    return Evidence(
        "redraw",
        layer,
        Points.NOT_SHOWN,
        f"{what}: re-drawing the weights costs {mean * 100:.1f} pp ({stats})",
    )
