"""Check a composed train config before anything heavy starts; a bad value is one line, exit status 2.

`validate(cfg)` runs in train.py right after Hydra composes the config, before torch, Lightning or the
data are loaded (only the layer-spec check imports torch, and it runs last), so a typo costs a second
or two, not a minute of start-up and a long traceback. Each failure is a `ConfigError` whose message
names the key, the value and what is allowed, e.g.

    data.batch_size=0: must be an integer >= 1 (images per training step)

The sizes below are those of MNIST and Fashion-MNIST (60,000 training and 10,000 test images); the
DataModule checks subsets against the files it actually reads as well.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from convlab.training.checkpoint_files import require_loadable
from convlab.training.errors import ConfigError

# The dataset names convlab.training.data_files.DATASETS reads, and the probes of
# convlab.training.probes.PROBES (kept here so that checking them imports no torch; a test keeps them equal).
DATA_NAMES = ("mnist", "fashion_mnist")
PROBE_NAMES = ("none", "frozen_conv", "frozen_fc")
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000
MIRROR_ENV = "CONVLAB_DATA_MIRROR"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


def _refuse(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={_shown(value)}: {allowed}")


def integer(key: str, value: Any, low: int, high: int | None = None, what: str = "", nullable=False) -> None:
    """Refuse `value` unless it is an integer in [low, high] (or None when `nullable`)."""
    if nullable and value is None:
        return
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        allowed = f"must be an integer {span}" + (" or null" if nullable else "")
        raise _refuse(key, value, allowed + (f" ({what})" if what else ""))


def one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _refuse(key, value, f"must be one of {', '.join(allowed)}")


def positive_number(key: str, value: Any, what: str) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value <= 0:
        raise _refuse(key, value, f"must be a number > 0 ({what})")


def check_data(data: DictConfig) -> None:
    one_of("data.name", data.get("name"), DATA_NAMES)
    integer("data.batch_size", data.get("batch_size"), 1, what="images per training step")
    integer("data.eval_batch_size", data.get("eval_batch_size"), 1, what="images per evaluation step")
    val_size = data.get("val_size")
    integer("data.val_size", val_size, 1, TRAIN_IMAGES - 1, what="training images held out for validation")
    limits = {"train_subset": TRAIN_IMAGES - val_size, "val_subset": val_size, "test_subset": TEST_IMAGES}
    for name, largest in limits.items():
        what = "use only N images of the split, or null for all"
        integer(f"data.{name}", data.get(name), 1, largest, what=what, nullable=True)
    integer("data.num_workers", data.get("num_workers", 0), 0, what="loader worker processes")
    refuse_root_in_mirror(data.get("root"), data.get("mirror"))


def refuse_root_in_mirror(root: str | Path | None, mirror: str | Path | None) -> None:
    """Refuse a data folder that is the read-only mirror itself (or inside it): convlab would write there.

    mirror: `data.mirror`, or when that is null `$CONVLAB_DATA_MIRROR`.
    """
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if root is None or mirror is None:
        return
    root_path, mirror_path = Path(root).resolve(), Path(mirror).resolve()
    if root_path == mirror_path or mirror_path in root_path.parents:
        raise ConfigError(
            f"data.root={root} is the data mirror {mirror_path} (read-only: convlab copies from it and never "
            "writes into it); set data.root to a folder of its own, e.g. data.root=data, and keep the mirror "
            "as data.mirror"
        )


def check_training(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    if not trainer.get("fast_dev_run"):
        max_epochs = trainer.get("max_epochs")
        if max_epochs != -1:
            integer("trainer.max_epochs", max_epochs, 1, what="epochs to train; -1: no limit but max_steps")
    optimizer = cfg.model.get("optimizer")
    if optimizer is not None:
        positive_number("model.optimizer.lr", optimizer.get("lr"), "the optimiser's learning rate")
        for name in ("momentum", "weight_decay"):
            value = optimizer.get(name)
            if value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
            ):
                raise _refuse(f"model.optimizer.{name}", value, "must be a number >= 0")
    integer("threads", cfg.get("threads"), 1, what="torch CPU threads per process", nullable=True)
    if not _is_int(cfg.get("seed")):
        raise _refuse("seed", cfg.get("seed"), "must be an integer")
    one_of("probe.name", cfg.probe.get("name"), PROBE_NAMES)


def check_resume(ckpt_path: str | None) -> None:
    if ckpt_path is not None:
        require_loadable(Path(ckpt_path))


def check_conv_file(conv: DictConfig) -> None:
    """A spec naming a .py file that is not there, said before torch loads (as `check_conv` would say it)."""
    spec = str(conv.get("name") or "")
    spelled = spec.rpartition(":")[0]
    path = Path(spelled).expanduser()
    if spelled.endswith(".py") and not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise ConfigError(f"conv.name={spec}: {spelled}: no such file{where}")


def check_conv(conv: DictConfig) -> None:
    """Resolve the layer spec `conv.name` (with `conv.weight` / `conv.bias`, the names of the user's
    parameters, when given); imports torch and the user's file. One line when it cannot be used."""
    from convlab.conv import SpecError, resolve_conv

    spec = conv.get("name")
    try:
        resolve_conv(spec, weight=conv.get("weight"), bias=conv.get("bias"))
    except SpecError as error:
        raise ConfigError(f"conv.name={spec}: {error}") from None


CHECKS: tuple[Callable[[DictConfig], None], ...] = (
    lambda cfg: check_data(cfg.data),
    check_training,
    lambda cfg: check_resume(cfg.get("ckpt_path")),
    lambda cfg: check_conv_file(cfg.conv),
    lambda cfg: check_conv(cfg.conv),  # last: the only check that imports torch
)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (or CheckpointError) for the first value in `cfg` that cannot work."""
    for check in CHECKS:
        check(cfg)
