"""LitClassifier under Lightning's documented features: automatic optimisation by default, a user's
`automatic_optimization = False`, GradientAccumulationScheduler, gradient clipping, a learning-rate
scheduler (from the module and from config), on tiny random batches."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from harness import compose_train
from hydra.utils import instantiate
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from torch import nn

from convlab.training.in_memory import InMemoryDataset, in_memory_loader
from convlab.training.module import LitClassifier
from convlab.training.network import ReferenceNet

BATCHES, BATCH = 6, 4
PLAIN_SGD = functools.partial(torch.optim.SGD, lr=0.1)


def model(**kwargs) -> LitClassifier:
    torch.manual_seed(0)
    return LitClassifier(ReferenceNet(nn.Conv2d), optimizer=kwargs.pop("optimizer", PLAIN_SGD), **kwargs)


def loader():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCHES * BATCH, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (BATCHES * BATCH,), generator=generator)
    return in_memory_loader(InMemoryDataset(images, labels), batch_size=BATCH)


def fit(lit: LitClassifier, tmp_path: Path, epochs: int = 1, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, deterministic=True, **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(lit, train_dataloaders=loader())
    return trainer


def weights(lit: LitClassifier) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in lit.net.named_parameters()}


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return torch.cat([(a[name] - b[name]).flatten() for name in a]).norm().item()


def test_automatic_by_default_and_a_users_manual_setting_trains_the_same(tmp_path: Path):
    automatic = model()
    assert automatic.automatic_optimization is True
    fit(automatic, tmp_path / "automatic")
    manual = model()
    manual.automatic_optimization = False  # as Lightning's docs let a user do
    assert manual.automatic_optimization is False
    trainer = fit(manual, tmp_path / "manual")
    assert trainer.global_step == BATCHES
    start = weights(model())
    assert distance(weights(manual), start) > 0
    assert all(
        torch.equal(a, b) for a, b in zip(weights(manual).values(), weights(automatic).values(), strict=True)
    )


def test_gradient_accumulation_scheduler_steps_every_second_batch(tmp_path: Path):
    once = model()
    trainer = fit(once, tmp_path / "every", callbacks=[])
    accumulated = model()
    accumulating = fit(
        accumulated, tmp_path / "accumulated", callbacks=[GradientAccumulationScheduler({0: 2})]
    )
    assert (trainer.global_step, accumulating.global_step) == (BATCHES, BATCHES // 2)
    assert distance(weights(accumulated), weights(once)) > 0


def test_gradient_clipping_bounds_the_first_update(tmp_path: Path):
    """One plain SGD step: the update is lr * the clipped gradient, of norm lr * clip when the clip bites."""
    start = weights(model())
    clipped = model()
    fit(clipped, tmp_path / "clipped", gradient_clip_val=1e-3, limit_train_batches=1)
    assert distance(weights(clipped), start) == pytest.approx(0.1 * 1e-3, rel=1e-4)
    free = model()
    fit(free, tmp_path / "free", gradient_clip_val=1e9, limit_train_batches=1)
    unclipped = model()
    fit(unclipped, tmp_path / "unclipped", limit_train_batches=1)
    assert distance(weights(free), start) > 0.1 * 1e-3 * 10
    assert all(
        torch.equal(a, b) for a, b in zip(weights(free).values(), weights(unclipped).values(), strict=True)
    )


@pytest.mark.parametrize("automatic", [True, False])
@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_learning_rate_scheduler_steps(automatic: bool, interval: str, tmp_path: Path):
    halve = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    lit = model(scheduler=halve, scheduler_interval=interval)
    lit.automatic_optimization = automatic
    fit(lit, tmp_path, epochs=2)
    steps = 2 if interval == "epoch" else 2 * BATCHES
    assert lit.optimizers().param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**steps)


def test_unknown_scheduler_interval_is_refused():
    with pytest.raises(ValueError, match="epoch"):
        model(scheduler_interval="batch")


def test_scheduler_from_config_is_in_lightnings_dict_form(tmp_path: Path):
    assert instantiate(compose_train([], tmp_path).model).scheduler_factory is None
    cfg = compose_train(["model/scheduler=step", "model.scheduler.gamma=0.7"], tmp_path)
    lit = instantiate(cfg.model)
    configured = lit.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    scheduler = configured["lr_scheduler"]
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert (scheduler["interval"], scheduler["scheduler"].gamma) == ("epoch", 0.7)
