"""Who `convlab.bench` times: convlab's layers, two baselines of its own, and any user's layer by spec.

Every registered layer (`convlab.conv.CONV_LAYERS`, `torch` being `nn.Conv2d` itself, the baseline),
and two baselines that exist only here:

- `vanilla_original`: a learner's first loops as posted (`convlab.bench.original_loops`), presented
  with `nn.Conv2d`'s face by `convlab.conv.resolve_conv`, as any user's layer is;
- `torch_no_onednn`: `nn.Conv2d` with oneDNN switched off. On a CPU `nn.Conv2d` runs oneDNN's
  convolution kernels; without them PyTorch falls back to its own im2col + BLAS path, the same kind
  of computation a hand-written layer does.

Any other spec (`pkg.mod:Class`, `path/to/file.py:Class`, `path/to/file.py:forward_fn[,backward_fn]`)
is resolved by `convlab.conv.resolve_conv` and labelled by `convlab.conv.conv_label`. How it is timed
depends on how slow it is, which a user's layer does not declare: one forward+backward on a single
image of the first reference shape, against `nn.Conv2d`'s, decides (`speed_probe`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from convlab.bench.original_loops import LearnerVanillaConv2d
from convlab.bench.shapes import BenchCase
from convlab.conv import CONV_LAYERS, conv_label, resolve_conv

BASELINE = "torch"
# What is timed of each layer: a forward (graph recorded, as in training), and a forward and backward.
PASSES = ("fwd", "fwd+bwd")
# A user's layer this many times slower per image than nn.Conv2d is timed like the Python-loop layers,
# and so is one taking this many seconds per image whatever nn.Conv2d took: on a busy machine
# nn.Conv2d's threads can spin against other processes for 1000x their time, and the ratio alone
# would then send a Python-loop layer to the full batch, where it runs for hours.
SLOW_RATIO = 200.0
SLOW_SECONDS_PER_IMAGE = 0.05
# ... and this many times slower, at the large shapes on LARGE_SHAPE_IMAGES images, like `numpy`.
REDUCED_RATIO = 10.0
LARGE_SHAPE_IMAGES = 8


@contextlib.contextmanager
def onednn_off() -> Iterator[None]:
    """oneDNN switched off for PyTorch's own kernels; `torch.backends.mkldnn.flags` would reset more."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


@dataclass(frozen=True)
class BenchImpl:
    """One layer as the bench times it.

    label: its name in tables and bench.json (`conv_label` of the spec).
    cls: a class with nn.Conv2d's constructor.
    slow: a Python-loop layer: timed per image on `--slow-batch` images at the reference shapes only,
        and at growing batch sizes (`convlab.bench.growth`); left out of the network step.
    large_batch: images per call at the large shapes (None: the shape's own batch).
    context: global settings its forward and backward run under.
    builtin: one of convlab's own, known to have a backward; a user's layer is checked first.
    """

    label: str
    cls: type[nn.Module]
    slow: bool = False
    large_batch: int | None = None
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    cpu_only: bool = False
    builtin: bool = True

    def batch_for(self, case: BenchCase, slow_batch: int) -> int:
        """Images per call at `case`: fewer for the slow layers, which are compared per image."""
        if self.slow:
            return slow_batch
        if case.reference or self.large_batch is None:
            return case.batch
        return min(case.batch, self.large_batch)


def builtin_impls() -> dict[str, BenchImpl]:
    """label -> BenchImpl for convlab's layers and the bench's two baselines, in the tables' order."""
    impls = {
        name: BenchImpl(name, cls, slow=name == "vanilla", large_batch=8 if name == "numpy" else None)
        for name, cls in CONV_LAYERS.items()
    }
    impls["vanilla_original"] = BenchImpl("vanilla_original", resolve_conv(LearnerVanillaConv2d), slow=True)
    impls["torch_no_onednn"] = BenchImpl("torch_no_onednn", nn.Conv2d, context=onednn_off, cpu_only=True)
    return impls


def per_image_seconds(cls: type[nn.Module], case: BenchCase, device: torch.device, calls: int) -> float:
    """The fastest of `calls` forward+backward calls on one image of `case` (after one untimed call)."""
    layer, x = case.layer(cls, device), case.input(1, device)
    times = []
    for _ in range(calls + 1):
        start = time.perf_counter()
        out = layer(x)
        if out.requires_grad:
            out.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def speed_probe(cls: type[nn.Module], case: BenchCase, device: torch.device) -> tuple[bool, int | None]:
    """(slow, large_batch) for a user's layer, from its per-image time on `case` against nn.Conv2d's.

    A layer that fails here is taken as slow (timed on few images): the error shows again, with its
    message, where the bench times it.
    """
    try:
        seconds = per_image_seconds(cls, case, device, calls=1)
        ratio = seconds / per_image_seconds(nn.Conv2d, case, device, 5)
    except Exception:  # noqa: BLE001 - reported when the case is timed
        return True, None
    if ratio >= SLOW_RATIO or seconds >= SLOW_SECONDS_PER_IMAGE:
        return True, None
    return False, LARGE_SHAPE_IMAGES if ratio >= REDUCED_RATIO else None


def resolve_impl(spec: str, probe_case: BenchCase, device: torch.device) -> BenchImpl:
    """The BenchImpl for a built-in label or any layer spec; `convlab.conv.SpecError` if it resolves not."""
    builtins = builtin_impls()
    if spec in builtins:
        return builtins[spec]
    cls = resolve_conv(spec)
    slow, large_batch = speed_probe(cls, probe_case, device)
    return BenchImpl(conv_label(spec), cls, slow=slow, large_batch=large_batch, builtin=False)


@dataclass
class Contender:
    """One layer set up for one case: its layer, input, output gradient and batch size.

    backward_error: why forward+backward cannot be timed (a forward-only layer), or None.
    """

    layer: nn.Module
    x: Tensor
    grad_out: Tensor
    batch: int
    context: Callable[[], contextlib.AbstractContextManager] = field(default=contextlib.nullcontext)
    backward_error: str | None = None

    def zero_grad(self) -> None:
        self.x.grad = None
        for p in self.layer.parameters():
            p.grad = None

    def call(self, mode: str) -> Callable[[], object]:
        """One forward (graph recorded, as in training), or one forward and backward."""

        def forward() -> None:
            with self.context():
                self.layer(self.x)

        def forward_backward() -> None:
            with self.context():
                self.layer(self.x).backward(self.grad_out)

        return forward if mode == "fwd" else forward_backward


def make_contender(case: BenchCase, impl: BenchImpl, batch: int, device: torch.device) -> Contender:
    """`impl`'s layer and inputs for `case` at `batch` images.

    Raises what the layer raises: `convlab.conv.UnsupportedFeature` for a feature it does not take,
    anything else from a forward that fails. A user's layer also runs one backward here, so that a
    forward-only layer is reported as such (`backward_error`) instead of failing mid-measurement.
    """
    layer = case.layer(impl.cls, device)
    x = case.input(batch, device)
    with impl.context():
        out = layer(x)
    grad_out = torch.randn_like(out.detach())
    contender = Contender(layer, x, grad_out, batch, impl.context)
    if not impl.builtin:
        try:
            if not out.requires_grad:
                raise RuntimeError("its output does not require grad: a forward-only layer")
            with impl.context():
                out.backward(grad_out)
        except Exception as error:  # noqa: BLE001 - a user's backward may raise anything; it is reported
            contender.backward_error = f"{type(error).__name__}: {error}"
        contender.zero_grad()
    return contender
