"""`python -m convlab.report [SWEEP_DIR]`: does each conv implementation learn?

Reads every `results.json` under SWEEP_DIR (default: the newest sweep under outputs/multirun),
groups the completed runs by conv implementation, dataset and experimental setting, and writes into
SWEEP_DIR:

- `report.md` (also printed): per group the test accuracy of every probe (mean ± std over seeds, n),
  the re-drawn-conv accuracy, conv weight drift and epoch time of the fully trained runs; a verdict
  per group (learns / does not learn / inconclusive, rules in `convlab.learn.verdict`) with each piece
  of evidence per conv layer and the hints it triggered; every run that is missing, failed, not
  completed or malformed, by path;
- `report.png`: accuracy per implementation and probe, the intervals the verdict uses, one dot per
  seed, chance and the 20% bar as lines;
- `filters.png` when the runs saved `filters.pt` (`convlab.training.filter_images`): conv1's filters
  at init and after training and one test digit's activation maps, per implementation.

Only comparable runs are averaged: a group is one setting (`setting` in results.json, or, for
results that predate it, the data subset sizes, epochs, batch size, optimiser and conv init read from
their config). Runs in other settings are reported in their own rows, and the report says how the
settings differ. Runs whose `status` is not "completed" are listed, never averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# A bare Figure renders with Agg and never touches pyplot's global backend: works headless (CI, clusters).
from matplotlib.figure import Figure

from convlab.conv import CONV_LAYERS
from convlab.learn.evidence import BAR, CHANCE, CONFIDENCE, DRIFT_MIN, NEAR_CHANCE_MARGIN, REDRAW_KEEP
from convlab.learn.figures import write_filters_figure
from convlab.learn.stats import mean_interval, summarize
from convlab.learn.verdict import MIN_SEEDS, REQUIRED_PROBES, Observations, Outcome, Verdict, judge

SWEEPS_ROOT = Path("outputs/multirun")
REFERENCE_CONV = "torch"
DATA_ORDER = ("mnist", "fashion_mnist")
COMPLETED = "completed"
# The config values that make two runs comparable, read from results that record no `setting`.
CONFIG_SETTING = {
    "data.train_subset": ("data", "train_subset"),
    "data.val_subset": ("data", "val_subset"),
    "data.test_subset": ("data", "test_subset"),
    "data.batch_size": ("data", "batch_size"),
    "trainer.max_epochs": ("trainer", "max_epochs"),
    "model.optimizer": ("model", "optimizer", "_target_"),
    "model.optimizer.lr": ("model", "optimizer", "lr"),
    "model.net.conv_init": ("model", "net", "conv_init"),
}
# Keys of a setting that say how much training a run got (what to raise when it is too little), and
# the command-line override that sets each.
BUDGET_KEYS = {
    "train_subset": "data.train_subset",
    "data.train_subset": "data.train_subset",  # read from the config of an older layout
    "epochs": "trainer.max_epochs",
    "trainer.max_epochs": "trainer.max_epochs",
}
NOT_SETTING = {"conv", "probe", "seed"}


class MalformedResult(ValueError):
    """A results.json that parses but does not hold what the report reads; the message says where."""


@dataclass
class Run:
    """One completed run's results.json, checked."""

    path: Path
    conv: str
    probe: str
    data: str
    seed: object
    setting: tuple[tuple[str, str], ...]  # sorted (key, value as JSON), hashable
    metrics: dict
    code_version: str | None
    machine: dict | None = None  # results.json's "machine" (cpu, cores, torch, written); None: not recorded


