"""Layer specs: every spelling resolves, every failure is one clear SpecError, labels follow the spec.

The user files are copied out of the repository into tmp_path, which becomes the working directory:
specs are relative to it, as a user's would be.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convlab.conv import CONV_LAYERS, SpecError, conv_label, get_conv, resolve_conv
from convlab.conv.adapter import FunctionAdapter, ModuleAdapter, NumpyAdapter
from convlab.conv.unfold import UnfoldConv2d

USER_LAYERS = Path(__file__).resolve().parents[1] / "user_layers"


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path holding the user-layer fixtures, as the working directory."""
    for path in USER_LAYERS.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
        monkeypatch.delitem(sys.modules, path.stem, raising=False)  # imported by name in a test below
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.parametrize("name", list(CONV_LAYERS))
def test_a_registered_name_is_the_registered_class(name: str) -> None:
    assert resolve_conv(name) is CONV_LAYERS[name]
    assert get_conv(name) is CONV_LAYERS[name]
    assert conv_label(name) == name
    assert conv_label(CONV_LAYERS[name]) == name


def test_a_module_path_to_a_registered_class_is_that_class() -> None:
    assert resolve_conv("convlab.conv.unfold:UnfoldConv2d") is UnfoldConv2d


def test_a_module_path_to_a_user_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "mylayers/__init__.py", "")
    shutil.copy(USER_LAYERS / "learner_conv.py", tmp_path / "mylayers" / "learner.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    layer_class = resolve_conv("mylayers.learner:VanillaConv2d")
    assert issubclass(layer_class, ModuleAdapter)
    assert conv_label(layer_class) == "mylayers.learner:VanillaConv2d"
    assert layer_class(1, 2, 3).weight.shape == (2, 1, 3, 3)


def test_a_file_path_relative_to_the_working_directory(user_dir: Path) -> None:
    (user_dir / "sub").mkdir()
    shutil.copy(user_dir / "learner_conv.py", user_dir / "sub" / "learner_conv.py")
    for spec in ("learner_conv.py:VanillaConv2d", "sub/learner_conv.py:VanillaConv2d"):
        layer_class = resolve_conv(spec)
        assert issubclass(layer_class, ModuleAdapter)
        assert (layer_class.weight_name, layer_class.bias_name) == ("filter_weights", "filter_biases")
        assert conv_label(spec) == spec
        assert conv_label(layer_class) == spec
    assert resolve_conv("learner_conv.py:VanillaConv2d") is resolve_conv(" learner_conv.py:VanillaConv2d")


def test_the_same_unchanged_file_is_loaded_once(user_dir: Path) -> None:
    first = resolve_conv("learner_conv.py:VanillaConv2d")
    assert resolve_conv("learner_conv.py:VanillaConv2d") is first
    assert first.user_class is resolve_conv("./learner_conv.py:VanillaConv2d").user_class


def test_a_numpy_class(user_dir: Path) -> None:
    layer_class = resolve_conv("numpy_conv.py:NumpyConv")
    assert issubclass(layer_class, NumpyAdapter)
    assert (layer_class.weight_name, layer_class.bias_name) == ("kernel", "bias")


def test_a_function_pair_finds_its_backward_by_name(user_dir: Path) -> None:
    layer_class = resolve_conv("assignment_layers.py:conv_forward_naive")
    assert issubclass(layer_class, FunctionAdapter)
    assert layer_class.backward_fn.__name__ == "conv_backward_naive"
    wrong = resolve_conv("assignment_layers.py:conv_forward_wrong")
    assert wrong.backward_fn.__name__ == "conv_backward_wrong"


def test_a_function_pair_given_explicitly(user_dir: Path) -> None:
    spec = "assignment_layers.py:conv_forward_naive,conv_backward_wrong"
    layer_class = resolve_conv(spec)
    assert layer_class.forward_fn.__name__ == "conv_forward_naive"
    assert layer_class.backward_fn.__name__ == "conv_backward_wrong"
    assert conv_label(layer_class) == spec


def test_a_forward_without_backward_is_forward_only(user_dir: Path) -> None:
    write(user_dir, "fwd.py", "def my_conv(x, w, b, conv_param):\n    return x, None\n")
    assert resolve_conv("fwd.py:my_conv").backward_fn is None


def test_objects_resolve_like_their_specs(user_dir: Path) -> None:
    sys.path.insert(0, str(user_dir))
    try:
        import assignment_layers
        import learner_conv
    finally:
        sys.path.remove(str(user_dir))
    by_class = resolve_conv(learner_conv.VanillaConv2d)
    assert issubclass(by_class, ModuleAdapter) and by_class.user_class is learner_conv.VanillaConv2d
    assert conv_label(learner_conv.VanillaConv2d) == "learner_conv:VanillaConv2d"
    by_instance = resolve_conv(learner_conv.VanillaConv2d(1, 2, (3, 3)))
    assert by_instance.user_class is learner_conv.VanillaConv2d
    by_function = resolve_conv(assignment_layers.conv_forward_naive)
    assert by_function.backward_fn is assignment_layers.conv_backward_naive
    pair = (assignment_layers.conv_forward_naive, assignment_layers.conv_backward_wrong)
    assert resolve_conv(pair).backward_fn is assignment_layers.conv_backward_wrong
    assert conv_label(pair) == "assignment_layers:conv_forward_naive,conv_backward_wrong"
    assert resolve_conv(nn.Conv2d(1, 2, 3)) is nn.Conv2d


def test_probing_leaves_the_global_generators_alone(user_dir: Path) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    resolve_conv("numpy_conv.py:NumpyConv", weight="kernel")
    resolve_conv("learner_conv.py:VanillaConv2d", weight="filter_weights")
    torch.manual_seed(0)
    np.random.seed(0)
    expected = torch.rand(1).item(), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    resolve_conv("numpy_conv.py:NumpyConv", bias="bias")
    resolve_conv("learner_conv.py:VanillaConv2d", bias="filter_biases")
    assert (torch.rand(1).item(), np.random.rand()) == expected


# --- one clear error for each way a spec fails ---------------------------------------------------------


def error_of(spec: object, **names: str) -> str:
    with pytest.raises(SpecError) as raised:
        resolve_conv(spec, **names)
    return str(raised.value)


def test_missing_file(user_dir: Path) -> None:
    message = error_of("no_such.py:VanillaConv2d")
    assert "no_such.py: no such file" in message and str(user_dir) in message


def test_missing_attribute_lists_what_the_file_defines(user_dir: Path) -> None:
    message = error_of("learner_conv.py:Conv2d")
    assert message == "learner_conv.py defines no 'Conv2d'; it defines: VanillaConv2d (class)"
    pair_message = error_of("assignment_layers.py:conv_forward")
    assert (
        "conv_forward_naive (function)" in pair_message and "conv_backward_wrong (function)" in pair_message
    )


def test_syntax_error_names_file_and_line(user_dir: Path) -> None:
    write(user_dir, "broken.py", "import torch\n\nclass Conv(torch.nn.Module:\n    pass\n")
    message = error_of("broken.py:Conv")
    assert message.startswith("broken.py:3: cannot load it: SyntaxError")
    assert "class Conv(torch.nn.Module:" in message


def test_import_error_gives_its_cause_and_line(user_dir: Path) -> None:
    write(user_dir, "needs.py", "import torch\nimport not_a_real_package_xyz\n")
    message = error_of("needs.py:Conv")
    assert "ModuleNotFoundError" in message and "not_a_real_package_xyz" in message
    assert "needs.py:2" in message
    write(user_dir, "raises.py", "x = 1\nraise RuntimeError('no GPU here')\n")
    assert (
        error_of("raises.py:Conv")
        == "raises.py: importing it raised RuntimeError: no GPU here (at raises.py:2)"
    )
    assert "no module of that name" in error_of("not_a_real_package_xyz.layers:Conv")


def test_constructor_needing_an_unknown_argument(user_dir: Path) -> None:
    write(
        user_dir,
        "odd.py",
        """
        import torch
        class OddConv(torch.nn.Module):
            def __init__(self, in_channels, out_channels, kernel_size, temperature):
                super().__init__()
        """,
    )
    message = error_of("odd.py:OddConv")
    assert "its constructor needs 'temperature'" in message
    assert "Give that argument a default value" in message


def test_no_weight_shaped_parameter(user_dir: Path) -> None:
    write(
        user_dir,
        "flat.py",
        """
        import torch
        class FlatConv(torch.nn.Module):
            def __init__(self, in_channels, out_channels, kernel_size):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(out_channels, in_channels * kernel_size**2))
        """,
    )
    message = error_of("flat.py:FlatConv")
    assert "no weight-shaped parameter: expected one of shape (5, 2, 3, 3)" in message
    assert "found: w (5, 18)" in message


def test_two_candidates_are_listed_with_how_to_name_them(user_dir: Path) -> None:
    write(
        user_dir,
        "twice.py",
        """
        import torch
        from torch import nn
        class TwoConv(nn.Module):
            def __init__(self, in_channels, out_channels, kernel_size):
                super().__init__()
                shape = (out_channels, in_channels, kernel_size, kernel_size)
                self.w_a, self.w_b = nn.Parameter(torch.zeros(shape)), nn.Parameter(torch.zeros(shape))
                self.b = nn.Parameter(torch.zeros(out_channels))
        """,
    )
    message = error_of("twice.py:TwoConv")
    assert "2 parameters could be the weight (shape (5, 2, 3, 3)): w_a, w_b" in message
    assert "weight=NAME" in message and "--weight NAME --bias NAME" in message
    assert "conv.weight=NAME conv.bias=NAME" in message
    chosen = resolve_conv("twice.py:TwoConv", weight="w_b")
    layer = chosen(3, 4, 3)
    assert layer.weight is layer.layer.w_b and layer.bias is layer.layer.b
    assert "no parameter named 'w_c'" in error_of("twice.py:TwoConv", weight="w_c")
    assert "'b' has shape (5,), but the weight here must have shape" in error_of(
        "twice.py:TwoConv", weight="b"
    )


def test_malformed_specs(user_dir: Path) -> None:
    assert error_of("fft").startswith("unknown conv layer 'fft': expected a registered name (vanilla,")
    assert "name what in it to use, as learner_conv.py:Name" in error_of("learner_conv.py")
    assert "at most two names" in error_of("assignment_layers.py:a,b,c")
    assert "not a Python name" in error_of("learner_conv.py:Vanilla-Conv")
    assert "must name two functions" in error_of("learner_conv.py:VanillaConv2d,VanillaConv2d")
    assert "is not a conv layer" in error_of(42)
    with pytest.raises(KeyError, match="registered"):
        get_conv("fft")
