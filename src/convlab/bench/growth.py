"""How a slow layer's cost grows with the batch, and what that makes a training step and an epoch cost.

A Python-loop layer cannot be timed at the training batch within a bench's minutes, so it is timed
forward+backward at batch sizes 1, 2, 4, ... (doubling, up to the training batch) while a time budget
lasts, and the growth exponent k of time ∝ batch^k is fitted by least squares on the log-log points.
k ≈ 1 is linear: each image costs the same. k > 1 means each image costs more in a larger batch,
and the usual cause in a learner's layer is in-place writes into a preallocated output
(`out[n, f, h, w] = ...`): each records a `CopySlices` node whose backward copies the whole output
gradient, so the backward's memory traffic grows with batch × output size, quadratic in the batch.
The cause is not guessed from the times: the forward's autograd graph is walked and its `CopySlices`
nodes are counted (`inplace_writes`).

The exponent's range comes from the extreme slopes through the rounds' quartiles (the smaller batches
at one quartile, the larger at the other): growth is called linear, superlinear or sublinear only
when that range allows no other reading.

The projection to the training batch starts from the largest batch measured. Without in-place writes
it grows with the fitted exponent, never slower than linear (a larger batch does not make an image
cheaper than the largest batch measured showed). With them, a power law fitted where the copies are
still small would miss what dominates at the training batch, so the copies are costed directly: the
nodes at that batch times the measured time of one copy of the output gradient at that batch, added
to the rest of the time grown linearly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from convlab.bench.timing import quartiles

# |k - 1| within this is linear.
LINEAR_TOLERANCE = 0.1
# Timed calls per batch size: at least MIN_CALLS (a spread needs two), more while the budget lasts.
MIN_CALLS = 2


@dataclass
class BatchPoint:
    """Seconds of the forward+backward calls at one batch size."""

    batch: int
    times_s: list[float]

    @property
    def quartiles_s(self) -> tuple[float, float, float]:
        return quartiles(self.times_s)


@dataclass
class Growth:
    """One layer's cost against the batch size at one shape.

    points: the batch sizes timed, ascending.
    exponent, exponent_low, exponent_high: k of time ∝ batch^k and its range (None: under two points).
    inplace_writes: `CopySlices` nodes one image's forward records (None: not counted).
    output_elements: elements of one image's output.
    copy_s: batch -> seconds to copy the output gradient at that batch once (layers writing in place).
    """

    points: list[BatchPoint] = field(default_factory=list)
    exponent: float | None = None
    exponent_low: float | None = None
    exponent_high: float | None = None
    inplace_writes: int | None = None
    output_elements: int = 0
    copy_s: dict[int, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """linear, superlinear, sublinear, unclear (range straddles), or 'one batch size'."""
        if self.exponent is None:
            return "one batch size"
        if self.exponent_low > 1 + LINEAR_TOLERANCE:
            return "superlinear"
        if self.exponent_high < 1 - LINEAR_TOLERANCE:
            return "sublinear"
        if self.exponent_low >= 1 - LINEAR_TOLERANCE and self.exponent_high <= 1 + LINEAR_TOLERANCE:
            return "linear"
        return "unclear"

    def project(self, batch: int) -> tuple[float, float, float] | None:
        """(low, value, high) seconds per call at `batch`, from the largest batch measured; None if none."""
        if not self.points:
            return None
        last = self.points[-1]
        q1, median, q3 = last.quartiles_s
        if batch <= last.batch:
            return q1, median, q3
        scale = batch / last.batch
        if self.inplace_writes and {batch, last.batch} <= self.copy_s.keys():
            copies_last, copies = self.copies_s(last.batch), self.copies_s(batch)
            low, value, high = (max(t - copies_last, 0.0) * scale + copies for t in (q1, median, q3))
            return low, value, high
        k, low_k, high_k = (
            (1.0, 1.0, 1.0)
            if self.exponent is None
            else (max(self.exponent, 1.0), max(self.exponent_low, 1.0), max(self.exponent_high, 1.0))
        )
        return q1 * scale**low_k, median * scale**k, q3 * scale**high_k

    def copies_s(self, batch: int) -> float:
        """Seconds the in-place writes' backward spends copying at `batch` (0 when not measured)."""
        if not self.inplace_writes or batch not in self.copy_s:
            return 0.0
        return self.inplace_writes * batch * self.copy_s[batch]

    def inplace_bytes(self, batch: int, element_size: int = 4) -> float | None:
        """Bytes the in-place writes' backward copies at `batch`: one whole output gradient per node."""
        if not self.inplace_writes:
            return None
        return self.inplace_writes * batch * self.output_elements * batch * element_size

    def to_dict(self) -> dict:
        return {
            "points": [{"batch": p.batch, "times_s": p.times_s} for p in self.points],
            "exponent": self.exponent,
            "exponent_range": None if self.exponent is None else [self.exponent_low, self.exponent_high],
            "verdict": self.verdict,
            "inplace_writes": self.inplace_writes,
            "output_elements": self.output_elements,
            "copy_s": self.copy_s,
        }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def fit_exponent(points: list[BatchPoint]) -> tuple[float, float, float] | None:
    """(k, k_low, k_high) of time ∝ batch^k over `points` (ascending batches); None under two batches.

    k fits the medians; k_low the smaller half's third quartiles against the larger half's first,
    k_high the reverse (a middle point stays at its median): the steepest and flattest readings the
    rounds allow.
    """
    if len(points) < 2:
        return None
    xs = [math.log(p.batch) for p in points]
    q = [p.quartiles_s for p in points]
    half, middle = len(points) // 2, len(points) % 2 == 1
    low_ys, high_ys = [], []
    for i, (q1, median, q3) in enumerate(q):
        small = i < half
        large = i >= half + middle
        low_ys.append(math.log(q3 if small else q1 if large else median))
        high_ys.append(math.log(q1 if small else q3 if large else median))
    k = slope(xs, [math.log(median) for _, median, _ in q])
    return k, slope(xs, low_ys), slope(xs, high_ys)


