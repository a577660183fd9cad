"""Step and epoch projections from synthetic records: measured, projected from growth, or refused."""

from __future__ import annotations

import pytest

from convlab.bench.growth import BatchPoint, Growth, fit_exponent
from convlab.bench.projection import MNIST_TRAIN_IMAGES, projections


def record(impl: str, case: str, rounds: list[float], batch: int = 64) -> dict:
    return {
        "impl": impl,
        "case": case,
        "mode": "fwd+bwd",
        "batch": batch,
        "case_batch": 64,
        "rounds_s": rounds,
    }


def both(impl: str, conv1: list[float], conv2: list[float], batch: int = 64) -> list[dict]:
    return [record(impl, "conv1", conv1, batch), record(impl, "conv2", conv2, batch)]


def test_a_clear_difference_is_projected_and_noise_around_one_is_refused():
    torch_rounds = [1.0, 2.0, 1.0, 4.0, 1.0]  # a noisy machine: rounds vary 4x
    records = both("torch", torch_rounds, torch_rounds)
    # Paired with torch round by round: exactly 3x in every round, however noisy the machine.
    records += both("slow", [3 * t for t in torch_rounds], [3 * t for t in torch_rounds])
    # Around 1x, with a paired spread wider than its 5 % difference.
    records += both("same", [1.3, 1.4, 0.8, 4.6, 0.9], [1.3, 1.4, 0.8, 4.6, 0.9])
    result = projections(records, {}, ["torch", "slow", "same"], batch=64)
    slow = result["slow"]
    assert slow["refused"] is None and slow["ratio"] == pytest.approx(3.0)
    assert slow["epoch_s"] == pytest.approx(slow["step_s"] * MNIST_TRAIN_IMAGES / 64)
    assert result["same"]["refused"] is not None and "wider than the difference" in result["same"]["refused"]
    # The baseline's own rounds vary by more than half their median: not projected either.
    assert result["torch"]["refused"] is not None


def test_a_slow_layer_is_projected_from_its_growth_or_not_at_all():
    steady = [1e-3] * 5
    records = both("torch", steady, steady) + both("loops", [1.0] * 3, [0.5] * 3, batch=1)
    growth = {}
    for case, seconds in (("conv1", 1.0), ("conv2", 0.5)):
        points = [BatchPoint(b, [seconds * b] * 3) for b in (1, 2, 4)]
        k, low, high = fit_exponent(points)
        growth[case] = Growth(points=points, exponent=k, exponent_low=low, exponent_high=high)
    result = projections(records, {"loops": growth}, ["torch", "loops"], batch=64)
    assert result["loops"]["step_s"] == pytest.approx(1.5 * 64)
    assert result["loops"]["source"] == "projected from batches 1–4"
    assert result["loops"]["ratio"] == pytest.approx(1.5 * 64 / 2e-3)
    # Without a growth study a per-image time at batch 1 says nothing about batch 64.
    refused = projections(records, {}, ["torch", "loops"], batch=64)["loops"]
    assert refused["step_s"] is None and "may grow with the batch" in refused["refused"]
