"""torch's CPU threads for one run: how many cores it may use and how many threads each process gets."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: what SLURM or taskset granted)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int | None, processes: int = 1) -> int:
    """Give torch `threads` CPU threads in each of the run's `processes` on this machine; returns the number.

    None shares the cores out: OMP_NUM_THREADS where it is set (joblib starts its workers with
    cores // n_jobs), else for several processes cores // processes (Lightning's own rule for DDP),
    else torch's default. A number chosen here is exported as OMP_NUM_THREADS, which DDP processes
    inherit and Lightning's launchers keep, so the log line below is what every process uses.
    """
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        threads = int(os.environ["OMP_NUM_THREADS"])
    elif threads is None and processes > 1:
        threads = max(1, available_cores() // processes)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be a positive integer or null, got {threads}")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    in_use, cores = torch.get_num_threads(), available_cores()
    log.info("torch CPU threads: %d in each of %d process(es), %d cores", in_use, processes, cores)
    return in_use
