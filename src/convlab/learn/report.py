"""`python -m convlab.report [SWEEP_DIR]`: does each conv implementation learn?

Reads every `results.json` under SWEEP_DIR (default: the newest sweep under
outputs/multirun), groups the runs by conv implementation and dataset, and
writes into SWEEP_DIR:

- `report.md`: per group the test accuracy of every probe (mean ± std over
  seeds, n), the re-drawn-conv accuracy, conv weight drift and epoch time of
  the fully trained runs, a verdict line (rules in `convlab.learn.verdict`) and the statistics
  used;
- `report.png`: accuracy per implementation and probe, mean ± std over seeds,
  one dot per seed, chance as a dashed line.

The markdown is also printed. Unreadable results files are skipped with a warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# A bare Figure renders with Agg and never touches pyplot's global backend: works headless (CI, clusters).
from matplotlib.figure import Figure

from convlab.conv import CONV_LAYERS
from convlab.learn.stats import summarize
from convlab.learn.verdict import (
    CHANCE,
    CONFIDENCE,
    DRIFT_MIN,
    NEAR_CHANCE_MARGIN,
    REQUIRED_PROBES,
    Verdict,
    judge,
)

SWEEPS_ROOT = Path("outputs/multirun")
REFERENCE_CONV = "torch"
DATA_ORDER = ("mnist", "fashion_mnist")


@dataclass
class Group:
    """All runs of one conv implementation on one dataset."""

    conv: str
    data: str
    accuracies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    redrawn: list[float] = field(default_factory=list)  # probe=none runs only
    drift: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # probe=none only
    epoch_s: list[float] = field(default_factory=list)  # probe=none runs that trained in their process
    schedules: set[tuple[int | None, int | None]] = field(default_factory=set)  # (train images, epochs)
    frozen_changed: int = 0  # runs whose frozen parameters were not bit-identical at the end
    # (probe, seed, train images, epochs) -> test accuracy: pairs runs with the reference conv's
    by_run: dict[tuple, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.conv} ({self.data})"


def load_results(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """Every readable results.json under sweep_dir, and a warning for each unreadable one."""
    results, skipped = [], []
    for path in sorted(sweep_dir.rglob("results.json")):
        try:
            result = json.loads(path.read_text())
            for key in ("conv", "probe", "data"):
                if not isinstance(result[key], str):
                    raise TypeError(f"{key} is not a string")
            float(result["metrics"]["test_acc"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            skipped.append(f"{path}: {type(error).__name__}: {error}")
            continue
        results.append(result)
    return results, skipped


def group_results(results: Sequence[dict]) -> list[Group]:
    """Groups ordered as the registry lists the convs (unknown names after), MNIST first."""
    groups: dict[tuple[str, str], Group] = {}
    for result in results:
        key = (result["conv"], result["data"])
        group = groups.setdefault(key, Group(*key))
        metrics = result["metrics"]
        schedule = (metrics.get("train_images"), metrics.get("epochs"))
        group.accuracies[result["probe"]].append(float(metrics["test_acc"]))
        group.schedules.add(schedule)
        group.by_run[(result["probe"], result.get("seed"), *schedule)] = float(metrics["test_acc"])
        if metrics.get("frozen_unchanged") is False:
            group.frozen_changed += 1
        if result["probe"] == "none":
            if metrics.get("redrawn_conv_test_acc") is not None:
                group.redrawn.append(float(metrics["redrawn_conv_test_acc"]))
            for layer, value in (metrics.get("conv_drift") or {}).items():
                group.drift[layer].append(float(value))
            if metrics.get("epoch_time_s") is not None:
                group.epoch_s.append(float(metrics["epoch_time_s"]))
    conv_rank = {name: i for i, name in enumerate(CONV_LAYERS)}
    data_rank = {name: i for i, name in enumerate(DATA_ORDER)}
    return sorted(
        groups.values(),
        key=lambda g: (conv_rank.get(g.conv, len(conv_rank)), g.conv, data_rank.get(g.data, 99), g.data),
    )


def format_cell(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """'97.0 ± 0.3 (3)': mean ± sample std (n); '97.0 (1)' for one value; '–' for none."""
    if not values:
        return "–"
    s = summarize(values)
    if s.n == 1:
        return f"{s.mean * scale:.{digits}f} (1)"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f} ({s.n})"


def probe_columns(groups: Sequence[Group]) -> list[str]:
    extra = sorted({probe for g in groups for probe in g.accuracies} - set(REQUIRED_PROBES))
    return [*REQUIRED_PROBES, *extra]


def reference_group(group: Group, groups: Sequence[Group]) -> Group | None:
    """The nn.Conv2d group on the same data as `group`, the one every comparison column is against."""
    return next((g for g in groups if (g.conv, g.data) == (REFERENCE_CONV, group.data)), None)


def gap_to_reference(group: Group, groups: Sequence[Group]) -> str:
    """'0.05 (9)': largest |test acc - torch's| in pp over runs with the same probe, seed and schedule."""
    reference = reference_group(group, groups)
    if reference is None or reference is group:
        return "–"
    paired = group.by_run.keys() & reference.by_run.keys()
    if not paired:
        return "–"
    gap = max(abs(group.by_run[key] - reference.by_run[key]) for key in paired)
    return f"{gap * 100:.2f} ({len(paired)})"


