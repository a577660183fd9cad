"""`python -m convlab.learn.quick_check SPEC`: a one-batch sanity check that a layer can learn, no sweep.

A does-it-learn sweep takes tens of runs; for a slow layer (`vanilla`, a learner's four loops) that is
hours. This check takes one batch (8 images by default) through the reference network
(`convlab.training.network.ReferenceNet`) with the layer in its conv slots, dropout off, and asks what
the sweep would otherwise reveal late:

    initial loss    near ln 10 (2.30): an untrained 10-class network spreads its bets; far above it,
                    the init saturates or explodes the activations
    gradients       every parameter (conv slots through .weight / .bias) gets a finite, non-zero gradient
    weights used    the network's output changes when a conv's weights do
    gradient sign   a small step against each conv's weight gradient lowers the loss more than a step
                    along it (a negated gradient climbs)
    update ratio    ||lr * grad|| / ||weight|| of one SGD step at lr 0.01 between 1e-5 and 1e-2 per
                    conv (a well-scaled layer sits near 1e-3)
    overfit         Adam (lr 0.01) fits the batch to 100% within `steps` steps (nn.Conv2d needs ~5)

Passing says nothing stops the layer from learning; it is a sanity check, not a verdict (the sweep's
statistics give that: `python -m convlab.report`). About a minute of CPU time for `vanilla`, a few
seconds for the others. `quick_check(spec)` is the same from Python; its result prints as the console
text and renders as markdown in Jupyter.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlab.conv import SpecError, UnsupportedFeature, conv_label, resolve_conv
from convlab.training.network import LayerOutputError, ReferenceNet

LN10 = math.log(10)
INITIAL_LOSS_MARGIN = 0.5  # |loss - ln 10| allowed at init
RATIO_RANGE = (1e-5, 1e-2)
RATIO_LR = 0.01
STEP_FRACTION = 1e-2  # the probing step's size, relative to the weight's norm
OVERFIT_LR = 0.01


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, what it saw, and a hint when it failed."""

    name: str
    passed: bool
    text: str
    hint: str = ""


@dataclass
class QuickCheck:
    """The checks of one layer on one batch; `passed` when all hold (see the module docstring)."""

    label: str
    batch: str
    checks: list[Check] = field(default_factory=list)
    error: str = ""  # the layer could not run in the reference network at all

    @property
    def passed(self) -> bool:
        return not self.error and all(check.passed for check in self.checks)

    def lines(self) -> list[str]:
        lines = [
            f"quick learning check of {self.label}: a sanity check on one batch, not a verdict",
            self.batch,
        ]
        for check in self.checks:
            lines.append(f"  {'ok  ' if check.passed else 'FAIL'}  {check.name}: {check.text}")
            if check.hint:
                lines.append(f"        hint: {check.hint}")
        if self.error:
            lines.append(f"FAIL: {self.error}")
        elif self.passed:
            lines.append(
                f"PASS: nothing found that stops {self.label} from learning "
                "(a does-it-learn sweep gives the verdict)"
            )
        else:
            failed = ", ".join(check.name for check in self.checks if not check.passed)
            lines.append(f"FAIL: {self.label} fails {failed}: fix these before a sweep")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_markdown_(self) -> str:
        return "\n".join(f"    {line}" for line in self.lines())


