"""The does-it-learn experiment end to end on real MNIST: a short sweep, then the report's verdicts.

nn.Conv2d runs through `python train.py -m experiment=does_it_learn` exactly as a user runs it; a conv
whose weight gradient is zero (registered only here) runs the same settings through the same training
task in this process. On a fifth of the sweep's images frozen_fc is too noisy over 3 seeds for the
full "learns" verdict (the real sweep in the README has it); what must hold: nn.Conv2d's weights move
and full training beats frozen_conv, while the broken conv "does not learn" for its still weights,
with the zero-gradient hint, and the filter pictures are drawn.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from broken_conv import ZeroWeightGradConv2d
from harness import CONFIGS, REPO, compose_train, real_mirror

from convlab.conv import CONV_LAYERS
from convlab.learn.report import build_report
from convlab.training.probes import PROBES
from convlab.training.task import run

SEEDS = (0, 1, 2)
# does_it_learn on a fifth of its images, without logger or checkpoints: 18 runs of ~5 s on 2 cores.
# (At a tenth, frozen_conv varies so much across 3 seeds that no difference is significant.)
SHORT = ["data.train_subset=2000", "data.val_subset=200", "data.test_subset=1000"]
SHORT += ["~logger", "callbacks.model_checkpoint=null"]


def test_experiment_configs_compose():
    for experiment in sorted(path.stem for path in (CONFIGS / "experiment").glob("does_it_learn*.yaml")):
        cfg = compose_train([f"experiment={experiment}"], Path("unused"))
        assert cfg.model.optimizer._target_ == "torch.optim.Adam"
        assert cfg.trainer.max_epochs >= 1


@pytest.mark.slow
@pytest.mark.skipif(real_mirror() is None, reason="needs the MNIST mirror")
def test_short_sweep_report_tells_a_learning_conv_from_a_broken_one(tmp_path: Path, monkeypatch):
    data = [f"data.mirror={real_mirror()}", f"data.root={tmp_path / 'data'}"]
    command = [
        sys.executable,
        "train.py",
        "experiment=does_it_learn",  # a multirun by itself
        "conv.name=torch",
    ]
    command += [*data, *SHORT, f"hydra.sweep.dir={tmp_path / 'sweep' / 'torch'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    monkeypatch.setitem(CONV_LAYERS, "broken", ZeroWeightGradConv2d)
    for probe in PROBES:
        for seed in SEEDS:
            overrides = ["experiment=does_it_learn", "conv.name=broken", f"probe={probe}", f"seed={seed}"]
            run(compose_train([*overrides, *data, *SHORT], tmp_path / "sweep" / "broken" / f"{probe}-{seed}"))

    markdown = build_report(tmp_path / "sweep")
    rows = [line for line in markdown.splitlines() if line.startswith(("| torch", "| broken"))]
    # Every cell that has a value holds 3 seeds.
    assert len(rows) == 2 and all(row.count("(3)") >= 7 and "(2)" not in row for row in rows), rows
    lines = markdown.splitlines()
    torch_verdict, broken_verdict = (
        "\n".join(lines[i : i + 8])
        for i, line in enumerate(lines)
        if line.startswith(("- torch (", "- broken ("))
    )
    assert "full training beats frozen_conv by +" in torch_verdict
    assert "conv1: weights moved" in torch_verdict and "conv2: weights moved" in torch_verdict
    # Its biases still train, which can beat frozen_conv by a little: the drift catches it.
    assert broken_verdict.startswith(
        "- broken (mnist): does not learn — conv1: weights did not move (drift 0.000, needs > 0.001)"
    )
    assert "hint: no conv layer's weights move: their gradient is zero or absent" in broken_verdict
    assert (tmp_path / "sweep" / "report.png").is_file()
    # The runs saved conv1's filters (callbacks.filter_images): the report draws them.
    assert (tmp_path / "sweep" / "filters.png").is_file()
