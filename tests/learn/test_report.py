"""The report on a tiny hand-made sweep: exact table cells, verdict wording, files written."""

import json
from pathlib import Path

import pytest

from convlab.learn.report import build_report, main, newest_sweep

# probe -> test accuracy per seed; sample std of every triple below is exactly 1 pp
BASELINE = (0.87, 0.88, 0.89)
LEARNING = {"none": (0.96, 0.97, 0.98), "frozen_conv": BASELINE, "frozen_fc": (0.79, 0.80, 0.81)}
NOT_LEARNING = {"none": BASELINE, "frozen_conv": BASELINE, "frozen_fc": (0.09, 0.10, 0.11)}


def write_result(path: Path, conv: str, probe: str, seed: int, test_acc: float, **metrics) -> None:
    """One results.json in the shape train.py writes (only the fields the report reads are filled)."""
    frozen_unchanged = None if probe == "none" else True
    result = {
        "conv": conv,
        "probe": probe,
        "data": "mnist",
        "seed": seed,
        "overrides": [f"conv={conv}", f"probe={probe}", f"seed={seed}"],
        "config": {},
        "metrics": {
            "test_acc": test_acc,
            "frozen_unchanged": frozen_unchanged,
            "epochs": 1,
            "train_images": 1000,
        }
        | metrics,
    }
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(result))


def write_sweep(
    root: Path, conv: str, accuracies: dict, drift: tuple[float, ...], epoch_s: tuple[float, ...] = ()
) -> None:
    for probe, values in accuracies.items():
        for seed, acc in enumerate(values):
            extra = {}
            if probe == "none":
                extra = {
                    "redrawn_conv_test_acc": 0.24 + 0.01 * seed,
                    "conv_drift": {"conv1": drift[seed], "conv2": drift[seed] / 2},
                    "epoch_time_s": epoch_s[seed] if epoch_s else None,
                }
            write_result(root / f"{conv}-{probe}-{seed}", conv, probe, seed, acc, **extra)


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
        "| drift conv1 | drift conv2 | s/epoch |"
    )
    rows = [line for line in lines if line.startswith("| unfold") or line.startswith("| broken")]
    assert rows == [
        "| unfold | mnist | 1000 × 1 | 97.0 ± 1.0 (3) | 88.0 ± 1.0 (3) | 80.0 ± 1.0 (3) | 25.0 ± 1.0 (3) "
        "| 0.810 ± 0.010 (3) | 0.405 ± 0.005 (3) | 2.00 ± 0.10 (3) |",
        "| broken | mnist | 1000 × 1 | 88.0 ± 1.0 (3) | 88.0 ± 1.0 (3) | 10.0 ± 1.0 (3) | 25.0 ± 1.0 (3) "
        "| 0.000 ± 0.000 (3) | 0.000 ± 0.000 (3) | – |",
    ]


def test_verdict_for_a_learning_conv(sweep: Path):
    # Welch: sd 1 pp in both groups of 3 -> df 4, half width 2.776 * sqrt(2/3) = 2.27 pp
    expected = (
        "- unfold (mnist): conv layers learn — full training beats frozen_conv by +9.0 pp "
        "(95% CI 6.7 to 11.3, Welch p=0.00039, n=3+3); frozen_fc reaches 80.0% "
        "(95% CI 77.5 to 82.5, n=3, chance 10%); conv weights moved (drift conv1 0.810, conv2 0.405)"
    )
    assert expected in build_report(sweep).splitlines()


def test_verdict_for_a_conv_that_does_not_learn(sweep: Path):
    expected = (
        "- broken (mnist): conv layers NOT shown to learn — no clear gain over frozen_conv: +0.0 pp "
        "(95% CI -2.3 to 2.3, Welch p=1, n=3+3); frozen_fc stays near chance: 10.0% "
        "(95% CI 7.5 to 12.5, n=3, chance 10%), needs > 20%; "
        "conv weights did not move (drift conv1 0.000, conv2 0.000; needs > 0.001)"
    )
    assert expected in build_report(sweep).splitlines()


def test_one_seed_gives_a_provisional_verdict_and_a_missing_probe_none(tmp_path: Path):
    write_sweep(tmp_path, "unfold", {p: v[:1] for p, v in LEARNING.items()}, drift=(0.8,))
    write_result(tmp_path / "manual-none-0", "manual", "none", 0, 0.97)
    markdown = build_report(tmp_path)
    assert (
        "- unfold (mnist): conv layers learn — full training beats frozen_conv by +9.0 pp (no CI: n < 2"
        in markdown
    )
    assert "[provisional: fewer than 2 seeds, no confidence interval]" in markdown
    assert "- manual (mnist): cannot judge: no runs for probe frozen_conv, frozen_fc" in markdown


def test_writes_files_and_states_statistics(sweep: Path, capsys):
    main([str(sweep)])
    markdown = (sweep / "report.md").read_text()
    assert "Welch–Satterthwaite" in markdown and "no multiplicity correction" in markdown
    assert (sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| unfold | mnist |" in capsys.readouterr().out


def test_skips_unreadable_files_and_warns(sweep: Path, capsys):
    (sweep / "crashed").mkdir()
    (sweep / "crashed" / "results.json").write_text("{not json")
    markdown = build_report(sweep)
    assert "crashed/results.json: JSONDecodeError" in capsys.readouterr().err
    assert "## Warnings" in markdown and "crashed/results.json" in markdown


def test_frozen_parameters_that_changed_are_flagged(tmp_path: Path):
    write_result(tmp_path / "run", "unfold", "frozen_conv", 0, 0.9, frozen_unchanged=False)
    markdown = build_report(tmp_path)
    assert "unfold (mnist): 1 run(s) changed parameters that were meant to be frozen" in markdown


def test_clear_errors_without_results(tmp_path: Path):
    with pytest.raises(SystemExit, match="no readable results.json"):
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
