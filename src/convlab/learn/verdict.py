"""Does a conv implementation learn? learns / does not learn / inconclusive, with the reason.

The evidence (rules and thresholds in `convlab.learn.evidence`) is weighed in this order; the first
step that applies decides:

1. inconclusive: a probe has no runs, or fewer than `MIN_SEEDS` seeds (no interval).
2. inconclusive: the network does not train in this setting: the frozen_conv baseline (FC layers on
   random conv features) does not beat chance, or nn.Conv2d's full training in the same setting does
   not. The init or the learning rate is at fault before the conv can be judged.
3. does not learn: any evidence points against learning: full training significantly worse than
   frozen_conv, frozen_fc's whole interval below the 20% bar, a conv layer whose weights do not move,
   a layer whose re-drawing keeps the accuracy.
4. learns: full training beats frozen_conv, frozen_fc clears the bar, every conv layer moves.
5. inconclusive: a probe's accuracies have zero spread at chance (every seed the same value): its
   interval is degenerate and tests nothing (the evidence that uses it counts as not shown).
6. inconclusive otherwise (an interval straddles its bar): when nn.Conv2d in the same setting is itself
   not shown to learn, the budget is too small; else more seeds or a larger budget would tell.

Hints (`convlab.learn.hints`) name the likely cause of what steps 2 and 3 found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from convlab.learn import evidence as ev
from convlab.learn.evidence import Evidence, Points
from convlab.learn.hints import Hint, hints_for
from convlab.learn.stats import mean_interval, summarize

REQUIRED_PROBES = ("none", "frozen_conv", "frozen_fc")
MIN_SEEDS = 2
LEAD_ORDER = ("gain", "drift", "redraw", "frozen_fc", "baseline")


class Outcome(Enum):
    LEARNS = "learns"
    DOES_NOT_LEARN = "does not learn"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Observations:
    """What the runs of one conv implementation in one setting measured (fractions, one value per seed).

    accuracies: probe -> test accuracy; drift: conv layer -> drift of each probe=none run;
    redraw_drops: conv layer (None: all convs at once) -> test accuracy minus re-drawn accuracy of each
    probe=none run; test_loss: probe -> test loss; budget: the setting's knobs and their values, e.g.
    {"data.train_subset": 2000, "trainer.max_epochs": 2}, named when the budget is too small.
    """

    name: str
    accuracies: Mapping[str, Sequence[float]]
    drift: Mapping[str, Sequence[float]] = field(default_factory=dict)
    redraw_drops: Mapping[str | None, Sequence[float]] = field(default_factory=dict)
    test_loss: Mapping[str, Sequence[float]] = field(default_factory=dict)
    budget: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """outcome with its one-line reason, every piece of evidence, and the hints it triggered."""

    name: str
    outcome: Outcome
    reason: str
    evidence: tuple[Evidence, ...] = ()
    hints: tuple[Hint, ...] = ()
    trains: bool | None = None  # full training beats chance (the reference's decides for its setting)

    @property
    def headline(self) -> str:
        return f"{self.name}: {self.outcome.value} — {self.reason}"

    @property
    def text(self) -> str:
        """Markdown: the headline as a list item, evidence and hints as sub-items."""
        lines = [f"- {self.headline}"]
        lines += [f"  - {item.text}" for item in self.evidence if item.rule != "baseline"]
        lines += [f"  - hint: {hint.text}" for hint in self.hints]
        return "\n".join(lines)


def gather(obs: Observations) -> list[Evidence]:
    """Every piece of evidence the runs allow: network-wide first, then per conv layer."""
    acc = obs.accuracies
    trained = beats_chance(acc["none"])
    items = [
        ev.baseline(acc["frozen_conv"]),
        ev.gain(acc["none"], acc["frozen_conv"]),
        ev.frozen_fc(acc["frozen_fc"]),
    ]
    # The network's order (results.json keeps it), input side first.
    layers = list(dict.fromkeys([*obs.drift, *(layer for layer in obs.redraw_drops if layer is not None)]))
    for layer in layers:
        items.append(ev.drift(layer, obs.drift.get(layer, ())))
        if layer in obs.redraw_drops:
            items.append(ev.redraw(layer, obs.redraw_drops[layer], trained))
    if not layers:
        items.append(ev.drift("conv layers", ()))
    if None in obs.redraw_drops and not any(layer in obs.redraw_drops for layer in layers):
        items.append(ev.redraw(None, obs.redraw_drops[None], trained))
    return items


def beats_chance(values: Sequence[float]) -> bool:
    """The whole mean interval above the bar (n >= 2)."""
    interval = mean_interval(values, ev.CONFIDENCE) if len(values) >= 2 else None
    return interval is not None and bool(interval[0] > ev.BAR)


def budget_advice(budget: Mapping[str, object]) -> str:
    knobs = ", ".join(f"{key} (now {value})" for key, value in budget.items())
    return f"raise {knobs}" if knobs else "raise data.train_subset, trainer.max_epochs or the number of seeds"


def judge(obs: Observations, reference: Verdict | None = None, is_reference: bool = False) -> Verdict:
    """The verdict for `obs`; `reference`: nn.Conv2d's verdict in the same setting and data, if it ran."""
    missing = [probe for probe in REQUIRED_PROBES if not obs.accuracies.get(probe)]
    if missing:
        return Verdict(obs.name, Outcome.INCONCLUSIVE, f"no runs for probe {', '.join(missing)}")
    counts = {probe: len(obs.accuracies[probe]) for probe in REQUIRED_PROBES}
    items = tuple(gather(obs))
    trains = beats_chance(obs.accuracies["none"])

    def verdict(outcome: Outcome, reason: str, budget_too_small: bool = False) -> Verdict:
        hints = hints_for(items, obs.test_loss, obs.budget, reference_not_learning=budget_too_small)
        return Verdict(obs.name, outcome, reason, items, tuple(hints), trains)

    few = {probe: n for probe, n in counts.items() if n < MIN_SEEDS}
    if few:
        listed = ", ".join(f"{probe} n={n}" for probe, n in few.items())
        return verdict(
            Outcome.INCONCLUSIVE, f"too few seeds ({listed}): an interval needs at least {MIN_SEEDS}"
        )
    base = next(item for item in items if item.rule == "baseline")
    if base.points is Points.AGAINST:
        return verdict(
            Outcome.INCONCLUSIVE,
            f"the network does not train in this setting: {base.text} — the init or the learning rate, "
            "before the conv can be judged",
        )
    if reference is not None and not is_reference and reference.trains is False:
        return verdict(
            Outcome.INCONCLUSIVE,
            f"nn.Conv2d itself does not beat chance in this setting ({reference.name}): the setting, not "
            "the layer; " + budget_advice(obs.budget),
            budget_too_small=True,
        )
    against = [item for item in items if item.points is Points.AGAINST]
    if against:
        # The most specific finding leads: a loss against the baseline or a layer that does not move
        # names the defect; frozen_fc near chance follows from any of them.
        against.sort(key=lambda item: LEAD_ORDER.index(item.rule))
        return verdict(Outcome.DOES_NOT_LEARN, against[0].text + _more(against))
    needed = [item for item in items if item.rule in ("gain", "frozen_fc", "drift")]
    if all(item.points is Points.SUPPORTS for item in needed):
        return verdict(Outcome.LEARNS, "gain over frozen_conv, frozen_fc above the bar, every conv moves")
    # Nothing decided it, and a probe's seeds all gave one chance-level value: its interval is degenerate.
    flat = [p for p in REQUIRED_PROBES if ev.degenerate(obs.accuracies[p])]
    if flat:
        listed = ", ".join(f"{p} {summarize(obs.accuracies[p]).mean:.1%}" for p in flat)
        return verdict(
            Outcome.INCONCLUSIVE,
            f"zero spread at chance ({listed} in every seed): a degenerate interval tests nothing "
            "(the network predicts one class?)",
        )
    unshown = "; ".join(item.text for item in needed if item.points is not Points.SUPPORTS)
    if is_reference:
        return verdict(
            Outcome.INCONCLUSIVE,
            f"the reference is not shown to learn at this budget ({unshown}): the budget is too small; "
            + budget_advice(obs.budget),
            budget_too_small=True,
        )
    if reference is not None and reference.outcome is not Outcome.LEARNS:
        return verdict(
            Outcome.INCONCLUSIVE,
            f"{unshown}; nn.Conv2d is not shown to learn in this setting either: the budget is too small; "
            + budget_advice(obs.budget),
            budget_too_small=True,
        )
    return verdict(Outcome.INCONCLUSIVE, f"{unshown}: more seeds or a larger budget would tell")


def _more(against: Sequence[Evidence]) -> str:
    return f" (and {len(against) - 1} more finding(s) below)" if len(against) > 1 else ""
