"""Callbacks: what the conv layers do during training (TensorBoard), and how fast the epochs run."""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from convlab.probes import conv_drift, conv_layers


class ConvMonitor(L.Callback):
    """Logs per conv layer the gradient norm (each step) and the relative weight drift
    ||W - W0|| / ||W0|| (each epoch), and conv1's filters as an image grid in TensorBoard.

    W0 is `LitClassifier.initial_params`, the weights the run started from (kept across resume).
    filter_zoom: each filter pixel becomes a zoom x zoom block, so 5x5 filters are visible.
    """

    def __init__(self, filter_layer: str = "conv1", filter_zoom: int = 8) -> None:
        self.filter_layer = filter_layer
        self.filter_zoom = filter_zoom

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        for name, layer in conv_layers(pl_module.net).items():
            if layer.weight.grad is not None:
                pl_module.log(
                    f"conv_grad_norm/{name}", layer.weight.grad.norm(), on_step=True, on_epoch=False
                )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, drift in conv_drift(pl_module.net, pl_module.initial_params).items():
            pl_module.log(f"conv_drift/{name}", drift, on_step=False, on_epoch=True)
        grid = self.filter_grid(conv_layers(pl_module.net)[self.filter_layer].weight)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(f"filters/{self.filter_layer}", grid, trainer.current_epoch)

    def filter_grid(self, weight: torch.Tensor) -> torch.Tensor:
        """weight (C_out, C_in, kH, kW) -> image (3, H, W), one min-max scaled tile per (filter, channel)."""
        tiles = weight.detach().cpu().flatten(0, 1).unsqueeze(1)  # (C_out * C_in, 1, kH, kW)
        tiles = F.interpolate(tiles, scale_factor=self.filter_zoom, mode="nearest")
        # One row per filter across its input channels; conv1 (one input channel) fits on one row.
        per_row = weight.shape[1] if weight.shape[1] > 1 else weight.shape[0]
        return make_grid(tiles, nrow=per_row, normalize=True, pad_value=1)


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

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_images = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        self.test_images += batch[1].shape[0]

    @property
    def epoch_time_s(self) -> float | None:
        """Mean over the epochs this process trained (a resumed run times only its own)."""
        return sum(self.epoch_times) / len(self.epoch_times) if self.epoch_times else None

    @property
    def images_per_s(self) -> float | None:
        return self.train_images / self.train_seconds if self.train_seconds > 0 else None
