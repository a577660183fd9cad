"""Before training starts: one forward + backward of the network on a tiny batch, timed and projected.

A hand-written layer can take minutes for one training step; without this, `train.py` would sit at
step 0 with no sign of life and no ETA. `first_step_estimate` runs the network (a copy: the model's
weights, gradients and RNG streams are untouched) on `images` random images, and projects a step at
the configured batch size and an epoch at the configured number of steps, assuming the time grows
linearly with the batch. That is a lower bound for a layer whose cost grows faster (an in-place write
per output element does: `python -m convlab.bench --impl <spec>` measures the growth).

The same pass is the layer's pre-flight check: an error in its forward or backward (a forward-only
layer asked to train, an output of the wrong dtype, a shape mismatch) is raised here, before any data
is trained on, as one `LayerCheckError` line naming the conv spec and the cause.

It runs in plain Python before `Trainer.fit`, so Ctrl-C (KeyboardInterrupt) ends a slow pure-Python
layer between two of its bytecodes, and SIGTERM ends the process with Python's default action.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from convlab.training.errors import RunError

log = logging.getLogger(__name__)

# Passes are repeated (up to five, the fastest kept) while their total stays under this.
WARM_UP_S = 2.0
# A whole batch projected to take less than this is timed at its full size instead of projected:
# a fast layer's tiny batch is mostly fixed per-call cost, which a linear projection would multiply.
MEASURE_FULL_BATCH_S = 3.0
# A tiny batch faster than this is timed at twice its size too, to part the fixed per-call cost from
# the cost per image (on a busy machine a fast layer's tiny batch can exceed MEASURE_FULL_BATCH_S's test).
SPLIT_FIXED_COST_BELOW_S = 2.0


class LayerCheckError(RunError, RuntimeError):
    """The network's forward or backward failed on a tiny batch before training: the layer's fault."""


@dataclass(frozen=True)
class StepEstimate:
    """seconds: forward + backward of `images` images, of which `fixed_s` does not grow with the batch;
    the rest is projected linearly to `batch_size`, and the step to an epoch."""

    images: int
    seconds: float
    batch_size: int
    steps_per_epoch: int | None
    fixed_s: float = 0.0

    @property
    def step_s(self) -> float:
        return self.fixed_s + (self.seconds - self.fixed_s) * self.batch_size / self.images

    @property
    def epoch_s(self) -> float | None:
        return None if self.steps_per_epoch is None else self.step_s * self.steps_per_epoch

    def message(self, label: str) -> str:
        epoch = ""
        if self.epoch_s is not None:
            epoch = f", an epoch of {self.steps_per_epoch} steps ~{duration(self.epoch_s)}"
        timed = f"first-step estimate for conv={label}: forward + backward of {self.images} images took "
        timed += duration(self.seconds)
        if self.images == self.batch_size:
            return f"{timed}: a training step takes ~{duration(self.step_s)}{epoch}"
        return (
            f"{timed}; at batch {self.batch_size} a training step takes ~{duration(self.step_s)}{epoch} "
            f"(assuming time grows linearly with the batch; for a layer whose cost grows faster this is a "
            f"lower bound: python -m convlab.bench --impl {label} measures the growth)"
        )


def duration(seconds: float) -> str:
    """0.0042 -> '4.2 ms', 75 -> '1.2 min', 9000 -> '2.5 h'."""
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def time_forward_backward(
    net: nn.Module, images: int, device: torch.device, dtype: torch.dtype, label: str
) -> float:
    """Seconds for NLL loss forward + backward of `net` on `images` random (1, 28, 28) images.

    `net` is run in training mode and its gradients are accumulated: pass a copy. The global RNG is
    forked around the pass (dropout draws from it). Raises LayerCheckError (or the layer's own RunError)
    when the network fails on the images.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(images, 1, 28, 28, generator=generator, dtype=dtype).to(device)
    labels = torch.arange(images) % 10
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            start = time.perf_counter()
            loss = F.nll_loss(net(x), labels.to(device))
            if loss.requires_grad:  # nothing trainable (every parameter frozen): forward is the step
                loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start
        except RunError:
            raise
        except Exception as error:  # the user's layer can raise anything; the cause is in the message
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise LayerCheckError(
                f"conv={label}: the network failed on a batch of {images} random images before training: "
                f"{type(error).__name__}: {first_line}"
            ) from error


def fastest(timed: Callable[[], float], budget_s: float, repeats: int = 5) -> float:
    """The least of up to `repeats` calls of `timed`, repeated only while their total stays under
    `budget_s`: a quick layer's first call carries one-time set-up and a shared machine adds noise;
    a slow layer runs once."""
    times = [timed()]
    while len(times) < repeats and sum(times) < budget_s:
        times.append(timed())
    return min(times)


def first_step_estimate(
    net: nn.Module,
    batch_size: int,
    steps_per_epoch: int | None = None,
    images: int = 2,
    device: torch.device | str = "cpu",
    label: str = "?",
) -> StepEstimate:
    """Time `net` on `images` random images and project the time to `batch_size`.

    Each timing is the fastest of a few passes while they are cheap (`fastest`); when the projected batch
    would take under MEASURE_FULL_BATCH_S the whole batch is timed instead.
    """
    device = torch.device(device)
    # One copy for every pass: the model's weights, gradients and buffers stay as they were, and fresh
    # weights on every pass would time the set-up that new weights cost some kernels each time.
    net = copy.deepcopy(net).to(device).train()
    dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.get_default_dtype())
    images = max(1, min(images, batch_size))

    def timed(n: int) -> Callable[[], float]:
        return lambda: time_forward_backward(net, n, device, dtype, label)

    seconds = fastest(timed(images), WARM_UP_S)
    if images < batch_size and seconds * batch_size / images < MEASURE_FULL_BATCH_S:
        images, seconds = batch_size, fastest(timed(batch_size), MEASURE_FULL_BATCH_S)
    fixed = 0.0
    if images < batch_size and seconds < SPLIT_FIXED_COST_BELOW_S:
        # t(n) = fixed + n * per_image from two sizes; noise that makes the larger one no slower leaves
        # only the larger size, projected linearly (an upper bound on a fixed cost it cannot see).
        double = min(2 * images, batch_size)
        seconds_double = fastest(timed(double), WARM_UP_S)
        per_image = (seconds_double - seconds) / (double - images)
        fixed = max(0.0, seconds - per_image * images) if per_image > 0 else 0.0
        images, seconds = double, seconds_double
    return StepEstimate(images, seconds, batch_size, steps_per_epoch, fixed_s=min(fixed, seconds))


def steps_per_epoch(datamodule: L.LightningDataModule, trainer: L.Trainer) -> int | None:
    """Training steps of one epoch on one process, after `limit_train_batches` / `fast_dev_run`; None
    under several processes (each would load the data before Lightning shares it out)."""
    if trainer.num_devices * trainer.num_nodes != 1:
        return None
    if trainer.fast_dev_run:
        return int(trainer.fast_dev_run)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None:
        batches = int(batches * limit)
    accumulate = max(1, trainer.accumulate_grad_batches)
    return max(1, batches // accumulate)


def log_first_step_estimate(
    model: L.LightningModule, datamodule: L.LightningDataModule, trainer: L.Trainer, label: str
) -> StepEstimate:
    """Estimate the first training step of `model.net` and log it (on the one device the trainer uses, else
    on the CPU); raises LayerCheckError when the network fails on the tiny batch."""
    device = trainer.strategy.root_device if trainer.num_devices == 1 else torch.device("cpu")
    estimate = first_step_estimate(
        model.net,
        batch_size=datamodule.batch_size,
        steps_per_epoch=steps_per_epoch(datamodule, trainer),
        device=device,
        label=label,
    )
    log.info(estimate.message(label))
    return estimate