def measure_growth(
    call_at: Callable[[int], Callable[[], float]],
    *,
    max_batch: int,
    budget_s: float,
    repeats: int,
    on_point: Callable[[int, int, float | None], None] = lambda batch, calls, expected_s: None,
) -> list[BatchPoint]:
    """Times at batch 1, 2, 4, ... up to max_batch while `budget_s` lasts.

    call_at(batch) sets a layer up at `batch` images and returns a function that runs one
    forward+backward and returns its seconds. One untimed call at batch 1 warms up. Each batch size
    gets up to `repeats` calls, at least MIN_CALLS; the first two batch sizes are always timed (the
    fit needs them), a larger one only when the calls its predicted time allows (the last time grown
    by the exponent so far, at least linearly) fit in what is left of the budget.
    on_point(batch, calls, expected_s) is told before each batch size is timed, with the predicted
    seconds of one call there (None before two batch sizes are known), for a progress display.
    """
    spent = 0.0
    call = call_at(1)
    spent += call()
    points: list[BatchPoint] = []
    batch = 1
    while batch <= max_batch:
        if len(points) >= 2:
            fitted = fit_exponent(points)
            k = max(fitted[0], 1.0) if fitted else 1.0
            last = points[-1]
            predicted = last.quartiles_s[1] * (batch / last.batch) ** k
            affordable = int((budget_s - spent) / predicted) if predicted > 0 else repeats
            calls = min(repeats, affordable)
            if calls < MIN_CALLS:
                break
        else:
            predicted = None
            calls = max(MIN_CALLS, min(repeats, int(budget_s / 4 / max(spent, 1e-9))))
        on_point(batch, calls, predicted)
        call = call if batch == 1 else call_at(batch)
        times = [call() for _ in range(calls)]
        spent += sum(times)
        points.append(BatchPoint(batch, times))
        batch *= 2
    return points


