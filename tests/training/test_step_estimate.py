"""The first-step estimate before training: its projection, that it leaves the model alone, the epoch's
step count, its message, and that Ctrl-C or SIGTERM end a run stuck in a slow layer's first pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from harness import REPO, compose_train, fake_data_overrides, sigint_as_in_a_terminal, write_fake_mnist
from hydra.utils import instantiate
from torch import nn

from convlab.training import step_estimate
from convlab.training.network import ReferenceNet
from convlab.training.step_estimate import StepEstimate, duration, first_step_estimate, steps_per_epoch


def test_projection_is_linear_in_the_batch_and_the_steps():
    estimate = StepEstimate(images=2, seconds=3.0, batch_size=64, steps_per_epoch=100)
    assert (estimate.step_s, estimate.epoch_s) == (96.0, 9600.0)
    message = estimate.message("my_conv.py:MyConv2d")
    assert "~1.6 min" in message and "100 steps ~2.7 h" in message and "linearly" in message
    assert "--impl my_conv.py:MyConv2d" in message
    measured = StepEstimate(images=64, seconds=0.01, batch_size=64, steps_per_epoch=None)
    assert measured.epoch_s is None and "linearly" not in measured.message("torch")


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.0042, "4.2 ms"), (75, "1.2 min"), (9000, "2.5 h"), (3, "3.0 s")]
)
def test_duration(seconds: float, shown: str):
    assert duration(seconds) == shown


def test_a_slow_layer_is_projected_and_a_fast_one_timed_at_its_batch(monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_timing(per_image: float):
        def timed(net, images, device, dtype, label):
            calls.append(images)
            return per_image * images

        return timed

    monkeypatch.setattr(step_estimate, "time_forward_backward", fake_timing(5.0))
    slow = first_step_estimate(ReferenceNet(nn.Conv2d), batch_size=64, steps_per_epoch=10)
    assert (slow.images, slow.step_s, calls) == (2, 320.0, [2])  # 10 s: over the repeat budget, run once
    calls.clear()
    monkeypatch.setattr(step_estimate, "time_forward_backward", fake_timing(0.001))
    fast = first_step_estimate(ReferenceNet(nn.Conv2d), batch_size=64)
    assert fast.images == 64 and set(calls) == {2, 64} and len(calls) == 10


def test_a_fixed_per_call_cost_is_not_multiplied_by_the_batch(monkeypatch: pytest.MonkeyPatch):
    # A busy machine: 1.5 s per call whatever the batch, plus 0.01 s an image. Projecting 2 images'
    # 1.52 s linearly would claim 48.6 s for a 64-image step; the two sizes part the costs.
    calls = []

    def timed(net, images, device, dtype, label):
        calls.append(images)
        return 1.5 + 0.01 * images

    monkeypatch.setattr(step_estimate, "time_forward_backward", timed)
    estimate = first_step_estimate(ReferenceNet(nn.Conv2d), batch_size=64, steps_per_epoch=10)
    assert set(calls) == {2, 4} and estimate.images == 4
    assert estimate.step_s == pytest.approx(1.5 + 0.64) and estimate.epoch_s == pytest.approx(21.4)


def test_the_estimate_leaves_weights_gradients_and_the_rng_alone():
    torch.manual_seed(0)
    net = ReferenceNet(nn.Conv2d)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    rng = torch.get_rng_state()
    estimate = first_step_estimate(net, batch_size=4, steps_per_epoch=3)
    assert estimate.seconds > 0 and estimate.steps_per_epoch == 3
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, before[name]) and p.grad is None for name, p in net.named_parameters())


def test_steps_per_epoch_follows_the_loader_and_the_trainers_limits(tmp_path: Path):
    data = fake_data_overrides(write_fake_mnist(tmp_path / "mirror"), tmp_path / "data")  # 100 train images
    cases = {
        (): 7,
        ("trainer.limit_train_batches=3",): 3,
        ("trainer.limit_train_batches=0.5",): 3,
        ("trainer.fast_dev_run=true",): 1,
        ("+trainer.accumulate_grad_batches=2",): 3,
    }
    for extra, steps in cases.items():
        cfg = compose_train([*data, *extra], tmp_path / "run")
        trainer = instantiate(cfg.trainer, logger=False)
        assert steps_per_epoch(instantiate(cfg.data), trainer) == steps, extra


SLOW_LAYER = '''
import os, pathlib, time
from torch import nn

class SlowConv2d(nn.Conv2d):
    """Spins in pure Python for ten minutes on its first call: a layer far too slow to wait for."""

    def forward(self, x):
        pathlib.Path(os.environ["CONVLAB_TEST_MARKER"]).touch()
        end = time.monotonic() + 600
        while time.monotonic() < end:
            pass
        return super().forward(x)
'''


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_run_stuck_in_the_first_step_estimate(signum: int, tmp_path: Path):
    (tmp_path / "slow_conv.py").write_text(SLOW_LAYER)
    marker = tmp_path / "forward_started"
    data = fake_data_overrides(write_fake_mnist(tmp_path / "mirror"), tmp_path / "data")
    command = [sys.executable, str(REPO / "train.py"), "conv.name=slow_conv.py:SlowConv2d", *data,
               "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    environment = {**os.environ, "CONVLAB_TEST_MARKER": str(marker)}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=environment, **pipes, preexec_fn=sigint_as_in_a_terminal
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), process.communicate(timeout=60)[1][-3000:]
        time.sleep(0.5)  # well inside the ten-minute loop
        process.send_signal(signum)
        start = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        assert time.monotonic() - start < 30, "the run did not stop promptly"
        assert process.returncode != 0
        if signum == signal.SIGINT:
            assert process.returncode == 130 and "stopped by SIGINT" in stderr, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
