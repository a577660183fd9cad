"""Lockstep: a correct conv trains exactly like nn.Conv2d; a conv with a wrong weight gradient does not."""

from pathlib import Path

import pytest
from broken_conv import HalfWeightGradConv2d, ZeroWeightGradConv2d
from torch import nn

from convlab.conv import CONV_LAYERS
from convlab.verify import cli as verify
from convlab.verify import lockstep

SHARED_MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_unfold_matches_conv2d_to_rounding():
    batches = lockstep.random_batches(batch_size=4, steps=5, seed=0)
    results = list(lockstep.run_lockstep(CONV_LAYERS["unfold"], batches))
    assert [r.step for r in results] == [1, 2, 3, 4, 5]
    assert list(results[0].param_diff) == ["conv1", "conv2", "fc1", "fc2"]
    assert all(r.passed(1e-12) for r in results)


def test_dropout_masks_are_identical_in_both_networks():
    # nn.Conv2d against itself: any difference would come from different dropout masks.
    batches = lockstep.random_batches(batch_size=4, steps=3, seed=1)
    for result in lockstep.run_lockstep(nn.Conv2d, batches):
        assert max(result.loss_diff, result.grad_diff, *result.param_diff.values()) == 0.0


def test_vanilla_passes_on_a_short_run(capsys):
    assert lockstep.main(["conv=vanilla", "--data", "random", "--steps", "2", "--batch-size", "2"]) == 0
    assert "PASS: vanilla trains like nn.Conv2d for 2 steps" in capsys.readouterr().out


@pytest.mark.parametrize("broken", [ZeroWeightGradConv2d, HalfWeightGradConv2d])
def test_broken_weight_gradient_fails(broken, monkeypatch, capsys):
    monkeypatch.setitem(CONV_LAYERS, "broken", broken)
    assert lockstep.main(["--conv", "broken", "--data", "random", "--steps", "3"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: broken left nn.Conv2d's trajectory at step 1 (tolerance 1e-09)" in out
    assert out.count("  NO\n") == 3


def test_verify_dispatches_lockstep(capsys):
    assert verify.main(["--lockstep", "conv=manual", "--data", "random", "--steps", "2"]) == 0
    assert "lockstep manual vs nn.Conv2d: 2 SGD steps" in capsys.readouterr().out


def test_unknown_conv_is_a_usage_error():
    with pytest.raises(SystemExit) as error:
        lockstep.main(["conv=nope", "--data", "random"])
    assert error.value.code == 2


@pytest.mark.skipif(not SHARED_MIRROR.is_dir(), reason="needs the MNIST mirror ../shared/data")
def test_numpy_on_real_mnist_batches(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CONVLAB_DATA_MIRROR", str(SHARED_MIRROR))
    monkeypatch.chdir(tmp_path)  # the data module copies the raw files into ./data
    assert lockstep.main(["conv=numpy"]) == 0
    out = capsys.readouterr().out
    assert "batch 4 of mnist, float64, tolerance 1e-09" in out
    assert "PASS: numpy trains like nn.Conv2d for 10 steps" in out
