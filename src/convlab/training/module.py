"""The reference MNIST network, built from any registered conv class, and its LightningModule.

`ReferenceNet` is the network of PyTorch's classic MNIST example
(github.com/pytorch/examples, mnist/main.py before 2020) with the two conv layers
taken from the class given, so every implementation trains in the same network
with nothing else changed. `LitClassifier` trains it with NLL loss and logs loss
and accuracy per epoch from running sums added up over DDP processes (`convlab.training.epoch_sums`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlab.training.epoch_sums import EpochSums
from convlab.training.probes import apply_probe, snapshot_parameters
from convlab.training.seeding import derived_seed


class LitClassifier(L.LightningModule):
    """Trains `net` with NLL loss; applies the probe; keeps the initial weights for drift checks.

    net: maps (N, 1, 28, 28) -> log-probabilities (N, 10).
    optimizer: a partial optimizer (Hydra `_partial_: true`) called with the trainable parameters.
    probe: a name in `convlab.training.probes.PROBES`; what it freezes never reaches the optimizer.
    seed: the run's seed; each training epoch reseeds torch's RNG from (seed, epoch) so a run
        resumed from an end-of-epoch checkpoint draws the same dropout masks as one never stopped.

    Four costs of Lightning's loop that the reference network's 3 ms steps feel are avoided here
    (measured on a one-layer net, where the loop is all there is: Lightning's loop minus a plain one,
    per step, medians of 7 epochs):
    - automatic optimisation's closure and its three extra hooks, 60 µs a step: `training_step` writes
      the step out, the same lines as a plain PyTorch loop (Lightning's manual optimisation). Only a
      Trainer with `gradient_clip_val` or `accumulate_grad_batches`, which need Lightning to run the
      step, gets automatic optimisation (`automatic_optimization`).
    - nn.Module's `__setattr__` for `_current_fx_name`, which Lightning sets before and after every
      hook (about 30 times a step), checking each time whether the name is a parameter, buffer or
      submodule: 57 µs. `__setattr__` below stores that one name directly.
    - Lightning's walk over the batch to move it to the device (`transfer_batch_to_device`), which on
      the CPU moves nothing: skipped there, 13 µs.
    - `inspect` working out `training_step`'s signature, which Lightning asks for on every step (does
      it take batch_idx?): the signature is stored on the function (below the class), 15 µs.
    With `convlab.training.epoch_sums`, the first two took the loop's own cost from 0.34 to 0.21 ms a step; on
    another day, the last two with `convlab.training.profiler` from 0.27 to 0.22 ms (medians of 10 passes).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        probe: str = "none",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.probe = probe
        self.seed = seed
        self.frozen = apply_probe(net, probe)
        # Weights at initialisation (after the probe), the reference for drift and the frozen check.
        # Saved in checkpoints so that a resumed run still compares against the true start.
        self.initial_params = snapshot_parameters(net)
        self.epoch_sums = {stage: EpochSums() for stage in ("train", "val", "test")}
        # A buffer (not a float) so it lands in the checkpoint and survives resume.
        self.register_buffer("best_val_acc", torch.tensor(0.0))

    def __setattr__(self, name: str, value: object) -> None:
        if name == "_current_fx_name":  # a str or None, set around every hook (see the class docstring)
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def automatic_optimization(self) -> bool:
        """True only under a Trainer that clips gradients or accumulates batches (Lightning does those)."""
        trainer = self._trainer
        if trainer is None:
            return False
        return bool(trainer.gradient_clip_val) or trainer.accumulate_grad_batches != 1

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

        Once per epoch, never per step: each `self.log` call costs Lightning about half a millisecond
        of bookkeeping; logging every step made the Lightning loop 1.33x as slow as a plain one at the
        reference network's 5 ms steps, once per epoch 1.15x (one thread, A/B in one process). The
        sums are already added over processes; sync_dist only tells Lightning so (averaging equal values).
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
            loss = self._step(batch, "train")
        else:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            loss = self._step(batch, "train")
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory([p for p in self.net.parameters() if p.requires_grad])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["initial_params"] = self.initial_params

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.initial_params = checkpoint["initial_params"]


# Read by `inspect.signature` instead of working it out anew, each time Lightning checks which arguments
# training_step takes (every step; see the class docstring). A subclass that overrides training_step
# gets its signature worked out as usual.
LitClassifier.training_step.__signature__ = inspect.signature(LitClassifier.training_step)
