"""Run folders: never shared (two runs in the same second, parallel claims, one folder per sweep), rooted
at the repository whatever the working directory, and named for people in TensorBoard."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from harness import REPO, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

from convlab.training.run_dir import claim_unique_dir, run_label
from convlab.training.task import instantiate_all


def test_the_same_path_claimed_twice_gives_two_folders(tmp_path: Path):
    base = str(tmp_path / "runs" / "2026-01-01" / "12-00-00")
    assert claim_unique_dir(base) == base
    assert claim_unique_dir(base) == f"{base}_2"
    assert claim_unique_dir(base) == f"{base}_3"


def test_parallel_claims_never_share_a_folder(tmp_path: Path):
    base = str(tmp_path / "12-00-00")
    with ThreadPoolExecutor(8) as pool:
        claimed = list(pool.map(lambda _: claim_unique_dir(base), range(16)))
    assert len(set(claimed)) == 16


def test_the_resolver_claims_once_per_config_and_again_for_a_new_one(tmp_path: Path):
    text = {"dir": "${unique_dir:" + str(tmp_path / "run") + "}"}
    first = OmegaConf.create(text)
    assert first.dir == first.dir == str(tmp_path / "run")  # cached: read twice, one folder
    assert OmegaConf.create(text).dir == str(tmp_path / "run_2")


def test_two_runs_started_together_get_two_folders(tmp_path: Path):
    # Each run stops at the config check (status 2), after Hydra made its folder and saved its config.
    commands = [
        [sys.executable, "train.py", f"seed={seed}", "data.batch_size=0", f"paths.log_dir={tmp_path}"]
        for seed in (1, 2)
    ]
    processes = [subprocess.Popen(c, cwd=REPO, stderr=subprocess.PIPE, text=True) for c in commands]
    assert [p.wait(timeout=300) for p in processes] == [2, 2]
    folders = sorted((tmp_path / "runs").glob("*/*"))
    assert len(folders) == 2
    seeds = sorted(yaml.safe_load((f / ".hydra" / "overrides.yaml").read_text())[0] for f in folders)
    assert seeds == ["seed=1", "seed=2"]


def test_paths_are_rooted_at_the_repository_from_any_working_directory(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cfg", "job", "--resolve", "-p", "paths"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    paths = yaml.safe_load(result.stdout.split("\n", 1)[1])
    assert (paths["root_dir"], paths["data_dir"], paths["log_dir"]) == (
        str(REPO),
        str(REPO / "data"),
        str(REPO / "outputs"),
    )


def test_tensorboard_names_a_run_by_conv_probe_data_and_seed(tmp_path: Path):
    overrides = ["conv=unfold", "probe=frozen_conv", "data=fashion_mnist", "seed=3"]
    (logger,) = instantiate_all(compose_train(overrides, tmp_path).logger)
    expected = "conv=unfold,probe=frozen_conv,data=fashion_mnist,seed=3"
    assert Path(logger.log_dir) == tmp_path / expected
    assert run_label("layers/my_conv.py:MyConv2d", "none", "mnist", 0).startswith("conv=my_conv.py:MyConv2d,")


def test_debug_group_options_compose(tmp_path: Path):
    fast = compose_train(["debug=fast_dev_run"], tmp_path).trainer
    assert fast.fast_dev_run is True
    limit = compose_train(["debug=limit"], tmp_path).trainer
    assert (limit.max_epochs, limit.limit_train_batches, limit.limit_val_batches) == (1, 20, 5)
    profiled = compose_train(["debug=profiler"], tmp_path).trainer
    assert type(instantiate(profiled, logger=False).profiler).__name__ == "SimpleProfiler"
    assert profiled.limit_train_batches == 20
