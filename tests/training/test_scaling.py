"""Scaling out on Lightning's strategies and Hydra's launchers: DDP on CPU (gloo) against one process,
training in worker processes (ddp_spawn), the multirun guard, a joblib sweep that `report` reads, the
SLURM launcher config, mixed precision; on CUDA only (marked gpu): every conv against F.conv2d, the
host-bound layers' warnings, one training step."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from harness import REPO, compose_train, fake_data_overrides, write_fake_mnist
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, read_write

from convlab.conv import CONV_LAYERS
from convlab.conv.numpy import warn_host_round_trip
from convlab.conv.vanilla import warn_slower_than_cpu
from convlab.learn import report
from convlab.training import distributed
from convlab.training.callbacks import EpochTimer, RedrawnConvAccuracy
from convlab.training.distributed import (
    ScriptRelaunchInMultirunError,
    UnrepeatedSampler,
    refuse_script_relaunch_in_multirun,
)
from convlab.training.seeding import derived_seed
from convlab.training.task import instantiate_all, run
from convlab.training.threads import available_cores, set_threads

CONFIGS = REPO / "configs"
WALL_CLOCK = {"epoch_time_s", "images_per_s"}
# 41 test images: 2 processes test 21 + 20 of them, where Lightning's DistributedSampler would test 21 + 21.
TEST_IMAGES = 41
TINY_TRAINING = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.num_sanity_val_steps=0"]
DDP_ON_CPU = ["trainer.accelerator=cpu", "trainer.devices=2"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def restore_thread_settings():
    """Runs in this process set torch's threads and OMP_NUM_THREADS (as Lightning's DDP does): undo it."""
    threads, environment = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    yield
    torch.set_num_threads(threads)
    if environment is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = environment


def threads_per_process(processes: int) -> int:
    """cores // processes, or OMP_NUM_THREADS where the environment sets it."""
    return int(os.environ.get("OMP_NUM_THREADS", max(available_cores() // processes, 1)))


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides for 100 fake training images (batches of 16), 20 validation, 41 test (batches of 20).

    The data folder is filled here, once, so that parallel jobs only read it.
    """
    base = tmp_path_factory.mktemp("fake_mnist")
    overrides = fake_data_overrides(write_fake_mnist(base / "mirror", n_test=TEST_IMAGES), base / "data")
    instantiate(compose_train(overrides, base / "prepare").data).prepare_data()
    return overrides


def train_py(args: list[str]) -> None:
    """`python train.py <args>` from the repository root, as a user runs it; fails the test on an error."""
    done = subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["metrics"]


def without_wall_clock(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in WALL_CLOCK}


@pytest.fixture(scope="module")
def ddp_run(fake_data: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of `python train.py trainer=ddp` with 2 CPU processes (gloo)."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    train_py(
        [*fake_data, "trainer=ddp", *DDP_ON_CPU, *TINY_TRAINING, "logger=csv", f"hydra.run.dir={run_dir}"]
    )
    return run_dir


def test_ddp_writes_one_results_json_counting_each_test_image_once(ddp_run: Path):
    assert [path.parent for path in ddp_run.parent.rglob("results.json")] == [ddp_run]
    # Lightning starts rank 1 in this run's directory: its log is here, not in a run directory of its own.
    for log in ("train.log", "train_ddp_process_1.log"):
        # threads x processes <= cores
        expected = f"torch CPU threads: {threads_per_process(2)} in each of 2 process(es)"
        assert expected in (ddp_run / log).read_text()
    metrics = results(ddp_run)
    assert metrics["test_images"] == TEST_IMAGES
    assert (metrics["train_images"], metrics["epochs"]) == (2 * 2 * 16, 1)  # 2 processes x 2 batches of 16


def test_ddp_test_scores_equal_one_process_on_the_same_weights(ddp_run: Path, fake_data: list[str]):
    """One process testing the DDP run's final weights on the same test set gets the same numbers."""
    cfg = compose_train(fake_data, ddp_run.parent / "single")
    redrawn = RedrawnConvAccuracy(derived_seed(cfg.seed, "redraw conv"))  # the seed train.py gives it
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[redrawn], enable_progress_bar=False)
    model, datamodule = instantiate(cfg.model), instantiate(cfg.data)
    single = trainer.test(model, datamodule=datamodule, ckpt_path=str(ddp_run / "checkpoints" / "last.ckpt"))[
        0
    ]
    ddp = results(ddp_run)
    # Accuracies are counts over the same 41 images: exactly equal unless an image was counted twice.
    assert ddp["test_acc"] == single["test/acc"]
    assert ddp["redrawn_conv_test_acc"] == single["test/redrawn_conv_acc"]
    # The mean loss adds the images up in another order: equal up to float32 rounding.
    assert ddp["test_loss"] == pytest.approx(single["test/loss"], rel=1e-5)


def test_training_in_worker_processes_keeps_every_metric(ddp_run: Path, fake_data: list[str], tmp_path: Path):
    """ddp_spawn trains and tests in worker processes that hand back only the weights and the logged
    metrics; results.json must still hold every number, equal to plain DDP's.

    Run with the fork start method of the same Lightning launcher: what comes back is the same, and
    fork spares the two rounds of re-imports (about a minute on 2 cores) that spawn costs.
    """
    in_workers = ["trainer=ddp_spawn", *DDP_ON_CPU, "trainer.strategy=ddp_fork"]
    run(compose_train([*fake_data, *in_workers, *TINY_TRAINING, "logger=csv"], tmp_path))
    metrics = results(tmp_path)
    assert metrics["epoch_time_s"] > 0 and metrics["images_per_s"] > 0
    assert without_wall_clock(metrics) == without_wall_clock(results(ddp_run))


def test_what_ddp_spawn_sends_to_its_processes_pickles(fake_data: list[str], tmp_path: Path):
    """spawn, unlike fork, pickles the model, the data module, callbacks and loggers into each process."""
    cfg = compose_train([*fake_data, "trainer=ddp_spawn", "logger=many_loggers"], tmp_path)
    callbacks = [*instantiate_all(cfg.callbacks), EpochTimer(), RedrawnConvAccuracy(seed=0)]
    pieces = [instantiate(cfg.model), instantiate(cfg.data), callbacks, instantiate_all(cfg.logger)]
    assert len(pickle.loads(pickle.dumps(pieces))) == len(pieces)


def multirun_job_trainer(overrides: list[str], tmp_path: Path) -> L.Trainer:
    """The trainer of a job of `python train.py -m <overrides>`."""
    cfg = compose_train(overrides, tmp_path)
    with read_write(HydraConfig.get()):
        HydraConfig.get().mode = RunMode.MULTIRUN
    return instantiate(cfg.trainer, logger=False)


def test_plain_ddp_is_refused_in_a_multirun(tmp_path: Path):
    trainer = multirun_job_trainer(["trainer=ddp", *DDP_ON_CPU], tmp_path)
    with pytest.raises(ScriptRelaunchInMultirunError, match="trainer=ddp_spawn"):
        refuse_script_relaunch_in_multirun(trainer)


def test_ddp_spawn_and_one_process_are_fine_in_a_multirun(tmp_path: Path):
    for overrides in (
        ["trainer=ddp_spawn", *DDP_ON_CPU],
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"],
    ):
        refuse_script_relaunch_in_multirun(multirun_job_trainer(overrides, tmp_path))


def test_ddp_is_fine_in_a_multirun_where_the_cluster_starts_the_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # What srun (SLURM) or torchrun give every process they start: its rank.
    for name, value in {"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    refuse_script_relaunch_in_multirun(multirun_job_trainer(["trainer=ddp", *DDP_ON_CPU], tmp_path))


def test_without_lightnings_private_launcher_class_the_public_fallback_still_refuses_plain_ddp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """As on a Lightning that renamed `_SubprocessScriptLauncher`: plain ddp is still refused, one process
    and fork pass, and ddp_spawn is refused with the reason (over-refusing; never a sweep per process)."""
    monkeypatch.setattr(distributed, "script_launcher_class", lambda: None)
    with pytest.raises(ScriptRelaunchInMultirunError, match="no launcher class"):
        refuse_script_relaunch_in_multirun(multirun_job_trainer(["trainer=ddp", *DDP_ON_CPU], tmp_path))
    for fine in (
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"],
        ["trainer=ddp_spawn", *DDP_ON_CPU, "trainer.strategy=ddp_fork"],
    ):
        refuse_script_relaunch_in_multirun(multirun_job_trainer(fine, tmp_path))
    with pytest.raises(ScriptRelaunchInMultirunError, match="ddp_spawn included"):
        refuse_script_relaunch_in_multirun(multirun_job_trainer(["trainer=ddp_spawn", *DDP_ON_CPU], tmp_path))


def test_private_launcher_class_is_looked_up_where_lightning_keeps_it():
    assert distributed.script_launcher_class() is not None  # else every check above ran the fallback


@pytest.mark.parametrize(("items", "processes"), [(41, 2), (10, 3), (2, 4), (0, 2)])
def test_unrepeated_sampler_gives_every_item_to_exactly_one_process(items: int, processes: int):
    dataset = list(range(items))
    shards = [
        list(UnrepeatedSampler(dataset, num_replicas=processes, rank=rank)) for rank in range(processes)
    ]
    assert sorted(index for shard in shards for index in shard) == dataset
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(UnrepeatedSampler(dataset, processes, rank)) for rank in range(processes)] == list(
        map(len, shards)
    )


def test_joblib_sweep_runs_jobs_in_parallel_and_report_reads_them(
    fake_data: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
):
    sweep = tmp_path / "sweep"
    launcher = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]
    train_py([*launcher, *fake_data, *TINY_TRAINING, "conv=torch,unfold", "logger=csv"])
    convs = sorted(json.loads(path.read_text())["conv"] for path in sweep.rglob("results.json"))
    assert convs == ["torch", "unfold"]
    # threads x jobs <= cores: joblib starts each worker with OMP_NUM_THREADS = cores // n_jobs.
    for job in ("0", "1"):
        assert f"torch CPU threads: {threads_per_process(2)} " in (sweep / job / "train.log").read_text()
    report.main([str(sweep)])
    printed = capsys.readouterr().out
    assert "2 runs." in printed
    assert "| torch | mnist |" in printed and "| unfold | mnist |" in printed


def test_slurm_launcher_config_composes():
    overrides = ["hydra/launcher=slurm_example", "trainer=ddp", "trainer.devices=4"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    # One task per GPU on each node: what Lightning's SLURMEnvironment expects.
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (4, 4, 1)
    assert launcher["partition"] and launcher["timeout_min"] > 0 and launcher["mem_gb"] > 0


def test_threads_setting_reaches_torch_and_the_processes_it_starts():
    assert set_threads(1, processes=2) == torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"  # what DDP processes inherit and Lightning keeps
    with pytest.raises(ValueError, match="positive"):
        set_threads(0)


@pytest.mark.parametrize("trainer, strategy", [("gpu", None), ("ddp", "ddp"), ("ddp_spawn", "ddp_spawn")])
def test_trainer_configs_compose(trainer: str, strategy: str | None, tmp_path: Path):
    cfg = compose_train([f"trainer={trainer}", "trainer.precision=bf16-mixed"], tmp_path).trainer
    assert (cfg.accelerator, cfg.precision, cfg.get("strategy")) == ("gpu", "bf16-mixed", strategy)


@pytest.mark.parametrize("conv", ["unfold", "manual", "numpy"])
def test_hand_written_convs_train_under_mixed_precision(conv: str, fake_data: list[str], tmp_path: Path):
    """bf16 autocast, here on the CPU: the layers keep their input's dtype, so the network trains."""
    overrides = [*fake_data, f"conv={conv}", "trainer.precision=bf16-mixed", "trainer.fast_dev_run=true"]
    run(compose_train(overrides, tmp_path))
    assert min(results(tmp_path)["conv_drift"].values()) > 0


@pytest.mark.parametrize("conv", ["vanilla", "numpy"])
def test_host_bound_layers_are_silent_on_the_cpu(conv: str, recwarn: pytest.WarningsRecorder):
    CONV_LAYERS[conv](2, 3, kernel_size=3)(torch.randn(1, 2, 5, 5)).sum().backward()
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_conv_on_cuda_matches_f_conv2d(conv_name: str, dtype: torch.dtype):
    torch.manual_seed(0)
    layer = CONV_LAYERS[conv_name](4, 6, kernel_size=3, stride=2, padding=1, groups=2).to("cuda", dtype)
    x = torch.randn(3, 4, 9, 9, device="cuda", dtype=dtype, requires_grad=True)
    out = layer(x)
    assert (out.device, out.dtype) == (x.device, dtype)
    grad = torch.randn_like(out)
    out.backward(grad)
    inputs = [t.detach().clone().requires_grad_() for t in (x, layer.weight, layer.bias)]
    expected = F.conv2d(*inputs, stride=2, padding=1, groups=2)
    expected.backward(grad)
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(out, expected, **tolerance)
    for actual, reference in zip((x, layer.weight, layer.bias), inputs, strict=True):
        assert actual.grad.device == x.device
        torch.testing.assert_close(actual.grad, reference.grad, **tolerance)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    "conv, warn_once, message",
    [
        ("vanilla", warn_slower_than_cpu, "slower than on the CPU"),
        ("numpy", warn_host_round_trip, "host memory"),
    ],
)
def test_host_bound_layers_warn_once_on_cuda(
    conv: str, warn_once, message: str, recwarn: pytest.WarningsRecorder
):
    warn_once.cache_clear()  # an earlier test may have had this process's one warning already
    layer = CONV_LAYERS[conv](1, 2, kernel_size=3).cuda()
    for _ in range(2):
        layer(torch.randn(1, 1, 5, 5, device="cuda")).sum().backward()
    warned = [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)]
    assert len(warned) == 1 and message in warned[0]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    "conv, precision", [("unfold", "32-true"), ("manual", "16-mixed"), ("torch", "bf16-mixed")]
)
def test_one_training_step_on_the_gpu(conv: str, precision: str, fake_data: list[str], tmp_path: Path):
    overrides = [
        *fake_data,
        "trainer=gpu",
        f"conv={conv}",
        f"trainer.precision={precision}",
        "trainer.fast_dev_run=true",
    ]
    run(compose_train(overrides, tmp_path))
    metrics = results(tmp_path)
    assert metrics["epochs"] == 1 and min(metrics["conv_drift"].values()) > 0
