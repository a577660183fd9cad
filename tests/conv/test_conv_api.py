"""Every implementation is a drop-in for nn.Conv2d: errors, state_dict, init, repr, dtype/device, shapes."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from convlab.conv import CONV_LAYERS, get_conv
from convlab.verify.tolerance import compare

BASE = {"in_channels": 2, "out_channels": 2, "kernel_size": 3}


def _input(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)


# (id, constructor keywords over BASE, input, text the message must contain: the offending value)
ERROR_CASES = [
    ("bad padding string", {"padding": "full"}, _input(1, 2, 5, 5), "'full'"),
    ("same with stride 2", {"padding": "same", "stride": 2}, _input(1, 2, 5, 5), "stride=(2, 2)"),
    ("stride 0", {"stride": 0}, _input(1, 2, 5, 5), "stride=(0, 0)"),
    ("negative stride", {"stride": (1, -2)}, _input(1, 2, 5, 5), "stride=(1, -2)"),
    ("groups 0", {"groups": 0}, _input(1, 2, 5, 5), "groups=0"),
    ("negative groups", {"groups": -1}, _input(1, 2, 5, 5), "groups=-1"),
    ("groups not dividing in", {"in_channels": 3, "groups": 2}, _input(1, 3, 5, 5), "in_channels=3"),
    ("groups not dividing out", {"out_channels": 3, "groups": 2}, _input(1, 2, 5, 5), "out_channels=3"),
    ("bad padding_mode", {"padding_mode": "wrap"}, _input(1, 2, 5, 5), "'wrap'"),
    ("wrong channel count", {}, _input(1, 3, 5, 5), "3 channels"),
    ("2-D input", {}, _input(5, 5), "[5, 5]"),
    ("5-D input", {}, _input(1, 1, 2, 5, 5), "[1, 1, 2, 5, 5]"),
    ("kernel larger than padded input", {"kernel_size": 7, "padding": 1}, _input(1, 2, 4, 4), "(6 x 6)"),
    ("dilated kernel too large", {"dilation": 3}, _input(1, 2, 6, 6), "(7 x 7)"),
    ("negative padding", {"padding": -1}, _input(1, 2, 5, 5), "padding=(-1, -1)"),
    ("dilation 0", {"dilation": 0}, _input(1, 2, 5, 5), "[0, 0]"),
    ("kernel size 0", {"kernel_size": 0}, _input(1, 2, 5, 5), "kernel_height: 0"),
    ("out_channels 0", {"out_channels": 0}, _input(1, 2, 5, 5), "[0, 2, 3, 3]"),
    ("padding of 3 values", {"padding": (1, 1, 1)}, _input(1, 2, 5, 5), "[1, 1, 1]"),
    (
        "reflect padding too large",
        {"padding": 4, "padding_mode": "reflect"},
        _input(1, 2, 4, 4),
        "padding (4, 4)",
    ),
    ("float64 input, float32 layer", {}, _input(1, 2, 5, 5, dtype=torch.float64), "float64"),
    ("float64 input, no bias", {"bias": False}, _input(1, 2, 5, 5, dtype=torch.float64), "float64"),
    ("integer input", {}, torch.ones(1, 2, 5, 5, dtype=torch.int64), "int64"),
]


def _outcome(
    cls: type[nn.Module], kwargs: dict, x: torch.Tensor
) -> tuple[str, type[BaseException] | None, str]:
    """(where it failed: 'constructor' or 'forward' or 'ok', exception type, message)."""
    try:
        layer = cls(**{**BASE, **kwargs})
    except Exception as error:
        return "constructor", type(error), str(error)
    try:
        layer(x)
    except Exception as error:
        return "forward", type(error), str(error)
    return "ok", None, ""


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # kernel 0, out_channels 0
@pytest.mark.parametrize(
    "kwargs, x, offending", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_errors_match_nn_conv2d(
    conv_cls: type[nn.Module], kwargs: dict, x: torch.Tensor, offending: str
) -> None:
    where, error_type, message = _outcome(conv_cls, kwargs, x)
    expected_where, expected_type, _ = _outcome(nn.Conv2d, kwargs, x)
    assert expected_type is not None, "the case must be an error for nn.Conv2d"
    assert (where, error_type) == (expected_where, expected_type), message
    if conv_cls is not nn.Conv2d:  # nn.Conv2d's own messages do not always name the value
        assert offending in message


def test_negative_padding_crops_in_non_zero_modes_as_nn_conv2d_does(conv_cls: type[nn.Module]) -> None:
    kwargs = {**BASE, "padding": -1, "padding_mode": "reflect"}
    x = _input(1, 2, 6, 6)
    torch.manual_seed(0)
    reference = nn.Conv2d(**kwargs)
    layer = conv_cls(**kwargs)
    layer.load_state_dict(reference.state_dict())
    assert compare(layer(x), reference(x), reduction=18).passed


PAIR_KWARGS = {"in_channels": 4, "out_channels": 6, "kernel_size": (3, 2), "padding": 1, "groups": 2}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("source, target", list(itertools.permutations(CONV_LAYERS, 2)))
def test_state_dict_loads_between_every_pair(source: str, target: str, bias: bool) -> None:
    kwargs = {**PAIR_KWARGS, "bias": bias, "dtype": torch.float64}
    trained = CONV_LAYERS[source](**kwargs)
    with torch.no_grad():  # weights no fresh init could give, so that loading is what makes them equal
        for parameter in trained.parameters():
            parameter.copy_(torch.randn_like(parameter))
    loaded = CONV_LAYERS[target](**kwargs)
    loaded.load_state_dict(trained.state_dict())  # strict: same keys, same shapes
    x = _input(2, 4, 6, 5, dtype=torch.float64)
    assert compare(loaded(x), trained(x), reduction=12).passed


INIT_KWARGS = [
    {"in_channels": 3, "out_channels": 8, "kernel_size": 3},
    {"in_channels": 4, "out_channels": 6, "kernel_size": (2, 5), "groups": 2, "bias": False},
    {"in_channels": 1, "out_channels": 32, "kernel_size": 3, "stride": 1},  # the MNIST net's conv1
]


@pytest.mark.parametrize("kwargs", INIT_KWARGS, ids=str)
def test_same_seed_gives_nn_conv2d_init(conv_cls: type[nn.Module], kwargs: dict) -> None:
    torch.manual_seed(1234)
    layer = conv_cls(**kwargs)
    draw_after_layer = torch.rand(1)
    torch.manual_seed(1234)
    reference = nn.Conv2d(**kwargs)
    draw_after_reference = torch.rand(1)
    assert [name for name, _ in layer.named_parameters()] == [
        name for name, _ in reference.named_parameters()
    ]
    for mine, theirs in zip(layer.parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    # The same number of RNG draws: layers built after this one get nn.Conv2d's weights too.
    assert torch.equal(draw_after_layer, draw_after_reference)


REPR_KWARGS = [
    {},
    {"stride": 2, "padding": 1},
    {"padding": "same", "dilation": 2},
    {"padding": "valid"},
    {"kernel_size": (1, 3), "stride": (2, 1), "padding": (0, 1), "groups": 2, "bias": False},
    {"padding": 1, "padding_mode": "circular"},
]


@pytest.mark.parametrize("kwargs", REPR_KWARGS, ids=str)
def test_repr_matches_nn_conv2d(conv_cls: type[nn.Module], kwargs: dict) -> None:
    mine = repr(conv_cls(**{**BASE, **kwargs})).replace(conv_cls.__name__, "Conv2d", 1)
    assert mine == repr(nn.Conv2d(**{**BASE, **kwargs}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_dtype_and_device_keywords(conv_cls: type[nn.Module], dtype: torch.dtype) -> None:
    layer = conv_cls(**BASE, dtype=dtype, device="cpu")
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in layer.parameters())
    out = layer(_input(1, 2, 5, 5, dtype=dtype))
    assert out.dtype == dtype and out.device.type == "cpu"
    meta = conv_cls(**BASE, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())


def test_unbatched_input_gives_unbatched_output(conv_cls: type[nn.Module]) -> None:
    layer = conv_cls(**BASE, padding=1, dtype=torch.float64)
    x = _input(2, 5, 4, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (2, 5, 4)
    assert torch.equal(out, layer(x.unsqueeze(0)).squeeze(0))


@pytest.mark.parametrize("channels", [1, 3], ids=["one_channel", "three_channels"])
def test_memory_format_follows_nn_conv2d(conv_cls: type[nn.Module], channels: int) -> None:
    """A channels-last input gives a channels-last output, as nn.Conv2d's does, with the same values.
    With one input channel the input is also plain contiguous, and nn.Conv2d keeps NCHW."""
    x = _input(2, channels, 6, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    reference = nn.Conv2d(channels, 4, 3, padding=1, dtype=torch.float64)
    layer = conv_cls(channels, 4, 3, padding=1, dtype=torch.float64)
    layer.load_state_dict(reference.state_dict())
    out, expected = layer(x), reference(x)
    for memory_format in (torch.channels_last, torch.contiguous_format):
        assert out.is_contiguous(memory_format=memory_format) == expected.is_contiguous(
            memory_format=memory_format
        )
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
def test_autocast_gives_nn_conv2d_dtype(conv_cls: type[nn.Module], bias: bool) -> None:
    """bf16 autocast on the CPU (Lightning's bf16-mixed): conv2d is on autocast's lower-precision list,
    so every layer returns bfloat16 as nn.Conv2d does, two in a row work, the float32 parameters get
    float32 gradients, and float64 (which autocast leaves alone) stays float64."""
    first, second = conv_cls(3, 4, 3, bias=bias), conv_cls(4, 2, 3, bias=bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = first(_input(2, 3, 8, 8))
        out = second(hidden)
        wide = conv_cls(3, 2, 3, bias=bias, dtype=torch.float64)(_input(1, 3, 5, 5, dtype=torch.float64))
    assert hidden.dtype == out.dtype == torch.bfloat16
    assert wide.dtype == torch.float64
    out.float().sum().backward()
    assert first.weight.grad is not None and first.weight.grad.dtype == torch.float32


def test_registry_names_and_lookup() -> None:
    assert list(CONV_LAYERS) == ["vanilla", "unfold", "manual", "fast", "native", "numpy", "torch"]
    assert get_conv("torch") is nn.Conv2d
    with pytest.raises(KeyError, match="registered"):
        get_conv("fft")


def test_settings_changed_on_a_live_layer_are_checked_and_used(conv_cls: type[nn.Module]) -> None:
    """A layer checks its settings once per distinct setting: a change after a call is seen at the next."""
    torch.manual_seed(0)
    layer, reference = conv_cls(2, 3, 3), nn.Conv2d(2, 3, 3)
    layer.load_state_dict(reference.state_dict())
    x = _input(1, 2, 9, 9)
    layer(x)
    for name, value in (("stride", [2, 2]), ("padding", (1, 2)), ("dilation", (2, 1))):
        setattr(layer, name, value)
        setattr(reference, name, tuple(value) if isinstance(value, list) else value)
        assert compare(layer(x), reference(x), reduction=18).passed, name
    layer.stride = (0, 1)
    with pytest.raises(RuntimeError, match="non-positive stride"):
        layer(x)
