"""Timing for `convlab.bench`: interleaved repeats, robust statistics, ratios measured in the same run.

The machine a benchmark runs on is shared and noisy: a neighbour's job can slow
every call for a second, then stop. Two rules keep the comparison fair anyway:

- interleave: each round calls every contender once, in an order shuffled
  anew each round (seeded), so a noisy second hits all of them alike, and no
  contender always follows the same one: a Python-loop layer leaves the caches
  cold and the OpenMP threads asleep for whoever runs next (a fixed rotation
  made `nn.Conv2d` always follow one neighbour, `fast` another);
- pair: a contender's ratio to the baseline is the median over rounds of
  (its time / the baseline's time in the same round), not a ratio of two
  medians taken at different moments.

Statistics are the median and the interquartile range (IQR), which ignore the
few calls a context switch or the garbage collector made slow.

The clock is wall time by default. On a machine busy with other jobs, a call
also pays for the time the OS gave its core to someone else; with one thread
(`--threads 1`) the process's CPU time (`--clock cpu`) leaves that out and keeps
everything the call itself costs, page faults included.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TimingSummary:
    """Seconds per call of one contender, and its paired ratio to the baseline (None for the baseline)."""

    median_s: float
    q1_s: float
    q3_s: float
    repeats: int
    ratio: float | None = None
    ratio_q1: float | None = None
    ratio_q3: float | None = None


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); all three equal for a single value."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device to finish queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class CoreShare:
    """Wall and process CPU seconds of every timed region: how much of a core the process was given.

    While a timing runs, the calling thread always has work, so a process that has a core to itself
    gets at least one second of CPU time per second of wall time (more with several threads). Less
    means other processes took the core for part of the time: the wall times measured include their
    work (`convlab.bench.trust`). The clocks are arguments so that a test can stage a busy machine.
    """

    wall_clock: Callable[[], float] = time.perf_counter
    cpu_clock: Callable[[], float] = time.process_time
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def start(self) -> tuple[float, float]:
        return self.wall_clock(), self.cpu_clock()

    def stop(self, started: tuple[float, float]) -> None:
        self.wall_s += self.wall_clock() - started[0]
        self.cpu_s += self.cpu_clock() - started[1]

    @property
    def share(self) -> float | None:
        """CPU seconds per wall second over the timed regions; None before any."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else None


def time_call(call: Callable[[], object], sync: Callable[[], None], clock: Callable[[], float]) -> float:
    """Seconds for one call on `clock`, including the device work it queued."""
    sync()
    start = clock()
    call()
    sync()
    return clock() - start


def interleaved_times(
    calls: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    budget_s: float,
    min_repeats: int,
    sync: Callable[[], None],
    prepare: Callable[[str], None] = lambda name: None,
    on_round: Callable[[int, int], None] = lambda done, total: None,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 0,
    core_share: CoreShare | None = None,
) -> dict[str, list[float]]:
    """Times of every call, measured in interleaved rounds.

    calls: name -> a function doing one unit of work (a forward, a forward+backward).
    Each call gets `warmup` untimed runs (fewer when they take a quarter of `budget_s`),
    then up to `repeats` timed ones; a call whose warm-up shows it would spend more than
    `budget_s` on its repeats gets fewer, never less than `min_repeats`.
    `prepare(name)` runs untimed before every call (zeroing grads).
    core_share: when given, the timed rounds' wall and CPU seconds are added to it.
    Returns name -> seconds, one entry per round the call took part in (rounds 0, 1, ...).
    """
    planned: dict[str, int] = {}
    for name, call in calls.items():
        warm_times: list[float] = []
        # A call of several seconds needs no more than one warm-up: stop at a quarter of the budget.
        while len(warm_times) < warmup and sum(warm_times) < budget_s / 4:
            prepare(name)
            warm_times.append(time_call(call, sync, clock))
        per_call = min(warm_times) if warm_times else 0.0
        affordable = int(budget_s / per_call) if per_call > 0 else repeats
        planned[name] = max(min_repeats, min(repeats, affordable))
    rounds = max(planned.values())
    times: dict[str, list[float]] = {name: [] for name in calls}
    order, shuffler = list(calls), random.Random(seed)
    started = core_share.start() if core_share is not None else None
    for round_index in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            if round_index < planned[name]:
                prepare(name)
                times[name].append(time_call(calls[name], sync, clock))
        on_round(round_index + 1, rounds)
    if core_share is not None:
        core_share.stop(started)
    return times


def summarize_times(
    times: dict[str, list[float]], baseline: str, scale: dict[str, float] | None = None
) -> dict:
    """name -> TimingSummary; ratios pair each round with the baseline's time in the same round.

    scale: optional name -> factor applied to that contender's times before comparing
    (1 / batch to compare per-image times of contenders run at different batch sizes).
    """
    scale = scale or {}
    base = [t * scale.get(baseline, 1.0) for t in times[baseline]]
    summaries = {}
    for name, values in times.items():
        scaled = [t * scale.get(name, 1.0) for t in values]
        q1, median, q3 = quartiles(scaled)
        if name == baseline:
            summaries[name] = TimingSummary(median, q1, q3, len(scaled))
            continue
        r1, ratio, r3 = quartiles([t / b for t, b in zip(scaled, base, strict=False)])
        summaries[name] = TimingSummary(median, q1, q3, len(scaled), ratio, r1, r3)
    return summaries
