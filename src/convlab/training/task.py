"""The training task behind `python train.py`: fit, test, probe measurements, results.json.

`run(cfg)` takes the composed Hydra config (configs/train.yaml), builds every piece with
`hydra.utils.instantiate`, trains and tests, measures the probe metrics of `convlab.training.probes`,
writes `results.json` into the run directory and returns the metric `cfg.optimized_metric`
names (a key of results.json's "metrics"), which Hydra sweepers optimise.
"""

from __future__ import annotations

import logging
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from convlab.conv import SpecError, UnsupportedFeature, conv_label
from convlab.training.allocator import keep_freed_memory
from convlab.training.callbacks import EpochTimer, RedrawnConvAccuracy
from convlab.training.checkpoints import AtomicCheckpointIO, checkpoint_epoch, last_epoch_checkpoint
from convlab.training.cpu_load import warn_if_oversubscribed
from convlab.training.distributed import refuse_script_relaunch_in_multirun
from convlab.training.errors import ConfigError, RunInterrupted
from convlab.training.probes import conv_drift, conv_layers, frozen_unchanged
from convlab.training.run_record import COMPLETED, FAILED, INTERRUPTED, results, write_results
from convlab.training.seeding import derived_seed
from convlab.training.signals import SignalWatch, interrupted_message
from convlab.training.step_estimate import log_first_step_estimate
from convlab.training.threads import available_cores, set_threads
from convlab.training.validate import validate

log = logging.getLogger(__name__)

