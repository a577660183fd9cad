"""The notebook API: convlab.check and convlab.lockstep on layers defined outside the repository."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convlab
from convlab.verify.capability import PASSES, UNSUPPORTED

USER_LAYERS = Path(__file__).resolve().parent / "user_layers"


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user files in tmp_path, importable by name as a notebook beside them would import them."""
    for path in USER_LAYERS.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
        monkeypatch.delitem(sys.modules, path.stem, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_check_a_class_returns_data_and_renders(user_dir: Path) -> None:
    learner = importlib.import_module("learner_conv").VanillaConv2d
    result = convlab.check(learner, dtype="float32", cost=False)
    assert result.passed
    assert result.label == "learner_conv:VanillaConv2d"
    rows = {row["feature"]: row["status"] for row in result.table()}
    assert rows["stride"] == PASSES and rows["dilation"] == UNSUPPORTED
    text = str(result)
    assert "capabilities of learner_conv:VanillaConv2d" in text and "not supported" in text
    assert "looks like torch.rand" in text
    assert result._repr_html_().count("<table>") == 2
    assert "| stride | passes |" in result._repr_markdown_()
    assert repr(result).startswith("<LayerCheck learner_conv:VanillaConv2d: PASS")


def test_check_an_instance_and_a_function_pair(user_dir: Path) -> None:
    layers = importlib.import_module("assignment_layers")
    pair = convlab.check(
        (layers.conv_forward_naive, layers.conv_backward_naive), dtype=torch.float64, cost=False
    )
    assert pair.passed and pair.capability("forward and backward").status == PASSES
    wrong = convlab.check(layers.conv_forward_wrong, dtype="float64", cost=False)  # backward found by name
    assert not wrong.passed
    numpy_layer = importlib.import_module("numpy_conv").NumpyConv(2, 3, 3)
    checked = convlab.check(numpy_layer, dtype="float64", cost=False)
    assert checked.passed and checked.capability("backward").status == UNSUPPORTED


def test_check_refuses_an_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        convlab.check("torch", dtype="float16")


def test_lockstep_as_data(user_dir: Path) -> None:
    learner = importlib.import_module("learner_conv").VanillaConv2d
    result = convlab.lockstep(learner, steps=2, batch_size=1, data="random", dtype="float32")
    assert result.passed and len(result.steps) == 2
    assert "PASS, 2 steps" in str(result) and "<table>" in result._repr_html_()
    stopped = convlab.lockstep(
        learner, steps=2, batch_size=1, data="random"
    )  # float64: the learner answers float32
    assert not stopped.passed and "float32" in stopped.error
    assert str(stopped).startswith("learner_conv:VanillaConv2d: FAIL")


def test_lockstep_stays_callable_after_importing_its_module() -> None:
    import convlab.lockstep

    assert callable(convlab.lockstep) and callable(convlab.lockstep.main)
    assert convlab.lockstep is sys.modules["convlab.lockstep"]


def test_from_python_c_outside_the_repository(user_dir: Path) -> None:
    code = (
        "import convlab\n"
        "from learner_conv import VanillaConv2d\n"
        "result = convlab.check(VanillaConv2d, dtype='float32', cost=False)\n"
        "print(result)\n"
        "print(convlab.lockstep(VanillaConv2d, steps=2, batch_size=1, data='random', dtype='float32'))\n"
        "raise SystemExit(0 if result.passed else 1)\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], cwd=user_dir, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr
    assert "learner_conv:VanillaConv2d: PASS" in finished.stdout
    assert "PASS, 2 steps" in finished.stdout