def inplace_writes(output: Tensor) -> int:
    """`CopySlices` nodes in the autograd graph that produced `output` (in-place writes into a tensor)."""
    seen, stack, count = set(), [output.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += node.name().rsplit("::", 1)[-1] == "CopySlices"  # "torch::autograd::CopySlices"
        stack.extend(next_node for next_node, _ in node.next_functions)
    return count


def copy_seconds(
    elements: int,
    dtype: torch.dtype,
    device: torch.device,
    clock: Callable[[], float],
    sync: Callable[[], None],
    calls: int = 5,
) -> float:
    """Median seconds of one `clone` of an `elements`-element tensor: what each CopySlices node's
    backward does to the output gradient."""
    source = torch.ones(elements, dtype=dtype, device=device)
    times = []
    for _ in range(calls):
        sync()
        start = clock()
        source.clone()
        sync()
        times.append(clock() - start)
    return quartiles(times)[1]


def growth_study(
    call_at: Callable[[int], Callable[[], float]],
    forward_one: Callable[[], Tensor],
    *,
    max_batch: int,
    budget_s: float,
    repeats: int,
    clock: Callable[[], float],
    sync: Callable[[], None] = lambda: None,
    on_point: Callable[[int, int, float | None], None] = lambda batch, calls, expected_s: None,
) -> Growth:
    """The Growth of one layer at one shape, timed at batch 1, 2, 4, ... up to max_batch.

    call_at(batch): see `measure_growth`. forward_one() runs the layer's forward on one image (its graph
    is walked for in-place writes). clock and sync: the bench's clock and device synchronizer, for the
    copies' time.
    """
    with torch.enable_grad():
        output = forward_one()
    growth = Growth(
        inplace_writes=inplace_writes(output) if output.requires_grad else None,
        output_elements=output[0].numel(),
    )
    dtype, device = output.dtype, output.device
    del output
    growth.points = measure_growth(
        call_at, max_batch=max_batch, budget_s=budget_s, repeats=repeats, on_point=on_point
    )
    fitted = fit_exponent(growth.points)
    if fitted is not None:
        growth.exponent, growth.exponent_low, growth.exponent_high = fitted
    if growth.inplace_writes and growth.points:
        for batch in {growth.points[-1].batch, max_batch}:
            growth.copy_s[batch] = copy_seconds(growth.output_elements * batch, dtype, device, clock, sync)
    return growth


def explanation(label: str, growths: dict[str, Growth], batch: int) -> str | None:
    """Why `label`'s cost grows faster than the batch, and the fix; None when nothing calls for it.

    growths: case name -> Growth. Said when the growth is superlinear or the forward writes in place.
    """
    writes = {case: g for case, g in growths.items() if g.inplace_writes}
    superlinear = [case for case, g in growths.items() if g.verdict == "superlinear"]
    if not writes and not superlinear:
        return None
    lines = []
    if superlinear:
        shown = ", ".join(f"{case} k = {growths[case].exponent:.2f}" for case in superlinear)
        lines.append(f"`{label}`: its cost per image grows with the batch ({shown}).")
    else:
        lines.append(f"`{label}`: its forward writes into its output in place.")
    if writes:
        case, g = next(iter(writes.items()))
        gigabytes = sum(g.inplace_bytes(batch) for g in writes.values()) / 1e9
        seconds = sum(g.copies_s(batch) for g in writes.values())
        timed = f", about {seconds:,.0f} s on this machine" if seconds else ""
        lines.append(
            f"Its forward records {g.inplace_writes:,} `CopySlices` nodes per image at {case} (one per "
            f"in-place write `out[n, f, h, w] = ...`), and each node's backward copies the whole output "
            f"gradient: at batch {batch}, {gigabytes:,.0f} GB copied per backward{timed}, "
            "growing with the square of the batch. "
            "Fix: collect the pixels in a list and build the output with `torch.stack` "
            "(as convlab's `vanilla` does, src/convlab/conv/vanilla.py)."
        )
    else:
        lines.append(
            "No in-place writes were found in its forward's graph: look for work that grows with the "
            "whole batch inside the per-image loop (operations on the full input or output tensor)."
        )
    return " ".join(lines)
