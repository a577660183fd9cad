"""verify on users' layers: the capability table, forward-only layers, function pairs, the notebook's
mixed-precision comparison, and the exit status.

The user files are copied out of the repository into tmp_path, the working directory, as a user's
would be.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from convlab.conv import resolve_conv
from convlab.verify.capability import FAILS, PASSES, UNSUPPORTED
from convlab.verify.cli import main
from convlab.verify.layer_check import check_layer
from convlab.verify.mixed_precision import against_nn_conv2d

USER_LAYERS = Path(__file__).resolve().parents[1] / "user_layers"
LEARNER = "learner_conv.py:VanillaConv2d"

LEARNER_CAPABILITIES = {  # float32, no torch.compile row (--quick)
    "forward and backward": PASSES,
    "stride": PASSES,
    "integer padding": PASSES,
    "non-square kernel and input": PASSES,
    "dilation": UNSUPPORTED,
    "groups": UNSUPPORTED,
    "padding modes": UNSUPPORTED,
    "padding='same'/'valid'": UNSUPPORTED,
    "unbatched input": UNSUPPORTED,
    "bias=False": UNSUPPORTED,
    "empty batch": UNSUPPORTED,
    "double backward": PASSES,
    "forward-mode AD": PASSES,
    "torch.func.vmap": UNSUPPORTED,
}


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for path in USER_LAYERS.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
        monkeypatch.delitem(sys.modules, path.stem, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, name: str, source: str) -> None:
    (folder / name).write_text(textwrap.dedent(source))


def test_learner_capability_table(user_dir: Path) -> None:
    check = check_layer(LEARNER, dtypes=[torch.float32], quick=True, cost=False)
    assert {row.feature: row.status for row in check.capabilities} == LEARNER_CAPABILITIES
    assert check.passed
    details = {row.feature: row.detail for row in check.capabilities}
    assert "does not support dilation" in details["dilation"]
    assert (
        "backward raised RuntimeError: element 0 of tensors does not require grad" in details["empty batch"]
    )
    assert "forward raised ValueError: not enough values to unpack" in details["unbatched input"]
    assert "vmap: inplace arithmetic" in details["torch.func.vmap"]
    init = next(d for d in check.diagnoses if d.aspect == "init")
    assert init.problem and "looks like torch.rand" in init.finding and "U(-1/sqrt(fan_in)" in init.hint
    check.strict = True  # unsupported features now count as failures
    assert not check.passed


def test_learner_float32_exits_zero(user_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([LEARNER, "--quick", "--dtype", "float32", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert f"{LEARNER}: PASS" in out
    assert "not supported" in out and "FAIL" not in out


def test_learner_float64_fails_with_the_dtype_diagnosis(user_dir: Path) -> None:
    check = check_layer(LEARNER, dtypes=[torch.float64], quick=True, cost=False)
    assert not check.passed
    assert check.capability("stride").status == FAILS
    assert check.capability("dilation").status == UNSUPPORTED  # refused before any number is computed
    dtype_row = next(d for d in check.diagnoses if d.aspect == "output dtype")
    assert dtype_row.problem and dtype_row.finding == "output float32 for a float64 input"
    assert "a tensor created without dtype=/device=" in dtype_row.hint
    assert any("out is float32, not float64" in r.problem for r in check.failed_results)


def test_numpy_class_is_checked_forward_only(user_dir: Path) -> None:
    check = check_layer("numpy_conv.py:NumpyConv", dtypes=[torch.float64], quick=True, cost=False)
    assert check.passed
    assert check.capability("forward and backward").status == PASSES
    assert check.capability("stride").status == PASSES
    backward = check.capability("backward")
    assert backward.status == UNSUPPORTED and backward.detail.startswith("forward-only layer")
    assert not check.problems  # no gradient "problem": it has none to give, and says so
    grid = [r for r in check.results if r.check != "gradcheck" and not r.unsupported]
    assert grid and all(r.check == "float64 (forward only)" and set(r.comparisons) == {"out"} for r in grid)


def test_notebook_comparison_is_correct_at_float32s_tolerance(user_dir: Path) -> None:
    result = against_nn_conv2d("numpy_conv.py:NumpyConv", resolve_conv("numpy_conv.py:NumpyConv"))
    assert result.case.input_shape == (11, 7, 30, 30) and result.case.out_channels == 17
    assert result.correct
    assert result.judged_at == torch.float32
    assert "CORRECT" in result.line() and "K = 343" in result.line()


def test_notebook_comparison_catches_a_real_error(user_dir: Path) -> None:
    write(
        user_dir,
        "off.py",
        """
        import numpy as np
        from numpy_conv import NumpyConv

        class OffByBias(NumpyConv):
            def forward(self, x):
                return super().forward(x) + self.bias.reshape(1, -1, 1, 1)
        """,
    )
    result = against_nn_conv2d("off.py:OffByBias", resolve_conv("off.py:OffByBias"))
    assert not result.correct and "a real error" in result.line()


def test_correct_function_pair_passes_both_ways(user_dir: Path) -> None:
    check = check_layer(
        "assignment_layers.py:conv_forward_naive", dtypes=[torch.float64], quick=True, cost=False
    )
    assert check.passed
    assert check.capability("forward and backward").status == PASSES
    assert check.capability("stride").status == PASSES
    assert check.capability("dilation").status == UNSUPPORTED
    assert check.capability("double backward").status == UNSUPPORTED  # refused by name, never silent
    assert any(r.check == "gradcheck" and r.passed for r in check.results)


def test_wrong_function_pair_fails_on_db(user_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["assignment_layers.py:conv_forward_wrong", "--quick", "--dtype", "float64", "--no-cost"]) == 1
    )
    out = capsys.readouterr().out
    assert "FAIL assignment_layers.py:conv_forward_wrong forward and backward:" in out
    assert "db: larger than rounding" in out
    row = check_layer(
        "assignment_layers.py:conv_forward_wrong", dtypes=[torch.float64], quick=True, cost=False
    ).capability("forward and backward")
    assert row.status == FAILS and "db: larger than rounding" in row.detail and "dx" not in row.detail


def test_a_layer_ignoring_its_stride_has_a_wrong_output_shape(user_dir: Path) -> None:
    write(
        user_dir,
        "nostride.py",
        """
        import torch
        import torch.nn.functional as F

        class NoStride(torch.nn.Module):
            def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
                super().__init__()
                self.padding = padding
                shape = (out_channels, in_channels, kernel_size, kernel_size)
                self.weight = torch.nn.Parameter(torch.randn(shape))
                self.bias = torch.nn.Parameter(torch.zeros(out_channels))

            def forward(self, x):
                return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        """,
    )
    check = check_layer("nostride.py:NoStride", dtypes=[torch.float64], quick=True, cost=False)
    stride = check.capability("stride")
    assert stride.status == FAILS
    assert "wrong output shape (2, 3, 5, 5), expected (2, 3, 3, 3)" in stride.detail
    formula = "H_out = (H + 2*padding - dilation*(kernel-1) - 1) // stride + 1"
    assert f"{formula} = (7 + 2*0 - 1*(3-1) - 1) // 2 + 1 = 3" in stride.detail
    assert "Mismatch in shape" not in stride.detail
    assert any(d.aspect == "output shape" and d.problem for d in check.diagnoses)


def test_nn_conv2d_passes_every_row() -> None:
    check = check_layer("torch", dtypes=[torch.float64], quick=True, cost=False)
    assert {c.status for c in check.capabilities} == {PASSES}
    assert [c.feature for c in check.capabilities][-3:] == [
        "double backward",
        "forward-mode AD",
        "torch.func.vmap",
    ]