def random_batch(batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Gaussian images (B, 1, 28, 28) with labels 0, 1, ..., 9, 0, ...: no files needed."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 1, 28, 28, generator=generator)
    return images, torch.arange(batch_size) % 10


def mnist_batch(batch_size: int, seed: int, data: str = "mnist") -> tuple[Tensor, Tensor]:
    """The first training batch of `data` (mirror: $CONVLAB_DATA_MIRROR), shuffled by seed."""
    from convlab.training.datamodule import MNISTDataModule

    datamodule = MNISTDataModule(name=data, batch_size=batch_size, seed=seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def named_tensors(net: ReferenceNet) -> list[tuple[str, Tensor]]:
    """(name, parameter) with conv slots named through .weight / .bias, e.g. conv1.weight, fc1.bias."""
    slots = net.conv_layers()
    named = []
    for name, module in net.named_children():
        if name in slots:
            named.append((f"{name}.weight", module.weight))
            if module.bias is not None:
                named.append((f"{name}.bias", module.bias))
        else:
            named += [(f"{name}.{key}", param) for key, param in module.named_parameters()]
    return named


def batch_loss(net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    return F.nll_loss(net(images), labels)


def check_initial_loss(loss: float) -> Check:
    shown = f"{loss:.3g}"
    if math.isfinite(loss) and abs(loss - LN10) <= INITIAL_LOSS_MARGIN:
        return Check("initial loss", True, f"{shown}, near ln 10 = {LN10:.2f}")
    return Check(
        "initial loss",
        False,
        f"{shown}, far from ln 10 = {LN10:.2f} (an untrained 10-class network spreads its bets)",
        "the init saturates or explodes the activations (all weights positive, as torch.rand draws them? "
        "nn.Conv2d draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)))",
    )


def check_gradients(named: Sequence[tuple[str, Tensor]]) -> Check:
    problems = []
    for name, param in named:
        if param.grad is None:
            problems.append(f"{name} none")
        elif not bool(param.grad.isfinite().all()):
            problems.append(f"{name} non-finite")
        elif not bool(param.grad.any()):
            problems.append(f"{name} all zero")
    if not problems:
        return Check("gradients", True, f"every parameter's is finite and non-zero ({len(named)} tensors)")
    weights = [
        name.split(".")[0] for name, _ in named if name.endswith(".weight") and name.startswith("conv")
    ]
    still = [w for w in weights if any(p.startswith(f"{w}.weight ") for p in problems)]
    if any("non-finite" in p for p in problems):
        hint = "Inf or NaN in the forward or backward: an init that explodes, or a division by zero"
    elif still and len(still) < len(weights) and still[0] == weights[0]:
        hint = (
            f"{', '.join(still)} gets no gradient while a later conv does: the later conv passes no gradient "
            "to its input (input gradient zero or detached), so every layer before it starves"
        )
    else:
        hint = (
            "the weight gets a zero or no gradient: a .detach(), .data, torch.no_grad or a tensor rebuilt "
            "from the weight between the parameter and the output?"
        )
    return Check("gradients", False, "; ".join(problems), hint)


def check_weights_used(net: ReferenceNet, images: Tensor) -> Check:
    with torch.no_grad():
        before = net(images)
        ignored = []
        generator = torch.Generator().manual_seed(0)
        for slot, layer in net.conv_layers().items():
            saved = layer.weight.detach().clone()
            scale = saved.abs().mean().item() or 1.0
            noise = torch.randn(saved.shape, generator=generator, dtype=saved.dtype).to(saved.device)
            layer.weight.add_(0.5 * scale * noise)
            changed = not torch.equal(net(images), before)
            layer.weight.copy_(saved)
            if not changed:
                ignored.append(slot)
    if not ignored:
        return Check("weights used", True, "the output changes when each conv's weights do")
    return Check(
        "weights used",
        False,
        f"the output does not change when the weights of {', '.join(ignored)} do",
        "the forward does not read the weight parameter (a copy made at init, a buffer or .data?)",
    )


def check_gradient_sign(net: ReferenceNet, images: Tensor, labels: Tensor) -> Check:
    climbing, tested, flat = [], [], []
    with torch.no_grad():
        for slot, layer in net.conv_layers().items():
            grad = layer.weight.grad
            if grad is None or not bool(grad.any()) or not bool(grad.isfinite().all()):
                continue
            saved = layer.weight.detach().clone()
            step = grad * (STEP_FRACTION * saved.norm() / grad.norm())
            layer.weight.sub_(step)
            downhill = batch_loss(net, images, labels).item()
            layer.weight.copy_(saved + step)
            uphill = batch_loss(net, images, labels).item()
            layer.weight.copy_(saved)
            if downhill == uphill:  # the loss ignores these weights: "weights used" says so
                flat.append(slot)
                continue
            tested.append(slot)
            if not downhill < uphill:
                climbing.append(f"{slot} ({downhill:.4g} against {uphill:.4g} along it)")
    if flat and not tested:
        return Check(
            "gradient sign", False, f"the loss does not change along the gradient of {', '.join(flat)}"
        )
    if not tested:
        return Check("gradient sign", False, "no conv has a finite, non-zero weight gradient to test")
    if not climbing:
        return Check(
            "gradient sign", True, f"a step against the gradient lowers the loss ({', '.join(tested)})"
        )
    return Check(
        "gradient sign",
        False,
        "a step against the gradient raises the loss: " + "; ".join(climbing),
        "the weight gradient has the wrong sign (each update climbs the loss); compare it with F.conv2d's "
        "in python -m convlab.verify",
    )


def check_update_ratio(net: ReferenceNet) -> Check:
    ratios = {}
    for slot, layer in net.conv_layers().items():
        # A missing or zero gradient is the gradients check's finding; a ratio adds nothing to it.
        if layer.weight.grad is not None and bool(layer.weight.grad.any()):
            ratios[slot] = (RATIO_LR * layer.weight.grad.norm() / layer.weight.norm()).item()
    low, high = RATIO_RANGE
    shown = ", ".join(f"{slot} {ratio:.1e}" for slot, ratio in ratios.items())
    text = f"one SGD step at lr {RATIO_LR:g}: {shown} (sane: {low:g} to {high:g})"
    if not ratios:
        return Check("update ratio", False, "no conv weight has a non-zero gradient to measure")
    if all(low <= ratio <= high for ratio in ratios.values() if math.isfinite(ratio)) and all(
        math.isfinite(r) for r in ratios.values()
    ):
        return Check("update ratio", True, text)
    too_big = any(not math.isfinite(r) or r > high for r in ratios.values())
    hint = (
        "updates large against the weights: the gradient explodes (an init far too large?) or the weights "
        "are tiny"
        if too_big
        else "updates negligible against the weights: the gradient vanishes (saturated activations, an "
        "init far too large?) or the weights are huge"
    )
    return Check("update ratio", False, text, hint)


def check_overfit(net: ReferenceNet, images: Tensor, labels: Tensor, steps: int) -> Check:
    optimizer = torch.optim.Adam(net.parameters(), lr=OVERFIT_LR)
    accuracy = 0.0
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        batch_loss(net, images, labels).backward()
        optimizer.step()
        with torch.no_grad():
            accuracy = (net(images).argmax(dim=1) == labels).float().mean().item()
        if accuracy == 1.0:
            return Check("overfit", True, f"fits the batch to 100% after {step} Adam steps (limit {steps})")
    return Check(
        "overfit",
        False,
        f"{accuracy:.0%} of the batch after {steps} Adam steps (lr {OVERFIT_LR:g}); nn.Conv2d needs about 5",
        "the network cannot fit a handful of images: see the failed checks above; if none failed, the "
        "init scale or the learning rate",
    )


def quick_check(
    layer: Any,
    *,
    batch_size: int = 8,
    steps: int = 30,
    seed: int = 0,
    data: str = "random",
    weight: str | None = None,
    bias: str | None = None,
) -> QuickCheck:
    """Run the checks of the module docstring on `layer` (any spec or object `resolve_conv` takes).

    data: "random" (Gaussian images, no files) or a dataset name ("mnist", "fashion_mnist").
    Raises SpecError for a spec that does not resolve; a layer that cannot run in the reference network
    (an unsupported feature, the wrong output dtype) is reported in the result's `error`.
    """
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be at least 1, got {batch_size} and {steps}")
    layer_class = resolve_conv(layer, weight=weight, bias=bias)
    images, labels = (
        random_batch(batch_size, seed) if data == "random" else mnist_batch(batch_size, seed, data)
    )
    result = QuickCheck(
        conv_label(layer),
        f"batch of {batch_size} {data} images, seed {seed}, dropout off, float32",
    )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ReferenceNet(layer_class).eval()
            loss = batch_loss(net, images, labels)
            loss.backward()
            named = named_tensors(net)
            result.checks = [
                check_initial_loss(loss.item()),
                check_gradients(named),
                check_weights_used(net, images),
                check_gradient_sign(net, images, labels),
                check_update_ratio(net),
                check_overfit(net, images, labels, steps),
            ]
    except (LayerOutputError, UnsupportedFeature) as error:
        result.error = f"{result.label} cannot run in the reference network: {error}"
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convlab.learn.quick_check",
        description="One-batch sanity check that a conv layer can learn (no sweep; not a verdict).",
    )
    parser.add_argument("spec", help="a registered name (vanilla) or a spec (path/to/my_conv.py:MyConv2d)")
    parser.add_argument("--batch-size", type=int, default=8, help="images in the batch (default 8)")
    parser.add_argument("--steps", type=int, default=30, help="most Adam steps to fit the batch (default 30)")
    parser.add_argument("--data", default="random", help="random (default, no files), mnist or fashion_mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight", metavar="NAME", help="the layer's weight attribute, if not detected")
    parser.add_argument("--bias", metavar="NAME", help="the layer's bias attribute, if not detected")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1:
        parser.error("--batch-size and --steps must be at least 1")
    try:
        result = quick_check(
            args.spec.removeprefix("conv="),
            batch_size=args.batch_size,
            steps=args.steps,
            seed=args.seed,
            data=args.data,
            weight=args.weight,
            bias=args.bias,
        )
    except SpecError as error:
        parser.error(str(error))
    print(result)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
