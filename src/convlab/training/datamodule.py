"""MNIST and Fashion-MNIST as a LightningDataModule of normalised in-memory tensors.

The raw files come from `convlab.training.data_files`. The images are decoded
once into one float tensor (N, 1, 28, 28), and batches are gathered from it with one indexing
each (`convlab.training.in_memory`), so the training loop does no per-sample work and a CPU epoch
with `nn.Conv2d` is compute-bound.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from convlab.training.data_files import DATASETS, MIRROR_ENV, NORMALISATION, ensure_raw_files, load_tensors
from convlab.training.distributed import eval_sampler
from convlab.training.in_memory import InMemoryDataset, in_memory_loader
from convlab.training.seeding import derived_seed

SPLIT_SEED = 0  # the 55k/5k split and the subsets are the same for every run seed


def stratified_subset(labels: Tensor, size: int | None, generator: torch.Generator) -> Tensor:
    """Indices of `size` samples balanced across classes (round robin over a shuffled order); all if None."""
    order = torch.randperm(len(labels), generator=generator)
    if size is None:
        return order
    if not 0 < size <= len(labels):
        raise ValueError(f"subset size must be in 1..{len(labels)}, got {size}")
    shuffled = labels[order]
    rank_in_class = torch.empty_like(order)
    for label in shuffled.unique():
        members = shuffled == label
        rank_in_class[members] = torch.arange(int(members.sum()))
    # Sorting by (rank within class, class) deals one sample of each class in turn.
    round_robin = torch.argsort(rank_in_class * (int(labels.max()) + 1) + shuffled, stable=True)
    return order[round_robin[:size]]


class EpochShuffleSampler(Sampler[int]):
    """A permutation of range(size) fixed by (seed, epoch); Lightning calls `set_epoch` before each epoch.

    Unlike a shuffling DataLoader it draws nothing from the global RNG, so a run resumed at an
    epoch boundary sees the same batches, in the same order, as one never stopped.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "shuffle", self.epoch))
        yield from torch.randperm(self.size, generator=generator).tolist()


class MNISTDataModule(L.LightningDataModule):
    """MNIST or Fashion-MNIST: 55k train / 5k validation from the 60k training images, 10k test.

    name: "mnist" or "fashion_mnist".
    root: the project's data folder (torchvision layout `<root>/<Class>/raw/`).
    mirror: a read-only folder in the same layout; defaults to `$CONVLAB_DATA_MIRROR`.
    train_subset / val_subset / test_subset: use only N images, balanced across classes, the same
        N images in every run (for the slow conv implementations).
    val_size: images of the 60k set held out for validation.
    seed: seeds the per-epoch shuffling of the training set.
    verify_md5: check the mirror's files against torchvision's MD5 (tests turn it off for tiny fakes).
    Batches are (images (B, 1, 28, 28) float32, labels (B,) int64).
    """

    def __init__(
        self,
        name: str = "mnist",
        root: str = "data",
        mirror: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        val_size: int = 5000,
        num_workers: int = 0,
        seed: int = 0,
        verify_md5: bool = True,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
        self.name = name
        self.dataset = DATASETS[name]
        self.root = Path(root)
        mirror = mirror or os.environ.get(MIRROR_ENV) or None  # an empty variable means "no mirror"
        self.mirror = Path(mirror) if mirror else None
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.train_subset, self.val_subset, self.test_subset = train_subset, val_subset, test_subset
        self.val_size = val_size
        self.num_workers = num_workers
        self.seed = seed
        self.verify_md5 = verify_md5
        self.train_set: InMemoryDataset | None = None
        self.val_set: InMemoryDataset | None = None
        self.test_set: InMemoryDataset | None = None

    def prepare_data(self) -> None:
        ensure_raw_files(self.dataset, self.root, self.mirror, self.verify_md5)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        ensure_raw_files(self.dataset, self.root, self.mirror, self.verify_md5)
        mean, std = NORMALISATION[self.name]
        images, labels = load_tensors(self.dataset, self.root, True, mean, std)
        if not 0 < self.val_size < len(labels):
            raise ValueError(f"val_size must be in 1..{len(labels) - 1}, got {self.val_size}")
        split = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
        val_idx, train_idx = split[: self.val_size], split[self.val_size :]
        self.train_set = self._subset(images[train_idx], labels[train_idx], self.train_subset)
        self.val_set = self._subset(images[val_idx], labels[val_idx], self.val_subset)
        test_images, test_labels = load_tensors(self.dataset, self.root, False, mean, std)
        self.test_set = self._subset(test_images, test_labels, self.test_subset)

    @staticmethod
    def _subset(images: Tensor, labels: Tensor, size: int | None) -> InMemoryDataset:
        if size is None:
            return InMemoryDataset(images, labels)
        keep = stratified_subset(labels, size, torch.Generator().manual_seed(SPLIT_SEED)).sort().values
        return InMemoryDataset(images[keep], labels[keep])

    def _loader(
        self, dataset: InMemoryDataset, batch_size: int, sampler: Sampler | None = None
    ) -> DataLoader:
        # Its own generator: creating an iterator then draws nothing from the global RNG (dropout's).
        return in_memory_loader(
            dataset,
            batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(
            self.train_set, self.batch_size, EpochShuffleSampler(len(self.train_set), self.seed)
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, eval_sampler(self.val_set, self.trainer))

    def test_dataloader(self) -> DataLoader:
        # Under DDP each process tests its own share, every image once (see convlab.training.distributed).
        return self._loader(self.test_set, self.eval_batch_size, eval_sampler(self.test_set, self.trainer))
