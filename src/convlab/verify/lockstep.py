"""Lockstep: train a conv layer and `nn.Conv2d` side by side; do they stay identical?

    python -m convlab.lockstep conv=vanilla                      (or --conv vanilla)
    python -m convlab.lockstep conv=path/to/my_conv.py:MyConv2d  (any spec `convlab.conv.resolve_conv` takes)
    python -m convlab.verify --lockstep conv=vanilla

Two reference networks (`convlab.training.network.ReferenceNet`), one with the layer in its conv
slots and one with `nn.Conv2d`, start from the same weights and take K SGD steps on the same
batches. By default nn.Conv2d's init is copied into the layer through its `.weight` / `.bias` (the
adapter of a user's layer exposes its own parameters under those names), so the layer's own init
does not matter; `--init layer` copies the layer's init into nn.Conv2d instead, to see what that init
does to training. Dropout draws the same masks in both (the RNG is set to the same state before each
forward). Any wrong gradient, even of one sliding-window position, changes the parameters after the
first step, and the networks drift apart.

The rule, relative to scale. After each step, for the loss, every gradient and every parameter:

    rel = max|candidate - reference| / max(max|reference|, floor)

where the floor is `FLOOR` times the largest reference magnitude of that kind in the network (all
gradients, or all parameters), so a tensor near zero is judged against the network's scale instead
of its own (the loss's floor is `LOSS_FLOOR`). A step passes when every rel is at or below the
tolerance: `TOLERANCE[dtype]`, 1e-9 in float64 (a correct layer stays near 1e-15, rounding only) and
1e-4 in float32. Relative differences keep their meaning when the networks' numbers grow: a correct
layer with an init that makes both networks diverge still passes, with a note that the reference
itself diverges. Values both networks agree on exactly (an infinity, a NaN in both) count as equal;
after the reference's loss turns non-finite no step can be judged, and none is.

A layer that hands back another dtype than its input's (a tensor created inside forward without
dtype=) stops the run with one line saying so. Exit status: 0 when every judged step passes, 1
otherwise (or when the layer fails as above), 2 on a usage error (a spec that does not resolve).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlab.conv import SpecError, UnsupportedFeature, conv_label, resolve_conv
from convlab.training.data_files import DATASETS
from convlab.training.datamodule import MNISTDataModule
from convlab.training.network import LayerOutputError, ReferenceNet
from convlab.training.seeding import derived_seed
from convlab.verify.tolerance import DTYPES

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
FLOOR = 1e-3  # of the largest reference magnitude of the same kind (gradients, or parameters)
LOSS_FLOOR = 1e-3
# The reference diverges when its loss is non-finite or exceeds this multiple of the larger of its
# first loss and ln 10 (an untrained 10-class network's loss).
DIVERGENCE_FACTOR = 100.0
INITS = ("reference", "layer")
Batch = tuple[Tensor, Tensor]  # images (B, 1, 28, 28), labels (B,)


class LockstepError(ValueError):
    """The two networks cannot be set up alike (weight shapes, a missing bias); the message says how."""


@dataclass(frozen=True)
class StepResult:
    """Differences after one training step, relative to the reference's magnitude (see the module doc).

    loss: the candidate's loss; reference_loss: nn.Conv2d's; param_diff: layer (conv1, ..., fc2) ->
    worst relative parameter difference after the update; judged: False once the reference's loss is
    non-finite (nothing left to compare against).
    """

    step: int
    loss: float
    reference_loss: float
    loss_diff: float
    grad_diff: float
    param_diff: dict[str, float]
    judged: bool = True

    @property
    def worst(self) -> float:
        return max(self.loss_diff, self.grad_diff, *self.param_diff.values())

    def passed(self, tolerance: float) -> bool:
        """Every relative difference at or below `tolerance` (a step that cannot be judged passes)."""
        return not self.judged or self.worst <= tolerance


def copy_layer_weights(source: nn.Module, target: nn.Module, what: str) -> None:
    """target.weight (and .bias) := source's, in place; LockstepError when shapes or bias presence differ."""
    if tuple(source.weight.shape) != tuple(target.weight.shape):
        raise LockstepError(
            f"{what}: weight shapes differ: {tuple(source.weight.shape)} and {tuple(target.weight.shape)}"
        )
    if (source.bias is None) != (target.bias is None):
        raise LockstepError(f"{what}: one layer has a bias and the other has none")
    with torch.no_grad():
        target.weight.copy_(source.weight)
        if target.bias is not None:
            target.bias.copy_(source.bias)