@dataclass
class Group:
    """All completed runs of one conv implementation on one dataset in one setting."""

    conv: str
    data: str
    setting: tuple[tuple[str, str], ...]
    runs: list[Run] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # job folders of this group without a usable result

    def label(self, settings: Sequence[Sequence[tuple[str, str]]] = ()) -> str:
        """'torch (mnist)', with the setting's distinguishing values when `settings` holds several."""
        name = f"{self.conv} ({self.data}"
        return name + (f", {setting_label(self.setting, settings)})" if len(settings) > 1 else ")")

    def values(self, probe: str, metric: str = "test_acc") -> list[float]:
        return [
            float(r.metrics[metric])
            for r in self.runs
            if r.probe == probe and r.metrics.get(metric) is not None
        ]

    @property
    def accuracies(self) -> dict[str, list[float]]:
        return {probe: self.values(probe) for probe in sorted({r.probe for r in self.runs})}

    def full_runs(self) -> list[Run]:
        return [r for r in self.runs if r.probe == "none"]

    def drift(self) -> dict[str, list[float]]:
        drift: dict[str, list[float]] = defaultdict(list)
        for run in self.full_runs():
            for layer, value in (run.metrics.get("conv_drift") or {}).items():
                drift[layer].append(float(value))
        return dict(drift)

    def redrawn(self, layer: str | None = None) -> list[float]:
        """Re-drawn test accuracy of the probe=none runs: all convs (None) or one layer."""
        values = []
        for run in self.full_runs():
            if layer is None:
                value = run.metrics.get("redrawn_conv_test_acc")
            else:
                value = (run.metrics.get("redrawn_conv_test_acc_per_layer") or {}).get(layer)
            if value is not None:
                values.append(float(value))
        return values

    def redraw_drops(self) -> dict[str | None, list[float]]:
        """Per seed, test accuracy minus re-drawn accuracy of the same probe=none run."""
        drops: dict[str | None, list[float]] = defaultdict(list)
        for run in self.full_runs():
            acc = float(run.metrics["test_acc"])
            if run.metrics.get("redrawn_conv_test_acc") is not None:
                drops[None].append(acc - float(run.metrics["redrawn_conv_test_acc"]))
            for layer, value in (run.metrics.get("redrawn_conv_test_acc_per_layer") or {}).items():
                if value is not None:
                    drops[layer].append(acc - float(value))
        return dict(drops)

    def by_run(self) -> dict[tuple, float]:
        """(probe, seed) -> test accuracy: pairs runs with the reference conv's in the same setting."""
        return {(r.probe, json.dumps(r.seed)): float(r.metrics["test_acc"]) for r in self.runs}

    def epoch_s(self) -> list[float]:
        return [float(r.metrics["epoch_time_s"]) for r in self.full_runs() if r.metrics.get("epoch_time_s")]

    def schedule(self) -> str:
        """'2000 × 2': training images per epoch × epochs, as the runs measured them."""
        seen = sorted({(r.metrics.get("train_images"), r.metrics.get("epochs")) for r in self.runs}, key=str)
        return " / ".join(f"{images} × {epochs}" for images, epochs in seen)

    def budget(self) -> dict[str, object]:
        """The setting's knobs that set how much training a run gets, with the seeds per probe."""
        values = dict(self.setting)
        budget: dict[str, object] = {
            override: json.loads(values[key]) for key, override in BUDGET_KEYS.items() if key in values
        }
        seeds = [len(self.values(probe)) for probe in REQUIRED_PROBES if self.values(probe)]
        if seeds:
            budget["seeds"] = min(seeds)
        return budget

    def observations(self, name: str) -> Observations:
        losses = {probe: self.values(probe, "test_loss") for probe in self.accuracies}
        return Observations(
            name, self.accuracies, self.drift(), self.redraw_drops(), losses, budget=self.budget()
        )


