"""In-memory tensors served a batch at a time: one indexing per tensor, not one lookup per image.

A `TensorDataset` behind a plain `DataLoader` is read an image at a time: 64 `__getitem__` calls and
a `torch.stack` per batch of 64. `InMemoryDataset.__getitems__` gathers the whole batch with one index
per tensor instead, and `in_memory_loader` pairs it with the collate function that keeps that batch as
it is. The sampler still chooses the indices, so shuffling, Lightning's DistributedSampler and
`convlab.training.distributed.eval_sampler` work unchanged, and the batches hold the same images in
the same order as a plain DataLoader's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset


class InMemoryDataset(TensorDataset):
    """tensors[k] (N, ...) along the first dimension; a batch of indices gives each tensor (B, ...)."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        index = torch.tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in self.tensors)


def keep_gathered_batch(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The collate function for `InMemoryDataset`: its batch is already stacked."""
    return batch


def in_memory_loader(dataset: InMemoryDataset, batch_size: int, **kwargs: Any) -> DataLoader:
    """A DataLoader over `dataset` in batches of `batch_size`; kwargs go to DataLoader (sampler, workers)."""
    if not isinstance(dataset, InMemoryDataset):
        raise TypeError(f"in_memory_loader needs an InMemoryDataset, got {type(dataset).__name__}")
    return DataLoader(dataset, batch_size=batch_size, collate_fn=keep_gathered_batch, **kwargs)
