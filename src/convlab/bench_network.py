"""The reference network's training step per conv implementation, and Lightning's loop against a plain one.

Both run on the same synthetic MNIST-shaped batches (the numbers do not depend
on pixel values, and the bench needs no dataset):

- training step: `ReferenceNet(conv)` in train mode, SGD as the MNIST example
  (lr 0.01, momentum 0.5): zero_grad, forward, NLL loss, backward, step. Timed
  per step with the implementations interleaved (`convlab.bench_timing`), as
  images per second and as a ratio to `nn.Conv2d`. The Python-loop layers are
  left out: their conv times alone already project hours per epoch.
- loop overhead: the same `LitClassifier` trained for one pass over the batches
  by `lightning.Trainer` (no logger, checkpoint or progress bar) and by a plain
  `for images, labels in loader` loop, over the loader training uses
  (`convlab.in_memory_loader`), 11 rounds, each loop first in every other round.
  Lightning's training time is measured by `convlab.callbacks.EpochTimer` from
  epoch start to its last batch, so the Trainer's one-off set-up is reported
  apart. Wall time, whatever `--clock` says: that is what the EpochTimer measures
  in every training run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.data import DataLoader

from convlab.bench_cases import BASELINE, CONTEXTS, IMPLEMENTATIONS, SLOW_IMPLS
from convlab.bench_timing import CLOCKS, interleaved_times, summarize, synchronizer
from convlab.callbacks import EpochTimer
from convlab.in_memory_loader import InMemoryDataset, in_memory_loader
from convlab.model import LitClassifier, ReferenceNet

BATCH_SIZE = 64
SGD = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.5)


def synthetic_batches(steps: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """images (steps * 64, 1, 28, 28) standard normal, like normalised MNIST; labels (steps * 64,) in 0..9."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(steps * BATCH_SIZE, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (steps * BATCH_SIZE,), generator=generator)
    return images.to(device), labels.to(device)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor) -> None:
    optimizer.zero_grad()
    F.nll_loss(net(images), labels).backward()
    optimizer.step()


class StepCycler:
    """One training step of one network per call, cycling through the batches, under `context`."""

    def __init__(
        self, net: nn.Module, images: Tensor, labels: Tensor, context=contextlib.nullcontext
    ) -> None:
        self.net, self.optimizer, self.context = net.train(), SGD(net.parameters()), context
        self.batches = list(zip(images.split(BATCH_SIZE), labels.split(BATCH_SIZE), strict=True))
        self.index = 0

    def __call__(self) -> None:
        images, labels = self.batches[self.index % len(self.batches)]
        self.index += 1
        with self.context():
            train_step(self.net, self.optimizer, images, labels)


def training_step_times(args: argparse.Namespace, progress: Progress) -> list[dict]:
    """Per implementation: median seconds per step, images per second, paired ratio to nn.Conv2d."""
    names = [name for name in args.impls if name not in SLOW_IMPLS]
    images, labels = synthetic_batches(4 if args.quick else 16, args.device)
    steps = {
        name: StepCycler(
            ReferenceNet(IMPLEMENTATIONS[name]).to(args.device),
            images,
            labels,
            CONTEXTS.get(name, contextlib.nullcontext),
        )
        for name in names
    }
    task = progress.add_task("training step", total=None)
    times = interleaved_times(
        steps,
        repeats=args.repeats,
        warmup=args.warmup,
        budget_s=args.budget,
        min_repeats=min(3, args.repeats),
        sync=synchronizer(args.device),
        clock=CLOCKS[args.clock],
        on_round=lambda done, total: progress.update(task, completed=done, total=total),
    )
    progress.remove_task(task)
    return [
        {
            "impl": name,
            "step_ms": s.median_s * 1e3,
            "iqr_step_ms": [s.q1_s * 1e3, s.q3_s * 1e3],
            "images_per_s": BATCH_SIZE / s.median_s,
            "ratio": 1.0 if s.ratio is None else s.ratio,
            "ratio_iqr": [1.0, 1.0] if s.ratio is None else [s.ratio_q1, s.ratio_q3],
            "repeats": s.repeats,
        }
        for name, s in summarize(times, BASELINE).items()
    ]


def lightning_epoch(model: LitClassifier, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(seconds of the training batches, seconds of the whole `fit` call) for one pass over loader."""
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(model, train_dataloaders=loader)
    return timer.train_seconds, time.perf_counter() - start


def plain_epoch(net: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Seconds for one pass over loader with a bare PyTorch training loop."""
    sync, optimizer = synchronizer(device), SGD(net.parameters())
    net.train()
    start = time.perf_counter()
    for images, labels in loader:
        train_step(net, optimizer, images, labels)
    sync()
    return time.perf_counter() - start


def loop_overhead(args: argparse.Namespace, progress: Progress, conv: str = BASELINE) -> dict:
    """Lightning's training loop against a plain one: the same model, batches and optimizer, alternately."""
    images, labels = synthetic_batches(4 if args.quick else 100, args.device, seed=1)
    loader = in_memory_loader(InMemoryDataset(images, labels), BATCH_SIZE)  # as in training
    model = LitClassifier(ReferenceNet(IMPLEMENTATIONS[conv]), optimizer=SGD).to(args.device)
    rounds = 2 if args.quick else 11
    plain, lightning, setup = [], [], []
    task = progress.add_task("lightning vs plain loop", total=rounds)
    for round_ in range(rounds):
        # Each loop goes first in half the rounds, so that neither always runs on a warmer machine.
        if round_ % 2:
            plain.append(plain_epoch(model.net, loader, args.device))
        train_s, fit_s = lightning_epoch(model, loader, args.device)
        lightning.append(train_s)
        setup.append(fit_s - train_s)
        if not round_ % 2:
            plain.append(plain_epoch(model.net, loader, args.device))
        progress.advance(task)
    progress.remove_task(task)
    summaries = summarize({"plain": plain, "lightning": lightning}, "plain")
    return {
        "conv": conv,
        "images": len(images),
        "rounds": rounds,
        "plain_images_per_s": len(images) / summaries["plain"].median_s,
        "lightning_images_per_s": len(images) / summaries["lightning"].median_s,
        "ratio": summaries["lightning"].ratio,
        "ratio_iqr": [summaries["lightning"].ratio_q1, summaries["lightning"].ratio_q3],
        "lightning_setup_s": sorted(setup)[len(setup) // 2],
    }


def network_benchmark(args: argparse.Namespace, progress: Progress) -> dict:
    return {
        "batch_size": BATCH_SIZE,
        "training_step": training_step_times(args, progress),
        "loop_overhead": loop_overhead(args, progress),
    }
