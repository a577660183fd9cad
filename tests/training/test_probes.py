"""Probes: what each one freezes, what reaches the optimiser, frozen check, drift, conv re-draw."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlab.conv import get_conv, resolve_conv
from convlab.conv.base import nn_conv2d_init_
from convlab.training.module import LitClassifier
from convlab.training.network import ReferenceNet
from convlab.training.probes import (
    PROBES,
    apply_probe,
    conv_drift,
    conv_layers,
    frozen_unchanged,
    redrawn_conv_copy,
    snapshot_parameters,
)

CONV_PARAMS = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}
FC_PARAMS = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
FROZEN = {"none": set(), "frozen_conv": CONV_PARAMS, "frozen_fc": FC_PARAMS}


def lit(probe: str, conv: str = "unfold", conv_init: str = "default") -> LitClassifier:
    torch.manual_seed(0)
    sgd = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.5)
    return LitClassifier(ReferenceNet(get_conv(conv), conv_init), sgd, probe=probe)


def train_steps(model: LitClassifier, steps: int = 5) -> None:
    """A few plain optimiser steps on random batches (images (8, 1, 28, 28), labels (8,))."""
    optimizer = model.configure_optimizers()
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        images = torch.randn(8, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (8,), generator=generator)
        optimizer.zero_grad()
        F.nll_loss(model(images), labels).backward()
        optimizer.step()


@pytest.mark.parametrize("probe", PROBES)
def test_probe_sets_requires_grad_and_optimizer_params(probe: str):
    model = lit(probe)
    frozen = {name for name, p in model.net.named_parameters() if not p.requires_grad}
    assert frozen == FROZEN[probe] == set(model.frozen)
    in_optimizer = {id(p) for group in model.configure_optimizers().param_groups for p in group["params"]}
    trainable = {id(p) for name, p in model.net.named_parameters() if name not in FROZEN[probe]}
    assert in_optimizer == trainable


@pytest.mark.parametrize("probe", PROBES)
def test_frozen_stay_bit_identical_and_drift(probe: str):
    model = lit(probe)
    train_steps(model)
    assert frozen_unchanged(model.net, model.initial_params) is (None if probe == "none" else True)
    drift = conv_drift(model.net, model.initial_params)
    assert set(drift) == {"conv1", "conv2"}
    if probe == "frozen_conv":
        assert drift == {"conv1": 0.0, "conv2": 0.0}
    else:
        assert min(drift.values()) > 0
    start = model.initial_params
    moved = {name for name, p in model.net.named_parameters() if not torch.equal(p, start[name])}
    assert moved == (CONV_PARAMS | FC_PARAMS) - FROZEN[probe]


def test_frozen_check_catches_a_changed_tensor():
    model = lit("frozen_conv")
    with torch.no_grad():
        model.net.conv2.bias[3] += 1e-6
    assert frozen_unchanged(model.net, model.initial_params) is False


def test_unknown_probe_lists_the_valid_ones():
    with pytest.raises(ValueError, match="frozen_conv"):
        apply_probe(ReferenceNet(nn.Conv2d), "frozen_everything")


def test_an_unregistered_conv_class_is_found_through_the_networks_slots():
    class MyConv2d(nn.Conv2d):  # registered nowhere
        pass

    net = ReferenceNet(MyConv2d)
    assert conv_layers(net) == {"conv1": net.conv1, "conv2": net.conv2}
    assert set(apply_probe(net, "frozen_conv")) == CONV_PARAMS


def test_a_network_without_named_conv_slots_is_one_clear_error():
    with pytest.raises(TypeError, match="conv_layers"):
        apply_probe(nn.Sequential(nn.Conv2d(1, 2, 3)), "frozen_conv")


def test_redrawing_one_slot_leaves_the_other_as_trained():
    model = lit("none")
    train_steps(model)
    trained = snapshot_parameters(model.net)
    only_conv1 = redrawn_conv_copy(model.net, seed=7, slots=["conv1"])
    changed = {name for name, p in only_conv1.named_parameters() if not torch.equal(p, trained[name])}
    assert changed == {"conv1.weight", "conv1.bias"}
    both = redrawn_conv_copy(model.net, seed=7)
    assert torch.equal(both.conv1.weight, only_conv1.conv1.weight)


@pytest.mark.parametrize("conv_init", ["default", "uniform01"])
def test_redrawn_copy(conv_init: str):
    model = lit("none", conv_init=conv_init)
    train_steps(model)
    net = model.net
    before = snapshot_parameters(net)
    rng_state = torch.get_rng_state()
    redrawn = redrawn_conv_copy(net, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert all(torch.equal(p, before[name]) for name, p in net.named_parameters())
    for name, p in redrawn.named_parameters():
        assert torch.equal(p, before[name]) == (name in FC_PARAMS), name
    again = redrawn_conv_copy(net, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(redrawn.parameters(), again.parameters(), strict=True))
    weight = redrawn.conv1.weight
    if conv_init == "uniform01":
        assert weight.min() >= 0 and weight.max() < 1
    else:
        bound = 1 / 5  # nn.Conv2d's U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 1 * 5 * 5
        assert weight.min() >= -bound and weight.max() <= bound and weight.min() < 0


def test_uniform01_init_is_positive_and_default_is_nn_conv2d():
    torch.manual_seed(0)
    positive = ReferenceNet(nn.Conv2d, "uniform01")
    assert all((c.weight >= 0).all() and (c.weight < 1).all() for c in (positive.conv1, positive.conv2))
    torch.manual_seed(0)
    reference = ReferenceNet(nn.Conv2d)
    torch.manual_seed(0)
    unfold = ReferenceNet(get_conv("unfold"))
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), unfold.parameters(), strict=True))
    with pytest.raises(ValueError, match="uniform01"):
        ReferenceNet(nn.Conv2d, "normal")


def test_nn_conv2d_init_redraws_a_users_layer_as_nn_conv2d_draws():
    learner = resolve_conv("tests/user_layers/learner_conv.py:VanillaConv2d")
    torch.manual_seed(0)
    own = ReferenceNet(learner)
    assert (own.conv1.weight >= 0).all()  # the learner's torch.rand init
    torch.manual_seed(0)
    redrawn = ReferenceNet(learner, "nn_conv2d")
    for conv, fan_in in ((redrawn.conv1, 25), (redrawn.conv2, 250)):
        bound = 1 / fan_in**0.5
        for p in (conv.weight, conv.bias):
            assert p.min() >= -bound and p.max() <= bound and p.min() < 0
    assert redrawn.conv1.weight is redrawn.conv1.layer.filter_weights  # the user's own Parameter, in place
    # The same calls as nn.Conv2d's reset_parameters: one seed, the same tensors.
    reference = nn.Conv2d(1, 10, 5)
    torch.manual_seed(1)
    reference.reset_parameters()
    torch.manual_seed(1)
    weight, bias = torch.empty(10, 1, 5, 5), torch.empty(10)
    nn_conv2d_init_(weight, bias)
    assert torch.equal(weight, reference.weight) and torch.equal(bias, reference.bias)
