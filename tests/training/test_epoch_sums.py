"""EpochSums: exact epoch means from per-step sums, added over processes, reset for the next epoch."""

from __future__ import annotations

import pytest
import torch

from convlab.training.epoch_sums import EpochSums


def batch(predicted: list[int], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """log-probabilities (N, 3) whose argmax is `predicted`, and the labels (N,)."""
    log_probs = torch.full((len(predicted), 3), -5.0)
    log_probs[torch.arange(len(predicted)), torch.tensor(predicted)] = -0.1
    return log_probs, torch.tensor(labels)


def test_means_weight_every_image_once_and_reset() -> None:
    sums = EpochSums()
    sums.update(*batch([0, 1, 2, 0], [0, 1, 0, 0]), loss=torch.tensor(1.0))  # 3 of 4 right, mean loss 1
    sums.update(*batch([2, 2], [1, 2]), loss=torch.tensor(4.0))  # 1 of 2 right, mean loss 4
    assert sums.running_loss() == (4 * 1.0 + 2 * 4.0) / 6
    loss, acc = sums.compute_and_reset(lambda t: t, torch.device("cpu"))
    # Weighted by images, not the mean of the two batch means (2.5 and 0.625).
    assert (loss.item(), acc.item()) == pytest.approx((2.0, 4 / 6))
    assert sums.running_loss() is None
    assert sums.compute_and_reset(lambda t: t, torch.device("cpu")) is None  # nothing since the reset


def test_sums_are_added_over_processes_before_dividing() -> None:
    """Two processes: this one saw 2 images (both right), the other 6 (none right, loss 2)."""
    sums = EpochSums()
    sums.update(*batch([1, 1], [1, 1]), loss=torch.tensor(0.5))
    other = torch.tensor([6 * 2.0, 0.0, 6.0])
    loss, acc = sums.compute_and_reset(lambda t: t + other, torch.device("cpu"))
    assert (loss.item(), acc.item()) == pytest.approx(((2 * 0.5 + 12.0) / 8, 2 / 8))


def test_a_process_without_batches_still_takes_part() -> None:
    calls = []

    def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
        calls.append(tensor.clone())
        return tensor + torch.tensor([3.0, 1.0, 2.0])

    loss, acc = EpochSums().compute_and_reset(reduce_sum, torch.device("cpu"))
    assert torch.equal(calls[0], torch.zeros(3)) and (loss.item(), acc.item()) == (1.5, 0.5)