def _number(value: object, where: str, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedResult(f"{where} is {type(value).__name__} {json.dumps(value)[:40]}, not a number")


def check_result(result: object) -> dict:
    """result, if it holds what the report reads, in the right types; else MalformedResult saying where."""
    if not isinstance(result, dict):
        raise MalformedResult(f"the file holds a {type(result).__name__}, not an object")
    for key in ("conv", "probe", "data"):
        if not isinstance(result.get(key), str):
            raise MalformedResult(
                f"{key} is {'missing' if key not in result else repr(result[key])}, not a string"
            )
    metrics = result.get("metrics")
    if not isinstance(metrics, dict):
        raise MalformedResult("metrics is missing or not an object")
    _number(metrics.get("test_acc"), "metrics.test_acc", optional=False)
    if not 0.0 <= metrics["test_acc"] <= 1.0:
        raise MalformedResult(f"metrics.test_acc is {metrics['test_acc']}, not a fraction in [0, 1]")
    for key in ("test_loss", "redrawn_conv_test_acc", "epoch_time_s", "train_images", "epochs"):
        _number(metrics.get(key), f"metrics.{key}")
    for key in ("conv_drift", "redrawn_conv_test_acc_per_layer"):
        per_layer = metrics.get(key)
        if per_layer is None:
            continue
        if not isinstance(per_layer, dict):
            raise MalformedResult(f"metrics.{key} is {type(per_layer).__name__}, not an object of layers")
        for layer, value in per_layer.items():
            _number(value, f"metrics.{key}.{layer}")
    if "setting" in result and not isinstance(result["setting"], dict):
        raise MalformedResult(f"setting is {type(result['setting']).__name__}, not an object")
    return result


def version_label(version: object) -> str | None:
    """'convlab 0.1.0 @ 5f904b9c1a (dirty)' from results.json's code_version; None when not recorded."""
    if not isinstance(version, dict):
        return None if version is None else str(version)
    text = f"convlab {version.get('convlab')}"
    if version.get("git_commit"):
        text += f" @ {str(version['git_commit'])[:10]}" + (" (dirty)" if version.get("git_dirty") else "")
    return text


def _dig(config: Mapping, path: Sequence[str]) -> object:
    for key in path:
        if not isinstance(config, Mapping) or key not in config:
            return None
        config = config[key]
    return config


def setting_of(result: dict) -> tuple[tuple[str, str], ...]:
    """The run's experimental setting as sorted (key, JSON value) pairs.

    `setting` when results.json records one (conv, probe and seed left out: they vary within a group);
    otherwise the CONFIG_SETTING values of its config, marked as derived so that the two layouts never
    share a group.
    """
    if isinstance(result.get("setting"), dict):
        items = {k: v for k, v in result["setting"].items() if k not in NOT_SETTING}
    else:
        config = result.get("config") or {}
        items = {key: _dig(config, path) for key, path in CONFIG_SETTING.items()}
        if isinstance(items["model.optimizer"], str):
            items["model.optimizer"] = items["model.optimizer"].rsplit(".", 1)[-1]
        items["layout"] = "no setting recorded"
    return tuple(sorted((str(k), json.dumps(v, sort_keys=True)) for k, v in items.items()))


def setting_label(setting: Sequence[tuple[str, str]], among: Sequence[Sequence[tuple[str, str]]] = ()) -> str:
    """'train_subset=2000, epochs=2': the setting's values, only of the keys that differ `among` the
    settings of one report (all keys when none are given); an older layout says so."""
    values = dict(setting)
    if "layout" in values:
        return "older results layout, setting not recorded"
    recorded = [dict(other) for other in among if "layout" not in dict(other)]
    keys = (
        [key for key in values if len({other.get(key) for other in recorded}) > 1]
        if recorded
        else list(values)
    )
    return ", ".join(f"{key}={json.loads(values[key])}" for key in keys) or "same setting"


def setting_differences(settings: Sequence[tuple[tuple[str, str], ...]]) -> str:
    """'data.train_subset: 2000 / 10000; trainer.max_epochs: 1 / 2': the keys whose values differ."""
    maps = [dict(s) for s in settings]
    keys = sorted({key for m in maps for key in m})
    parts = []
    for key in keys:
        values = list(dict.fromkeys(m.get(key, "(not recorded)") for m in maps))
        if len(values) > 1:
            parts.append(
                f"{key}: {' / '.join(v if v.startswith('(') else str(json.loads(v)) for v in values)}"
            )
    return "; ".join(parts)


def job_label(job_dir: Path) -> str:
    """'3 (conv=torch probe=none seed=1)': a Hydra job folder with the overrides it ran."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    try:
        lines = overrides_file.read_text().splitlines()
        overrides = [line.removeprefix("- ").strip().strip("'\"") for line in lines if line.startswith("- ")]
    except OSError:
        overrides = []
    return f"{job_dir} ({' '.join(overrides)})" if overrides else str(job_dir)


def job_overrides(job_dir: Path) -> dict[str, str]:
    text = job_label(job_dir)
    inner = text[text.find("(") + 1 : -1] if "(" in text else ""
    return dict(item.split("=", 1) for item in inner.split() if "=" in item)


@dataclass
class Loaded:
    """Everything under a sweep folder: usable runs and every run that is not, with the reason."""

    runs: list[Run]
    malformed: list[str]  # path: why
    not_completed: list[str]  # path: status
    missing: list[Path]  # job folders (a .hydra folder) without results.json

    @property
    def total(self) -> int:
        return len(self.runs) + len(self.malformed) + len(self.not_completed) + len(self.missing)

    @property
    def unusable(self) -> int:
        return self.total - len(self.runs)


def load_runs(sweep_dir: Path) -> Loaded:
    """Every results.json under sweep_dir, checked; Hydra job folders that never wrote one."""
    runs, malformed, not_completed = [], [], []
    for path in sorted(sweep_dir.rglob("results.json")):
        try:
            result = json.loads(path.read_text())
            status = result.get("status", COMPLETED) if isinstance(result, dict) else COMPLETED
            if status != COMPLETED:  # such a run records no metrics: listed, never averaged
                error = result.get("error")
                not_completed.append(f"{path}: status {status!r}" + (f" ({error})" if error else ""))
                continue
            check_result(result)
        except (OSError, ValueError) as error:  # JSONDecodeError and MalformedResult are ValueErrors
            malformed.append(f"{path}: {type(error).__name__}: {error}")
            continue
        runs.append(
            Run(
                path,
                result["conv"],
                result["probe"],
                result["data"],
                result.get("seed"),
                setting_of(result),
                result["metrics"],
                version_label(result.get("code_version")),
                result["machine"] if isinstance(result.get("machine"), dict) else None,
            )
        )
    missing = sorted(
        hydra.parent for hydra in sweep_dir.rglob(".hydra") if not (hydra.parent / "results.json").exists()
    )
    return Loaded(runs, malformed, not_completed, missing)


def load_results(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """The raw results of the usable runs under sweep_dir, and a warning for each run left out."""
    loaded = load_runs(sweep_dir)
    results = [json.loads(run.path.read_text()) for run in loaded.runs]
    skipped = (
        loaded.malformed + loaded.not_completed + [f"{job_label(d)}: no results.json" for d in loaded.missing]
    )
    return results, skipped


def group_runs(runs: Sequence[Run], missing: Sequence[Path] = ()) -> list[Group]:
    """Groups ordered as the registry lists the convs (unknown names after), MNIST first, then setting."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        key = (run.conv, run.data, run.setting)
        groups.setdefault(key, Group(*key)).runs.append(run)
    for job in missing:
        overrides = job_overrides(job)
        conv = overrides.get("conv.name", overrides.get("conv"))
        data = overrides.get("data", "mnist")
        matches = [g for g in groups.values() if (g.conv, g.data) == (conv, data)]
        if len(matches) == 1:  # attributed only when it can only be that group
            matches[0].missing.append(job_label(job))
    conv_rank = {name: i for i, name in enumerate(CONV_LAYERS)}
    data_rank = {name: i for i, name in enumerate(DATA_ORDER)}
    return sorted(
        groups.values(),
        key=lambda g: (
            conv_rank.get(g.conv, len(conv_rank)),
            g.conv,
            data_rank.get(g.data, 99),
            g.data,
            g.setting,
        ),
    )


def format_cell(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """'97.0 ± 0.3 (3)': mean ± sample std (n); '97.0 (1)' for one value; '–' for none."""
    if not values:
        return "–"
    s = summarize(values)
    if s.n == 1:
        return f"{s.mean * scale:.{digits}f} (1)"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f} ({s.n})"


def settings_of(groups: Sequence[Group]) -> list[tuple[tuple[str, str], ...]]:
    """The distinct settings of the groups, in order."""
    return list(dict.fromkeys(g.setting for g in groups))


def probe_columns(groups: Sequence[Group]) -> list[str]:
    extra = sorted({probe for g in groups for probe in g.accuracies} - set(REQUIRED_PROBES))
    return [*REQUIRED_PROBES, *extra]


def reference_group(group: Group, groups: Sequence[Group]) -> Group | None:
    """nn.Conv2d's group on the same data in the same setting: the only one comparisons are against."""
    return next(
        (g for g in groups if (g.conv, g.data, g.setting) == (REFERENCE_CONV, group.data, group.setting)),
        None,
    )


def gap_to_reference(group: Group, groups: Sequence[Group]) -> str:
    """'0.05 (9)': largest |test acc - torch's| in pp over runs with the same probe and seed."""
    reference = reference_group(group, groups)
    if reference is None or reference is group:
        return "–"
    mine, theirs = group.by_run(), reference.by_run()
    paired = mine.keys() & theirs.keys()
    if not paired:
        return "–"
    gap = max(abs(mine[key] - theirs[key]) for key in paired)
    return f"{gap * 100:.2f} ({len(paired)})"


def epoch_ratio(group: Group, groups: Sequence[Group]) -> str:
    """'1.07×': mean epoch time of the fully trained runs over the reference conv's in the same setting."""
    reference = reference_group(group, groups)
    if reference is None or not reference.epoch_s() or not group.epoch_s():
        return "–"
    return f"{summarize(group.epoch_s()).mean / summarize(reference.epoch_s()).mean:.2f}×"


def results_table(groups: Sequence[Group]) -> str:
    settings = settings_of(groups)
    several = len(settings) > 1
    probes = probe_columns(groups)
    layers = list(dict.fromkeys(layer for g in groups for layer in g.drift()))
    redraw_layers = list(
        dict.fromkeys(layer for g in groups for layer in g.redraw_drops() if layer is not None)
    )
    compare = any(g.conv == REFERENCE_CONV for g in groups) and len({g.conv for g in groups}) > 1
    header = ["conv", "data", *(["setting"] if several else []), "train images × epochs", *probes]
    header += ["re-drawn conv", *(f"re-drawn {layer}" for layer in redraw_layers)]
    header += [f"drift {layer}" for layer in layers]
    header += [f"max Δ vs {REFERENCE_CONV}"] if compare else []
    header += ["s/epoch", f"× {REFERENCE_CONV}"] if compare else ["s/epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        row = [g.conv, g.data, *([setting_label(g.setting, settings)] if several else []), g.schedule()]
        row += [format_cell(g.accuracies.get(p, [])) for p in probes]
        row += [format_cell(g.redrawn()), *(format_cell(g.redrawn(layer)) for layer in redraw_layers)]
        row += [format_cell(g.drift().get(layer, []), scale=1.0, digits=3) for layer in layers]
        row += [gap_to_reference(g, groups)] if compare else []
        row.append(format_cell(g.epoch_s(), scale=1.0, digits=2))
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
            "with the same probe and seed in the same setting (number of pairs in brackets).",
            f"- s/epoch: wall time of a training epoch (validation included) of the probe=none runs; "
            f"× {REFERENCE_CONV}: its mean over nn.Conv2d's in the same setting. Only comparable between "
            "runs that shared the machine alike.",
            f"- *learns* needs: (1) none − frozen_conv: the two-sided {CONFIDENCE:.0%} Welch–Satterthwaite t "
            "interval of the difference of means (Welch's p-value shown) above 0; (2) frozen_fc: the "
            f"two-sided {CONFIDENCE:.0%} Student-t interval of the mean above the bar, chance ({CHANCE:.0%}) "
            f"+ {NEAR_CHANCE_MARGIN:.0%}; (3) every conv layer's mean drift > {DRIFT_MIN:g}.",
            "- *does not learn* needs a finding against it: (1)'s whole interval below 0, (2)'s whole "
            f"interval below the bar, a conv layer with drift ≤ {DRIFT_MIN:g}, or a layer whose re-drawing "
            f"costs less than {REDRAW_KEEP * 100:.0f} pp (whole interval of the per-seed drop).",
            "- *inconclusive*: a probe without runs or with fewer than "
            f"{MIN_SEEDS} seeds; frozen_conv (or nn.Conv2d's full training) not above the bar, so the "
            "network does not train in this setting; zero spread at chance; or an interval that straddles "
            "its bar.",
            f"- Each test is at the {1 - CONFIDENCE:.0%} level on its own, no multiplicity correction. "
            "Few seeds make wide intervals: more seeds (does_it_learn_full) narrow them.",
        ]
    )


