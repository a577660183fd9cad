"""in_memory_loader: the same batches as a plain DataLoader over a TensorDataset, gathered in one go."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset

from convlab.training.in_memory import InMemoryDataset, in_memory_loader


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """images (10, 1, 2, 2), labels (10,): distinct values, so a wrong index shows."""
    return torch.arange(40.0).reshape(10, 1, 2, 2), torch.arange(10) * 3


def batches(loader: DataLoader) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(part.clone() for part in batch) for batch in loader]


SAMPLERS = {
    "in_order": lambda: None,
    "shuffled": lambda: RandomSampler(range(10), generator=torch.Generator().manual_seed(3)),
    "one_ddp_shard": lambda: DistributedSampler(range(10), num_replicas=3, rank=1, shuffle=True, seed=5),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_batches_as_a_plain_dataloader(sampler: str) -> None:
    """Batches of 3 over 10 items or over a DDP shard of 4 (the last batch short), in the sampler's order."""
    images, labels = tensors()
    plain = batches(DataLoader(TensorDataset(images, labels), batch_size=3, sampler=SAMPLERS[sampler]()))
    gathered = batches(in_memory_loader(InMemoryDataset(images, labels), 3, sampler=SAMPLERS[sampler]()))
    assert len(gathered) == len(plain) > 1
    for (x, y), (plain_x, plain_y) in zip(gathered, plain, strict=True):
        assert x.shape[1:] == (1, 2, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, plain_x) and torch.equal(y, plain_y)


def test_worker_processes_gather_the_same_batches() -> None:
    images, labels = tensors()
    in_process = batches(in_memory_loader(InMemoryDataset(images, labels), 3))
    in_worker = batches(in_memory_loader(InMemoryDataset(images, labels), 3, num_workers=1))
    assert all(map(torch.equal, sum(in_process, ()), sum(in_worker, ())))


def test_items_still_read_one_at_a_time() -> None:
    images, labels = tensors()
    image, label = InMemoryDataset(images, labels)[7]
    assert torch.equal(image, images[7]) and label.item() == 21


def test_refuses_a_dataset_it_cannot_gather() -> None:
    with pytest.raises(TypeError, match="needs an InMemoryDataset, got TensorDataset"):
        in_memory_loader(TensorDataset(*tensors()), 4)
