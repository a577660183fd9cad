"""MNISTDataModule: mirror copy and MD5 check, the missing-data error, split, subsets, normalisation;
each way the data files can be wrong is one clear error (or repaired from the mirror)."""

from __future__ import annotations

import errno
import gzip
import logging
from pathlib import Path

import pytest
import torch
from harness import real_mirror, write_fake_mnist
from torchvision.datasets import MNIST

from convlab.training.data_files import DATASETS, MIRROR_ENV, NORMALISATION, MissingDataError
from convlab.training.datamodule import EpochShuffleSampler, MNISTDataModule, stratified_subset
from convlab.training.errors import ConfigError, DataError
from convlab.training.validate import DATA_NAMES

RAW_FILES = [filename for filename, _ in MNIST.resources]
# fake_mirror (conftest.py): 120 training and 40 test images in <tmp>/mirror/MNIST/raw/*.gz


def fake_module(mirror: Path, root: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(root=str(root), mirror=str(mirror), verify_md5=False, val_size=20, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def raw_pixels(mirror: Path, prefix: str, name: str = "MNIST") -> torch.Tensor:
    """(N, 28, 28) uint8 straight from the gzipped IDX file (16-byte header)."""
    with gzip.open(mirror / name / "raw" / f"{prefix}-images-idx3-ubyte.gz") as f:
        return torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).view(-1, 28, 28)


def test_split_shapes_and_normalisation(fake_mirror: Path, tmp_path: Path):
    dm = fake_module(fake_mirror, tmp_path / "data")
    train_x, train_y = dm.train_set.tensors
    assert train_x.shape == (100, 1, 28, 28) and train_x.dtype == torch.float32
    assert train_y.shape == (100,) and train_y.dtype == torch.int64
    assert len(dm.val_set) == 20 and len(dm.test_set) == 40
    mean, std = NORMALISATION["mnist"]
    expected_test = (raw_pixels(fake_mirror, "t10k").float() / 255 - mean) / std
    torch.testing.assert_close(dm.test_set.tensors[0][:, 0], expected_test)
    # train + validation are the 120 training images, each exactly once.
    seen = torch.cat([train_x, dm.val_set.tensors[0]])[:, 0].sum(dim=(1, 2))
    expected = ((raw_pixels(fake_mirror, "train").float() / 255 - mean) / std).sum(dim=(1, 2))
    assert sorted(seen.tolist()) == pytest.approx(sorted(expected.tolist()))


def test_mirror_is_copied_and_left_untouched(fake_mirror: Path, tmp_path: Path):
    before = {p: p.read_bytes() for p in fake_mirror.rglob("*") if p.is_file()}
    fake_module(fake_mirror, tmp_path / "data")
    after = {p: p.read_bytes() for p in fake_mirror.rglob("*") if p.is_file()}
    assert after == before
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert {p.name for p in raw.iterdir()} >= set(RAW_FILES) | {f.removesuffix(".gz") for f in RAW_FILES}


def test_mirror_from_environment(fake_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(MIRROR_ENV, str(fake_mirror))
    dm = MNISTDataModule(root=str(tmp_path / "data"), verify_md5=False, val_size=20)
    dm.setup()
    assert len(dm.test_set) == 40


def test_md5_check_rejects_a_wrong_file(fake_mirror: Path, tmp_path: Path):
    dm = MNISTDataModule(root=str(tmp_path / "data"), mirror=str(fake_mirror), val_size=20)
    with pytest.raises(MissingDataError, match="MD5"):
        dm.prepare_data()
    assert not (tmp_path / "data" / "MNIST" / "raw" / RAW_FILES[0]).exists()


def assert_names_files_and_both_ways(message: str) -> None:
    for filename in RAW_FILES:
        assert filename in message
    assert "data.mirror=" in message and MIRROR_ENV in message and "internet" in message


def test_incomplete_mirror_is_one_clear_error(fake_mirror: Path, tmp_path: Path):
    (fake_mirror / "MNIST" / "raw" / RAW_FILES[2]).unlink()
    dm = MNISTDataModule(root=str(tmp_path / "data"), mirror=str(fake_mirror), verify_md5=False)
    with pytest.raises(MissingDataError) as error:
        dm.prepare_data()
    assert RAW_FILES[2] in str(error.value).splitlines()[0]
    assert_names_files_and_both_ways(str(error.value))


def test_no_data_and_no_network_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    # Port 9 on localhost refuses at once: a download attempt that fails like an offline machine.
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    dm = MNISTDataModule(root=str(tmp_path / "data"))
    with pytest.raises(MissingDataError) as error:
        dm.prepare_data()
    assert "download failed" in str(error.value)
    assert_names_files_and_both_ways(str(error.value))


def test_subsets_are_balanced_fixed_and_within_their_split(fake_mirror: Path, tmp_path: Path):
    full = fake_module(fake_mirror, tmp_path / "data")
    dm = fake_module(fake_mirror, tmp_path / "data", train_subset=50, val_subset=10, test_subset=20)
    again = fake_module(fake_mirror, tmp_path / "data", train_subset=50, val_subset=10, test_subset=20)
    for part, size in (("train_set", 50), ("val_set", 10), ("test_set", 20)):
        images, labels = getattr(dm, part).tensors
        assert len(labels) == size
        assert torch.equal(images, getattr(again, part).tensors[0])
        whole = getattr(full, part).tensors[0]
        assert all((whole == image).all(dim=(1, 2, 3)).any() for image in images)
    assert torch.bincount(dm.train_set.tensors[1], minlength=10).tolist() == [5] * 10
    assert torch.bincount(dm.test_set.tensors[1], minlength=10).tolist() == [2] * 10


def test_stratified_subset_balances_skewed_labels():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    picked = stratified_subset(labels, 30, torch.Generator().manual_seed(0))
    assert len(set(picked.tolist())) == 30
    assert torch.bincount(labels[picked]).tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="subset size"):
        stratified_subset(labels, 101, torch.Generator())


def test_shuffle_depends_on_seed_and_epoch_only():
    sampler = EpochShuffleSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(EpochShuffleSampler(50, seed=4)) != first


def test_loaders_leave_the_global_rng_alone(fake_mirror: Path, tmp_path: Path):
    dm = fake_module(fake_mirror, tmp_path / "data")
    state = torch.get_rng_state()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        next(iter(loader))
    assert torch.equal(torch.get_rng_state(), state)


def test_fashion_mnist_uses_its_own_files_and_statistics(tmp_path: Path):
    mirror = write_fake_mnist(tmp_path / "mirror", n_train=60, n_test=20, name="FashionMNIST")
    dm = MNISTDataModule(
        "fashion_mnist", root=str(tmp_path / "data"), mirror=str(mirror), verify_md5=False, val_size=10
    )
    dm.setup()
    mean, std = NORMALISATION["fashion_mnist"]
    expected = (raw_pixels(mirror, "t10k", "FashionMNIST").float() / 255 - mean) / std
    torch.testing.assert_close(dm.test_set.tensors[0][:, 0], expected)


@pytest.mark.skipif(real_mirror() is None, reason="no MNIST mirror here")
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_mirror(name: str, tmp_path: Path):
    dm = MNISTDataModule(name, root=str(tmp_path / "data"), mirror=str(real_mirror()))
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55000, 5000, 10000)
    images = torch.cat([dm.train_set.tensors[0], dm.val_set.tensors[0]])
    assert images.mean().item() == pytest.approx(0, abs=1e-3)
    assert images.std().item() == pytest.approx(1, abs=1e-3)
    assert torch.bincount(dm.test_set.tensors[1]).min().item() > 800


