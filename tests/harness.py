"""Helpers for the training-harness tests: tiny fake MNIST files and composed train configs."""

from __future__ import annotations

import gzip
import os
import signal
import struct
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from convlab.training.run_dir import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_MIRROR = REPO.parent / "shared" / "data"
# The resolvers configs/ uses, registered as train.py registers them.
register_resolvers(REPO)


def real_mirror() -> Path | None:
    """The real MNIST mirror ($CONVLAB_DATA_MIRROR, else ../shared/data), or None (download instead)."""
    configured = os.environ.get("CONVLAB_DATA_MIRROR")
    if configured:
        return Path(configured)
    return SHARED_MIRROR if SHARED_MIRROR.is_dir() else None


def write_idx(path: Path, data: torch.Tensor) -> None:
    """Write a uint8 tensor as a gzipped IDX file (the format of MNIST's *-ubyte.gz files)."""
    magic = 0x0800 | data.dim()  # 0x08: unsigned byte, then the number of dimensions
    header = struct.pack(f">I{data.dim()}I", magic, *data.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + data.numpy().tobytes())


def write_fake_mnist(mirror: Path, n_train: int = 120, n_test: int = 40, name: str = "MNIST") -> Path:
    """A mirror `<mirror>/<name>/raw/*.gz` of random 28x28 images whose labels cycle 0..9.

    Each image's brightest row encodes its label, so a network can learn it in a few steps.
    """
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n, dtype=torch.uint8) % 10
        images = torch.randint(0, 128, (n, 28, 28), dtype=torch.uint8, generator=generator)
        images[torch.arange(n), 4 + 2 * labels.long()] = 255
        write_idx(mirror / name / "raw" / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(mirror / name / "raw" / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return mirror


def fake_data_overrides(mirror: Path, root: Path) -> list[str]:
    """Overrides that train on the fake mirror: 100 train / 20 validation / 40 test images, batch 16."""
    return [
        f"data.mirror={mirror}",
        f"data.root={root}",
        "data.verify_md5=false",
        "data.val_size=20",
        "data.batch_size=16",
        "data.eval_batch_size=20",
    ]


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """configs/train.yaml composed as `python train.py <overrides>` would, writing into `output_dir`."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        del cfg["hydra"]  # @hydra.main hands the task the config without it
    return cfg


class SlowBatches(L.Callback):
    """Sleeps `seconds` after every training batch: a tiny run lasts long enough to be signalled mid-way.

    Add it from the command line: +callbacks.slow._target_=harness.SlowBatches +callbacks.slow.seconds=0.2
    (with tests/ on PYTHONPATH). It changes no number the run computes.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


class LastCheckpointEpochs(L.Callback):
    """Records, at the start of each training epoch, the epoch `<run>/checkpoints/last.ckpt` holds
    (None while there is none) in the class attribute `seen` (reset when a fit starts)."""

    seen: list[int | None] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        type(self).seen = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        epoch = torch.load(last, weights_only=False)["epoch"] if last.is_file() else None
        type(self).seen.append(epoch)


class FailAtFirstBatch(L.Callback):
    """Raises RuntimeError("deliberate failure") at the first training batch: a run that fails."""

    def on_train_batch_start(self, *args) -> None:
        raise RuntimeError("deliberate failure")


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT: Ctrl-C's default action in the child,
    whatever this process inherited. A job that a non-interactive shell starts in the background
    (`cmd &` in a script) ignores SIGINT, and so would every process it starts, train.py included."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
