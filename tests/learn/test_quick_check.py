"""The one-batch quick check: a correct layer passes every check; each known defect fails the check
aimed at it, with its hint; a layer that cannot run is one line."""

from pathlib import Path

import pytest
from broken_layers import (
    FlippedKernelConv2d,
    OutputIgnoresWeightsConv2d,
    RandInitConv2d,
    SignFlippedWeightGradConv2d,
    ZeroInputGradConv2d,
)

from convlab.conv import SpecError
from convlab.learn.quick_check import main, quick_check

LEARNER = f"{Path(__file__).resolve().parents[1] / 'user_layers' / 'learner_conv.py'}:VanillaConv2d"


def failed(result) -> dict[str, str]:
    return {check.name: check.hint for check in result.checks if not check.passed}


def test_a_correct_layer_passes_every_check(capsys):
    assert main(["unfold"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("quick learning check of unfold: a sanity check on one batch, not a verdict\n")
    assert "  ok    initial loss: 2.31, near ln 10 = 2.30\n" in out
    assert "  ok    overfit: fits the batch to 100% after" in out
    assert (
        "PASS: nothing found that stops unfold from learning (a does-it-learn sweep gives the verdict)" in out
    )


def test_a_true_convolution_passes_too():
    assert quick_check(FlippedKernelConv2d).passed


def test_sign_flipped_gradient_climbs():
    result = quick_check(SignFlippedWeightGradConv2d)
    assert list(failed(result)) == ["gradient sign", "overfit"]
    assert "wrong sign" in failed(result)["gradient sign"]
    assert (
        str(result)
        .splitlines()[-1]
        .endswith("SignFlippedWeightGradConv2d fails gradient sign, overfit: fix these before a sweep")
    )


def test_zero_input_gradient_starves_conv1():
    result = quick_check(ZeroInputGradConv2d)
    gradients = next(check for check in result.checks if check.name == "gradients")
    assert gradients.text == "conv1.weight all zero; conv1.bias all zero"
    assert gradients.hint.startswith("conv1 gets no gradient while a later conv does")


def test_output_that_ignores_its_weights():
    result = quick_check(OutputIgnoresWeightsConv2d)
    assert "weights used" in failed(result) and "gradient sign" in failed(result)
    assert "does not read the weight parameter" in failed(result)["weights used"]


def test_exploding_init_fails_the_initial_loss():
    result = quick_check(RandInitConv2d)
    assert "initial loss" in failed(result) and "overfit" in failed(result)
    assert "torch.rand" in failed(result)["initial loss"]


def test_a_users_file_spec_and_bad_specs():
    # The learner's four-loop layer by its file spec (one image: it is slow): its torch.rand init shows.
    result = quick_check(LEARNER, batch_size=1, steps=1)
    assert result.label.endswith("learner_conv.py:VanillaConv2d")
    assert "torch.rand" in failed(result)["initial loss"]
    with pytest.raises(SpecError):
        quick_check("no_such_file.py:Conv")
    with pytest.raises(SystemExit) as error:
        main(["nope"])
    assert error.value.code == 2
