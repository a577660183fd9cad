"""When not to trust a benchmark: a busy machine, noisy measurements, projections inside the noise.

A benchmark on a shared machine measures the neighbours too. Three signs, each cheap to read:

- load average against cores, before and after the run: more runnable threads than cores means
  the timed threads waited for a core some of the time (before: others' load plus our threads; after:
  the 1-minute average has our own threads in it too, so they are subtracted, as far as that
  average has caught up with them);
- CPU time against wall time over the timed regions (`convlab.bench.timing.CoreShare`): the calling
  thread always has work there, so under one second of CPU per wall second means the process was
  descheduled for the rest;
- the spread of repeated rounds, IQR / median: above `NOISY_SPREAD` a measurement is marked noisy.

On such a machine wall times are inflated by other people's work, unevenly, and a ratio can even
turn round (a Python-loop layer "faster" than `nn.Conv2d` whose threads spin against the neighbours).
One thread timed on the process's CPU clock (`--threads 1 --clock cpu`) leaves the neighbours out.

A projection (an epoch's time from a step's) multiplies a measurement by a large number, and its
spread with it: it is printed only where its spread is narrower than the effect it shows, the
difference from `nn.Conv2d` (`projection_refusal`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

# IQR / median above which a measurement is marked noisy.
NOISY_SPREAD = 0.25
# The machine is called noisy when at least this share of the measurements is.
NOISY_SHARE = 0.25
# CPU seconds per wall second of the timed regions below which the process did not have its core.
MIN_CORE_SHARE = 0.8
# Runnable threads beyond the cores tolerated before the machine is called busy (the load average
# counts short-lived threads too).
LOAD_SLACK = 0.5
# The baseline's projection has no difference to compare its spread with: shown up to this spread.
BASELINE_MAX_SPREAD = 0.5
# The Linux load average is an exponential average with this time constant (seconds).
LOAD_AVERAGE_WINDOW_S = 60.0
ADVICE = "`--threads 1 --clock cpu` (one thread on the process's CPU clock), or an idle machine"


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS keeps none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def relative_spread(q1: float, median: float, q3: float) -> float:
    """(q3 - q1) / median: 0 for identical rounds; inf for a median of 0."""
    return (q3 - q1) / median if median > 0 else math.inf


@dataclass
class MachineCheck:
    """What the run saw of the machine, and whether its numbers are to be trusted.

    load_before / load_after: the 1-minute load average before the first and after the last timing.
    elapsed_s: wall seconds between the two readings (how far the average caught up with our threads).
    core_share: CPU seconds per wall second of the timed regions (None: not measured, e.g. on a GPU).
    noisy / measured: measurements whose spread exceeds NOISY_SPREAD, of all.
    """

    cores: int
    threads: int
    clock: str
    load_before: float | None = None
    load_after: float | None = None
    elapsed_s: float = 0.0
    core_share: float | None = None
    noisy: int = 0
    measured: int = 0

    def count(self, spread: float) -> None:
        """Adds one measurement of relative spread `spread` (IQR / median)."""
        self.measured += 1
        self.noisy += spread > NOISY_SPREAD

    def reasons(self) -> list[str]:
        """One sentence per sign of a busy or noisy machine; empty when there is none."""
        found = []
        room = self.cores - self.threads + LOAD_SLACK
        if self.load_before is not None and self.load_before > room:
            found.append(
                f"load average {self.load_before:.1f} before the run on {self.cores} cores: others' "
                f"work leaves fewer cores than the {self.threads} thread(s) timed"
            )
        # Our own threads' share of the 1-minute average after `elapsed_s` of running.
        own = self.threads * (1 - math.exp(-self.elapsed_s / LOAD_AVERAGE_WINDOW_S))
        others = None if self.load_after is None else max(0.0, self.load_after - own)
        if others is not None and others > room:
            found.append(
                f"load average {self.load_after:.1f} after the run on {self.cores} cores "
                f"(about {others:.1f} of it others')"
            )
        if self.core_share is not None and self.core_share < MIN_CORE_SHARE:
            found.append(
                f"the process got {self.core_share:.0%} of a core during the timed calls "
                "(CPU time / wall time): it waited for the CPU the rest of the time"
            )
        if self.measured and self.noisy / self.measured >= NOISY_SHARE:
            found.append(
                f"{self.noisy} of {self.measured} measurements vary by more than {NOISY_SPREAD:.0%} "
                "round to round (IQR / median)"
            )
        return found

    @property
    def busy(self) -> bool:
        return bool(self.reasons())

    def advice(self) -> str:
        """What to do about it; the CPU clock of one thread already leaves the neighbours out."""
        if self.threads == 1 and self.clock == "cpu":
            return "one thread is already timed on its CPU clock: for less spread, an idle machine"
        return f"for numbers to rely on, rerun with {ADVICE}"

    def warning(self) -> str | None:
        """The paragraph shown in the tables and on the console, or None on a quiet machine."""
        reasons = self.reasons()
        if not reasons:
            return None
        return (
            "⚠ Busy or noisy machine: " + "; ".join(reasons) + ". Times include other processes' work "
            "and ratios may be off, even turned round; " + self.advice() + "."
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "busy": self.busy, "reasons": self.reasons()}


def projection_refusal(spread: float, ratio: float | None) -> str | None:
    """Why a projection is not to be printed, or None when it may be.

    spread: the projection's relative spread, (high - low) / value.
    ratio: its paired ratio to nn.Conv2d's, None for nn.Conv2d itself. The effect a projection shows
    is how far it is from nn.Conv2d's, |ratio - 1|: a spread wider than that leaves it unresolved.
    """
    if ratio is None:
        if spread > BASELINE_MAX_SPREAD:
            return f"spread {spread:.0%} of the value round to round"
        return None
    effect = abs(ratio - 1)
    if spread > effect:
        return f"spread {spread:.0%} is wider than the difference from nn.Conv2d ({effect:.0%})"
    return None
