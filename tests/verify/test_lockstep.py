"""Lockstep: a correct conv trains like nn.Conv2d (also when both diverge); a wrong gradient does not;
a layer that hands back the wrong dtype is diagnosed in one line."""

import math
from pathlib import Path

import pytest
import torch
from broken_conv import HalfWeightGradConv2d, ZeroWeightGradConv2d
from torch import nn

from convlab.conv import CONV_LAYERS
from convlab.conv.unfold import UnfoldConv2d
from convlab.verify import cli as verify
from convlab.verify import lockstep

TESTS = Path(__file__).resolve().parents[1]
SHARED_MIRROR = TESTS.parents[1] / "shared" / "data"
RAND_INIT = f"{TESTS / 'learn' / 'broken_layers.py'}:RandInitConv2d"
LEARNER = f"{TESTS / 'user_layers' / 'learner_conv.py'}:VanillaConv2d"


def test_unfold_matches_conv2d_to_rounding():
    batches = lockstep.random_batches(batch_size=4, steps=5, seed=0)
    results = list(lockstep.run_lockstep(CONV_LAYERS["unfold"], batches))
    assert [r.step for r in results] == [1, 2, 3, 4, 5]
    assert list(results[0].param_diff) == ["conv1", "conv2", "fc1", "fc2"]
    assert all(r.passed(1e-12) and r.judged for r in results)


def test_dropout_masks_are_identical_in_both_networks():
    # nn.Conv2d against itself: any difference would come from different dropout masks.
    batches = lockstep.random_batches(batch_size=4, steps=3, seed=1)
    for result in lockstep.run_lockstep(nn.Conv2d, batches):
        assert result.worst == 0.0


def test_reference_init_is_copied_into_the_layer():
    # The layer's own torch.rand init is replaced by nn.Conv2d's: the two start identical.
    candidate, reference = lockstep.twin_networks(RAND_INIT, torch.float64, seed=0)
    for slot, layer in candidate.conv_layers().items():
        assert torch.equal(layer.weight, reference.conv_layers()[slot].weight)
    assert (reference.conv1.weight < 0).any()


def test_vanilla_passes_on_a_short_run(capsys):
    assert lockstep.main(["conv=vanilla", "--data", "random", "--steps", "2", "--batch-size", "2"]) == 0
    assert "PASS: vanilla trains like nn.Conv2d for 2 steps" in capsys.readouterr().out


def test_diverging_pair_passes_relative_to_scale_with_a_note(capsys):
    # torch.rand's all-positive init in both networks: the losses explode, the layer is still correct.
    argv = ["--conv", RAND_INIT, "--init", "layer", "--data", "random", "--steps", "5"]
    assert lockstep.main(argv) == 0
    out = capsys.readouterr().out
    assert "tolerance 1e-09 relative" in out
    assert "note: both networks diverge from step 2 (nn.Conv2d's loss" in out
    assert "the init or the learning rate, not your layer" in out
    assert "PASS: " in out and "RandInitConv2d trains like nn.Conv2d for 5 steps" in out


def test_diverging_pair_differs_far_above_an_absolute_tolerance():
    # Why the rule is relative: the parameters' absolute differences outgrow 1e-9 with their scale.
    batches = lockstep.random_batches(batch_size=4, steps=4, seed=0)
    results = list(lockstep.run_lockstep(RAND_INIT, batches, init="layer"))
    assert results[-1].reference_loss > 1e4
    assert all(r.passed(1e-12) for r in results)
    assert lockstep.divergence_step(results) == 2


def test_non_finite_values_equal_in_both_count_as_equal():
    a = torch.tensor([math.inf, math.nan, 1.0, math.nan])
    b = torch.tensor([math.inf, math.nan, 1.5, 2.0])
    assert lockstep.abs_diff(a, b).tolist() == [0.0, 0.0, 0.5, math.inf]


@pytest.mark.parametrize("broken", [ZeroWeightGradConv2d, HalfWeightGradConv2d])
def test_broken_weight_gradient_fails(broken, monkeypatch, capsys):
    monkeypatch.setitem(CONV_LAYERS, "broken", broken)
    assert lockstep.main(["--conv", "broken", "--data", "random", "--steps", "3"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: broken left nn.Conv2d's trajectory at step 1 (tolerance 1e-09 relative)" in out
    assert out.count("  NO\n") == 3


def test_a_class_object_from_python():
    class Mine(UnfoldConv2d):
        pass

    results = list(lockstep.run_lockstep(Mine, lockstep.random_batches(2, 2, seed=0)))
    assert all(r.passed(1e-12) for r in results)


def test_float32_output_for_float64_input_is_one_line(capsys):
    # The learner's layer builds its output with torch.zeros(...) and no dtype=.
    argv = ["conv=" + LEARNER, "--data", "random", "--steps", "1", "--batch-size", "1"]
    assert lockstep.main(argv) == 1
    out = capsys.readouterr().out
    fail = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and "Traceback" not in out
    assert "returned torch.float32 for a torch.float64 input" in fail[0]
    assert "Run lockstep with --dtype float32" in fail[0]


def test_verify_dispatches_lockstep(capsys):
    assert verify.main(["--lockstep", "conv=manual", "--data", "random", "--steps", "2"]) == 0
    assert "lockstep manual vs nn.Conv2d: 2 SGD steps" in capsys.readouterr().out


def test_unknown_conv_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as error:
        lockstep.main(["conv=nope", "--data", "random"])
    assert error.value.code == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_MIRROR.is_dir(), reason="needs the MNIST mirror ../shared/data")
def test_numpy_on_real_mnist_batches(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CONVLAB_DATA_MIRROR", str(SHARED_MIRROR))
    monkeypatch.chdir(tmp_path)  # the data module copies the raw files into ./data
    assert lockstep.main(["conv=numpy"]) == 0
    out = capsys.readouterr().out
    assert "batch 4 of mnist, float64" in out and "tolerance 1e-09 relative" in out
    assert "PASS: numpy trains like nn.Conv2d for 10 steps" in out
