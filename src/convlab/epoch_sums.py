"""Loss and accuracy over an epoch for one tensor addition per step.

Each training, validation or test step adds (loss × images, correct predictions,
images) of its batch to three running sums; the epoch's mean loss and accuracy
come from them when it ends, added up over DDP processes first so that every
image counts once, whichever process saw it. torchmetrics' `MeanMetric` and
`MulticlassAccuracy` did the same job at several times the cost per step: with
them Lightning's loop took 1.15-1.17 times a plain PyTorch loop, with these
sums 1.09-1.12, as fast as with no metrics at all (A/B runs in one process of
`convlab.bench_network.loop_overhead`'s two loops, one and two threads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class EpochSums:
    """The running sums of one stage (train, val or test) since the last `compute_and_reset`."""

    def __init__(self) -> None:
        self.sums: Tensor | None = None  # (loss × images, correct, images)

    def update(self, log_probs: Tensor, labels: Tensor, loss: Tensor) -> None:
        """log_probs (N, classes), labels (N,), loss: the batch's mean loss (a scalar)."""
        images = labels.shape[0]
        correct = (log_probs.argmax(dim=1) == labels).sum()
        step = torch.stack([loss.detach() * images, correct.to(loss.dtype), loss.new_tensor(float(images))])
        self.sums = step if self.sums is None else self.sums + step

    def running_loss(self) -> float | None:
        """Mean loss so far in this process alone (no communication): for the progress bar."""
        return None if self.sums is None else (self.sums[0] / self.sums[2]).item()

    def compute_and_reset(
        self, reduce_sum: Callable[[Tensor], Tensor], device: torch.device
    ) -> tuple[Tensor, Tensor] | None:
        """(mean loss, accuracy) over every process's batches; None when no process had any.

        reduce_sum: adds a tensor over the DDP processes (Lightning's `strategy.reduce(t, reduce_op="sum")`;
        the identity on one device). Every process must call this, also one that saw no batch.
        """
        sums = self.sums if self.sums is not None else torch.zeros(3, device=device)
        self.sums = None
        total = reduce_sum(sums)
        if total[2] == 0:
            return None
        return total[0] / total[2], total[1] / total[2]
