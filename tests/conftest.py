"""Shared pytest set-up: hypothesis profiles, the registered layers, Hydra's global state, fake MNIST."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from torch import nn

from convlab.conv import CONV_LAYERS

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n N` the workers share the cores: one torch thread each (and in the processes they
    # start), or OpenMP threads spin against each other. A test that needs more sets them itself.
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

# --- conv implementations and verify ---

# "ci", the default, replays the same examples on every run, with no deadline: the vanilla
# layer is slow and timings on shared cores are noisy. HYPOTHESIS_PROFILE=dev draws new ones.
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=list(CONV_LAYERS))
def conv_name(request: pytest.FixtureRequest) -> str:
    """Every registered implementation's name, one test each."""
    return request.param


@pytest.fixture
def conv_cls(conv_name: str) -> type[nn.Module]:
    return CONV_LAYERS[conv_name]


# --- the training harness: Hydra's global state, fake MNIST ---


@pytest.fixture(autouse=True)
def clear_hydra_global_state():
    """Every test starts and ends without a Hydra config in the process: compose_train sets one."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


@pytest.fixture
def fake_mirror(tmp_path):
    """A mirror folder of tiny fake MNIST files (120 training, 40 test images; tests/harness.py)."""
    from harness import write_fake_mnist

    return write_fake_mnist(tmp_path / "mirror", n_train=120, n_test=40)


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> list[str]:
    """Overrides that train on 100 fake images (7 batches of 16), validate on 20, test on 40."""
    from harness import fake_data_overrides, write_fake_mnist

    base = tmp_path_factory.mktemp("fake_mnist")
    return fake_data_overrides(write_fake_mnist(base / "mirror"), base / "data")
