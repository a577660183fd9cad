"""results.json: how the run ended, what code ran it, the setting it tried and what it measured.

Keys (all runs):
    status        "completed" | "interrupted" | "failed"; only "completed" runs have metrics.
    conv, probe, data, seed   the run's choices (conv: the layer's label, `convlab.conv.conv_label`).
    setting       the experimental setting runs must share to be compared (see `setting`).
    code_version  {"convlab": package version, "git_commit": HEAD or null, "git_dirty": bool or null}.
    machine       {"cpu", "cores", "python", "torch", "written": UTC time the record was made}.
    overrides     the command-line overrides; config: the whole resolved config.
    metrics       `convlab.training.task.measure`'s dict, or null when the run did not complete.
    error         (failed / interrupted runs) one line saying what stopped it.
The file is written atomically (convlab.training.checkpoint_files), so a reader never sees half of it.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from convlab.conv.native.build import cpu_description
from convlab.training.checkpoint_files import atomic_write
from convlab.training.threads import available_cores

COMPLETED, INTERRUPTED, FAILED = "completed", "interrupted", "failed"
SOURCE_ROOT = Path(__file__).resolve().parents[3]


def git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=SOURCE_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def code_version() -> dict[str, Any]:
    """convlab's version and, run from a git checkout, the commit and whether its code differs from it."""
    try:
        version = metadata.version("convlab")
    except metadata.PackageNotFoundError:
        version = None
    commit = git("rev-parse", "HEAD")
    # The code that runs: what the package, the configs and the entry point hold (docs and results aside).
    status = (
        git("status", "--porcelain", "--untracked-files=no", "--", "src", "configs", "train.py")
        if commit
        else None
    )
    return {"convlab": version, "git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def setting(cfg: DictConfig) -> dict[str, Any]:
    """The experimental setting: runs that differ in any of these keys measure different things.

    data, train_subset / val_subset / test_subset (null: all), val_size, batch_size, epochs
    (trainer.max_epochs), fast_dev_run, limit_train_batches, optimizer (class name), optimizer_settings
    (its arguments, e.g. {"lr": 0.01, "momentum": 0.5}), scheduler (class name or null), conv_init,
    precision.
    """
    optimizer = _plain(cfg.model.get("optimizer")) or {}
    scheduler = _plain(cfg.model.get("scheduler"))
    return {
        "data": cfg.data.name,
        "train_subset": cfg.data.get("train_subset"),
        "val_subset": cfg.data.get("val_subset"),
        "test_subset": cfg.data.get("test_subset"),
        "val_size": cfg.data.get("val_size"),
        "batch_size": cfg.data.batch_size,
        "epochs": cfg.trainer.get("max_epochs"),
        "fast_dev_run": cfg.trainer.get("fast_dev_run", False),
        "limit_train_batches": cfg.trainer.get("limit_train_batches", 1.0),
        "optimizer": str(optimizer.get("_target_", "")).rsplit(".", 1)[-1] or None,
        "optimizer_settings": {k: v for k, v in optimizer.items() if not k.startswith("_")},
        "scheduler": str(scheduler["_target_"]).rsplit(".", 1)[-1] if isinstance(scheduler, dict) else None,
        "conv_init": cfg.model.get("net", {}).get("conv_init"),
        "precision": cfg.trainer.get("precision"),
    }


def cpu_name() -> str:
    """The CPU's model name, from `convlab.conv.native.build.cpu_description` (one /proc/cpuinfo reader)."""
    for line in cpu_description().splitlines():
        if line.startswith(("model name", "CPU part")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Where and when a result is made: CPU model, cores this process may use, Python, torch, UTC time."""
    return {
        "cpu": cpu_name(),
        "cores": available_cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def describe_code(version: dict[str, Any]) -> str:
    """`code_version()`'s dict in words: the short commit, and whether tracked files differed from it."""
    commit = version.get("git_commit")
    if not commit:
        return f"convlab {version.get('convlab') or 'of unknown version'} (no git checkout)"
    return f"convlab {commit[:7]}" + (" with uncommitted changes" if version.get("git_dirty") else "")


def provenance_line() -> str:
    """One line saying when and where a generated file was made, with which versions (its first line)."""
    where = machine()
    return (
        f"Made {where['written'][:16].replace('T', ' ')} UTC on {where['cpu']} ({where['cores']} cores); "
        f"Python {where['python']}, torch {where['torch']}, {describe_code(code_version())}."
    )


def results(
    cfg: DictConfig,
    conv: str,
    status: str,
    overrides: list[str],
    metrics: dict | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The results.json dict (see the module docstring)."""
    record: dict[str, Any] = {
        "status": status,
        "conv": conv,
        "probe": cfg.probe.name,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "setting": setting(cfg),
        "code_version": code_version(),
        "machine": machine(),
        "overrides": overrides,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "metrics": metrics,
    }
    if error is not None:
        record["error"] = error
    return record


def write_results(path: Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(path, lambda file: file.write(text.encode()))
