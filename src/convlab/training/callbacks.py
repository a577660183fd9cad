"""Callbacks: what the conv layers do during training (TensorBoard), and how fast the epochs run."""

from __future__ import annotations

import sys
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassAccuracy

from convlab.training.filter_images import image_grid
from convlab.training.probes import conv_drift, conv_layers, conv_weight, redrawn_conv_copy


def progress_bar(refresh_rate: int = 1, redirected_refresh_rate: int = 100) -> TQDMProgressBar:
    """Lightning's progress bar with the running loss, redrawn every `refresh_rate` steps on a terminal.

    When the output goes to a file (a SLURM log, `> run.log`) every redraw is a new line: a 20-epoch
    `make train` wrote 35,000 of them. There it is redrawn every `redirected_refresh_rate` steps.
    """
    return RunningLossProgressBar(
        refresh_rate=refresh_rate if sys.stdout.isatty() else redirected_refresh_rate
    )


class RunningLossProgressBar(TQDMProgressBar):
    """Shows `train/loss_so_far`, the mean training loss of the epoch so far in this process, read from
    `LitClassifier.epoch_sums` every `log_every_n_steps` steps: the epoch's own train/loss is logged
    only when the epoch ends, and a slow layer's epoch can take hours.

    Read from the sums rather than `self.log`-ged by the training step, which would cost Lightning's
    per-step logging bookkeeping on every step. Between updates the bar keeps the last value, also into
    the next epoch's first steps.
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.loss_so_far: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx):
        if (batch_idx + 1) % trainer.log_every_n_steps == 0:
            self.loss_so_far = pl_module.epoch_sums["train"].running_loss()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if self.loss_so_far is not None:
            metrics["train/loss_so_far"] = self.loss_so_far
        return metrics


class ConvMonitor(L.Callback):
    """Logs per conv layer the gradient norm (every log_every_n_steps steps) and the relative weight drift
    ||W - W0|| / ||W0|| (each epoch), and conv1's filters as an image grid in TensorBoard.

    W0 is `LitClassifier.initial_params`, the weights the run started from (kept across resume).
    filter_zoom: each filter pixel becomes a zoom x zoom block, so 5x5 filters are visible.
    """

    def __init__(self, filter_layer: str = "conv1", filter_zoom: int = 8) -> None:
        self.filter_layer = filter_layer
        self.filter_zoom = filter_zoom

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        # Only on the steps the loggers write (every log_every_n_steps): a self.log call costs about
        # half a millisecond, 10% of a reference-network step, and the other steps' values are dropped.
        if (trainer.global_step + 1) % trainer.log_every_n_steps != 0:
            return
        for name, layer in conv_layers(pl_module.net).items():
            grad = getattr(layer.weight, "grad", None)  # a NumPy layer's weight has none
            if grad is not None:
                pl_module.log(f"conv_grad_norm/{name}", grad.norm(), on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, drift in conv_drift(pl_module.net, pl_module.initial_params).items():
            # Equal in every DDP process (the weights move in lockstep); sync_dist only says so.
            pl_module.log(f"conv_drift/{name}", drift, on_step=False, on_epoch=True, sync_dist=True)
        weight = conv_weight(conv_layers(pl_module.net)[self.filter_layer]).detach()
        # One row per filter across its input channels; conv1 (one input channel) fits on one row.
        per_row = weight.shape[1] if weight.shape[1] > 1 else weight.shape[0]
        grid = image_grid(weight.flatten(0, 1), per_row, self.filter_zoom)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(f"filters/{self.filter_layer}", grid, trainer.current_epoch)


class RedrawnConvAccuracy(L.Callback):
    """Logs `test/redrawn_conv_acc`: the test accuracy of the trained network with all its conv weights
    re-drawn from their init distribution, and `test/redrawn_conv_acc/<slot>` with only that slot re-drawn
    (`convlab.training.probes.redrawn_conv_copy`; every copy draws from the stream seeded with `seed`).

    A network that keeps its accuracy when a conv layer is re-drawn does not use what that layer learned.
    It runs inside the test pass, on exactly the batches the test sees, in every process, so under
    DDP each test image counts once and the accuracy is summed over processes (torchmetrics), and
    under ddp_spawn the numbers reach the main process with the other logged metrics.
    Each copy costs one more forward pass over the test set.
    """

    ALL = "all"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        slots = list(conv_layers(pl_module.net))
        choices = {self.ALL: slots, **{slot: [slot] for slot in slots}}
        self.nets = {
            name: redrawn_conv_copy(pl_module.net, self.seed, chosen).to(pl_module.device).eval()
            for name, chosen in choices.items()
        }
        self.accuracy = {
            name: MulticlassAccuracy(num_classes=10, average="micro").to(pl_module.device)
            for name in self.nets
        }

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        images, labels = batch
        with torch.no_grad():
            for name, net in self.nets.items():
                self.accuracy[name].update(net(images).argmax(dim=1), labels)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # compute() already sums the counts over processes; sync_dist then averages equal values.
        for name, accuracy in self.accuracy.items():
            key = "test/redrawn_conv_acc" if name == self.ALL else f"test/redrawn_conv_acc/{name}"
            pl_module.log(key, accuracy.compute(), sync_dist=True)
        del self.nets  # copies of the network: not kept past the test pass


class EpochTimer(L.Callback):
    """Wall time per training epoch (validation included) and training images per second.

    images_per_s counts only the training batches: from epoch start to the end of its last batch.
    Also counts the images a training epoch and the test pass see (after subsets and limit_*_batches).
    """

    def __init__(self) -> None:
        self.epoch_times: list[float] = []
        self.train_seconds = 0.0
        self.train_images = 0
        self.images_last_epoch = 0
        self.test_images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._epoch_images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()
        self._epoch_images += batch[1].shape[0]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_times.append(time.perf_counter() - self._epoch_start)
        self.train_seconds += self._last_batch_end - self._epoch_start
        self.train_images += self._epoch_images
        self.images_last_epoch = self._epoch_images
        # Logged, not only kept here: under ddp_spawn training runs in worker processes that hand back
        # only the weights and the logged metrics. Under DDP images add up over processes; the epoch
        # lasts as long as its slowest process.
        counts = {"perf/train_images": float(self.images_last_epoch), "perf/images_per_s": self.images_per_s}
        pl_module.log_dict(counts, sync_dist=True, reduce_fx="sum")
        epochs = {"perf/epoch_time_s": self.epoch_time_s, "perf/epochs": float(trainer.current_epoch + 1)}
        pl_module.log_dict(epochs, sync_dist=True, reduce_fx="max")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_images = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        self.test_images += batch[1].shape[0]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("perf/test_images", float(self.test_images), sync_dist=True, reduce_fx="sum")

    @property
    def epoch_time_s(self) -> float | None:
        """Mean over the epochs this process trained (a resumed run times only its own)."""
        return sum(self.epoch_times) / len(self.epoch_times) if self.epoch_times else None

    @property
    def images_per_s(self) -> float | None:
        return self.train_images / self.train_seconds if self.train_seconds > 0 else None
