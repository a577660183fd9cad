"""A run stopped by Ctrl-C (SIGINT), SIGTERM or kill -9 loses nothing: last.ckpt holds the last finished
epoch, SIGINT / SIGTERM say so with the exact resume command, exit 130 / 143 and mark results.json
"interrupted", and the resumed run ends with the metrics of a run never stopped."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import yaml
from harness import REPO, compose_train, sigint_as_in_a_terminal
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from convlab.training.checkpoint_files import require_loadable
from convlab.training.errors import ConfigError
from convlab.training.signals import SignalWatch, resume_command
from convlab.training.task import run

WALL_CLOCK = {"epoch_time_s", "images_per_s"}
# Slow enough (7 batches of 0.25 s an epoch) to be signalled after the first epoch, long before the third.
SLOW = ["+callbacks.slow._target_=harness.SlowBatches", "+callbacks.slow.seconds=0.25"]


def comparable(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in WALL_CLOCK}


@pytest.fixture(scope="module")
def three_epochs(fake_data: list[str]) -> list[str]:
    return [*fake_data, "conv=unfold", "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def never_stopped(three_epochs: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("never_stopped")
    run(compose_train(three_epochs, out))
    return json.loads((out / "results.json").read_text())["metrics"]


def start(overrides: list[str], run_dir: Path) -> subprocess.Popen:
    pythonpath = [str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, pythonpath))}
    command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"]
    # Output into files, not pipes: a full pipe would stop the run before it is signalled.
    with open(f"{run_dir}.out", "w") as stdout, open(f"{run_dir}.err", "w") as stderr:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=stdout, stderr=stderr, preexec_fn=sigint_as_in_a_terminal
        )


def signal_after_first_epoch(
    processes: dict[int, subprocess.Popen], tmp_path: Path
) -> dict[int, tuple[int, str]]:
    """Send each run its signal as soon as its last.ckpt exists; -> {signal: (exit status, stderr)}."""
    waiting = dict(processes)
    deadline = time.monotonic() + 600
    while waiting and time.monotonic() < deadline:
        for signum, process in list(waiting.items()):
            assert process.poll() is None, f"the {signum.name} run ended before it could be signalled"
            if (tmp_path / signum.name / "checkpoints" / "last.ckpt").exists():
                process.send_signal(signum)
                del waiting[signum]
        time.sleep(0.05)
    assert not waiting, "no last.ckpt within 10 minutes"
    return {
        signum: (process.wait(timeout=300), (tmp_path / f"{signum.name}.err").read_text())
        for signum, process in processes.items()
    }


def test_a_stopped_run_resumes_to_the_same_metrics(
    three_epochs: list[str], never_stopped: dict, tmp_path: Path
):
    # The three runs start together: their start-up (importing torch and Lightning) overlaps.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
    processes = {signum: start([*three_epochs, *SLOW], tmp_path / signum.name) for signum in signals}
    for signum, (returncode, stderr) in signal_after_first_epoch(processes, tmp_path).items():
        run_dir = tmp_path / signum.name
        last = run_dir / "checkpoints" / "last.ckpt"
        require_loadable(last)
        if signum == signal.SIGKILL:
            assert returncode == -signal.SIGKILL
            assert not (run_dir / "results.json").exists()
            resume = [*three_epochs, f"ckpt_path={last}"]
        else:
            assert returncode == 128 + signum, stderr[-3000:]
            lines = stderr.strip().splitlines()
            assert lines[-2].startswith(f"error: stopped by {signum.name}; the last checkpoint is {last}")
            assert lines[-1] == "  " + resume_command([*three_epochs, *SLOW], last)
            assert "Traceback" not in stderr
            results = json.loads((run_dir / "results.json").read_text())
            assert results["status"] == "interrupted" and results["metrics"] is None
            resume = shlex.split(lines[-1])[2:]  # the printed command, as a user would paste it
        resumed_dir = tmp_path / f"resumed_{signum.name}"
        run(compose_train(resume, resumed_dir))
        resumed = json.loads((resumed_dir / "results.json").read_text())
        assert resumed["status"] == "completed"
        assert comparable(resumed["metrics"]) == comparable(never_stopped), signum.name


def test_a_failed_run_is_marked_failed(fake_data: list[str], tmp_path: Path):
    overrides = [*fake_data, "trainer.max_epochs=1", "+callbacks.boom._target_=harness.FailAtFirstBatch"]
    with pytest.raises(RuntimeError, match="deliberate failure"):
        run(compose_train(overrides, tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert (results["status"], results["metrics"]) == ("failed", None)
    assert results["error"] == "RuntimeError: deliberate failure"
    assert set(results["code_version"]) == {"convlab", "git_commit", "git_dirty"}
    assert set(results["machine"]) == {"cpu", "cores", "python", "torch", "written"}
    assert results["setting"]["optimizer"] == "SGD" and results["setting"]["epochs"] == 1
    (hparams,) = tmp_path.rglob("hparams.yaml")
    assert yaml.safe_load(hparams.read_text())["status"] == "failed"


def test_max_epochs_0_is_refused_before_training(fake_data: list[str], tmp_path: Path):
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=0: must be an integer >= 1"):
        run(compose_train([*fake_data, "trainer.max_epochs=0"], tmp_path))
    assert not (tmp_path / "results.json").exists()


class SignalsItselfMidStep(L.Callback):
    """Sends this process SIGTERM inside the first training step, then works for up to 60 s (a slow layer)."""

    def __init__(self) -> None:
        self.step_finished = False

    def on_train_batch_start(self, *args) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(600):
            time.sleep(0.1)
        self.step_finished = True


def test_sigterm_stops_the_step_under_way_not_at_the_next_batch(tmp_path: Path):
    watch, slow = SignalWatch(), SignalsItselfMidStep()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[watch, slow],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SIGTERMException):
        trainer.fit(BoringModel())
    assert not slow.step_finished and watch.signum == signal.SIGTERM and trainer.received_sigterm
    assert signal.getsignal(signal.SIGTERM) == previous  # Lightning put the handlers back
