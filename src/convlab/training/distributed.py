"""How one run spreads over processes: DDP evaluation without double counting, and the DDP + Hydra
multirun trap (threads per process: `convlab.training.threads`).

Evaluation under DDP. Lightning gives every process a `DistributedSampler`, which pads the
last shard with repeated images so that all processes see the same number of batches: 10,001
test images on 2 processes become 10,002, one of them counted twice. Training does not mind
(gradients must stay in lockstep); a test score does. `eval_sampler` gives the validation and
test loaders `UnrepeatedSampler` instead: every image exactly once, shards off by at most one
image. Nothing in an evaluation step talks across processes, so uneven shards are safe; the
metrics' sums and counts are added over processes at the end (`convlab.training.epoch_sums`,
and torchmetrics for the re-drawn-conv accuracy).

The multirun trap. Plain `strategy=ddp` starts the extra processes by running the script
again with the same command line (`python train.py <your arguments>`). Inside a Hydra multirun
that command line is the whole sweep (`-m conv=torch,unfold ...`), so each extra process
starts a sweep of its own. `refuse_script_relaunch_in_multirun` stops that with a clear error
before anything runs; `trainer=ddp_spawn` (processes started with multiprocessing, no command
line) is the strategy for local multiruns, and on SLURM srun starts the processes itself.

Lightning has no public name for "the launcher that re-runs the script": its class,
`_SubprocessScriptLauncher`, is private. It is used when this Lightning has it; without it the check
falls back to public facts only and refuses every multi-process run whose processes Lightning starts
itself, except by fork, saying that it could not tell the two kinds apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from torch.utils.data import Dataset, DistributedSampler

log = logging.getLogger(__name__)


def script_launcher_class() -> type | None:
    """Lightning's (private) launcher class that starts processes by re-running the script, if it has one."""
    try:
        from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
    except ImportError:
        return None
    return _SubprocessScriptLauncher


class UnrepeatedSampler(DistributedSampler):
    """Items rank, rank + world, rank + 2 world, ... of `dataset` in order: each item in exactly one process.

    A `DistributedSampler` (so Lightning keeps it and injects none of its own) without the padding:
    shards differ by at most one item. For evaluation only; training needs equal shards.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.total_size = len(dataset)  # type: ignore[arg-type]
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def eval_sampler(dataset: Dataset, trainer: L.Trainer | None) -> UnrepeatedSampler | None:
    """This process's share of an evaluation set, each item in exactly one process; None on one process."""
    if trainer is None or trainer.world_size == 1:
        return None
    return UnrepeatedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank)


class ScriptRelaunchInMultirunError(RuntimeError):
    """Plain DDP would re-run the whole Hydra sweep in each extra process."""


def relaunches_script(trainer: L.Trainer) -> bool:
    """Whether Lightning would start this run's extra processes by running the command line again.

    With Lightning's private launcher class available: exactly that. Without it (public facts only):
    any run of several processes that Lightning starts itself (not a cluster's srun) by other than fork,
    which over-refuses ddp_spawn rather than letting a sweep re-run itself.
    """
    launcher = trainer.strategy.launcher
    # world_size is only known once the processes are set up; devices x nodes is known before.
    if launcher is None or trainer.num_devices * trainer.num_nodes == 1:
        return False
    if trainer.strategy.cluster_environment.creates_processes_externally:
        return False
    script_launcher = script_launcher_class()
    if script_launcher is not None:
        return isinstance(launcher, script_launcher)
    return not launcher.is_interactive_compatible


def refuse_script_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """Raise in a multirun job whose extra DDP processes Lightning would start by re-running the script."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if relaunches_script(trainer):
        unsure = ""
        if script_launcher_class() is None:
            unsure = (
                " (This Lightning has no launcher class convlab can recognise, so every strategy that starts"
                " its own processes other than by fork is refused here, ddp_spawn included: use"
                " trainer.strategy=ddp_fork or one process per job.)"
            )
        raise ScriptRelaunchInMultirunError(
            "trainer.strategy=ddp in a multirun: Lightning would start each extra process by running "
            "`python train.py <these arguments>` again, which re-runs the whole sweep. "
            "Use trainer=ddp_spawn for a local multirun (e.g. python train.py -m trainer=ddp_spawn "
            "trainer.devices=2 ...), or a SLURM launcher, where srun starts one process per device." + unsure
        )
