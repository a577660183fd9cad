"""Checkpoints: written atomically (a kill -9 mid-write keeps the previous good file, also with $TMPDIR on
another file system), last.ckpt after every epoch beside the best one, a corrupt one refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from harness import LastCheckpointEpochs, compose_train

from convlab.training.checkpoint_files import require_loadable
from convlab.training.checkpoints import AtomicCheckpointIO
from convlab.training.errors import CheckpointError
from convlab.training.task import run
from convlab.training.validate import validate

# Atomically writes the bytes of argv[2] into argv[1], then starts writing those of argv[3] and is killed
# (SIGKILL) at argv[4]: halfway through the bytes, or after the whole file is written and synced but
# before the rename. Only the stdlib and checkpoint_files load, so the process starts in a blink;
# AtomicCheckpointIO's writes are `atomic_write` around torch.save.
KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from convlab.training.checkpoint_files import atomic_write

    path, first, second, moment = sys.argv[1:]
    atomic_write(path, lambda file: file.write(Path(first).read_bytes()))

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    def half_then_die(file):
        data = Path(second).read_bytes()
        file.write(data[: len(data) // 2])
        file.flush()
        die()

    if moment == "before-rename":
        os.replace = die
    writer = half_then_die if moment == "mid-write" else lambda file: file.write(Path(second).read_bytes())
    atomic_write(path, writer)
    """
)


@pytest.mark.parametrize("moment", ["mid-write", "before-rename"])
def test_kill_during_a_write_keeps_the_previous_checkpoint(moment: str, tmp_path: Path):
    shm = Path("/dev/shm")
    other_tmp = (shm if shm.is_dir() else tmp_path) / f"convlab-test-{os.getpid()}-{moment}"
    other_tmp.mkdir()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    path, first, second = folder / "last.ckpt", tmp_path / "first", tmp_path / "second"
    torch.save({"step": 1, "weights": torch.arange(100_000.0)}, first)
    torch.save({"step": 2, "weights": torch.zeros(100_000)}, second)
    env = {**os.environ, "TMPDIR": str(other_tmp)}  # a temporary folder on another file system
    command = [sys.executable, "-c", KILLED_WRITER, str(path), str(first), str(second), moment]
    result = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    require_loadable(path)
    saved = AtomicCheckpointIO().load_checkpoint(path, weights_only=True)
    assert saved["step"] == 1 and torch.equal(saved["weights"], torch.arange(100_000.0))
    assert list(other_tmp.iterdir()) == []
    other_tmp.rmdir()
    leftovers = [p.name for p in folder.iterdir() if p != path]
    assert leftovers and all(name.startswith(".last.ckpt.partial-") for name in leftovers)
    # The next write removes what the killed one left behind.
    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True) == {"step": 3}


def damaged_copies(good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    copies = {"empty": b"", "truncated": data[: len(data) // 2], "not a checkpoint": b"hello " * 100}
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    copies["flipped byte"] = bytes(flipped)
    paths = {}
    for name, content in copies.items():
        folder = good.parent / name.replace(" ", "_")
        folder.mkdir()
        paths[name] = folder / "last.ckpt"
        paths[name].write_bytes(content)
    return paths


def test_a_corrupt_checkpoint_is_one_error_naming_it_and_the_good_one(tmp_path: Path):
    good = tmp_path / "best_epoch03.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.randn(50_000)}, good)
    for name, path in damaged_copies(good).items():
        with pytest.raises(CheckpointError) as error:
            require_loadable(path)
        assert str(error.value).startswith(f"cannot resume from ckpt_path={path}: "), name
        assert "no good checkpoint lies beside it" in str(error.value), name
    beside = tmp_path / "last.ckpt"
    beside.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"the newest good checkpoint beside it is {good}"):
        AtomicCheckpointIO().load_checkpoint(beside)
    with pytest.raises(CheckpointError, match="no such file"):
        require_loadable(tmp_path / "missing.ckpt")


def test_the_config_check_refuses_a_corrupt_resume(tmp_path: Path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"last.ckpt: the file is empty \(0 bytes\)"):
        validate(compose_train([f"ckpt_path={bad}"], tmp_path / "run"))


def test_last_ckpt_is_the_last_epoch_and_the_best_is_kept_apart(fake_data: list[str], tmp_path: Path):
    # A learning rate too small to change the validation accuracy: the best epoch stays the first one,
    # and last.ckpt must still follow every epoch.
    spy = "+callbacks.spy._target_=harness.LastCheckpointEpochs"
    run(compose_train([*fake_data, "trainer.max_epochs=3", "model.optimizer.lr=1e-12", spy], tmp_path))
    assert LastCheckpointEpochs.seen == [None, 0, 1]
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best_epoch00.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 2
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"
