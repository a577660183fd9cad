"""The training task end to end on tiny fake MNIST: every conv, results.json, TensorBoard, determinism,
resume, a multirun; and one real-data run that must learn."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from harness import REPO, compose_train, fake_data_overrides, real_mirror, write_fake_mnist
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convlab.conv import CONV_LAYERS
from convlab.training.callbacks import progress_bar
from convlab.training.in_memory import InMemoryDataset, in_memory_loader
from convlab.training.module import LitClassifier
from convlab.training.network import ReferenceNet
from convlab.training.task import run

METRIC_KEYS = {
    "test_acc", "test_loss", "best_val_acc", "redrawn_conv_test_acc", "redrawn_conv_test_acc_per_layer",
    "conv_drift", "frozen_unchanged",
    "epochs", "epoch_time_s", "images_per_s", "train_images", "test_images",
}  # fmt: skip
WALL_CLOCK = {"epoch_time_s", "images_per_s"}


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides that train on 100 fake images (7 batches of 16), validate on 20, test on 40."""
    base = tmp_path_factory.mktemp("fake_mnist")
    return fake_data_overrides(write_fake_mnist(base / "mirror"), base / "data")


def train(overrides: list[str], out: Path) -> tuple[float, dict]:
    """Run the task as `python train.py <overrides>` would; returns (its return value, results.json)."""
    returned = run(compose_train(overrides, out))
    return returned, json.loads((out / "results.json").read_text())


def event_dir(run_dir: Path) -> Path:
    """The folder of the run's TensorBoard event files (a sub-folder named after the run)."""
    (folder,) = {events.parent for events in run_dir.rglob("events.out.tfevents*")}
    return folder


def comparable(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in WALL_CLOCK}


@pytest.mark.parametrize("conv", list(CONV_LAYERS))
def test_fast_dev_run_every_conv(conv: str, fake_data: list[str], tmp_path: Path):
    # Batches of 4 keep `vanilla` (about a second per image) to a few seconds.
    overrides = [*fake_data, f"conv={conv}", "trainer.fast_dev_run=true", "data.batch_size=4"]
    returned, results = train([*overrides, "data.eval_batch_size=4"], tmp_path)
    metrics = results["metrics"]
    assert results["conv"] == conv and results["config"]["conv"]["name"] == conv
    assert returned == metrics["test_acc"]
    assert (metrics["train_images"], metrics["test_images"], metrics["epochs"]) == (4, 4, 1)
    assert min(metrics["conv_drift"].values()) > 0


def test_results_json_and_tensorboard(fake_data: list[str], tmp_path: Path):
    overrides = [*fake_data, "probe=frozen_conv", "seed=3", "trainer.max_epochs=2", "logger=many_loggers"]
    returned, results = train(overrides, tmp_path)
    assert set(results) >= {"status", "conv", "probe", "data", "seed", "overrides", "config", "metrics"}
    assert results["status"] == "completed"
    choices = (results["conv"], results["probe"], results["data"], results["seed"])
    assert choices == ("torch", "frozen_conv", "mnist", 3)
    assert results["overrides"] == overrides
    assert results["config"]["trainer"]["max_epochs"] == 2
    metrics = results["metrics"]
    assert set(metrics) == METRIC_KEYS
    assert metrics["frozen_unchanged"] is True
    assert metrics["conv_drift"] == {"conv1": 0.0, "conv2": 0.0}
    assert (metrics["epochs"], metrics["train_images"], metrics["test_images"]) == (2, 100, 40)
    for key in ("test_acc", "best_val_acc", "redrawn_conv_test_acc"):
        assert 0 <= metrics[key] <= 1
    assert set(metrics["redrawn_conv_test_acc_per_layer"]) == {"conv1", "conv2"}
    assert all(0 <= acc <= 1 for acc in metrics["redrawn_conv_test_acc_per_layer"].values())
    assert metrics["epoch_time_s"] > 0 and metrics["images_per_s"] > 0
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} >= {"last.ckpt"}
    assert (tmp_path / "csv" / "metrics.csv").is_file()

    tensorboard_dir = event_dir(tmp_path)
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"):
        assert tag in scalars
    assert {"conv_drift/conv1", "conv_drift/conv2", "final/redrawn_conv_test_acc"} <= scalars
    assert {"test/redrawn_conv_acc/conv1", "final/redrawn_conv_test_acc_conv2"} <= scalars
    assert [image.step for image in events.Images("filters/conv1")] == [0, 1]
    assert events.PluginTagToContent("hparams")  # the HParams tab's session summaries
    for hparams_file in (tensorboard_dir / "hparams.yaml", tmp_path / "csv" / "hparams.yaml"):
        saved = yaml.safe_load(hparams_file.read_text())
        assert (saved["conv"], saved["probe"], saved["seed"]) == ("torch", "frozen_conv", 3), hparams_file


def test_grad_norms_are_logged_for_trained_convs(fake_data: list[str], tmp_path: Path):
    train([*fake_data, "trainer.max_epochs=1", "trainer.log_every_n_steps=1"], tmp_path)
    scalars = set(EventAccumulator(str(event_dir(tmp_path))).Reload().Tags()["scalars"])
    assert {"conv_grad_norm/conv1", "conv_grad_norm/conv2"} <= scalars


