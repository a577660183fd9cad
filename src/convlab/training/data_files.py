"""The raw MNIST / Fashion-MNIST files on disk: found in the data folder, copied from a mirror, or downloaded.

The raw files come, in this order, from what is already in `<root>/<Class>/raw/`, from a
mirror folder in torchvision's layout (`data.mirror=` or `$CONVLAB_DATA_MIRROR`; copied,
MD5-checked, never written to), or from torchvision's download. `load_tensors` decodes them
into one normalised float tensor; `convlab.training.datamodule` splits and batches it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from torch import Tensor
from torchvision.datasets import MNIST, FashionMNIST
from torchvision.datasets.utils import check_md5, extract_archive

DATASETS: dict[str, type[MNIST]] = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
# Mean and std of the 60k training pixels scaled to [0, 1].
NORMALISATION: dict[str, tuple[float, float]] = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}
MIRROR_ENV = "CONVLAB_DATA_MIRROR"
# torchvision's download sets no timeout: without one a half-open network hangs the run.
DOWNLOAD_TIMEOUT_S = 20


class MissingDataError(RuntimeError):
    """The raw files are neither in the data folder, nor in a mirror, nor downloadable."""


def missing_data_message(dataset: type[MNIST], root: Path, reason: str) -> str:
    name = dataset.__name__
    files = "  ".join(filename for filename, _ in dataset.resources)
    return (
        f"{name} data not found in {root / name / 'raw'}: {reason}\n"
        f"It needs the four files\n    {files}\n"
        "Provide them in one of two ways:\n"
        f"  offline: put them in <folder>/{name}/raw/ and pass data.mirror=<folder>\n"
        f"           or set {MIRROR_ENV}=<folder> (e.g. {MIRROR_ENV}=../shared/data)\n"
        f"  online:  run once with internet access: torchvision downloads them into {root}"
    )


def copy_from_mirror(dataset: type[MNIST], root: Path, mirror: Path, verify_md5: bool = True) -> None:
    """Copy `<mirror>/<Class>/raw/*.gz` to `<root>/<Class>/raw/`, check torchvision's MD5, extract.

    The files are prepared in a staging folder of this process and renamed into place (atomic):
    parallel sweep jobs filling the same data folder never read a half-written file.
    """
    source = mirror / dataset.__name__ / "raw"
    missing = [filename for filename, _ in dataset.resources if not (source / filename).is_file()]
    if missing:
        raise MissingDataError(missing_data_message(dataset, root, f"the mirror {source} lacks {missing}"))
    raw = root / dataset.__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=raw, prefix=".staging-") as staging:
        for filename, md5 in dataset.resources:
            staged = Path(staging) / filename
            shutil.copyfile(source / filename, staged)
            if verify_md5 and not check_md5(staged, md5):
                raise MissingDataError(f"{source / filename} is corrupt: its MD5 is not torchvision's {md5}")
            extract_archive(staged, staging)
        for staged in Path(staging).iterdir():
            os.replace(staged, raw / staged.name)


def download(dataset: type[MNIST], root: Path) -> None:
    """torchvision's download (MD5-checked) with a socket timeout; one clear error when it fails."""
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        dataset(str(root), train=True, download=True)
    except (RuntimeError, OSError) as error:
        # torchvision's message ends with the network's own words, e.g. "Name or service not known".
        cause = str(error).strip().splitlines()[-1].strip()
        reason = f"no mirror given, and the download failed: {cause}"
        raise MissingDataError(missing_data_message(dataset, root, reason)) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)


def ensure_raw_files(dataset: type[MNIST], root: Path, mirror: Path | None, verify_md5: bool = True) -> None:
    """Make `<root>/<Class>/raw/` hold the extracted IDX files torchvision reads."""
    raw = root / dataset.__name__ / "raw"
    if all((raw / filename.removesuffix(".gz")).is_file() for filename, _ in dataset.resources):
        return
    if mirror is not None:
        copy_from_mirror(dataset, root, mirror, verify_md5)
    else:
        download(dataset, root)


def load_tensors(
    dataset: type[MNIST], root: Path, train: bool, mean: float, std: float
) -> tuple[Tensor, Tensor]:
    """-> images (N, 1, 28, 28) float32 normalised with (mean, std), labels (N,) int64."""
    split = dataset(str(root), train=train)
    images = split.data.float().div(255).sub(mean).div(std).unsqueeze(1)
    return images, split.targets.long()