def epoch_ratio(group: Group, groups: Sequence[Group]) -> str:
    """'1.07×': mean epoch time of the fully trained runs over the reference conv's on the same data."""
    reference = reference_group(group, groups)
    if reference is None or not reference.epoch_s or not group.epoch_s:
        return "–"
    return f"{summarize(group.epoch_s).mean / summarize(reference.epoch_s).mean:.2f}×"


def markdown_table(groups: Sequence[Group]) -> str:
    probes = probe_columns(groups)
    layers = sorted({layer for g in groups for layer in g.drift})
    compare = any(g.conv == REFERENCE_CONV for g in groups) and len({g.conv for g in groups}) > 1
    header = ["conv", "data", "train images × epochs", *probes, "re-drawn conv"]
    header += [f"drift {layer}" for layer in layers]
    header += [f"max Δ vs {REFERENCE_CONV}"] if compare else []
    header += ["s/epoch", f"× {REFERENCE_CONV}"] if compare else ["s/epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        schedule = " / ".join(f"{images} × {epochs}" for images, epochs in sorted(g.schedules, key=str))
        row = [g.conv, g.data, schedule, *(format_cell(g.accuracies.get(p, [])) for p in probes)]
        row.append(format_cell(g.redrawn))
        row += [format_cell(g.drift.get(layer, []), scale=1.0, digits=3) for layer in layers]
        row += [gap_to_reference(g, groups)] if compare else []
        row.append(format_cell(g.epoch_s, scale=1.0, digits=2))
        row += [epoch_ratio(g, groups)] if compare else []
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def statistics_note() -> str:
    return "\n".join(
        [
            "- Cells: test accuracy in %, mean ± sample standard deviation over seeds (n in brackets). "
            "Re-drawn conv and drift come from the fully trained (probe=none) runs; "
            "drift is ||W - W0|| / ||W0|| per conv layer.",
            f"- max Δ vs {REFERENCE_CONV}: the largest test-accuracy difference (pp) to nn.Conv2d over runs "
            "with the same probe, seed and schedule (number of pairs in brackets).",
            f"- s/epoch: wall time of a training epoch (validation included) of the probe=none runs; "
            f"× {REFERENCE_CONV}: its mean over nn.Conv2d's on the same data. Only comparable between runs "
            "that shared the machine alike.",
            f"- *learn* needs all three: (1) every conv layer's mean drift > {DRIFT_MIN:g}; "
            f"(2) none − frozen_conv: the two-sided {CONFIDENCE:.0%} Welch–Satterthwaite t confidence "
            "interval of the difference of means (unequal variances; Welch's p-value shown) lies above 0; "
            f"(3) frozen_fc: the two-sided {CONFIDENCE:.0%} Student-t interval of the mean lies above "
            f"chance ({CHANCE:.0%}) + {NEAR_CHANCE_MARGIN:.0%}.",
            f"- Each test is at the {1 - CONFIDENCE:.0%} level on its own, no multiplicity correction. "
            "With fewer than 2 seeds there is no interval: the verdict uses point estimates and is marked "
            "provisional. Few seeds make wide intervals: more seeds (does_it_learn_full) narrow them.",
        ]
    )


VERDICT_LABELS = {True: "learns", False: "NOT shown to learn", None: "cannot judge"}


def write_figure(groups: Sequence[Group], verdicts: Sequence[Verdict], path: Path) -> None:
    """Grouped bars: one group per (conv, data), one bar per probe and re-drawn conv; error bars = std."""
    series = [(p, lambda g, p=p: g.accuracies.get(p, [])) for p in probe_columns(groups)]
    series.append(("re-drawn conv (after none)", lambda g: g.redrawn))
    width = 0.8 / len(series)
    fig = Figure(figsize=(max(7.5, 1.6 * len(groups) + 2), 5.0), layout="constrained")
    ax = fig.subplots()
    for i, (label, values_of) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        stats = [summarize(values_of(g)) if values_of(g) else None for g in groups]
        means = [100 * s.mean if s else 0.0 for s in stats]
        errors = [100 * s.std if s and s.n > 1 else 0.0 for s in stats]
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=label, color=f"C{i}")
        for x, g in zip(xs, groups, strict=True):
            seeds = values_of(g)
            ax.scatter([x] * len(seeds), [100 * v for v in seeds], s=8, color="black", zorder=3)
    ax.axhline(100 * CHANCE, color="grey", linestyle="--", linewidth=1, label=f"chance ({CHANCE:.0%})")
    labels = [
        f"{g.conv}\n{g.data}\n{VERDICT_LABELS[v.learns]}" for g, v in zip(groups, verdicts, strict=True)
    ]
    ax.set_xticks(range(len(groups)), labels)
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Does the conv learn? mean ± std over seeds, dots = seeds")
    # One legend row when the groups give it the width, two otherwise.
    fig.legend(loc="outside lower center", ncol=len(series) + 1 if len(groups) > 3 else 3, fontsize="small")
    fig.savefig(path, dpi=120)