def run_warnings(loaded: Loaded, groups: Sequence[Group]) -> list[str]:
    """Every run the averages leave out, and groups whose runs are not all alike."""
    lines = []
    if loaded.unusable:
        lines.append(
            f"- {loaded.unusable} of {loaded.total} runs missing, failed or unreadable: "
            "left out of every average below"
        )
    lines += [f"  - not completed: {line}" for line in loaded.not_completed]
    lines += [f"  - malformed, skipped: {line}" for line in loaded.malformed]
    lines += [f"  - no results.json (failed or still running): {job_label(job)}" for job in loaded.missing]
    settings = list(dict.fromkeys(g.setting for g in groups))
    if len(settings) > 1:
        lines.append(
            f"- {len(settings)} different settings: their runs are not comparable and are not averaged "
            f"together (they differ in {setting_differences(settings)})"
        )
    for g in groups:
        versions = {r.code_version for r in g.runs}
        if len(versions) > 1:
            lines.append(
                f"- {g.label(settings)}: runs from {len(versions)} code versions "
                f"({', '.join(sorted(str(v) for v in versions))})"
            )
        changed = [r for r in g.runs if r.metrics.get("frozen_unchanged") is False]
        if changed:
            lines.append(
                f"- {g.conv} ({g.data}): {len(changed)} run(s) changed parameters that were meant to be "
                "frozen"
            )
    return lines


