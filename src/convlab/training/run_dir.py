"""Where a run writes, and the names people read: OmegaConf resolvers used by configs/.

`register_resolvers(root)` must run before Hydra composes configs/train.yaml (train.py calls it at
import; tests call it through tests/harness.py). It registers:

- `${project_root:}`: the repository's root folder (where train.py and configs/ live), so `data/` and
  `outputs/` land there whichever folder `python train.py` is started from. Paths a user types
  (`conv.name=my_conv.py:Cls`, `ckpt_path=...`, an explicit `data.root=...`) stay relative to the
  working directory: Hydra does not change it (`hydra.job.chdir: false`).
- `${unique_dir:<path>}`: `<path>` itself, or `<path>_2`, `<path>_3`, ... - the first that this call could
  create. `os.mkdir` is atomic, so two runs started in the same second (same `${now:...}` path) never
  share a folder, even on a shared file system. The result is cached per argument like `${now:}`, and
  Hydra copies the cache into every job of a sweep, so all jobs of one sweep agree on its folder.
- `${run_label:conv,probe,data,seed}`: `conv=unfold,probe=frozen_conv,data=mnist,seed=3`, the name a run
  has in TensorBoard.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def claim_unique_dir(path: str) -> str:
    """Create and return `path`, or `path_2`, `path_3`, ... when it exists already (never reuses one)."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = base, 1
    while True:
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            number += 1
            candidate = base.with_name(f"{base.name}_{number}")


def safe_label(text: object) -> str:
    """A folder-name-safe form of a config value: a path separator would split the TensorBoard run."""
    return str(text).replace(os.sep, "|")


def run_label(conv: object, probe: object, data: object, seed: object) -> str:
    """The run's name for people: `conv=<label>,probe=<name>,data=<name>,seed=<n>`.

    conv is the layer spec; a spec naming a file (`path/to/my_conv.py:Cls`) is shown by its file name.
    """
    conv_text = str(conv)
    if ":" in conv_text:
        location, _, attribute = conv_text.rpartition(":")
        conv_text = f"{Path(location).name}:{attribute}"
    return ",".join(
        f"{key}={safe_label(value)}"
        for key, value in (("conv", conv_text), ("probe", probe), ("data", data), ("seed", seed))
    )


def register_resolvers(root: Path) -> None:
    """Register the resolvers above (once per process; `root` is the repository root for `project_root`)."""
    resolved_root = str(Path(root).resolve())
    resolvers = {
        "project_root": (lambda: resolved_root, False),
        "unique_dir": (claim_unique_dir, True),
        "run_label": (run_label, False),
    }
    for name, (function, cache) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cache)
