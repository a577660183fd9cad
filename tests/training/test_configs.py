"""Every config group option composes, and each piece instantiates; a bad choice lists the valid ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from harness import CONFIGS, REPO, compose_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.profilers import SimpleProfiler

from convlab.conv import CONV_LAYERS, SpecError, resolve_conv
from convlab.training.datamodule import MNISTDataModule
from convlab.training.module import LitClassifier
from convlab.training.network import ReferenceNet
from convlab.training.profiler import LeanPassThroughProfiler
from convlab.training.task import instantiate_all


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))


def test_conv_configs_are_the_registry():
    assert options("conv") == sorted(CONV_LAYERS)


@pytest.mark.parametrize("conv", options("conv"))
def test_conv_option_builds_its_class(conv: str, tmp_path: Path):
    cfg = compose_train([f"conv={conv}"], tmp_path)
    model = instantiate(cfg.model)
    assert isinstance(model, LitClassifier) and isinstance(model.net, ReferenceNet)
    assert type(model.net.conv1) is CONV_LAYERS[conv] and type(model.net.conv2) is CONV_LAYERS[conv]


def test_conv_name_takes_a_users_spec_and_its_parameter_names(tmp_path: Path):
    spec = f"{REPO / 'tests' / 'user_layers' / 'learner_conv.py'}:VanillaConv2d"
    overrides = [f"conv.name={spec}", "conv.weight=filter_weights", "conv.bias=filter_biases"]
    net = instantiate(compose_train(overrides, tmp_path).model).net
    assert type(net.conv1).__name__ == "AdaptedVanillaConv2d"
    assert net.conv1.weight is net.conv1.get_parameter("layer.filter_weights")  # the user's own tensor
    assert net.conv1.weight.shape == (10, 1, 5, 5) and net.conv2.bias.shape == (20,)
    with pytest.raises(InstantiationException) as raised:  # Hydra's wrapper around the resolver's error
        instantiate(compose_train([f"conv.name={spec}", "conv.weight=nope"], tmp_path).model)
    assert isinstance(raised.value.__cause__, SpecError) and "no parameter named 'nope'" in str(raised.value)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_are_multiruns_over_conv_name(experiment: str):
    text = yaml.safe_load((CONFIGS / "experiment" / f"{experiment}.yaml").read_text())
    assert text["hydra"]["mode"] == "MULTIRUN"
    assert "conv.name" in text["hydra"]["sweeper"]["params"]


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_sweep_layers_that_resolve_from_the_project_root(
    experiment: str, monkeypatch: pytest.MonkeyPatch
):
    """Each conv.name an experiment sweeps is a registered name or a spec whose file is where it says."""
    monkeypatch.chdir(REPO)  # the experiments are run from the project's root, as documented
    text = yaml.safe_load((CONFIGS / "experiment" / f"{experiment}.yaml").read_text())
    names = [name.strip() for name in text["hydra"]["sweeper"]["params"]["conv.name"].split(",")]
    assert names and all(resolve_conv(name) for name in names)


@pytest.mark.parametrize("data", options("data"))
def test_data_option(data: str, tmp_path: Path):
    cfg = compose_train([f"data={data}", "data.train_subset=100"], tmp_path)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, MNISTDataModule)
    assert (datamodule.name, datamodule.train_subset, datamodule.batch_size) == (data, 100, 64)


@pytest.mark.parametrize("probe", options("probe"))
def test_probe_option_reaches_the_model(probe: str, tmp_path: Path):
    model = instantiate(compose_train([f"probe={probe}"], tmp_path).model)
    assert model.probe == probe
    assert all(p.requires_grad for p in model.net.parameters()) == (probe == "none")


@pytest.mark.parametrize("optimizer", options("model/optimizer"))
def test_optimizer_option(optimizer: str, tmp_path: Path):
    cfg = compose_train([f"model/optimizer={optimizer}", "model.net.conv_init=uniform01"], tmp_path)
    model = instantiate(cfg.model)
    assert type(model.configure_optimizers()).__name__.lower() == optimizer
    assert model.net.conv_init == "uniform01"


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_option(logger: str, tmp_path: Path):
    loggers = instantiate_all(compose_train([f"logger={logger}"], tmp_path).logger)
    assert loggers and all(isinstance(each, L.pytorch.loggers.Logger) for each in loggers)
    assert all(Path(each.log_dir).is_relative_to(tmp_path) for each in loggers)


def test_trainer_and_callbacks(tmp_path: Path):
    cfg = compose_train(["trainer.max_epochs=3", "callbacks.conv_monitor=null"], tmp_path)
    callbacks = instantiate_all(cfg.callbacks)
    assert [type(c).__name__ for c in callbacks] == [
        "ModelCheckpoint",
        "RunningLossProgressBar",
        "FilterImages",
    ]
    assert callbacks[0].dirpath == str(tmp_path / "checkpoints")
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert isinstance(trainer, L.Trainer) and trainer.max_epochs == 3
    assert len(instantiate_all(compose_train([], tmp_path).callbacks)) == 4


def test_trainer_profiles_nothing_by_default_and_what_the_command_line_names(tmp_path: Path):
    default = instantiate(compose_train([], tmp_path).trainer, logger=False)
    assert type(default.profiler) is LeanPassThroughProfiler
    simple = instantiate(compose_train(["trainer.profiler=simple"], tmp_path).trainer, logger=False)
    assert type(simple.profiler) is SimpleProfiler


def test_defaults_and_run_dirs(tmp_path: Path):
    cfg = compose_train([], tmp_path)
    assert (cfg.conv.name, cfg.data.name, cfg.probe.name, cfg.seed) == ("torch", "mnist", "none", 0)
    assert cfg.model.optimizer.lr == 0.01 and cfg.model.optimizer.momentum == 0.5
    hydra_cfg = (CONFIGS / "hydra" / "default.yaml").read_text()
    assert "${unique_dir:${paths.log_dir}/runs/${now:%Y-%m-%d}/${now:%H-%M-%S}}" in hydra_cfg
    assert "${unique_dir:${paths.log_dir}/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}}" in hydra_cfg


def test_bad_choice_lists_the_valid_ones():
    result = subprocess.run(
        [sys.executable, "train.py", "conv=nope"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Could not find 'conv/nope'" in result.stderr
    for name in CONV_LAYERS:
        assert f"\t{name}\n" in result.stderr
