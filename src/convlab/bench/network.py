"""The reference network's training step per conv implementation, and Lightning's loop against a plain one.

Both run on the same synthetic MNIST-shaped batches (the numbers do not depend
on pixel values, and the bench needs no dataset):

- training step: `ReferenceNet(conv)` in train mode, SGD as the MNIST example
  (lr 0.01, momentum 0.5): zero_grad, forward, NLL loss, backward, step. Timed
  per step with the implementations interleaved (`convlab.bench.timing`), as
  images per second and as a ratio to `nn.Conv2d`. The Python-loop layers are
  left out: their conv times alone already project hours per epoch. A layer whose
  step fails (a forward-only layer has no backward) is reported with the error.
- loop overhead: the same `LitClassifier` trained for one pass over the batches
  by `lightning.Trainer` (no logger, checkpoint or progress bar; the profiler
  training uses, `convlab.training.profiler`) and by a plain `for images, labels in
  loader` loop, over the loader training uses (`convlab.training.in_memory`). The
  plain loop runs twice: bare, and keeping the epoch loss and accuracy that
  `LitClassifier` keeps (`convlab.training.epoch_sums`, five small tensor operations a
  step). Lightning's loop is compared with the second, which does the same work,
  so that the ratio is the cost of the loop alone; the bare loop's ratio is
  reported beside it. 21 rounds, the three loops in a shuffled order each round,
  ratios paired within the round. Lightning's training time is measured by
  `convlab.training.callbacks.EpochTimer` from epoch start to its last batch, so the
  Trainer's one-off set-up is reported apart. Wall time, whatever `--clock`
  says: that is what the EpochTimer measures in every training run. The ratio is
  information about what Lightning's loop costs, through its public API only, not
  a number to tune.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import random
import time
import warnings
from collections.abc import Iterator

import lightning as L
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.data import DataLoader

from convlab.bench.contenders import BASELINE, BenchImpl
from convlab.bench.timing import CLOCKS, CoreShare, interleaved_times, summarize_times, synchronizer
from convlab.training.callbacks import EpochTimer
from convlab.training.epoch_sums import EpochSums
from convlab.training.in_memory import InMemoryDataset, in_memory_loader
from convlab.training.module import LitClassifier
from convlab.training.network import ReferenceNet
from convlab.training.profiler import LeanPassThroughProfiler

BATCH_SIZE = 64
SGD = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.5)


def synthetic_batches(steps: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """images (steps * 64, 1, 28, 28) standard normal, like normalised MNIST; labels (steps * 64,) in 0..9."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(steps * BATCH_SIZE, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (steps * BATCH_SIZE,), generator=generator)
    return images.to(device), labels.to(device)


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    sums: EpochSums | None = None,
) -> None:
    """One SGD step on images (N, 1, 28, 28), labels (N,); adds the batch to `sums` when given."""
    optimizer.zero_grad()
    log_probs = net(images)
    loss = F.nll_loss(log_probs, labels)
    if sums is not None:
        sums.update(log_probs, labels, loss)
    loss.backward()
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


def training_step_times(
    args: argparse.Namespace, impls: list[BenchImpl], progress: Progress, core_share: CoreShare | None = None
) -> list[dict]:
    """Per layer: median seconds per step, images per second, paired ratio to nn.Conv2d.

    A layer whose first step raises gets a record {"impl", "unavailable": the error} instead.
    """
    images, labels = synthetic_batches(4 if args.quick else 16, args.device)
    steps, failed = {}, []
    for impl in impls:
        if impl.slow:
            continue
        try:
            cycler = StepCycler(ReferenceNet(impl.cls).to(args.device), images, labels, impl.context)
            cycler()  # a first step: a layer that cannot train fails here, not mid-measurement
        except Exception as error:  # noqa: BLE001 - reported in the table, the others are still timed
            failed.append(
                {"impl": impl.label, "unavailable": f"{type(error).__name__}: {error}".splitlines()[0]}
            )
            continue
        steps[impl.label] = cycler
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
        core_share=core_share,
    )
    progress.remove_task(task)
    return failed + [
        {
            "impl": name,
            "step_ms": s.median_s * 1e3,
            "iqr_step_ms": [s.q1_s * 1e3, s.q3_s * 1e3],
            "images_per_s": BATCH_SIZE / s.median_s,
            "ratio": 1.0 if s.ratio is None else s.ratio,
            "ratio_iqr": [1.0, 1.0] if s.ratio is None else [s.ratio_q1, s.ratio_q3],
            "repeats": s.repeats,
        }
        for name, s in summarize_times(times, BASELINE).items()
    ]


