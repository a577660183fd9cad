"""Adapters: a user's layer, unchanged, with nn.Conv2d's constructor, weight/bias, state_dict and init."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlab.conv import UnsupportedFeature, resolve_conv

USER_LAYERS = Path(__file__).resolve().parents[1] / "user_layers"


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path holding the user-layer fixtures, as the working directory."""
    for path in USER_LAYERS.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
        monkeypatch.delitem(sys.modules, path.stem, raising=False)  # a user file importing its neighbour
    monkeypatch.chdir(tmp_path)
    return tmp_path


def reference_grads(layer: nn.Module, x: torch.Tensor, **conv: int) -> tuple[torch.Tensor, ...]:
    """(out, dx, dW, db) of F.conv2d with the layer's weights, for out.sum()."""
    x = x.detach().clone().requires_grad_()
    w, b = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias))
    out = F.conv2d(x, w, b, **conv)
    out.backward(torch.ones_like(out))
    return out.detach(), x.grad, w.grad, b.grad


# --- an nn.Module layer: the learner's -----------------------------------------------------------------


def test_learner_layer_gets_nn_conv2d_face(user_dir: Path) -> None:
    layer = resolve_conv("learner_conv.py:VanillaConv2d")(2, 3, 3, stride=2, padding=1)  # kernel int: retried
    user = layer.layer
    assert layer.weight is user.filter_weights and layer.bias is user.filter_biases
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (2, 3, (3, 3))
    assert (layer.stride, layer.padding, layer.dilation, layer.groups) == ((2, 2), (1, 1), (1, 1), 1)
    assert layer.padding_mode == "zeros" and layer.transposed is False and layer.output_padding == (0, 0)
    x = torch.randn(2, 2, 5, 6)
    expected = reference_grads(layer, x, stride=2, padding=1)
    x.requires_grad_()
    out = layer(x)
    out.backward(torch.ones_like(out))
    for got, want in zip((out, x.grad, layer.weight.grad, layer.bias.grad), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_optimizer_and_state_dict_act_on_the_users_parameters(user_dir: Path) -> None:
    adapted = resolve_conv("learner_conv.py:VanillaConv2d")
    layer = adapted(1, 2, 3)
    assert list(layer.state_dict()) == ["weight", "bias"]
    reference = nn.Conv2d(1, 2, 3)
    layer.load_state_dict(reference.state_dict())
    assert torch.equal(layer.layer.filter_weights, reference.weight)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.randn(1, 1, 4, 4)).sum().backward()
    optimizer.step()
    assert not torch.equal(layer.layer.filter_weights, reference.weight)
    reference.load_state_dict(layer.state_dict())
    assert torch.equal(reference.weight, layer.weight)
    net = nn.Sequential(adapted(1, 2, 3))
    assert list(net.state_dict()) == ["0.weight", "0.bias"]
    net.load_state_dict(nn.Sequential(nn.Conv2d(1, 2, 3)).state_dict())


def test_unsupported_features_are_refused_by_name(user_dir: Path) -> None:
    adapted = resolve_conv("learner_conv.py:VanillaConv2d")
    refused = {
        "dilation": {"dilation": 2},
        "groups": {"groups": 2},
        "bias=False": {"bias": False},
        "padding_mode='reflect'": {"padding_mode": "reflect"},
    }
    for feature, options in refused.items():
        with pytest.raises(UnsupportedFeature) as raised:
            adapted(2, 4, 3, **options)
        assert raised.value.feature == feature
        assert "its constructor takes: in_channels, out_channels, kernel_size, stride, padding" in str(
            raised.value
        )
    assert isinstance(raised.value, NotImplementedError)
    adapted(2, 4, 3, dilation=1, groups=1, bias=True, padding_mode="zeros")  # defaults are not features


def test_non_square_kernel_is_taken_as_given(user_dir: Path) -> None:
    layer = resolve_conv("learner_conv.py:VanillaConv2d")(2, 3, (2, 3))
    assert layer.weight.shape == (3, 2, 2, 3)