def test_same_seed_same_metrics_and_resume_matches(fake_data: list[str], tmp_path: Path):
    two_epochs = [*fake_data, "conv=unfold", "trainer.max_epochs=2"]
    _, first = train(two_epochs, tmp_path / "first")
    _, second = train(two_epochs, tmp_path / "second")
    assert comparable(second["metrics"]) == comparable(first["metrics"])

    train([*fake_data, "conv=unfold", "trainer.max_epochs=1"], tmp_path / "one")
    last = tmp_path / "one" / "checkpoints" / "last.ckpt"
    _, resumed = train([*two_epochs, f"ckpt_path={last}"], tmp_path / "resumed")
    assert comparable(resumed["metrics"]) == comparable(first["metrics"])

    # Resumed from a checkpoint whose training had finished: nothing to train, the same test scores.
    _, again = train(
        [*fake_data, "conv=unfold", "trainer.max_epochs=1", f"ckpt_path={last}"], tmp_path / "again"
    )
    one = json.loads((tmp_path / "one" / "results.json").read_text())["metrics"]
    assert again["metrics"]["test_acc"] == one["test_acc"] and again["metrics"]["epochs"] == 1
    assert again["metrics"]["epoch_time_s"] is None and again["metrics"]["train_images"] == 0

    _, other_seed = train([*two_epochs, "seed=1"], tmp_path / "other_seed")
    assert other_seed["metrics"]["test_loss"] != first["metrics"]["test_loss"]


def test_trainer_clipping_and_accumulation_through_the_config(fake_data: list[str], tmp_path: Path):
    """A clip no gradient reaches gives the same run bit for bit; a clip that bites, or accumulation,
    changes it."""
    base = [*fake_data, "trainer.max_epochs=1"]
    runs = {
        name: comparable(train([*base, *extra], tmp_path / name)[1]["metrics"])
        for name, extra in {
            "plain": [],
            "clip_never_reached": ["+trainer.gradient_clip_val=1e9"],
            "clip_bites": ["+trainer.gradient_clip_val=1e-4"],
            "accumulate": ["+trainer.accumulate_grad_batches=2"],
        }.items()
    }
    assert runs["clip_never_reached"] == runs["plain"]
    assert runs["clip_bites"]["conv_drift"] != runs["plain"]["conv_drift"]
    assert runs["accumulate"]["conv_drift"] != runs["plain"]["conv_drift"]


def test_lean_profiler_changes_no_result_and_lightnings_profilers_still_profile(
    fake_data: list[str], tmp_path: Path
):
    base = [*fake_data, "trainer.max_epochs=1"]
    _, lean = train(base, tmp_path / "lean")
    simple = [
        "trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
        f"+trainer.profiler.dirpath={tmp_path}",
        "+trainer.profiler.filename=simple",
    ]
    _, profiled = train([*base, *simple], tmp_path / "profiled")
    assert comparable(profiled["metrics"]) == comparable(lean["metrics"])
    report = (tmp_path / "fit-simple.txt").read_text()
    assert "run_training_batch" in report and "SingleDeviceStrategy.training_step" in report


def test_multirun_of_two_jobs_keeps_them_in_one_sweep_folder(fake_data: list[str], tmp_path: Path):
    command = [sys.executable, "train.py", "-m", "conv=torch,unfold", *fake_data, "trainer.max_epochs=1"]
    result = subprocess.run(
        [*command, f"paths.log_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").glob("*/*")  # one folder per sweep, a numbered one per job
    for job, conv in ((0, "torch"), (1, "unfold")):
        results = json.loads((sweep / str(job) / "results.json").read_text())
        assert results["conv"] == conv and f"conv={conv}" in results["overrides"]
        assert set(results["metrics"]) == METRIC_KEYS


@pytest.mark.slow
def test_unfold_learns_real_mnist_in_one_epoch(tmp_path: Path):
    mirror = real_mirror()
    data = [f"data.root={tmp_path / 'data'}"] + ([f"data.mirror={mirror}"] if mirror else [])
    _, results = train([*data, "conv=unfold", "trainer.max_epochs=1"], tmp_path / "run")
    metrics = results["metrics"]
    assert (metrics["train_images"], metrics["test_images"]) == (55000, 10000)
    assert metrics["test_acc"] > 0.90


def test_progress_bar_redraws_less_when_output_is_a_file(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert progress_bar(refresh_rate=1, redirected_refresh_rate=100).refresh_rate == 1
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert progress_bar(refresh_rate=1, redirected_refresh_rate=100).refresh_rate == 100


def test_progress_bar_shows_the_running_loss_every_log_every_n_steps(tmp_path: Path):
    """7 batches, log_every_n_steps=3: nothing before batch 3, the running loss after batch 3, after
    batch 6 the loss of batches 1-6 until the end of the epoch; the training step logs nothing itself."""
    images, labels = torch.randn(7 * 4, 1, 28, 28), torch.randint(0, 10, (7 * 4,))
    loader = in_memory_loader(InMemoryDataset(images, labels), batch_size=4)
    model = LitClassifier(
        ReferenceNet(CONV_LAYERS["torch"]), optimizer=functools.partial(torch.optim.SGD, lr=0.01)
    )
    bar = progress_bar(refresh_rate=1, redirected_refresh_rate=1)
    seen, expected = [], {}

    class Watch(L.Callback):  # runs after the bar: sees what the bar shows after each batch
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(bar.get_metrics(trainer, pl_module).get("train/loss_so_far"))
            expected[batch_idx] = pl_module.epoch_sums["train"].running_loss()

    trainer = L.Trainer(
        max_epochs=1, log_every_n_steps=3, logger=False, enable_checkpointing=False,
        enable_model_summary=False, callbacks=[bar, Watch()], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    assert seen == [None, None, expected[2], expected[2], expected[2], expected[5], expected[5]]
    assert expected[2] != expected[5]
    assert "train/loss_so_far" not in trainer.progress_bar_metrics
