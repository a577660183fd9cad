"""One warning when a CPU run's torch threads will fight for cores.

torch's CPU threads spin while they wait for each other: with more threads than free cores, a step can
take many times longer than with one thread (other processes hold the cores the spinning threads wait
for). Two cases are told apart: the run itself asks for more threads than it has cores, or other
processes already keep the cores busy (the 1-minute load average, taken before this run starts its own
work, is at least the core count).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def oversubscription(threads: int, processes: int, cores: int, load: float | None) -> str | None:
    """The warning for `processes` x `threads` torch threads on `cores` cores at `load`, or None if fine."""
    wanted = threads * processes
    if wanted > cores:
        return (
            f"torch runs {threads} thread(s) in each of {processes} process(es), {wanted} in all, on "
            f"{cores} core(s): threads spin against each other and steps slow down; "
            f"set threads={max(1, cores // processes)}"
        )
    if load is not None and wanted > 1 and load >= cores:
        return (
            f"the machine is busy (load average {load:.1f} on {cores} core(s)) and torch runs {threads} "
            "thread(s) per process: they spin against the other processes and steps can be many times "
            "slower; threads=1 may run faster (timings from this run are not comparable to a quiet machine's)"
        )
    return None


def warn_if_oversubscribed(threads: int, processes: int, cores: int) -> str | None:
    """Log the warning of `oversubscription` (once: call it once per run); returns it."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    message = oversubscription(threads, processes, cores, load)
    if message is not None:
        log.warning(message)
    return message