# In-memory tensors need no loader workers; Lightning's advice to add some does not apply.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# A resumed run writes its checkpoints into its own new folder, by design (convlab.training.run_dir).
warnings.filterwarnings("ignore", ".*The dirpath has changed from.*")
# The module's transfer_batch_to_device is the one meant (the DataModule has none): Lightning's note
# that it is the one used, printed by every run on a GPU, asks nothing of the user.
warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device` in `LightningModule`.*")
# Lightning's own use of a torch API that newer torch deprecates; nothing a user can act on.
warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as `callbacks` or `logger`; null entries are off."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def command_line_overrides() -> list[str]:
    """The overrides of this job (`conv=unfold seed=1`), or none when composed outside `@hydra.main`."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def measure(model, fit_metrics: dict, test: dict) -> dict:
    """The "metrics" of results.json: final test scores and what the probes measure.

    fit_metrics: what training logged (trainer.callback_metrics after fit); test: what testing logged.
    Logged metrics and the weights are all this reads: Lightning synchronises the metrics over DDP
    processes, and under ddp_spawn they are all that comes back from the worker processes.
    A run resumed from a checkpoint whose training had already finished trains no epoch: its
    timings are None and its epoch count is the checkpoint's.
    """

    def perf(name: str) -> float | None:
        value = fit_metrics.get(f"perf/{name}")
        return None if value is None else float(value)

    trained = perf("epochs")
    return {
        "test_acc": test["test/acc"],
        "test_loss": test["test/loss"],
        "best_val_acc": model.best_val_acc.item(),
        "redrawn_conv_test_acc": test["test/redrawn_conv_acc"],
        "redrawn_conv_test_acc_per_layer": {
            slot: test[f"test/redrawn_conv_acc/{slot}"] for slot in conv_layers(model.net)
        },
        "conv_drift": conv_drift(model.net, model.initial_params),
        "frozen_unchanged": frozen_unchanged(model.net, model.initial_params),
        "epochs": int(trained) if trained is not None else model.current_epoch,
        "epoch_time_s": perf("epoch_time_s"),
        "images_per_s": perf("images_per_s"),
        "train_images": int(perf("train_images") or 0),
        "test_images": int(test["perf/test_images"]),
    }


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict | None, status: str = COMPLETED) -> None:
    """Run settings with final metrics, for TensorBoard's HParams tab (each logger's hparams file too).

    conv, probe, data and seed come first (the columns people sort by), status says whether the run
    completed; a run that did not complete has no final metrics.
    """
    optimizer = cfg.model.optimizer
    hparams = {
        "conv": conv_label(cfg.conv.name),
        "probe": cfg.probe.name,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "status": status,
        "optimizer": optimizer._target_.rsplit(".", 1)[-1],
        "lr": optimizer.lr,
        "batch_size": cfg.data.batch_size,
        "conv_init": cfg.model.net.conv_init,
        "train_subset": str(cfg.data.train_subset),
        "epochs": str(cfg.trainer.max_epochs),
    }
    final = {}
    if metrics is not None:
        final = {f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        final.update({f"final/conv_drift_{layer}": v for layer, v in metrics["conv_drift"].items()})
        redrawn = metrics["redrawn_conv_test_acc_per_layer"].items()
        final.update({f"final/redrawn_conv_test_acc_{layer}": v for layer, v in redrawn})
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            # The HParams tab pairs settings with metrics written by this same call.
            logger.log_hyperparams(hparams, metrics=final, step=trainer.global_step)
            # The logger wrote its hparams.yaml when fit ended, still empty, and never rewrites it.
            save_hparams_to_yaml(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE, logger.hparams)
        else:
            logger.log_hyperparams(hparams)
            if final:
                logger.log_metrics(final, step=trainer.global_step)
        logger.finalize("success" if status == COMPLETED else "failed")


def print_metrics(metrics: dict, path: Path) -> None:
    table = Table(title="final metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        if isinstance(value, dict):
            shown = "  ".join(f"{k} {v:.4f}" for k, v in value.items())
        table.add_row(key, shown)
    console = Console()
    console.print(table)
    console.print(f"results.json: {path}", soft_wrap=True)


def print_lightning_logs_once() -> None:
    """Drop the console handler package `lightning` adds to its logger when the root logger (Hydra's,
    which also writes the run's train.log) already prints: otherwise every Lightning line shows twice."""
    if logging.getLogger().hasHandlers():
        logging.getLogger("lightning").handlers.clear()


def is_rank_zero() -> bool:
    """True in the process that writes results (rank 0, or the only process), also before a Trainer exists."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


class Run:
    """One run's bookkeeping around `run`: results.json for every ending, the resume hint after a stop."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.paths.output_dir)
        self.checkpoints = self.output_dir / "checkpoints"
        self.overrides = command_line_overrides()
        self.conv = conv_label(cfg.conv.name)
        self.trainer: L.Trainer | None = None

    def write(self, status: str, metrics: dict | None = None, error: str | None = None) -> Path:
        path = self.output_dir / "results.json"
        if self.trainer.is_global_zero if self.trainer is not None else is_rank_zero():
            write_results(path, results(self.cfg, self.conv, status, self.overrides, metrics, error))
            if self.trainer is not None and status == COMPLETED:
                log_hparams(self.trainer, self.cfg, metrics, status)
            elif self.trainer is not None:
                try:  # marks the TensorBoard run; must not hide the error that ended the run
                    log_hparams(self.trainer, self.cfg, metrics, status)
                except Exception as logging_error:  # noqa: BLE001
                    log.warning("could not mark the run %s in its loggers: %s", status, logging_error)
        return path

    def interrupted(self, signum: int) -> RunInterrupted:
        """Mark the run interrupted; the error to raise says where it stopped and how to resume it."""
        last = self.checkpoints / "last.ckpt"
        checkpoint = last if last.is_file() else None
        epoch = checkpoint_epoch(last) if checkpoint is not None else None
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        message = interrupted_message(signum, self.overrides, checkpoint, epoch, multirun)
        self.write(INTERRUPTED, error=message.splitlines()[0].removesuffix(" Resume with:"))
        return RunInterrupted(message, signum)

    def failed(self, error: BaseException) -> None:
        self.write(FAILED, error=f"{type(error).__name__}: {error}".splitlines()[0])


def run(cfg: DictConfig) -> float:
    """Train, test and measure one configuration; returns `metrics[cfg.optimized_metric]`.

    The config is checked first (`convlab.training.validate`: ConfigError, nothing written). Every
    ending after that writes results.json with its status: "completed" (with metrics), "interrupted"
    (SIGINT / SIGTERM: raises RunInterrupted, whose message is the resume command) or "failed"
    (the error is re-raised; a layer that cannot be built becomes one ConfigError line).
    """
    validate(cfg)  # train.py checked already, before importing this module; a caller in Python has not
    print_lightning_logs_once()
    keep_freed_memory()  # steady step times from run to run (convlab.training.allocator)
    record = Run(cfg)
    watch = SignalWatch()
    try:
        return train_and_test(cfg, record, watch)
    except KeyboardInterrupt:  # outside fit and test, where Lightning does not catch it
        raise record.interrupted(signal.SIGINT) from None
    except SystemExit:
        if watch.signum is None:
            raise
        raise record.interrupted(watch.signum) from None
    except Exception as error:
        record.failed(error)
        layer_error = cause_of_type(error, (SpecError, UnsupportedFeature))
        if layer_error is not None:  # Hydra's instantiate wraps it; the layer's own message is the story
            raise ConfigError(f"conv.name={cfg.conv.name}: {layer_error}") from None
        raise


def cause_of_type(error: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """`error` or the first exception in its `__cause__` chain that is one of `types`, else None."""
    while error is not None and not isinstance(error, types):
        error = error.__cause__
    return error


def train_and_test(cfg: DictConfig, record: Run, watch: SignalWatch) -> float:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    # Always attached: results.json needs their numbers, and a resume needs last.ckpt, whatever the
    # callbacks config holds.
    measurements = [EpochTimer(), RedrawnConvAccuracy(derived_seed(cfg.seed, "redraw conv"))]
    harness = [last_epoch_checkpoint(record.checkpoints), watch]
    trainer = instantiate(
        cfg.trainer,
        callbacks=[*instantiate_all(cfg.get("callbacks")), *measurements, *harness],
        logger=instantiate_all(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
    )
    record.trainer = trainer
    refuse_script_relaunch_in_multirun(trainer)
    threads = set_threads(cfg.get("threads"), processes=trainer.num_devices)
    if cfg.trainer.get("accelerator") == "cpu" and trainer.is_global_zero:
        warn_if_oversubscribed(threads, trainer.num_devices, available_cores())
    # The layer's pre-flight check, and a projected step and epoch time before a slow layer's long first step.
    log_first_step_estimate(model, datamodule, trainer, record.conv)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_metrics = dict(trainer.callback_metrics)  # testing starts a fresh set
    test = trainer.test(model, datamodule=datamodule)[0]
    metrics = measure(model, fit_metrics, test)
    path = record.write(COMPLETED, metrics)
    if trainer.is_global_zero:
        print_metrics(metrics, path)
    return metrics[cfg.optimized_metric]
