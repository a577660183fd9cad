"""`vanilla_original` is the learner's layer as posted: same loops, in-place writes, float32 output."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import torch

from convlab.bench.contenders import builtin_impls
from convlab.bench.growth import inplace_writes
from convlab.bench.original_loops import LearnerVanillaConv2d

REPO = Path(__file__).resolve().parents[2]


def learner_fixture():
    spec = importlib.util.spec_from_file_location("learner_conv", REPO / "tests/user_layers/learner_conv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VanillaConv2d


def test_the_loops_are_the_learners_line_for_line():
    posted = learner_fixture()
    for method in ("__init__", "forward"):
        assert inspect.getsource(getattr(LearnerVanillaConv2d, method)) == inspect.getsource(
            getattr(posted, method)
        )


def test_the_bench_times_it_through_the_adapter_with_its_habits_intact():
    impl = builtin_impls()["vanilla_original"]
    assert impl.slow and impl.cls.user_class is LearnerVanillaConv2d
    layer = impl.cls(2, 3, 3, stride=2, padding=1)  # nn.Conv2d's face: an int kernel_size
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (2, 3, 3, 3) and out.dtype == torch.float32  # torch.zeros without dtype=
    assert inplace_writes(out) == out.numel()  # one CopySlices node per output pixel