def build_report(sweep_dir: Path) -> str:
    """Write report.md and report.png into sweep_dir and return the markdown."""
    results, skipped = load_results(sweep_dir)
    for warning in skipped:
        print(f"warning: skipped {warning}", file=sys.stderr)
    if not results:
        raise SystemExit(
            f"error: no readable results.json under {sweep_dir} "
            "(runs write it when they finish; is this a sweep directory?)"
        )
    groups = group_results(results)
    verdicts = [judge(g.name, g.accuracies, g.drift) for g in groups]
    warnings = [
        f"- {g.name}: {g.frozen_changed} run(s) changed parameters that were meant to be frozen"
        for g in groups
        if g.frozen_changed
    ]
    warnings += [f"- skipped {line}" for line in skipped]
    parts = [
        f"# Does the conv learn? {sweep_dir}",
        f"{len(results)} runs.",
        markdown_table(groups),
        "## Verdicts",
        "\n".join(f"- {v.text}" for v in verdicts),
    ]
    if warnings:
        parts += ["## Warnings", "\n".join(warnings)]
    parts += ["## Statistics", statistics_note(), "![accuracy per conv and probe](report.png)"]
    markdown = "\n\n".join(parts) + "\n"
    (sweep_dir / "report.md").write_text(markdown)
    write_figure(groups, verdicts, sweep_dir / "report.png")
    return markdown


def newest_sweep(root: Path = SWEEPS_ROOT) -> Path:
    """outputs/multirun/<date>/<time> with the latest name (Hydra's names sort by time)."""
    sweeps = sorted(path for path in root.glob("*/*") if path.is_dir())
    if not sweeps:
        raise SystemExit(f"error: no sweep under {root}; pass a directory: python -m convlab.report DIR")
    return sweeps[-1]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convlab.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="default: newest under outputs/multirun")
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir or newest_sweep()
    if not sweep_dir.is_dir():
        raise SystemExit(f"error: {sweep_dir} is not a directory")
    print(build_report(sweep_dir))
    print(f"wrote {sweep_dir / 'report.md'} and {sweep_dir / 'report.png'}")


if __name__ == "__main__":
    main()