def test_kernel_pair_retried_as_int_and_refused_when_non_square(user_dir: Path) -> None:
    (user_dir / "intk.py").write_text(
        "import torch\n"
        "class IntKernel(torch.nn.Module):\n"
        "    def __init__(self, in_channels, out_channels, kernel_size):\n"
        "        super().__init__()\n"
        "        shape = (out_channels, in_channels, kernel_size, kernel_size)\n"
        "        self.weight = torch.nn.Parameter(torch.zeros(shape))\n"
        "        self.bias = torch.nn.Parameter(torch.zeros(out_channels))\n"
    )
    adapted = resolve_conv("intk.py:IntKernel")
    assert adapted(2, 3, (3, 3)).weight.shape == (3, 2, 3, 3)
    with pytest.raises(UnsupportedFeature) as raised:
        adapted(2, 3, (2, 3))
    assert raised.value.feature == "non-square kernel"


def test_dtype_and_device_applied_after_construction(user_dir: Path) -> None:
    layer = resolve_conv("learner_conv.py:VanillaConv2d")(1, 2, 3, dtype=torch.float64, device="cpu")
    assert layer.weight.dtype == torch.float64 and layer.bias.dtype == torch.float64
    # The layer's own torch.zeros is float32: the adapter does not hide it (verify diagnoses it).
    assert layer(torch.randn(1, 1, 4, 4, dtype=torch.float64)).dtype == torch.float32


def test_reset_parameters_redraws_in_place_through_the_constructor(user_dir: Path) -> None:
    layer = resolve_conv("learner_conv.py:VanillaConv2d")(2, 3, 3, dtype=torch.float64)
    weight, before = layer.weight, layer.weight.detach().clone()
    layer.reset_parameters()
    assert layer.weight is weight and weight.dtype == torch.float64
    assert not torch.equal(before, weight)
    assert (weight > 0).all()  # the learner's own init, torch.rand


def test_reset_parameters_uses_the_layers_own(user_dir: Path) -> None:
    (user_dir / "own.py").write_text(
        "import torch\n"
        "class Own(torch.nn.Module):\n"
        "    def __init__(self, in_channels, out_channels, kernel_size):\n"
        "        super().__init__()\n"
        "        shape = (out_channels, in_channels, kernel_size, kernel_size)\n"
        "        self.weight = torch.nn.Parameter(torch.zeros(shape))\n"
        "        self.bias = torch.nn.Parameter(torch.zeros(out_channels))\n"
        "    def reset_parameters(self):\n"
        "        torch.nn.init.constant_(self.weight, 7.0)\n"
    )
    layer = resolve_conv("own.py:Own")(1, 2, 3)
    layer.reset_parameters()
    assert (layer.weight == 7).all()


# --- a NumPy class ---------------------------------------------------------------------------------------


def test_numpy_class_forward_matches_f_conv2d_in_the_notebooks_setting(user_dir: Path) -> None:
    layer = resolve_conv("numpy_conv.py:NumpyConv")(7, 17, 7, stride=3, padding=2, dtype=torch.float64)
    assert isinstance(layer.weight, nn.Parameter) and layer.weight.dtype == torch.float64
    x = torch.randn(11, 7, 30, 30, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (11, 17, 10, 10) and out.dtype == torch.float64
    torch.testing.assert_close(out, F.conv2d(x, layer.weight, layer.bias, stride=3, padding=2))


def test_numpy_weights_flow_into_the_users_arrays(user_dir: Path) -> None:
    layer = resolve_conv("numpy_conv.py:NumpyConv")(1, 1, 3)
    assert layer.weight.dtype == torch.float32  # nn.Conv2d's default dtype, not NumPy's
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(0.5)
    x = torch.ones(1, 1, 3, 3)
    assert layer(x).item() == 9.5
    assert np.all(layer.layer_object.kernel == 1.0)
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight)


