"""Lockstep: train a conv implementation and `nn.Conv2d` side by side; do they stay identical?

    python -m convlab.lockstep conv=vanilla          (or --conv vanilla)
    python -m convlab.verify --lockstep conv=vanilla

Two reference networks (`convlab.training.module.ReferenceNet`), one built from the chosen
implementation and one from `nn.Conv2d`, start from the same weights (copied
through `state_dict`) and take K SGD steps on the same real MNIST batches.
Dropout stays on and draws the same masks in both: the RNG is set to the same
state before each network's forward. After every step it prints the loss
difference, the largest gradient difference and, per layer, the largest
parameter difference. Any wrong gradient, even of one sliding-window position,
changes the parameters after the first step, and the networks drift apart.

Tolerance: every difference (loss, gradients, parameters; absolute) must stay at
or below `TOLERANCE[dtype]`: 1e-9 in float64 (the default; a correct layer
differs by ~1e-15, rounding only), 1e-4 in float32. Exit status 0 when all K
steps pass, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlab.conv import CONV_LAYERS
from convlab.training.data_files import DATASETS
from convlab.training.datamodule import MNISTDataModule
from convlab.training.network import ReferenceNet
from convlab.training.seeding import derived_seed

DTYPES = {"float64": torch.float64, "float32": torch.float32}
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
Batch = tuple[Tensor, Tensor]  # images (B, 1, 28, 28), labels (B,)


@dataclass(frozen=True)
class StepResult:
    """Differences after one training step (absolute values, in the run's dtype)."""

    step: int
    loss: float  # the candidate's loss
    loss_diff: float
    grad_diff: float  # over every parameter's gradient
    param_diff: dict[str, float]  # layer (conv1, ..., fc2) -> max |p - p_ref| after the update

    def passed(self, tolerance: float) -> bool:
        return max(self.loss_diff, self.grad_diff, *self.param_diff.values()) <= tolerance


def twin_networks(conv_layer: type[nn.Module], dtype: torch.dtype, seed: int) -> tuple[nn.Module, nn.Module]:
    """(candidate, reference): ReferenceNet of conv_layer and of nn.Conv2d with identical weights."""
    torch.manual_seed(seed)
    candidate = ReferenceNet(conv_layer).to(dtype)
    reference = ReferenceNet(nn.Conv2d).to(dtype)
    reference.load_state_dict(candidate.state_dict())
    return candidate, reference


def loss_with_rng_state(net: nn.Module, batch: Batch, seed: int) -> Tensor:
    """NLL loss of net on batch, dropout masks drawn from an RNG set to `seed` (global RNG untouched)."""
    images, labels = batch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return F.nll_loss(net(images), labels)


def max_diff(a: Iterable[Tensor | None], b: Iterable[Tensor | None]) -> float:
    """Largest |a - b| over pairs of tensors; a missing gradient on one side only counts as infinite."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x is None and y is None:
            continue
        if x is None or y is None:
            return float("inf")
        worst = max(worst, (x - y).abs().max().item())
    return worst


def run_lockstep(
    conv_layer: type[nn.Module],
    batches: Iterable[Batch],
    lr: float = 0.01,
    momentum: float = 0.5,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> Iterator[StepResult]:
    """One StepResult per batch: both networks take an SGD step on it, then they are compared."""
    candidate, reference = twin_networks(conv_layer, dtype, seed)
    optimizers = [torch.optim.SGD(n.parameters(), lr=lr, momentum=momentum) for n in (candidate, reference)]
    layers = [name for name, module in reference.named_children() if list(module.parameters())]
    for step, (images, labels) in enumerate(batches, start=1):
        batch = (images.to(dtype), labels)
        dropout_seed = derived_seed(seed, "lockstep dropout", step)
        losses = []
        for net, optimizer in zip((candidate, reference), optimizers, strict=True):
            optimizer.zero_grad()
            loss = loss_with_rng_state(net, batch, dropout_seed)
            loss.backward()
            losses.append(loss.item())
        grad_diff = max_diff(
            (p.grad for p in candidate.parameters()), (p.grad for p in reference.parameters())
        )
        for optimizer in optimizers:
            optimizer.step()
        param_diff = {
            layer: max_diff(getattr(candidate, layer).parameters(), getattr(reference, layer).parameters())
            for layer in layers
        }
        yield StepResult(step, losses[0], abs(losses[0] - losses[1]), grad_diff, param_diff)


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


def conv_name(text: str) -> str:
    """'vanilla' or Hydra's 'conv=vanilla' -> 'vanilla', checked against the registry."""
    name = text.removeprefix("conv=")
    if name not in CONV_LAYERS:
        raise argparse.ArgumentTypeError(f"unknown conv {name!r}; registered: {list(CONV_LAYERS)}")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convlab.lockstep",
        description="Train a conv implementation and nn.Conv2d side by side on the same batches.",
    )
    parser.add_argument("target", nargs="?", type=conv_name, metavar="conv=NAME", help="the implementation")
    parser.add_argument("--conv", type=conv_name, metavar="NAME", help="the same, as an option")
    parser.add_argument("--steps", type=int, default=10, help="SGD steps K (default 10)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step (default 4)")
    parser.add_argument(
        "--data", choices=[*DATASETS, "random"], default="mnist", help="random: Gaussian images, no files"
    )
    parser.add_argument("--dtype", choices=list(DTYPES), default="float64")
    parser.add_argument("--tolerance", type=float, help="max allowed difference (default: per dtype)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    parser.add_argument("--momentum", type=float, default=0.5, help="SGD momentum (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv, run the lockstep, print one line per step; the exit status says pass or fail."""
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.conv or args.target
    if name is None:
        parser.error("which implementation? conv=NAME or --conv NAME")
    dtype = DTYPES[args.dtype]
    tolerance = TOLERANCE[dtype] if args.tolerance is None else args.tolerance
    if args.data == "random":
        batches = random_batches(args.batch_size, args.steps, args.seed)
    else:
        batches = mnist_batches(args.data, args.batch_size, args.steps, args.seed)
    print(
        f"lockstep {name} vs nn.Conv2d: {args.steps} SGD steps (lr {args.lr}, momentum {args.momentum}), "
        f"batch {args.batch_size} of {args.data}, {args.dtype}, tolerance {tolerance:g}"
    )
    results = []
    for result in run_lockstep(CONV_LAYERS[name], batches, args.lr, args.momentum, dtype, args.seed):
        if not results:
            layer_columns = "".join(f"{'Δ' + layer:>10}" for layer in result.param_diff)
            print(f"{'step':>4} {'loss':>9} {'Δloss':>9} {'Δgrad':>9}{layer_columns}  ok")
        results.append(result)
        diffs = "".join(f"{diff:10.1e}" for diff in result.param_diff.values())
        mark = "yes" if result.passed(tolerance) else "NO"
        row = f"{result.step:4d} {result.loss:9.5f} {result.loss_diff:9.1e} {result.grad_diff:9.1e}"
        print(f"{row}{diffs}  {mark}", flush=True)
    failed = [r.step for r in results if not r.passed(tolerance)]
    if failed:
        print(f"FAIL: {name} left nn.Conv2d's trajectory at step {failed[0]} (tolerance {tolerance:g})")
        return 1
    worst = max(max(r.loss_diff, r.grad_diff, *r.param_diff.values()) for r in results)
    print(f"PASS: {name} trains like nn.Conv2d for {len(results)} steps (largest difference {worst:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
