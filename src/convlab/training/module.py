"""`LitClassifier`: the reference network's LightningModule, through Lightning's public API only.

Automatic optimisation, as Lightning documents it: `training_step` returns the loss and Lightning
runs the step, so gradient clipping (`gradient_clip_val`), accumulation (`accumulate_grad_batches`,
`GradientAccumulationScheduler`) and learning-rate schedulers returned by `configure_optimizers` all
work. A user who sets `model.automatic_optimization = False` gets a written-out step instead (zero
grad, forward, `manual_backward`, step, and the scheduler stepped at its interval), the same numbers.

Loss and accuracy are logged once per epoch from running sums added over DDP processes
(`convlab.training.epoch_sums`): one `self.log` per epoch and stage rather than one per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlab.training.epoch_sums import EpochSums
from convlab.training.probes import apply_probe, snapshot_parameters
from convlab.training.seeding import derived_seed

SCHEDULER_INTERVALS = ("epoch", "step")


class LitClassifier(L.LightningModule):
    """Trains `net` with NLL loss; applies the probe; keeps the initial weights for drift checks.

    net: maps (N, 1, 28, 28) -> log-probabilities (N, 10); for probes, a network with `conv_layers()`
        (as `convlab.training.network.ReferenceNet`).
    optimizer: a partial optimizer (Hydra `_partial_: true`) called with the trainable parameters.
    probe: a name in `convlab.training.probes.PROBES`; what it freezes never reaches the optimizer.
    seed: the run's seed; each training epoch reseeds torch's RNG from (seed, epoch) so a run
        resumed from an end-of-epoch checkpoint draws the same dropout masks as one never stopped.
    scheduler: None, or a partial learning-rate scheduler (Hydra `_partial_: true`) called with the
        optimizer; stepped every epoch or every optimizer step as `scheduler_interval` says.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        probe: str = "none",
        seed: int = 0,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(
                f"scheduler_interval must be one of {SCHEDULER_INTERVALS}, got {scheduler_interval!r}"
            )
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.probe = probe
        self.seed = seed
        self.frozen = apply_probe(net, probe)
        # Weights at initialisation (after the probe), the reference for drift and the frozen check.
        # Saved in checkpoints so that a resumed run still compares against the true start.
        self.initial_params = snapshot_parameters(net)
        self.epoch_sums = {stage: EpochSums() for stage in ("train", "val", "test")}
        # A buffer (not a float) so it lands in the checkpoint and survives resume.
        self.register_buffer("best_val_acc", torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) -> log-probabilities (N, 10)."""
        return self.net(x)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """The batch on `device`; on the CPU it is already there (batches are held in memory)."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        log_probs = self(images)
        loss = F.nll_loss(log_probs, labels)
        self.epoch_sums[stage].update(log_probs, labels, loss)
        return loss

    def _log_epoch(self, stage: str, prog_bar: bool = True) -> Tensor | None:
        """Logs `stage`/loss and `stage`/acc over the epoch's batches (all DDP processes), returns the acc.

        Once per epoch, never per step: each `self.log` call costs Lightning about half a millisecond,
        a noticeable share of the reference network's few-millisecond step. The sums are already added
        over processes; sync_dist only tells Lightning so (averaging equal values).
        """
        means = self.epoch_sums[stage].compute_and_reset(self._sum_over_processes, self.device)
        if means is None:
            return None
        loss, acc = means
        self.log(f"{stage}/loss", loss, prog_bar=prog_bar, sync_dist=True)
        self.log(f"{stage}/acc", acc, prog_bar=prog_bar, sync_dist=True)
        return acc

    def _sum_over_processes(self, tensor: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(derived_seed(self.seed, "epoch", self.current_epoch))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            return self._step(batch, "train")
        # Manual optimisation, chosen by the user: the same step written out.
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = self._step(batch, "train")
        self.manual_backward(loss)
        optimizer.step()
        if self.scheduler_interval == "step":
            self._step_scheduler()
        return loss

    def _step_scheduler(self) -> None:
        """Under manual optimisation Lightning leaves the scheduler to the module."""
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        if not self.automatic_optimization and self.scheduler_interval == "epoch":
            self._step_scheduler()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        acc = self._log_epoch("val")
        # The two sanity-check batches before training are not a validation score.
        if acc is not None and not self.trainer.sanity_checking:
            self.best_val_acc.fill_(max(self.best_val_acc.item(), acc.item()))
        self.log("val/acc_best", self.best_val_acc, sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", prog_bar=False)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """The optimizer over the trainable parameters, with its scheduler in Lightning's dict form if any."""
        optimizer = self.optimizer_factory([p for p in self.net.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["initial_params"] = self.initial_params

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.initial_params = checkpoint["initial_params"]
