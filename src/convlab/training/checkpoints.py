"""Checkpoints through Lightning's public API: atomic writes, `last.ckpt` after every epoch, checked resumes.

- `AtomicCheckpointIO` is a `TorchCheckpointIO` plugin (`Trainer(plugins=[...])`) whose writes go through
  `convlab.training.checkpoint_files.atomic_write` (a kill never leaves a corrupt or 0-byte file, never
  loses the previous good copy) and whose loads first check the file (`require_loadable`): a corrupt
  checkpoint is one `CheckpointError` naming it and the newest good one beside it, not an `EOFError`.
- `last_epoch_checkpoint(dirpath)` is a `ModelCheckpoint` that rewrites `<dirpath>/last.ckpt` at the end of
  every training epoch. A `ModelCheckpoint(save_last=True)` that monitors a metric writes `last.ckpt`
  only when it also saves a top-k file, i.e. when the metric improves; the best-by-metric checkpoint is
  the callbacks config's `model_checkpoint`, kept separately.
Resuming from an end-of-epoch checkpoint continues exactly as a run never stopped (the sampler's order
and the dropout seed are fixed by (seed, epoch); see convlab.training.datamodule and module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from convlab.training.checkpoint_files import atomic_write, require_loadable

LAST = "last"


def is_local(path: Any) -> bool:
    """A path on this machine's file system (not an fsspec URL such as s3://...)."""
    return "://" not in str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, os.replace; loads check the file first.

    Remote (fsspec URL) paths are left to TorchCheckpointIO: a rename there is not atomic anyway.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(Path(path), lambda file: torch.save(checkpoint, file))

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if is_local(path):
            require_loadable(Path(path))
        return super().load_checkpoint(path, *args, **kwargs)


def last_epoch_checkpoint(dirpath: str | Path) -> ModelCheckpoint:
    """A ModelCheckpoint writing `<dirpath>/last.ckpt` after every training epoch (and nothing else)."""
    return ModelCheckpoint(
        dirpath=str(dirpath),
        filename=LAST,
        monitor=None,
        save_top_k=1,
        save_last=False,
        every_n_epochs=1,
        enable_version_counter=False,
    )


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch (0-based) whose end `path` records, or None if it cannot be read."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # noqa: BLE001 - only for a message; the file was checked when it was written
        return None
