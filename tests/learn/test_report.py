"""The report on small hand-made sweeps: exact table cells and verdicts, and every run it cannot average
(missing, failed, not completed, malformed, another setting or an older layout) reported, not hidden."""

import json
from pathlib import Path

import pytest
import torch

from convlab.learn.report import build_report, main, newest_sweep

# probe -> test accuracy per seed; sample std of every triple below is exactly 1 pp
BASELINE = (0.87, 0.88, 0.89)
LEARNING = {"none": (0.96, 0.97, 0.98), "frozen_conv": BASELINE, "frozen_fc": (0.79, 0.80, 0.81)}
NOT_LEARNING = {"none": BASELINE, "frozen_conv": BASELINE, "frozen_fc": (0.09, 0.10, 0.11)}
SETTING = {"data": "mnist", "train_subset": 1000, "epochs": 1, "batch_size": 16, "optimizer": "Adam"}


def write_result(
    path: Path, conv: str, probe: str, seed: int, test_acc, setting=SETTING, machine=None, **metrics
) -> None:
    """One results.json in the shape train.py writes (only the fields the report reads are filled)."""
    frozen_unchanged = None if probe == "none" else True
    result = {
        "status": "completed",
        "conv": conv,
        "probe": probe,
        "data": "mnist",
        "seed": seed,
        "setting": setting,
        "code_version": {"convlab": "0.1.0", "git_commit": "abc", "git_dirty": False},
        "overrides": [f"conv={conv}", f"probe={probe}", f"seed={seed}"],
        "config": {},
        "metrics": {
            "test_acc": test_acc,
            "test_loss": 0.3,
            "frozen_unchanged": frozen_unchanged,
            "epochs": 1,
            "train_images": 1000,
        }
        | metrics,
    }
    if machine is not None:
        result["machine"] = machine
    if setting is None:
        del result["setting"], result["status"], result["code_version"]
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(result))


def write_sweep(
    root: Path, conv: str, accuracies: dict, drift: tuple[float, ...], epoch_s: tuple[float, ...] = (), **kw
) -> None:
    for probe, values in accuracies.items():
        for seed, acc in enumerate(values):
            extra = {}
            if probe == "none":
                extra = {
                    "redrawn_conv_test_acc": 0.24 + 0.01 * seed,
                    "redrawn_conv_test_acc_per_layer": {"conv1": 0.30 + 0.01 * seed, "conv2": 0.5},
                    "conv_drift": {"conv1": drift[seed], "conv2": drift[seed] / 2},
                    "epoch_time_s": epoch_s[seed] if epoch_s else None,
                }
            write_result(root / f"{conv}-{probe}-{seed}", conv, probe, seed, acc, **extra, **kw)


def verdict_block(markdown: str, name: str) -> list[str]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"- {name}: "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    write_sweep(tmp_path, "unfold", LEARNING, drift=(0.80, 0.81, 0.82), epoch_s=(1.9, 2.0, 2.1))
    write_sweep(tmp_path, "broken", NOT_LEARNING, drift=(0.0, 0.0, 0.0))
    return tmp_path


def test_table_has_exact_cells_in_registry_order(sweep: Path):
    lines = build_report(sweep).splitlines()
    header = next(line for line in lines if line.startswith("| conv"))
    assert header == (
        "| conv | data | train images × epochs | none | frozen_conv | frozen_fc | re-drawn conv "
        "| re-drawn conv1 | re-drawn conv2 | drift conv1 | drift conv2 | s/epoch |"
    )
    rows = [line for line in lines if line.startswith("| unfold") or line.startswith("| broken")]
    assert rows == [
        "| unfold | mnist | 1000 × 1 | 97.0 ± 1.0 (3) | 88.0 ± 1.0 (3) | 80.0 ± 1.0 (3) | 25.0 ± 1.0 (3) "
        "| 31.0 ± 1.0 (3) | 50.0 ± 0.0 (3) | 0.810 ± 0.010 (3) | 0.405 ± 0.005 (3) | 2.00 ± 0.10 (3) |",
        "| broken | mnist | 1000 × 1 | 88.0 ± 1.0 (3) | 88.0 ± 1.0 (3) | 10.0 ± 1.0 (3) | 25.0 ± 1.0 (3) "
        "| 31.0 ± 1.0 (3) | 50.0 ± 0.0 (3) | 0.000 ± 0.000 (3) | 0.000 ± 0.000 (3) | – |",
    ]


