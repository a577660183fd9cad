"""The bench's busy-machine detection on staged loads and synthetic clocks (no real timing asserted)."""

from __future__ import annotations

import itertools

import pytest

from convlab.bench.tables import trust_lines
from convlab.bench.timing import CoreShare, interleaved_times
from convlab.bench.trust import (
    BASELINE_MAX_SPREAD,
    NOISY_SPREAD,
    MachineCheck,
    projection_refusal,
    relative_spread,
)


def ticking(steps: list[float]):
    """A clock that advances by the given steps in turn, cycling: a staged timer."""
    now, cycle = [0.0], itertools.cycle(steps)

    def clock() -> float:
        now[0] += next(cycle)
        return now[0]

    return clock


def test_a_quiet_machine_raises_nothing():
    check = MachineCheck(cores=4, threads=2, clock="wall", load_before=0.3, load_after=2.2, elapsed_s=600)
    check.core_share = 1.6
    for spread in (0.05, 0.1, 0.3, 0.02, 0.1):  # one noisy measurement of five
        check.count(spread)
    assert check.reasons() == [] and not check.busy and check.warning() is None


def test_the_quiet_line_gives_loads_to_two_decimals():
    check = MachineCheck(
        cores=2, threads=2, clock="wall", load_before=0.4453125, load_after=1.6201171875, elapsed_s=600
    )
    check.core_share = 1.55
    assert trust_lines({"check": check.to_dict()}) == [
        "Quiet machine: load average 0.45 before, 1.62 after, 155% of a core in the timed calls.",
        "",
    ]


def test_load_before_the_run_beyond_the_free_cores_is_called_busy():
    check = MachineCheck(cores=2, threads=2, clock="wall", load_before=3.0)
    assert check.busy
    (reason,) = check.reasons()
    assert "load average 3.0 before the run on 2 cores" in reason
    assert "--threads 1 --clock cpu" in check.warning()


def test_load_after_the_run_counts_our_own_threads_out():
    # After ten minutes the 1-minute average holds our 2 threads: 2.4 leaves 0.4 for others, quiet.
    assert not MachineCheck(cores=2, threads=2, clock="wall", load_after=2.4, elapsed_s=600).busy
    # After two seconds it holds almost none of them: the same 2.4 is others' work.
    assert MachineCheck(cores=2, threads=2, clock="wall", load_after=2.4, elapsed_s=2).busy


def test_core_share_from_a_staged_clock_pair_reveals_a_descheduled_process():
    """Wall time runs 4 ticks per call while the process's CPU clock runs 1: a quarter of a core."""
    share = CoreShare(wall_clock=ticking([0.004]), cpu_clock=ticking([0.001]))
    interleaved_times(
        {"a": lambda: None, "b": lambda: None},
        repeats=5,
        warmup=0,
        budget_s=1,
        min_repeats=1,
        sync=lambda: None,
        core_share=share,
    )
    assert share.share == pytest.approx(0.25)
    check = MachineCheck(cores=8, threads=1, clock="wall", core_share=share.share)
    assert check.busy and "25% of a core" in check.reasons()[0]


def test_many_noisy_measurements_make_a_noisy_machine():
    check = MachineCheck(cores=8, threads=1, clock="wall")
    for spread in (0.1, NOISY_SPREAD * 2, 0.05, NOISY_SPREAD * 3):
        check.count(spread)
    assert check.noisy == 2 and check.measured == 4
    assert "2 of 4 measurements vary" in check.reasons()[0]


def test_advice_knows_when_cpu_time_of_one_thread_is_already_used():
    check = MachineCheck(cores=2, threads=1, clock="cpu", load_before=5.0)
    assert "--threads 1 --clock cpu" not in check.warning() and "idle machine" in check.warning()


def test_a_projection_inside_its_spread_is_refused_with_the_reason():
    # 3 % slower with a 20 % spread: not resolved.
    reason = projection_refusal(spread=0.2, ratio=1.03)
    assert reason is not None and "20%" in reason and "3%" in reason
    # 20x slower with a 40 % spread: shown.
    assert projection_refusal(spread=0.4, ratio=20.0) is None
    # "Faster than nn.Conv2d" within a wide spread, the busy machine's illusion: refused.
    assert projection_refusal(spread=1.5, ratio=0.27) is not None
    # The baseline has no difference to compare with: refused only when its own spread is wide.
    assert projection_refusal(spread=BASELINE_MAX_SPREAD / 2, ratio=None) is None
    assert projection_refusal(spread=BASELINE_MAX_SPREAD * 2, ratio=None) is not None


def test_relative_spread():
    assert relative_spread(0.9, 1.0, 1.2) == pytest.approx(0.3)
    assert relative_spread(0.0, 0.0, 0.0) == float("inf")