def test_numpy_class_is_forward_only_with_a_clear_error(user_dir: Path) -> None:
    layer = resolve_conv("numpy_conv.py:NumpyConv")(1, 2, 3)
    out = layer(torch.randn(1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="forward-only layer: numpy_conv.py:NumpyConv has no backward"):
        out.sum().backward()
    layer.requires_grad_(False)  # frozen, on an input that needs no gradient: nothing to differentiate
    assert not layer(torch.randn(1, 1, 4, 4)).requires_grad


# --- a function pair -----------------------------------------------------------------------------------


def run_pair(spec: str, **conv: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    layer = resolve_conv(spec)(2, 3, 3, dtype=torch.float64, **conv)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64)
    expected = reference_grads(layer, x, **conv)
    x.requires_grad_()
    out = layer(x)
    out.backward(torch.ones_like(out))
    return (out.detach(), x.grad, layer.weight.grad, layer.bias.grad), expected


def test_correct_pair_matches_f_conv2d_both_ways(user_dir: Path) -> None:
    got, expected = run_pair("assignment_layers.py:conv_forward_naive", stride=2, padding=1)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_wrong_pair_has_a_wrong_bias_gradient_only(user_dir: Path) -> None:
    got, expected = run_pair("assignment_layers.py:conv_forward_wrong", padding=1)
    for g, e in zip(got[:3], expected[:3], strict=True):
        torch.testing.assert_close(g, e)
    assert not torch.allclose(got[3], expected[3])


def test_pair_double_backward_raises(user_dir: Path) -> None:
    layer = resolve_conv("assignment_layers.py:conv_forward_naive")(1, 2, 3, dtype=torch.float64)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    (grad_w,) = torch.autograd.grad(layer(x).pow(2).sum(), layer.weight, create_graph=True)
    for wrt in (x, layer.weight):  # never a silent None: allow_unused cannot hide it either
        with pytest.raises(RuntimeError, match="double backward: assignment_layers.py:conv_forward_naive"):
            torch.autograd.grad(grad_w.sum(), wrt, allow_unused=True)


def test_pair_refuses_what_conv_param_cannot_say(user_dir: Path) -> None:
    adapted = resolve_conv("assignment_layers.py:conv_forward_naive")
    for options, feature in [
        ({"dilation": 2}, "dilation"),
        ({"groups": 2}, "groups"),
        ({"padding": (1, 0)}, "asymmetric padding"),
        ({"padding": "same"}, "padding='same'"),
        ({"stride": (1, 2)}, "asymmetric stride"),
        ({"bias": False}, "bias=False"),
        ({"padding_mode": "circular"}, "padding_mode='circular'"),
    ]:
        with pytest.raises(UnsupportedFeature) as raised:
            adapted(2, 4, 3, **options)
        assert raised.value.feature == feature


def test_forward_only_pair_says_so_on_backward(user_dir: Path) -> None:
    (user_dir / "fwd.py").write_text(
        "from assignment_layers import conv_forward_naive as base\n"
        "def my_conv(x, w, b, conv_param):\n"
        "    return base(x, w, b, conv_param)\n"
    )
    layer = resolve_conv("fwd.py:my_conv")(1, 2, 3)
    out = layer(torch.randn(1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="forward-only layer: fwd.py:my_conv has no backward function"):
        out.sum().backward()


# --- pickling: ddp_spawn's workers and torch.save of a whole model rebuild the adapter class ----------


@pytest.mark.parametrize(
    "spec",
    [
        "learner_conv.py:VanillaConv2d",
        "numpy_conv.py:NumpyConv",
        "assignment_layers.py:conv_forward_naive",
        "assignment_layers.py:conv_forward_naive,conv_backward_wrong",
    ],
)
def test_adapted_layers_pickle(user_dir: Path, spec: str) -> None:
    import pickle

    layer = resolve_conv(spec)(1, 2, 3)
    copy = pickle.loads(pickle.dumps(layer))
    assert type(copy) is type(layer) and type(copy).label == spec
    assert torch.equal(copy.weight, layer.weight)
    recipe_files = [item for item in type(layer).recipe[0] if isinstance(item, str)]
    assert all(Path(item.rpartition(":")[0]).is_absolute() for item in recipe_files)  # found from any cwd
