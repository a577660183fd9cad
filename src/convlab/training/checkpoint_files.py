"""Checkpoint files that a kill cannot corrupt, and a clear error for one that is corrupt anyway.

`atomic_write(path, write)` writes into a temporary file in the SAME folder as `path`, flushes and fsyncs
it, then `os.replace`s it over `path` and fsyncs the folder. A rename within one file system is atomic,
so whenever the process dies (`kill -9` included) `path` is either the previous complete file or the new
complete one, never a 0-byte or half-written file. A temporary file in `$TMPDIR` would not do: on another
file system the "rename" becomes copy-then-delete, which a kill interrupts. A kill mid-write leaves only
the temporary file behind; the next write to the same path removes it.

`require_loadable(path)` checks a checkpoint before a resume: `torch.save` writes a zip archive, and the
zip's central directory and CRCs reveal truncation and damage without loading a tensor (stdlib only, so
train.py's config check can run it before torch is imported).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from convlab.training.errors import CheckpointError

TEMP_MARK = ".partial-"


def temp_prefix(path: Path) -> str:
    return f".{path.name}{TEMP_MARK}"


def remove_leftovers(path: Path) -> None:
    """Delete temporary files a killed write to `path` left in its folder (one writer per path)."""
    for leftover in path.parent.glob(f"{temp_prefix(path)}*"):
        leftover.unlink(missing_ok=True)


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temporary file beside `path`, then atomically put it in `path`'s place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    temporary = path.parent / f"{temp_prefix(path)}{os.getpid()}"
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` cannot be a torch checkpoint (missing, empty, truncated, damaged), or None if whole."""
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a file"
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"not a complete checkpoint ({size} bytes; {error})"
    if damaged is not None:
        return f"damaged: its entry {damaged} fails its CRC check"
    return None


def good_checkpoints_beside(path: Path) -> list[Path]:
    """The other whole checkpoints (*.ckpt) in `path`'s folder, newest first."""
    if not path.parent.is_dir():
        return []
    others = [p for p in path.parent.glob("*.ckpt") if p != path and p.is_file()]
    return sorted((p for p in others if checkpoint_problem(p) is None), key=lambda p: -p.stat().st_mtime)


def require_loadable(path: Path) -> None:
    """Raise CheckpointError naming `path`, what is wrong with it and the newest good checkpoint beside it."""
    problem = checkpoint_problem(path)
    if problem is None:
        return
    good = good_checkpoints_beside(path)
    fix = (
        f"the newest good checkpoint beside it is {good[0]}: resume with ckpt_path={good[0]}"
        if good
        else "no good checkpoint lies beside it: start the run again without ckpt_path"
    )
    raise CheckpointError(f"cannot resume from ckpt_path={path}: {problem}; {fix}")
