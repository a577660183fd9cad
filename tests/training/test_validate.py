"""The config check before anything heavy: each bad value is one line naming the key, the value and what
is allowed (ConfigError, exit status 2 from train.py); good configs pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, compose_train

from convlab.training.errors import ConfigError
from convlab.training.probes import PROBES
from convlab.training.validate import PROBE_NAMES, check_conv, check_conv_file, validate

BAD = {
    "data.batch_size=0": "data.batch_size=0: must be an integer >= 1 (images per training step)",
    "data.batch_size=-3": "data.batch_size=-3: must be an integer >= 1",
    "data.batch_size=1.5": "data.batch_size=1.5: must be an integer >= 1",
    "data.eval_batch_size=0": "data.eval_batch_size=0: must be an integer >= 1",
    "model.optimizer.lr=-0.1": "model.optimizer.lr=-0.1: must be a number > 0 (the optimiser's learning",
    "model.optimizer.lr=0": "model.optimizer.lr=0: must be a number > 0",
    "model.optimizer.lr=nan": "model.optimizer.lr=nan: must be a number > 0",
    "model.optimizer.momentum=-1": "model.optimizer.momentum=-1: must be a number >= 0",
    "trainer.max_epochs=0": "trainer.max_epochs=0: must be an integer >= 1 (epochs to train",
    "trainer.max_epochs=-2": "trainer.max_epochs=-2: must be an integer >= 1",
    "data.train_subset=0": "data.train_subset=0: must be an integer in 1..55000 or null",
    "data.train_subset=55001": "data.train_subset=55001: must be an integer in 1..55000 or null",
    "data.val_subset=5001": "data.val_subset=5001: must be an integer in 1..5000 or null",
    "data.test_subset=10001": "data.test_subset=10001: must be an integer in 1..10000 or null",
    "data.val_size=0": "data.val_size=0: must be an integer in 1..59999",
    "data.num_workers=-1": "data.num_workers=-1: must be an integer >= 0",
    "threads=0": "threads=0: must be an integer >= 1 or null (torch CPU threads per process)",
    "seed=abc": "seed=abc: must be an integer",
    "probe.name=frozen": "probe.name=frozen: must be one of none, frozen_conv, frozen_fc",
    "data.name=cifar": "data.name=cifar: must be one of mnist, fashion_mnist",
    "conv.name=nope": "conv.name=nope: ",
    "conv.name=no_such_file.py:MyConv": "conv.name=no_such_file.py:MyConv: ",
}


@pytest.mark.parametrize("override", list(BAD))
def test_each_bad_value_is_one_line_naming_it(override: str, tmp_path: Path):
    cfg = compose_train([override], tmp_path)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(BAD[override])
    assert error.value.exit_code == 2


@pytest.mark.parametrize(
    "overrides",
    [[], ["trainer.max_epochs=-1"], ["trainer.max_epochs=0", "trainer.fast_dev_run=true"], ["threads=1"],
     ["data.train_subset=100", "data.val_subset=10", "data.test_subset=10"],
     ["probe=frozen_fc", "conv=unfold"]],
)  # fmt: skip
def test_good_configs_pass(overrides: list[str], tmp_path: Path):
    validate(compose_train(overrides, tmp_path))


@pytest.mark.parametrize("spec", ["my_cnv.py:VanillaConv2d", "/no/such/dir/layers.py:conv_forward_naive"])
def test_a_missing_file_is_said_before_torch_as_the_resolver_says_it(spec: str, tmp_path: Path):
    cfg = compose_train([f"conv.name={spec}"], tmp_path)
    with pytest.raises(ConfigError) as early:
        check_conv_file(cfg.conv)
    with pytest.raises(ConfigError) as late:
        check_conv(cfg.conv)
    assert str(early.value) == str(late.value)


def test_the_check_knows_every_probe():
    assert set(PROBE_NAMES) == set(PROBES)


def test_train_py_answers_a_bad_value_with_one_line_and_status_2():
    result = subprocess.run(
        [sys.executable, "train.py", "data.batch_size=0", "paths.log_dir=/nonexistent/never-created"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        == "error: data.batch_size=0: must be an integer >= 1 (images per training step)"
    )


def test_a_users_layer_with_a_wrong_parameter_name_is_one_line(tmp_path: Path):
    spec = f"{REPO / 'tests' / 'user_layers' / 'learner_conv.py'}:VanillaConv2d"
    validate(compose_train([f"conv.name={spec}", "conv.weight=filter_weights"], tmp_path))
    with pytest.raises(ConfigError) as error:
        validate(compose_train([f"conv.name={spec}", "conv.weight=nope"], tmp_path))
    assert str(error.value).startswith(f"conv.name={spec}: ") and "nope" in str(error.value)


def test_a_layer_error_wrapped_by_hydra_is_found_for_its_one_line():
    from hydra.errors import InstantiationException

    from convlab.conv import SpecError, UnsupportedFeature
    from convlab.training.task import cause_of_type

    try:
        try:
            raise UnsupportedFeature("dilation", "MyConv takes no dilation")
        except UnsupportedFeature as inner:
            raise InstantiationException("Error in call to target ...") from inner
    except InstantiationException as wrapped:
        found = cause_of_type(wrapped, (SpecError, UnsupportedFeature))
    assert isinstance(found, UnsupportedFeature) and str(found) == "MyConv takes no dilation"
    assert cause_of_type(ValueError("other"), (SpecError, UnsupportedFeature)) is None
