"""Every implementation against F.conv2d: forward and the three gradients, on the verify grid,
on random valid configurations (hypothesis), and on a vector worked out by hand."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlab.conv import CONV_LAYERS
from convlab.verify.cases import GRADCHECK_GRID, GRID, ConvCase
from convlab.verify.checks import check_case, gradcheck_case

DTYPES = [torch.float64, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GRID, ids=lambda case: case.name)
def test_grid_matches_f_conv2d(conv_name: str, conv_cls: type[nn.Module], case: ConvCase, dtype) -> None:
    result = check_case(conv_name, conv_cls, case, dtype)
    assert result.passed, result.notes()


@pytest.mark.parametrize("case", GRADCHECK_GRID, ids=lambda case: case.name)
def test_gradcheck(conv_name: str, conv_cls: type[nn.Module], case: ConvCase) -> None:
    result = gradcheck_case(conv_name, conv_cls, case)
    assert result.passed, result.notes()


def test_vertical_edge_known_vector(conv_cls: type[nn.Module]) -> None:
    """A 5x5 image, columns 0,0,0,10,10, through [[1,0,-1]]*3 with padding 1: worked out by hand."""
    image = torch.tensor([[0.0, 0, 0, 10, 10]] * 5).view(1, 1, 5, 5)
    layer = conv_cls(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0, -1]] * 3).view(1, 1, 3, 3))
    edge_row, middle_row = [0.0, 0, -20, -20, 20], [0.0, 0, -30, -30, 30]
    expected = torch.tensor([edge_row, middle_row, middle_row, middle_row, edge_row]).view(1, 1, 5, 5)
    assert torch.equal(layer(image).detach(), expected)


# Second derivatives, forward-mode AD and torch.func: tests/conv/test_autograd_parity.py.


@st.composite
def conv_cases(draw: st.DrawFn) -> ConvCase:
    """Any valid configuration: every option, unbatched or batch 0 included, input big enough."""
    groups = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    if draw(st.booleans()):
        stride, padding = (1, 1), "same"
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        totals = [2 * p for p in padding]
    sizes = []
    for k, d, total in zip(kernel, dilation, totals, strict=True):
        larger_side = total - total // 2  # reflect needs the input longer than it, circular as long
        smallest = max(1, d * (k - 1) + 1 - total)
        smallest = max(smallest, larger_side + 1 if mode == "reflect" else larger_side)
        sizes.append(draw(st.integers(smallest, smallest + 3)))
    channels = groups * draw(st.integers(1, 2))
    batch = draw(st.sampled_from([(), (0,), (1,), (2,)]))  # () is unbatched
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    options["bias"] = draw(st.booleans())
    return ConvCase((*batch, channels, *sizes), groups * draw(st.integers(1, 2)), kernel, options)


# vanilla runs one Python iteration per output pixel: fewer examples for it.
@pytest.mark.parametrize(
    "name, examples", [(name, 10 if name == "vanilla" else 30) for name in CONV_LAYERS if name != "torch"]
)
def test_random_configurations_match_f_conv2d(name: str, examples: int) -> None:
    @settings(max_examples=examples)
    @given(case=conv_cases(), dtype=st.sampled_from(DTYPES))
    def check(case: ConvCase, dtype: torch.dtype) -> None:
        result = check_case(name, CONV_LAYERS[name], case, dtype)
        assert result.passed, (case.name, result.notes())

    check()