def test_verdict_for_a_learning_conv(sweep: Path):
    block = verdict_block(build_report(sweep), "unfold (mnist)")
    assert block == [
        "- unfold (mnist): learns — gain over frozen_conv, frozen_fc above the bar, every conv moves",
        "  - full training beats frozen_conv by +9.0 pp (95% CI 6.7 to 11.3, Welch p=0.00039, n=3+3)",
        "  - frozen_fc reaches 80.0% (95% CI 77.5 to 82.5, n=3), above the 20% bar",
        "  - conv1: weights moved (drift 0.810)",
        "  - conv1: re-drawing the weights costs 66.0 pp (95% CI 66.0 to 66.0, n=3)",
        "  - conv2: weights moved (drift 0.405)",
        "  - conv2: re-drawing the weights costs 47.0 pp (95% CI 44.5 to 49.5, n=3)",
    ]


def test_verdict_and_hint_for_a_conv_that_does_not_learn(sweep: Path):
    block = verdict_block(build_report(sweep), "broken (mnist)")
    assert block[0] == (
        "- broken (mnist): does not learn — conv1: weights did not move (drift 0.000, needs > 0.001) "
        "(and 2 more finding(s) below)"
    )
    assert "  - no gain over frozen_conv shown: +0.0 pp (95% CI -2.3 to 2.3, Welch p=1, n=3+3)" in block
    assert "  - frozen_fc stays near chance: 10.0% (95% CI 7.5 to 12.5, n=3), below the 20% bar" in block
    assert block[-1].startswith("  - hint: no conv layer's weights move: their gradient is zero or absent")


def test_missing_and_failed_runs_are_counted_and_listed(sweep: Path):
    (sweep / "7" / ".hydra").mkdir(parents=True)
    (sweep / "7" / ".hydra" / "overrides.yaml").write_text("- conv=unfold\n- probe=frozen_fc\n- seed=3\n")
    write_result(sweep / "8", "unfold", "none", 3, 0.97)
    failed = json.loads((sweep / "8" / "results.json").read_text()) | {"status": "failed", "metrics": None}
    (sweep / "8" / "results.json").write_text(json.dumps(failed | {"error": "RuntimeError: boom"}))
    markdown = build_report(sweep)
    assert "18 runs (2 of 20 runs missing, failed or unreadable: see Warnings)." in markdown
    assert "- 2 of 20 runs missing, failed or unreadable: left out of every average below" in markdown
    assert "8/results.json: status 'failed' (RuntimeError: boom)" in markdown
    assert "7 (conv=unfold probe=frozen_fc seed=3)" in markdown
    assert verdict_block(markdown, "unfold (mnist)")[0].endswith("[1 of 10 runs missing or failed]")


def test_a_list_or_string_where_a_number_belongs_is_skipped_with_a_warning(sweep: Path, capsys):
    write_result(sweep / "list", "unfold", "none", 5, [0.9, 0.8])
    write_result(sweep / "string", "unfold", "none", 6, 0.9, conv_drift={"conv1": "high"})
    (sweep / "crashed").mkdir()
    (sweep / "crashed" / "results.json").write_text("{not json")
    markdown = build_report(sweep)
    err = capsys.readouterr().err
    assert "list/results.json: MalformedResult: metrics.test_acc is list [0.9, 0.8], not a number" in err
    assert 'string/results.json: MalformedResult: metrics.conv_drift.conv1 is str "high", not a number' in err
    assert "crashed/results.json: JSONDecodeError" in err
    assert "3 of 21 runs missing, failed or unreadable" in markdown
    assert "| unfold | mnist | 1000 × 1 | 97.0 ± 1.0 (3) |" in markdown


def test_runs_of_other_settings_and_older_layouts_are_not_averaged_together(tmp_path: Path):
    write_sweep(tmp_path / "small", "torch", LEARNING, drift=(0.8, 0.8, 0.8))
    write_sweep(tmp_path / "large", "torch", LEARNING, drift=(0.8, 0.8, 0.8), setting=SETTING | {"epochs": 3})
    write_sweep(tmp_path / "old", "torch", LEARNING, drift=(0.8, 0.8, 0.8), setting=None)
    markdown = build_report(tmp_path)
    rows = [line for line in markdown.splitlines() if line.startswith("| torch")]
    assert [row.split(" | ")[2] for row in rows] == [
        "epochs=1",
        "epochs=3",
        "older results layout, setting not recorded",
    ]
    assert all("(3)" in row and "(6)" not in row for row in rows)
    assert "- 3 different settings: their runs are not comparable and are not averaged together" in markdown
    assert "epochs: 1 / 3 / (not recorded)" in markdown
    assert "- torch (mnist, epochs=3): learns" in markdown


