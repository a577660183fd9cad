"""What the first conv layer learned, as pictures: in TensorBoard and in `filters.pt` for the report.

`FilterImages` keeps, for one conv slot (conv1 by default), the weights the run started from and
those it ended with, and the trained layer's activation maps for the first image of the test set
(the same digit in every run: the test set is never shuffled). When the test pass ends it

- logs `filters/<layer>_init`, `filters/<layer>_trained` and `activations/<layer>_digit` images to
  every TensorBoard logger of the run;
- saves `<output_dir>/filters.pt` (a dict of CPU tensors, read by `convlab.learn.figures`):
  layer, init (C_out, C_in, kH, kW), trained (same), digit (C_in, H, W), label, activations
  (C_out, H_out, W_out).

The init weights come from `LitClassifier.initial_params` (kept across resume), found by the identity
of the layer's `.weight` parameter, so a user's layer whose weight is called something else works too.
Only the global-zero process writes.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import make_grid

from convlab.training.probes import conv_layers

FILTERS_FILE = "filters.pt"


def image_grid(maps: Tensor, columns: int, zoom: int) -> Tensor:
    """maps (N, h, w) -> image (3, H, W): each map min-max scaled on its own, zoomed zoom x zoom."""
    tiles = F.interpolate(maps.detach().float().cpu().unsqueeze(1), scale_factor=zoom, mode="nearest")
    return make_grid(tiles, nrow=columns, normalize=True, scale_each=True, pad_value=1)


class FilterImages(L.Callback):
    """conv filters at init and trained, one test digit's activation maps: TensorBoard images and filters.pt.

    output_dir: the run folder (`${paths.output_dir}`); None saves no file (TensorBoard only).
    layer: the conv slot to show; zoom: each filter pixel becomes a zoom x zoom block in TensorBoard.
    """

    def __init__(self, output_dir: str | None = None, layer: str = "conv1", zoom: int = 8) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.layer = layer
        self.zoom = zoom
        self._digit: tuple[Tensor, int] | None = None

    def initial_weight(self, pl_module: L.LightningModule) -> Tensor:
        """The layer's weight as the run started, from `initial_params`; its current value if not kept."""
        layer = conv_layers(pl_module.net)[self.layer]
        initial = getattr(pl_module, "initial_params", {}) or {}
        for name, param in pl_module.net.named_parameters():
            if param is layer.weight and name in initial:
                return initial[name].detach().cpu()
        return layer.weight.detach().cpu().clone()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._digit = None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if self._digit is None:
            images, labels = batch
            self._digit = (images[0].detach(), int(labels[0]))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._digit is None or not trainer.is_global_zero:
            return
        layer = conv_layers(pl_module.net)[self.layer]
        digit, label = self._digit
        with torch.no_grad():
            activations = layer(digit.unsqueeze(0).to(layer.weight.dtype))[0].detach().cpu()
        init, trained = self.initial_weight(pl_module), layer.weight.detach().cpu().clone()
        columns = init.shape[1] if init.shape[1] > 1 else init.shape[0]
        images = {
            f"filters/{self.layer}_init": image_grid(init.flatten(0, 1), columns, self.zoom),
            f"filters/{self.layer}_trained": image_grid(trained.flatten(0, 1), columns, self.zoom),
            f"activations/{self.layer}_digit": image_grid(activations, activations.shape[0], 2),
        }
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for tag, image in images.items():
                    logger.experiment.add_image(tag, image, trainer.global_step)
        if self.output_dir is not None:
            saved = {
                "layer": self.layer,
                "init": init,
                "trained": trained,
                "digit": digit.cpu(),
                "label": label,
                "activations": activations,
            }
            self.output_dir.mkdir(parents=True, exist_ok=True)
            torch.save(saved, self.output_dir / FILTERS_FILE)