def lightning_epoch(model: LitClassifier, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(seconds of the training batches, seconds of the whole `fit` call) for one pass over loader."""
    timer = EpochTimer()
    with quiet_lightning():
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
            profiler=LeanPassThroughProfiler(),
            callbacks=[timer],
        )
        start = time.perf_counter()
        trainer.fit(model, train_dataloaders=loader)
    return timer.train_seconds, time.perf_counter() - start


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Without the lines each `fit` prints (the accelerators found, a tip, no validation loader), which
    would bury the bench's own progress under 21 copies; warnings and errors still show."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in ("does not have many workers", "no `val_dataloader`", "LeafSpec"):
                warnings.filterwarnings("ignore", f".*{message}.*")
            yield
    finally:
        logger.setLevel(level)


def plain_epoch(net: nn.Module, loader: DataLoader, device: torch.device, keep_sums: bool = False) -> float:
    """Seconds for one pass over loader with a bare PyTorch training loop.

    keep_sums: also keep the epoch's loss and accuracy sums, as `LitClassifier` does.
    The net is moved to device first: a Lightning `fit` on a GPU hands its model back on the CPU, so
    after one the net is no longer where the batches are.
    """
    net.to(device)  # in place: the same parameters, so an optimizer made before would still hold them
    sync, optimizer = synchronizer(device), SGD(net.parameters())
    sums = EpochSums() if keep_sums else None
    net.train()
    start = time.perf_counter()
    for images, labels in loader:
        train_step(net, optimizer, images, labels, sums)
    if sums is not None:
        sums.compute_and_reset(lambda total: total, device)  # one process: the sums are the totals
    sync()
    return time.perf_counter() - start


LOOPS = ("plain", "plain_with_sums", "lightning")


def loop_overhead(args: argparse.Namespace, progress: Progress) -> dict:
    """Lightning's training loop against plain ones: the same model (nn.Conv2d's), batches and optimizer,
    interleaved."""
    images, labels = synthetic_batches(4 if args.quick else 100, args.device, seed=1)
    loader = in_memory_loader(InMemoryDataset(images, labels), BATCH_SIZE)  # as in training
    model = LitClassifier(ReferenceNet(nn.Conv2d), optimizer=SGD).to(args.device)
    rounds = 2 if args.quick else 21
    times: dict[str, list[float]] = {name: [] for name in LOOPS}
    setup, order, shuffler = [], list(LOOPS), random.Random(0)
    task = progress.add_task("lightning vs plain loop", total=rounds)
    for _ in range(rounds):
        # A new order each round, so that no loop always runs first, on a warmer or a quieter machine.
        shuffler.shuffle(order)
        for name in order:
            if name == "lightning":
                train_s, fit_s = lightning_epoch(model, loader, args.device)
                setup.append(fit_s - train_s)
            else:
                train_s = plain_epoch(model.net, loader, args.device, keep_sums=name == "plain_with_sums")
            times[name].append(train_s)
        progress.advance(task)
    progress.remove_task(task)
    same_work = summarize_times(times, "plain_with_sums")
    bare = summarize_times(times, "plain")
    return {
        "conv": BASELINE,
        "images": len(images),
        "rounds": rounds,
        **{f"{name}_images_per_s": len(images) / same_work[name].median_s for name in LOOPS},
        "ratio": same_work["lightning"].ratio,
        "ratio_iqr": [same_work["lightning"].ratio_q1, same_work["lightning"].ratio_q3],
        "ratio_to_bare_loop": bare["lightning"].ratio,
        "ratio_to_bare_loop_iqr": [bare["lightning"].ratio_q1, bare["lightning"].ratio_q3],
        "sums_ratio_to_bare_loop": bare["plain_with_sums"].ratio,
        "lightning_setup_s": sorted(setup)[len(setup) // 2],
    }


def network_benchmark(
    args: argparse.Namespace, impls: list[BenchImpl], progress: Progress, core_share: CoreShare | None = None
) -> dict:
    """The training step of every layer that is not slow, and Lightning's loop against plain ones."""
    return {
        "batch_size": BATCH_SIZE,
        "training_step": training_step_times(args, impls, progress, core_share),
        "loop_overhead": loop_overhead(args, progress),
    }
