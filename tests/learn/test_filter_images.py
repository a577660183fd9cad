"""conv1's pictures from a tiny run on fake MNIST: filters.pt in the run folder, the same images in
TensorBoard, and the report's filters.png drawn from them."""

from pathlib import Path

import torch
from harness import compose_train, fake_data_overrides, write_fake_mnist
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convlab.learn.figures import read_filters, write_filters_figure
from convlab.training.task import run


def test_a_run_saves_filters_and_logs_them_to_tensorboard(tmp_path: Path):
    overrides = fake_data_overrides(write_fake_mnist(tmp_path / "mirror"), tmp_path / "data")
    run(compose_train([*overrides, "trainer.max_epochs=1", "logger=tensorboard"], tmp_path / "run"))

    saved = read_filters(tmp_path / "run")
    assert saved is not None and saved["layer"] == "conv1"
    assert saved["init"].shape == saved["trained"].shape == (10, 1, 5, 5)
    assert not torch.equal(saved["init"], saved["trained"])  # it trained
    assert saved["digit"].shape == (1, 28, 28) and 0 <= saved["label"] <= 9
    assert saved["activations"].shape == (10, 24, 24)

    (events_dir,) = {events.parent for events in (tmp_path / "run").rglob("events.out.tfevents*")}
    events = EventAccumulator(str(events_dir), size_guidance={"images": 0}).Reload()
    assert {"filters/conv1_init", "filters/conv1_trained", "activations/conv1_digit"} <= set(
        events.Tags()["images"]
    )

    figure = write_filters_figure({"torch (mnist)": [tmp_path / "run"]}, tmp_path / "filters.png")
    assert figure is not None and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_filters_figure({"torch (mnist)": [tmp_path / "mirror"]}, tmp_path / "none.png") is None
