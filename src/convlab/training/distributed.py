"""How one run spreads over processes and cores: DDP evaluation without double counting, the DDP +
Hydra multirun trap, (threads: `convlab.training.threads`).

Evaluation under DDP. Lightning gives every process a `DistributedSampler`, which pads the
last shard with repeated images so that all processes see the same number of batches: 10,001
test images on 2 processes become 10,002, one of them counted twice. Training does not mind
(gradients must stay in lockstep); a test score does. `eval_sampler` gives the validation and
test loaders Lightning's `UnrepeatedDistributedSampler` instead: every image exactly once,
shards off by at most one image. Nothing in an evaluation step talks across processes, so
uneven shards are safe; the metrics' sums and counts are added over processes at the end
(`convlab.training.epoch_sums`, and torchmetrics for the re-drawn-conv accuracy).

The multirun trap. Plain `strategy=ddp` starts the extra processes by running the script
again with the same command line (`python train.py <your arguments>`). Inside a Hydra multirun
that command line is the whole sweep (`-m conv=torch,unfold ...`), so each extra process
starts a sweep of its own. `refuse_script_relaunch_in_multirun` stops that with a clear error
before anything runs; `trainer=ddp_spawn` (processes started with multiprocessing, no command
line) is the strategy for local multiruns, and on SLURM srun starts the processes itself.
"""

from __future__ import annotations

import logging

import lightning as L
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