def test_small_budget_names_what_to_raise_and_the_plot_draws_the_bar(tmp_path: Path):
    small = {"none": (0.80, 0.85, 0.90), "frozen_conv": (0.70, 0.75, 0.80), "frozen_fc": (0.10, 0.30, 0.50)}
    write_sweep(tmp_path, "torch", small, drift=(0.8, 0.8, 0.8))
    markdown = build_report(tmp_path)
    block = verdict_block(markdown, "torch (mnist)")
    assert "the reference is not shown to learn at this budget" in block[0]
    assert block[0].endswith("raise data.train_subset (now 1000), trainer.max_epochs (now 1), seeds (now 3)")
    assert block[-1].startswith("  - hint: nn.Conv2d is not shown to learn at this budget")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filters_figure_from_saved_filters(sweep: Path):
    saved = {
        "layer": "conv1",
        "init": torch.randn(10, 1, 5, 5),
        "trained": torch.randn(10, 1, 5, 5),
        "digit": torch.rand(1, 28, 28),
        "label": 7,
        "activations": torch.randn(10, 24, 24),
    }
    torch.save(saved, sweep / "unfold-none-0" / "filters.pt")
    markdown = build_report(sweep)
    assert (
        "![conv1's filters at init and after training, one digit's activation maps](filters.png)" in markdown
    )
    assert (sweep / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_writes_files_and_states_statistics(sweep: Path, capsys):
    main([str(sweep)])
    markdown = (sweep / "report.md").read_text()
    assert "Welch–Satterthwaite" in markdown and "no multiplicity correction" in markdown
    assert (sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (sweep / "filters.png").exists()
    assert "| unfold | mnist |" in capsys.readouterr().out


def test_frozen_parameters_that_changed_are_flagged(tmp_path: Path):
    write_result(tmp_path / "run", "unfold", "frozen_conv", 0, 0.9, frozen_unchanged=False)
    markdown = build_report(tmp_path)
    assert "unfold (mnist): 1 run(s) changed parameters that were meant to be frozen" in markdown


def test_clear_errors_without_results(tmp_path: Path):
    with pytest.raises(SystemExit, match="no usable results.json"):
        build_report(tmp_path)
    with pytest.raises(SystemExit, match="no sweep under"):
        newest_sweep(tmp_path / "multirun")


def test_newest_sweep_sorts_hydra_names(tmp_path: Path):
    for name in ("2026-11-20/23-59-59", "2026-11-21/08-00-00", "2026-11-21/07-59-59"):
        (tmp_path / name).mkdir(parents=True)
    assert newest_sweep(tmp_path) == tmp_path / "2026-11-21" / "08-00-00"


def test_gap_to_torch_pairs_runs_by_probe_and_seed(tmp_path: Path):
    write_sweep(tmp_path, "unfold", LEARNING, drift=(0.80, 0.81, 0.82), epoch_s=(3.0, 3.3, 3.6))
    shifted = {
        probe: tuple(v + 0.003 * (probe == "frozen_fc") for v in values) for probe, values in LEARNING.items()
    }
    write_sweep(tmp_path, "torch", shifted, drift=(0.80, 0.81, 0.82), epoch_s=(2.0, 2.2, 2.4))
    rows = [
        line
        for line in build_report(tmp_path).splitlines()
        if line.startswith(("| conv", "| unfold", "| torch"))
    ]
    assert rows[0].endswith("| drift conv2 | max Δ vs torch | s/epoch | × torch |")
    # Epoch times: unfold 3.3 s against torch's 2.2 s on average, 1.5 times.
    assert rows[1].startswith("| unfold |") and rows[1].endswith("| 0.30 (9) | 3.30 ± 0.30 (3) | 1.50× |")
    assert rows[2].startswith("| torch |") and rows[2].endswith("| – | 2.20 ± 0.20 (3) | 1.00× |")


def test_the_report_is_stamped_with_when_where_and_which_code_its_runs_record(tmp_path: Path):
    machine = {"cpu": "Some CPU", "cores": 2, "python": "3.11.7", "torch": "2.15.0"}
    for seed, written in enumerate(("2026-12-03T17:05:09+00:00", "2026-12-03T19:41:00+00:00")):
        write_result(
            tmp_path / f"a{seed}", "torch", "none", seed, 0.9, machine={**machine, "written": written}
        )
    write_result(tmp_path / "old", "torch", "none", 2, 0.9)  # written before runs recorded their machine
    line = build_report(tmp_path).splitlines()[4]
    assert line == (
        "Runs written 2026-12-03 17:05 – 2026-12-03 19:41 UTC on Some CPU (2 cores); torch 2.15.0; "
        "convlab 0.1.0 @ abc. (1 of 3 runs recorded no machine or time.)"
    )
