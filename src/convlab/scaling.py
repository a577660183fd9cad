"""How one run spreads over processes and cores: DDP evaluation without double counting, the DDP +
Hydra multirun trap, and torch's CPU threads.

Evaluation under DDP. Lightning gives every process a `DistributedSampler`, which pads the
last shard with repeated images so that all processes see the same number of batches: 10,001
test images on 2 processes become 10,002, one of them counted twice. Training does not mind
(gradients must stay in lockstep); a test score does. `eval_sampler` gives the validation and
test loaders Lightning's `UnrepeatedDistributedSampler` instead: every image exactly once,
shards off by at most one image. Nothing in an evaluation step talks across processes, so
uneven shards are safe; the metrics' sums and counts are added over processes at the end
(`convlab.epoch_sums`, and torchmetrics for the re-drawn-conv accuracy).

The multirun trap. Plain `strategy=ddp` starts the extra processes by running the script
again with the same command line (`python train.py <your arguments>`). Inside a Hydra multirun
that command line is the whole sweep (`-m conv=torch,unfold ...`), so each extra process
starts a sweep of its own. `refuse_script_relaunch_in_multirun` stops that with a clear error
before anything runs; `trainer=ddp_spawn` (processes started with multiprocessing, no command
line) is the strategy for local multiruns, and on SLURM srun starts the processes itself.
"""

from __future__ import annotations

import logging
import os

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


def eval_sampler(dataset: Dataset, trainer: L.Trainer | None) -> UnrepeatedDistributedSampler | None:
    """This process's share of an evaluation set, each item in exactly one process; None on one process.

    Lightning keeps a sampler that is already a `DistributedSampler` and injects nothing.
    """
    if trainer is None or trainer.world_size == 1:
        return None
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )


class ScriptRelaunchInMultirunError(RuntimeError):
    """Plain DDP would re-run the whole Hydra sweep in each extra process."""


def refuse_script_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """Raise in a multirun job whose extra DDP processes Lightning would start by re-running the script."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = trainer.strategy.launcher
    relaunches = (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        and not launcher.cluster_environment.creates_processes_externally
    )
    if relaunches:
        raise ScriptRelaunchInMultirunError(
            "trainer.strategy=ddp in a multirun: Lightning would start each extra process by running "
            "`python train.py <these arguments>` again, which re-runs the whole sweep. "
            "Use trainer=ddp_spawn for a local multirun (e.g. python train.py -m trainer=ddp_spawn "
            "trainer.devices=2 ...), or a SLURM launcher, where srun starts one process per device."
        )


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
