"""A training step's and an epoch's conv time per layer, projected from the bench's measurements.

A training step here is the reference network's two conv layers, forward and backward, at the
training batch (the reference shapes' batch); an epoch is MNIST's 60,000 training images of such
steps. Where a layer was timed at that batch, the step is measured: each round's conv1 time plus the
same round's conv2 time, paired round by round with nn.Conv2d's for the ratio. A slow layer timed on
fewer images is projected from its growth with the batch (`convlab.bench.growth`); one without a
growth study is not projected at all, since its cost per image may grow with the batch.

Every projection carries its spread and is refused, with the reason, where the spread is wider than
its difference from nn.Conv2d (`convlab.bench.trust.projection_refusal`).
"""

from __future__ import annotations

from convlab.bench.contenders import BASELINE
from convlab.bench.growth import Growth
from convlab.bench.timing import quartiles
from convlab.bench.trust import projection_refusal, relative_spread

MNIST_TRAIN_IMAGES = 60_000
STEP_CASES = ("conv1", "conv2")


def step_rounds(records: list[dict]) -> dict[str, list[float]]:
    """impl -> seconds of conv1 + conv2 forward+backward per round, for impls timed at the case batch."""
    rounds: dict[str, dict[str, list[float]]] = {}
    for r in records:
        if (
            r["mode"] == "fwd+bwd"
            and r["case"] in STEP_CASES
            and "rounds_s" in r
            and r["batch"] == r["case_batch"]
        ):
            rounds.setdefault(r["impl"], {})[r["case"]] = r["rounds_s"]
    return {
        impl: [a + b for a, b in zip(cases["conv1"], cases["conv2"], strict=False)]
        for impl, cases in rounds.items()
        if set(cases) == set(STEP_CASES)
    }


def projections(
    records: list[dict], growths: dict[str, dict[str, Growth]], impls: list[str], batch: int
) -> dict[str, dict]:
    """impl -> its step and epoch projection at `batch`.

    Each entry: step_s, step_range_s [low, high], epoch_s, ratio (to nn.Conv2d; None for it),
    source ("measured" or "projected"), refused (the reason no number is shown, or None).
    """
    measured = step_rounds(records)
    base = measured.get(BASELINE)
    base_median = quartiles(base)[1] if base else None
    result = {}
    for impl in impls:
        entry: dict = {"step_s": None, "step_range_s": None, "epoch_s": None, "ratio": None}
        if impl in measured:
            q1, value, q3 = quartiles(measured[impl])
            entry["source"] = f"measured at batch {batch}"
            if impl == BASELINE:
                spread, ratio = relative_spread(q1, value, q3), None
            elif base:
                r1, ratio, r3 = quartiles([x / b for x, b in zip(measured[impl], base, strict=False)])
                spread = relative_spread(r1, ratio, r3)
            else:
                spread, ratio = relative_spread(q1, value, q3), None
        elif impl in growths and all(
            case in growths[impl] and growths[impl][case].points for case in STEP_CASES
        ):
            parts = [growths[impl][case].project(batch) for case in STEP_CASES]
            q1, value, q3 = (sum(part[i] for part in parts) for i in range(3))
            largest = min(growths[impl][case].points[-1].batch for case in STEP_CASES)
            entry["source"] = (
                f"measured at batch {batch}" if largest >= batch else f"projected from batches 1–{largest}"
            )
            ratio = value / base_median if base_median else None
            spread = relative_spread(q1, value, q3)
        else:
            entry["source"] = "–"
            entry["refused"] = (
                "timed on fewer images than a training batch only: its cost per image may grow with the batch"
                if impl in {r["impl"] for r in records if r["case"] in STEP_CASES}
                else "not timed at conv1 and conv2"
            )
            result[impl] = entry
            continue
        entry.update(
            step_s=value,
            step_range_s=[q1, q3],
            epoch_s=value * MNIST_TRAIN_IMAGES / batch,
            ratio=ratio,
            refused=projection_refusal(spread, ratio),
        )
        result[impl] = entry
    return result
