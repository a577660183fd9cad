"""Loss and accuracy over an epoch for a few tensor additions per step.

Each training, validation or test step adds loss × images and its correct predictions to two
running sums (in place, so no new tensor per step) and its images to a count; the epoch's mean loss
and accuracy come from them when it ends, added up over DDP processes first so that every image
counts once, whichever process saw it. The same numbers as torchmetrics' `MeanMetric` and
`MulticlassAccuracy`, for less work per step: a metric object's update does bookkeeping (state
checks, dtype and device handling) that a reference-network step of a few milliseconds feels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class EpochSums:
    """The running sums of one stage (train, val or test) since the last `compute_and_reset`."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.images = 0
        self.loss_sum: Tensor | None = None  # sum over images of their loss, a scalar
        self.correct: Tensor | None = None  # correct predictions, an integer scalar

    def update(self, log_probs: Tensor, labels: Tensor, loss: Tensor) -> None:
        """log_probs (N, classes), labels (N,), loss: the batch's mean loss (a scalar)."""
        images = labels.shape[0]
        correct = (log_probs.argmax(dim=1) == labels).sum()
        if self.loss_sum is None or self.correct is None:  # the first batch since the reset
            self.loss_sum, self.correct = loss.detach() * images, correct
        else:
            self.loss_sum.add_(loss.detach(), alpha=images)
            self.correct.add_(correct)
        self.images += images

    def running_loss(self) -> float | None:
        """Mean loss so far in this process alone (no communication): for the progress bar."""
        return None if self.loss_sum is None else self.loss_sum.item() / self.images

    def compute_and_reset(
        self, reduce_sum: Callable[[Tensor], Tensor], device: torch.device
    ) -> tuple[Tensor, Tensor] | None:
        """(mean loss, accuracy) over every process's batches; None when no process had any.

        reduce_sum: adds a tensor over the DDP processes (Lightning's `strategy.reduce(t, reduce_op="sum")`;
        the identity on one device). Every process must call this, also one that saw no batch.
        """
        if self.loss_sum is None or self.correct is None:
            sums = torch.zeros(3, device=device)
        else:
            images = self.loss_sum.new_tensor(float(self.images))
            sums = torch.stack([self.loss_sum, self.correct.to(self.loss_sum.dtype), images])
        self._reset()
        total = reduce_sum(sums)  # (loss × images, correct, images) over all processes
        if total[2] == 0:
            return None
        return total[0] / total[2], total[1] / total[2]