def twin_networks(
    conv_layer: Any, dtype: torch.dtype, seed: int, init: str = "reference"
) -> tuple[nn.Module, nn.Module]:
    """(candidate, reference): ReferenceNet of the layer and of nn.Conv2d with identical weights.

    conv_layer: anything `resolve_conv` takes. init: "reference" copies nn.Conv2d's conv weights into
    the layer; "layer" copies the layer's into nn.Conv2d. The FC layers are the same either way.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    layer_class = resolve_conv(conv_layer)
    torch.manual_seed(seed)
    reference = ReferenceNet(nn.Conv2d).to(dtype)
    torch.manual_seed(seed)
    candidate = ReferenceNet(layer_class).to(dtype)
    slots = reference.conv_layers()
    for name, module in reference.named_children():
        if name not in slots:
            getattr(candidate, name).load_state_dict(module.state_dict())
    for slot, reference_layer in slots.items():
        candidate_layer = candidate.conv_layers()[slot]
        if init == "reference":
            copy_layer_weights(reference_layer, candidate_layer, slot)
        else:
            copy_layer_weights(candidate_layer, reference_layer, slot)
    return candidate, reference


def paired_tensors(candidate: nn.Module, reference: nn.Module) -> list[tuple[str, Tensor, Tensor]]:
    """(layer, candidate parameter, reference parameter) for every parameter of the reference network.

    Conv slots pair through `.weight` / `.bias` (a user's layer may call them anything inside);
    the other layers by name.
    """
    pairs = []
    conv_slots = candidate.conv_layers()
    for name, module in reference.named_children():
        if name in conv_slots:
            mine = conv_slots[name]
            pairs.append((name, mine.weight, module.weight))
            if module.bias is not None:
                pairs.append((name, mine.bias, module.bias))
        else:
            theirs = dict(getattr(candidate, name).named_parameters())
            pairs += [(name, theirs[key], param) for key, param in module.named_parameters()]
    return pairs


def abs_diff(a: Tensor, b: Tensor) -> Tensor:
    """|a - b| with values equal in both (the same infinity, NaN in both) counted as 0, other NaNs as inf."""
    diff = (a - b).abs()
    same = (a == b) | (a.isnan() & b.isnan())
    diff = torch.where(same, torch.zeros_like(diff), diff)
    return torch.nan_to_num(diff, nan=math.inf)


def magnitude(t: Tensor) -> float:
    finite = t[t.isfinite()]
    return finite.abs().max().item() if finite.numel() else 0.0


def relative_diffs(pairs: Sequence[tuple[str, Tensor | None, Tensor | None]]) -> dict[str, float]:
    """layer -> worst max|a - b| / max(max|b|, floor) over its tensors; a None on one side only is inf."""
    scale = max((magnitude(b) for _, a, b in pairs if b is not None), default=0.0)
    floor = max(FLOOR * scale, torch.finfo(torch.float64).tiny)
    worst: dict[str, float] = {}
    for layer, a, b in pairs:
        if a is None and b is None:
            rel = 0.0
        elif a is None or b is None:
            rel = math.inf
        else:
            rel = abs_diff(a.detach(), b.detach()).max().item() / max(magnitude(b), floor)
        worst[layer] = max(worst.get(layer, 0.0), rel)
    return worst


def loss_with_rng_state(net: nn.Module, batch: Batch, seed: int) -> Tensor:
    """NLL loss of net on batch, dropout masks drawn from an RNG set to `seed` (global RNG untouched)."""
    images, labels = batch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return F.nll_loss(net(images), labels)


def run_lockstep(
    conv_layer: Any,
    batches: Iterable[Batch],
    lr: float = 0.01,
    momentum: float = 0.5,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    init: str = "reference",
) -> Iterator[StepResult]:
    """One StepResult per batch: both networks take an SGD step on it, then they are compared.

    conv_layer: a spec or class (`convlab.conv.resolve_conv`). Raises `LayerOutputError` when the layer
    hands back another dtype or device than its input's, `LockstepError` when the networks cannot be
    set up alike.
    """
    candidate, reference = twin_networks(conv_layer, dtype, seed, init)
    optimizers = [torch.optim.SGD(n.parameters(), lr=lr, momentum=momentum) for n in (candidate, reference)]
    pairs = paired_tensors(candidate, reference)
    judged = True
    for step, (images, labels) in enumerate(batches, start=1):
        batch = (images.to(dtype), labels)
        dropout_seed = derived_seed(seed, "lockstep dropout", step)
        losses = []
        for net, optimizer in zip((candidate, reference), optimizers, strict=True):
            optimizer.zero_grad()
            loss = loss_with_rng_state(net, batch, dropout_seed)
            loss.backward()
            losses.append(loss.detach())
        loss, reference_loss = losses
        judged = judged and bool(reference_loss.isfinite())
        loss_diff = abs_diff(loss, reference_loss).item() / max(abs(reference_loss.item()), LOSS_FLOOR)
        grad_diff = max(relative_diffs([(layer, a.grad, b.grad) for layer, a, b in pairs]).values())
        for optimizer in optimizers:
            optimizer.step()
        param_diff = relative_diffs(pairs)
        yield StepResult(step, loss.item(), reference_loss.item(), loss_diff, grad_diff, param_diff, judged)


def divergence_step(results: Sequence[StepResult]) -> int | None:
    """The first step at which the reference's loss is non-finite or has grown DIVERGENCE_FACTOR-fold."""
    if not results:
        return None
    start = (
        max(abs(results[0].reference_loss), math.log(10)) if math.isfinite(results[0].reference_loss) else 0
    )
    for result in results:
        if not math.isfinite(result.reference_loss) or abs(result.reference_loss) > DIVERGENCE_FACTOR * start:
            return result.step
    return None


def mnist_batches(data: str, batch_size: int, steps: int, seed: int) -> list[Batch]:
    """The first `steps` training batches of `data` (mirror: $CONVLAB_DATA_MIRROR), shuffled by seed."""
    datamodule = MNISTDataModule(name=data, batch_size=batch_size, seed=seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    return [next(loader) for _ in range(steps)]


def random_batches(batch_size: int, steps: int, seed: int) -> list[Batch]:
    """Gaussian images and uniform labels: no data files needed (tests, quick checks)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch_size, 1, 28, 28, generator=generator),
            torch.randint(0, 10, (batch_size,), generator=generator),
        )
        for _ in range(steps)
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convlab.lockstep",
        description="Train a conv layer and nn.Conv2d side by side on the same batches.",
    )
    parser.add_argument("target", nargs="?", metavar="conv=SPEC", help="the layer: a name or a spec")
    parser.add_argument("--conv", metavar="SPEC", help="the same, as an option")
    parser.add_argument("--weight", metavar="NAME", help="the layer's weight attribute, if not detected")
    parser.add_argument("--bias", metavar="NAME", help="the layer's bias attribute, if not detected")
    parser.add_argument("--steps", type=int, default=10, help="SGD steps K (default 10)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step (default 4)")
    parser.add_argument(
        "--data", choices=[*DATASETS, "random"], default="mnist", help="random: Gaussian images, no files"
    )
    parser.add_argument("--dtype", choices=list(DTYPES), default="float64")
    parser.add_argument("--tolerance", type=float, help="max relative difference (default: per dtype)")
    parser.add_argument(
        "--init",
        choices=INITS,
        default="reference",
        help="whose conv init both networks start from: nn.Conv2d's (default) or the layer's own",
    )
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    parser.add_argument("--momentum", type=float, default=0.5, help="SGD momentum (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv, run the lockstep, print one line per step; the exit status says pass or fail."""
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = args.conv or (args.target.removeprefix("conv=") if args.target else None)
    if not spec:
        parser.error(
            "which layer? conv=SPEC or --conv SPEC (a name such as unfold, or path/to/file.py:Class)"
        )
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1")
    try:
        layer = resolve_conv(spec, weight=args.weight, bias=args.bias)
    except SpecError as error:
        parser.error(str(error))
    label = conv_label(spec)
    dtype = DTYPES[args.dtype]
    tolerance = TOLERANCE[dtype] if args.tolerance is None else args.tolerance
    if args.data == "random":
        batches = random_batches(args.batch_size, args.steps, args.seed)
    else:
        batches = mnist_batches(args.data, args.batch_size, args.steps, args.seed)
    start = "nn.Conv2d's init copied into the layer" if args.init == "reference" else "the layer's init"
    print(
        f"lockstep {label} vs nn.Conv2d: {args.steps} SGD steps (lr {args.lr}, momentum {args.momentum}), "
        f"batch {args.batch_size} of {args.data}, {args.dtype}, both from {start}; "
        f"tolerance {tolerance:g} relative (|Δ| / max(|reference|, floor))"
    )
    results: list[StepResult] = []
    steps = run_lockstep(layer, batches, args.lr, args.momentum, dtype, args.seed, args.init)
    try:
        for result in steps:
            if not results:
                layer_columns = "".join(f"{'Δ' + name:>10}" for name in result.param_diff)
                print(f"{'step':>4} {'loss':>10} {'Δloss':>9} {'Δgrad':>9}{layer_columns}  ok")
            results.append(result)
            diffs = "".join(f"{diff:10.1e}" for diff in result.param_diff.values())
            mark = "-" if not result.judged else "yes" if result.passed(tolerance) else "NO"
            row = f"{result.step:4d} {result.loss:10.4g} {result.loss_diff:9.1e} {result.grad_diff:9.1e}"
            print(f"{row}{diffs}  {mark}", flush=True)
    except LayerOutputError as error:
        print(
            f"FAIL: {error} Run lockstep with --dtype float32 to compare at the layer's precision, "
            "or fix the layer."
        )
        return 1
    except (LockstepError, UnsupportedFeature) as error:
        print(f"FAIL: {label} cannot take nn.Conv2d's place in the reference network: {error}")
        return 1
    diverged = divergence_step(results)
    if diverged is not None:
        unjudged = [r.step for r in results if not r.judged]
        after = (
            f"; steps {unjudged[0]}-{unjudged[-1]} not judged (nothing finite to compare)" if unjudged else ""
        )
        losses = f"{results[0].reference_loss:.3g} -> {results[diverged - 1].reference_loss:.3g}"
        print(
            f"note: both networks diverge from step {diverged} (nn.Conv2d's loss {losses}): "
            f"the init or the learning rate, not your layer{after}"
        )
    failed = [r.step for r in results if not r.passed(tolerance)]
    if failed:
        print(
            f"FAIL: {label} left nn.Conv2d's trajectory at step {failed[0]} "
            f"(tolerance {tolerance:g} relative)"
        )
        return 1
    judged = [r for r in results if r.judged]
    worst = max((r.worst for r in judged), default=0.0)
    print(
        f"PASS: {label} trains like nn.Conv2d for {len(judged)} steps "
        f"(largest relative difference {worst:.1e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
