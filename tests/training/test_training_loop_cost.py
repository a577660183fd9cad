"""The public-API savings in LitClassifier and the training configs (the no-op profiler, the CPU batch
left in place) change no result, and the bench's Lightning and plain loops do the same training."""

from __future__ import annotations

import torch

from convlab.bench.network import BATCH_SIZE, SGD, lightning_epoch, plain_epoch, synthetic_batches
from convlab.conv import CONV_LAYERS
from convlab.training.in_memory import InMemoryDataset, in_memory_loader
from convlab.training.module import LitClassifier
from convlab.training.network import ReferenceNet
from convlab.training.profiler import LeanPassThroughProfiler

CPU = torch.device("cpu")


def test_lean_profiler_enters_and_leaves_one_shared_context_for_any_action():
    profiler = LeanPassThroughProfiler()
    with profiler.profile("[LightningModule]LitClassifier.training_step") as entered:
        assert entered is None
    assert profiler.profile("run_training_batch") is profiler.profile("optimizer_step")


def test_a_cpu_batch_is_handed_back_as_it_is_and_other_devices_get_lightnings_move():
    model = LitClassifier(ReferenceNet(CONV_LAYERS["torch"]), optimizer=SGD)
    batch = (torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    assert model.transfer_batch_to_device(batch, CPU, 0) is batch
    moved = model.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert [tensor.device.type for tensor in moved] == ["meta", "meta"]


def test_the_bench_compares_loops_that_train_the_same_way():
    """Lightning's loop and the plain loop with sums, from the same weights, end on bit-identical weights:
    the bench's ratio is the cost of the loop, not of different work. (Dropout off: the two loops create
    their batch iterators, which draw a seed, at different moments around the epoch's reseeding.)"""
    images, labels = synthetic_batches(3, CPU)
    loader = in_memory_loader(InMemoryDataset(images, labels), BATCH_SIZE)
    torch.manual_seed(0)
    net = ReferenceNet(CONV_LAYERS["torch"])
    net.conv2_drop.p = net.fc1_drop.p = 0.0
    start = {name: value.clone() for name, value in net.state_dict().items()}
    lightning_epoch(LitClassifier(net, optimizer=SGD), loader, CPU)
    after_lightning = {name: value.clone() for name, value in net.state_dict().items()}
    net.load_state_dict(start)
    plain_epoch(net, loader, CPU, keep_sums=True)
    for name, value in net.state_dict().items():
        assert not torch.equal(value, start[name]), f"{name} did not train"
        assert torch.equal(value, after_lightning[name]), name