def judge_groups(groups: Sequence[Group]) -> list[Verdict]:
    """A verdict per group; nn.Conv2d's groups first, so every other group can be read against its own."""
    settings = settings_of(groups)
    verdicts: dict[int, Verdict] = {}
    order = sorted(range(len(groups)), key=lambda i: groups[i].conv != REFERENCE_CONV)
    for i in order:
        group = groups[i]
        reference = reference_group(group, groups)
        reference_verdict = None if reference is None else verdicts.get(groups.index(reference))
        verdict = judge(group.observations(group.label(settings)), reference_verdict, group is reference)
        if group.missing:
            verdict = Verdict(
                verdict.name,
                verdict.outcome,
                f"{verdict.reason} [{len(group.missing)} of {len(group.runs) + len(group.missing)} runs "
                "missing or failed]",
                verdict.evidence,
                verdict.hints,
                verdict.trains,
            )
        verdicts[i] = verdict
    return [verdicts[i] for i in range(len(groups))]


OUTCOME_LABELS = {
    Outcome.LEARNS: "learns",
    Outcome.DOES_NOT_LEARN: "does NOT learn",
    Outcome.INCONCLUSIVE: "inconclusive",
}


def write_figure(groups: Sequence[Group], verdicts: Sequence[Verdict], path: Path) -> None:
    """Grouped bars, one group per (conv, data, setting), one bar per probe and re-drawn conv.

    Bar: mean over seeds; error bar: the two-sided t interval of the mean the verdict reads (none for
    one seed); dots: seeds; dashed lines: chance and the bar frozen_fc must clear.
    """
    settings = settings_of(groups)
    series = [(p, lambda g, p=p: g.accuracies.get(p, [])) for p in probe_columns(groups)]
    series.append(("re-drawn conv (after none)", lambda g: g.redrawn()))
    width = 0.8 / len(series)
    fig = Figure(figsize=(max(7.5, 1.7 * len(groups) + 2), 5.4), layout="constrained")
    ax = fig.subplots()
    for i, (label, values_of) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        means, low_err, high_err = [], [], []
        for g in groups:
            values = values_of(g)
            mean = summarize(values).mean if values else 0.0
            interval = mean_interval(values, CONFIDENCE) if len(values) >= 2 else None
            means.append(100 * mean)
            low_err.append(100 * (mean - interval[0]) if interval else 0.0)
            high_err.append(100 * (interval[1] - mean) if interval else 0.0)
        ax.bar(xs, means, width, yerr=[low_err, high_err], capsize=3, label=label, color=f"C{i}")
        for x, g in zip(xs, groups, strict=True):
            seeds = values_of(g)
            ax.scatter([x] * len(seeds), [100 * v for v in seeds], s=8, color="black", zorder=3)
    ax.axhline(100 * CHANCE, color="grey", linestyle="--", linewidth=1, label=f"chance ({CHANCE:.0%})")
    ax.axhline(100 * BAR, color="red", linestyle=":", linewidth=1.2, label=f"frozen_fc bar ({BAR:.0%})")
    labels = []
    for g, v in zip(groups, verdicts, strict=True):
        wrapped = "\n".join(textwrap.wrap(setting_label(g.setting, settings), 22))
        setting = f"\n{wrapped}" if len(settings) > 1 else ""
        # A file spec on two short lines (file, class): long labels would run into their neighbours.
        name = g.conv.rsplit("/", 1)[-1].replace(":", ":\n")
        labels.append(f"{name}\n{g.data}{setting}\n{OUTCOME_LABELS[v.outcome]}")
    ax.set_xticks(range(len(groups)), labels, fontsize="small")
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Does the conv learn? bars: mean, whiskers: {CONFIDENCE:.0%} t interval, dots: seeds")
    fig.legend(loc="outside lower center", ncol=len(series) + 2 if len(groups) > 3 else 3, fontsize="small")
    fig.savefig(path, dpi=120)


