"""A user's own layer through train.py and the probes, on tiny fake MNIST: the learner's VanillaConv2d,
a NumPy forward-only class, an assignment-style function pair (tests/user_layers), and small layers
written here for the dtype error and for Ctrl-C / SIGTERM during the first-step estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness import REPO, compose_train, fake_data_overrides, write_fake_mnist
from torch import nn

from convlab.training.errors import RunError
from convlab.training.network import LayerOutputError, ReferenceNet
from convlab.training.step_estimate import LayerCheckError, first_step_estimate
from convlab.training.task import run

LAYERS = REPO / "tests" / "user_layers"
LEARNER = f"{LAYERS / 'learner_conv.py'}:VanillaConv2d"
NUMPY = f"{LAYERS / 'numpy_conv.py'}:NumpyConv"
PAIR = f"{LAYERS / 'assignment_layers.py'}:conv_forward_naive"
# The learner's layer costs about a second per image: 4 training images in batches of 2, 2 to validate
# (no sanity check), 2 to test.
TINY = [
    "data.batch_size=2", "data.eval_batch_size=2", "data.train_subset=4", "data.val_subset=2",
    "data.test_subset=2", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "logger=csv",
]  # fmt: skip


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    base = tmp_path_factory.mktemp("fake_mnist")
    return fake_data_overrides(write_fake_mnist(base / "mirror"), base / "data")


def train(overrides: list[str], out: Path) -> dict:
    """Run the task as `python train.py <overrides>` would; returns results.json."""
    run(compose_train(overrides, out))
    return json.loads((out / "results.json").read_text())


def fc_moved(run_dir: Path) -> dict[str, bool]:
    """Per FC parameter: did training move it from where it started (both read from last.ckpt)?"""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    start, end = checkpoint["initial_params"], checkpoint["state_dict"]
    names = [name for name in start if name.startswith("fc")]
    return {name: not torch.equal(start[name], end[f"net.{name}"]) for name in names}


def test_frozen_conv_keeps_the_learners_layer_bit_identical_and_trains_the_fc_layers(
    fake_data: list[str], tmp_path: Path
):
    results = train([*fake_data, *TINY, f"conv.name={LEARNER}", "probe=frozen_conv"], tmp_path)
    metrics = results["metrics"]
    assert results["conv"].endswith("learner_conv.py:VanillaConv2d")
    assert metrics["frozen_unchanged"] is True
    assert metrics["conv_drift"] == {"conv1": 0.0, "conv2": 0.0}
    assert set(metrics["redrawn_conv_test_acc_per_layer"]) == {"conv1", "conv2"}
    assert all(fc_moved(tmp_path).values()) and len(fc_moved(tmp_path)) == 4


def test_numpy_forward_only_layer_trains_the_fc_layers_when_frozen(fake_data: list[str], tmp_path: Path):
    metrics = train([*fake_data, *TINY, f"conv.name={NUMPY}", "probe=frozen_conv"], tmp_path)["metrics"]
    assert metrics["frozen_unchanged"] is True and metrics["train_images"] == 4
    assert all(fc_moved(tmp_path).values())


def test_numpy_forward_only_layer_asked_to_train_is_one_clear_error(fake_data: list[str], tmp_path: Path):
    with pytest.raises(LayerCheckError, match="forward-only layer"):
        train([*fake_data, *TINY, f"conv.name={NUMPY}", "probe=none"], tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_the_forward_only_error_is_one_line_that_train_py_prints_as_it_is(
    fake_data: list[str], tmp_path: Path
):
    """train.py prints a RunError as `error: <message>` with no traceback (test_signals runs it so)."""
    with pytest.raises(LayerCheckError) as raised:
        train([*fake_data, *TINY, f"conv.name={NUMPY}"], tmp_path)
    assert isinstance(raised.value, RunError) and "\n" not in str(raised.value)
    assert "forward-only layer" in str(raised.value) and "probe=frozen_conv" in str(raised.value)


def test_sweep_over_conv_name_trains_a_function_pair_beside_torch(fake_data: list[str], tmp_path: Path):
    """As documented: the experiment declares MULTIRUN; conv.name=a,b replaces its list of layers."""
    pair = f"{(LAYERS / 'assignment_layers.py').relative_to(REPO)}:conv_forward_naive"  # relative to the cwd
    command = [
        sys.executable, "train.py", "experiment=does_it_learn_vanilla", f"conv.name=torch,{pair}",
        "probe=none", "seed=0", *fake_data, *TINY, f"hydra.sweep.dir={tmp_path}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {}
    for path in tmp_path.rglob("results.json"):
        results = json.loads(path.read_text())
        runs[results["conv"]] = results["metrics"]
    assert set(runs) == {"torch", pair}
    assert min(runs[pair]["conv_drift"].values()) > 0  # the pair's backward reached its weights


class Float32Always(nn.Conv2d):
    """Hands back float32 whatever its input, as a forward that builds `torch.zeros(shape)` does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).float()


def test_an_output_of_another_dtype_is_one_error_naming_the_slot_and_the_cause():
    net = ReferenceNet(Float32Always).double()
    with pytest.raises(LayerOutputError, match=r"conv1 \(Float32Always\) returned torch.float32 .*dtype="):
        net(torch.zeros(1, 1, 28, 28, dtype=torch.float64))
    # The pre-flight pass before training hands the same error on unchanged (one line in train.py).
    with pytest.raises(LayerOutputError, match="conv1"):
        first_step_estimate(ReferenceNet(Float32Always).double(), batch_size=2)
    assert ReferenceNet(Float32Always)(torch.zeros(1, 1, 28, 28)).dtype == torch.float32  # float32 is fine


def test_under_autocast_a_changed_dtype_is_expected():
    net = ReferenceNet(nn.Conv2d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