def test_the_config_check_knows_every_dataset():
    assert set(DATA_NAMES) == set(DATASETS)


def test_read_only_data_folder_is_one_clear_error(
    fake_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = tmp_path / "readonly"
    root.mkdir()
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args, **kwargs):  # as on a read-only mount (chmod does not stop root)
        if self.is_relative_to(root):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    dm = MNISTDataModule(root=str(root), mirror=str(fake_mirror), verify_md5=False)
    with pytest.raises(DataError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert f"data.root={root}" in message and "Read-only file system" in message
    assert "set data.root to a folder you can write" in message and "train-images-idx3-ubyte" in message


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_truncated_extracted_file_is_repaired_from_the_mirror(
    fake_mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    whole = fake_module(fake_mirror, tmp_path / "data")
    extracted = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    truncate(extracted, 1000)
    with caplog.at_level(logging.WARNING, logger="convlab.training.data_files"):
        again = fake_module(fake_mirror, tmp_path / "data")
    assert f"{extracted} is corrupt" in caplog.text and "truncated" in caplog.text
    assert torch.equal(again.train_set.tensors[0], whole.train_set.tensors[0])


def test_truncated_extracted_file_without_a_mirror_names_the_file_and_the_fix(
    fake_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake_module(fake_mirror, tmp_path / "data")
    extracted = tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    truncate(extracted, 20)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    dm = MNISTDataModule(root=str(tmp_path / "data"), verify_md5=False, val_size=20)
    with pytest.raises(DataError) as error:
        dm.setup()
    message = str(error.value)
    assert message.startswith(
        f"{extracted} is corrupt: it holds 20 bytes where its header (shape [40]) needs 48"
    )
    assert "delete it" in message


def test_gzip_with_a_bad_crc_is_one_clear_error_when_md5_is_off(fake_mirror: Path, tmp_path: Path):
    archive = fake_mirror / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32 of the uncompressed bytes
    archive.write_bytes(bytes(data))
    dm = MNISTDataModule(root=str(tmp_path / "data"), mirror=str(fake_mirror), verify_md5=False)
    with pytest.raises(DataError) as error:
        dm.prepare_data()
    assert str(error.value).startswith(f"{archive} is corrupt: it is not a valid gzip file")
    assert "copy it again" in str(error.value)
    assert not (tmp_path / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()


@pytest.mark.parametrize("inside", [False, True])
def test_data_folder_in_the_mirror_is_refused_and_the_mirror_left_alone(fake_mirror: Path, inside: bool):
    before = sorted(p.relative_to(fake_mirror) for p in fake_mirror.rglob("*"))
    root = fake_mirror / "sub" if inside else fake_mirror
    dm = MNISTDataModule(root=str(root), mirror=str(fake_mirror), verify_md5=False)
    with pytest.raises(ConfigError, match=r"is the data mirror .* never writes into it.*data.root=data"):
        dm.prepare_data()
    assert sorted(p.relative_to(fake_mirror) for p in fake_mirror.rglob("*")) == before
