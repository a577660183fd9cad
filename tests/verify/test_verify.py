"""`python -m convlab.verify`: exit status, the explanation of dtype mismatches, output formats."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import Tensor

from convlab.conv import CONV_LAYERS
from convlab.conv.unfold import UnfoldConv2d
from convlab.verify.cases import QUICK_GRID
from convlab.verify.checks import check_case, gradcheck_case
from convlab.verify.cli import main


class OffByOneBias(UnfoldConv2d):
    """Adds the bias once too often: a forward bug."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = super()._conv(x, weight, bias)
        return out if bias is None else out + bias.view(1, -1, 1, 1)


class SinglePrecisionInside(UnfoldConv2d):
    """Correct, but computes in float32 whatever the input: only float32-accurate in a float64 run."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        bias32 = None if bias is None else bias.float()
        return super()._conv(x.float(), weight.float(), bias32).to(x.dtype)


class _DoubledInputGrad(torch.autograd.Function):
    """Identity forward, backward doubled: a wrong hand-written backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return 2 * grad


class WrongBackward(UnfoldConv2d):
    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return super()._conv(_DoubledInputGrad.apply(x), weight, bias)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch):
    """Register test-only layers under a name for the duration of one test."""

    def register(name: str, cls: type) -> str:
        monkeypatch.setitem(CONV_LAYERS, name, cls)
        return name

    return register


def test_exits_zero_for_a_correct_layer(capsys: pytest.CaptureFixture) -> None:
    assert main(["torch", "--quick", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "torch: PASS" in out
    assert "FAIL" not in out


def test_exits_non_zero_for_a_forward_bug(registered, capsys: pytest.CaptureFixture) -> None:
    assert main([registered("off_by_one_bias", OffByOneBias), "--quick", "--failures-only", "--no-cost"]) == 1
    out = capsys.readouterr().out
    assert "off_by_one_bias: FAIL" in out
    assert "a real error" in out


def test_a_wrong_backward_fails_both_the_grid_and_gradcheck() -> None:
    case = QUICK_GRID[0]
    grid = check_case("wrong_backward", WrongBackward, case, torch.float64)
    assert not grid.passed
    assert grid.comparisons["out"].passed and not grid.comparisons["dx"].passed
    assert not gradcheck_case("wrong_backward", WrongBackward, case).passed


def test_float32_inside_a_float64_layer_is_explained(registered, capsys: pytest.CaptureFixture) -> None:
    name = registered("single_precision_inside", SinglePrecisionInside)
    assert main([name, "--quick", "--dtype", "float64", "--no-cost"]) == 1
    out = capsys.readouterr().out
    assert "passes at the float32 tolerance" in out
    assert "only float32-accurate" in out
    # The same layer is right for float32 work.
    assert main([name, "--quick", "--dtype", "float32", "--no-cost"]) == 0


def test_allclose_trap_is_explained(capsys: pytest.CaptureFixture) -> None:
    """float32 results judged at float64's tolerance: the issue's np.allclose failure, explained."""
    assert main(["unfold", "--quick", "--dtype", "float32", "--tolerance-dtype", "float64", "--no-cost"]) == 1
    out = capsys.readouterr().out
    assert "the np.allclose trap" in out
    assert "The tolerance that fits: rtol = 4 * K * eps(float32)" in out


def test_markdown_and_failures_only(capsys: pytest.CaptureFixture) -> None:
    assert main(["numpy", "--quick", "--markdown", "--failures-only", "--no-cost"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # A stamp first (when, where, which versions), then, no row failing, only the summary table.
    assert lines[0].startswith("Made ") and " UTC on " in lines[0] and "torch " in lines[0]
    assert lines[2].startswith("| impl | verdict |")
    assert lines[4].startswith("| numpy | PASS |")


def test_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fft"])
    assert exit_info.value.code == 2
    assert "registered" in capsys.readouterr().err


def test_an_unresolvable_spec_is_a_usage_error_before_any_check(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["torch", "no_such_file.py:MyConv"])
    assert exit_info.value.code == 2
    assert "no_such_file.py: no such file" in capsys.readouterr().err


def test_module_entry_point() -> None:
    command = [sys.executable, "-m", "convlab.verify", "torch", "--quick", "--dtype", "float32"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "torch: PASS" in finished.stdout