def provenance(runs: Sequence[Run]) -> str:
    """When, where and with which code the runs were made, from their results.json: the report's stamp."""
    recorded = [r.machine for r in runs if r.machine]

    def distinct(key: str) -> str:
        return " / ".join(sorted({str(m[key]) for m in recorded if m.get(key) is not None}))

    times = sorted(str(m["written"])[:16].replace("T", " ") for m in recorded if m.get("written"))
    parts = [f"Runs written {times[0]} – {times[-1]} UTC" if times else "Machine and run times not recorded"]
    if distinct("cpu"):
        parts[0] += f" on {distinct('cpu')}" + (f" ({distinct('cores')} cores)" if distinct("cores") else "")
    if distinct("torch"):
        parts.append(f"torch {distinct('torch')}")
    versions = sorted({r.code_version for r in runs if r.code_version})
    parts.append(", ".join(versions) if versions else "code version not recorded")
    line = "; ".join(parts) + "."
    if 0 < len(recorded) < len(runs):
        line += f" ({len(runs) - len(recorded)} of {len(runs)} runs recorded no machine or time.)"
    return line


def build_report(sweep_dir: Path) -> str:
    """Write report.md and report.png (and filters.png, when runs saved filters) into sweep_dir.

    Returns the markdown."""
    loaded = load_runs(sweep_dir)
    for line in loaded.malformed:
        print(f"warning: skipped {line}", file=sys.stderr)
    for line in loaded.not_completed:
        print(f"warning: not averaged, {line}", file=sys.stderr)
    if not loaded.runs:
        raise SystemExit(
            f"error: no usable results.json under {sweep_dir} ({loaded.unusable} runs missing, failed or "
            "unreadable; runs write it when they finish; is this a sweep directory?)"
        )
    groups = group_runs(loaded.runs, loaded.missing)
    verdicts = judge_groups(groups)
    warnings = run_warnings(loaded, groups)
    count = f"{len(loaded.runs)} runs"
    if loaded.unusable:
        count += f" ({loaded.unusable} of {loaded.total} runs missing, failed or unreadable: see Warnings)"
    parts = [f"# Does the conv learn? {sweep_dir}", count + ".", provenance(loaded.runs)]
    parts += [results_table(groups), "## Verdicts"]
    parts.append("\n".join(v.text for v in verdicts))
    if warnings:
        parts += ["## Warnings", "\n".join(warnings)]
    parts += ["## Statistics", statistics_note(), "![accuracy per conv and probe](report.png)"]
    filters = write_filters_figure(
        {g.label(settings_of(groups)): [r.path.parent for r in g.full_runs()] for g in groups},
        sweep_dir / "filters.png",
    )
    if filters is not None:
        parts.append(
            "![conv1's filters at init and after training, one digit's activation maps](filters.png)"
        )
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
    written = ["report.md", "report.png", *(["filters.png"] if (sweep_dir / "filters.png").exists() else [])]
    print(f"wrote {', '.join(str(sweep_dir / name) for name in written)}")


if __name__ == "__main__":
    main()
