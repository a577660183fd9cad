"""The raw MNIST / Fashion-MNIST files on disk: found in the data folder, copied from a mirror, or downloaded.

The raw files come, in this order, from what is already in `<root>/<Class>/raw/`, from a
mirror folder in torchvision's layout (`data.mirror=` or `$CONVLAB_DATA_MIRROR`; copied,
MD5-checked, never written to), or from torchvision's download. `load_tensors` decodes them
into one normalised float tensor; `convlab.training.datamodule` splits and batches it.

Every way the files can be wrong is one `DataError` naming the file, why and the fix: a data folder
that cannot be written, a mirror file that is not a valid gzip (when MD5 checking is off), an
extracted IDX file whose size disagrees with its header (a truncated copy; repaired from the mirror
when there is one), and a data folder that is the mirror itself (refused: nothing is written there).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import socket
import struct
import tempfile
import zlib
from pathlib import Path

from torch import Tensor
from torchvision.datasets import MNIST, FashionMNIST
from torchvision.datasets.utils import check_md5, extract_archive

from convlab.training.errors import DataError
from convlab.training.validate import refuse_root_in_mirror

log = logging.getLogger(__name__)

DATASETS: dict[str, type[MNIST]] = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
# Mean and std of the 60k training pixels scaled to [0, 1].
NORMALISATION: dict[str, tuple[float, float]] = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}
MIRROR_ENV = "CONVLAB_DATA_MIRROR"
# torchvision's download sets no timeout: without one a half-open network hangs the run.
DOWNLOAD_TIMEOUT_S = 20


class MissingDataError(DataError):
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


def idx_problem(path: Path) -> str | None:
    """Why `path` is not a whole uint8 IDX file (MNIST's format), or None.

    An IDX file is a 4-byte magic (0, 0, 0x08 for uint8, the number of dimensions), one big-endian
    uint32 per dimension, then the bytes of the array: its size follows from its header.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 3:
            return f"it is not an IDX file of bytes (it starts with {head.hex() or 'nothing'})"
        dims_bytes = file.read(4 * head[3])
    if len(dims_bytes) < 4 * head[3]:
        return f"it holds {size} bytes, fewer than its header needs"
    dims = struct.unpack(f">{head[3]}I", dims_bytes)
    expected = 4 + 4 * len(dims) + math.prod(dims)
    if size != expected:
        return (
            f"it holds {size} bytes where its header (shape {list(dims)}) needs {expected}: a truncated copy"
        )
    return None


def extract_gz(archive: Path, source: Path, folder: str) -> None:
    """Extract `archive` into `folder`; a damaged gzip is a DataError naming `source`, its origin."""
    try:
        extract_archive(archive, folder)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as error:
        raise DataError(
            f"{source} is corrupt: it is not a valid gzip file ({type(error).__name__}: {error}); "
            "copy it again from where it came from "
            "(data.verify_md5=true checks every file against torchvision's MD5)"
        ) from None


def copy_from_mirror(dataset: type[MNIST], root: Path, mirror: Path, verify_md5: bool = True) -> None:
    """Copy `<mirror>/<Class>/raw/*.gz` to `<root>/<Class>/raw/`, check torchvision's MD5, extract.

    The files are prepared in a staging folder of this process and renamed into place (atomic):
    parallel sweep jobs filling the same data folder never read a half-written file.
    Raises DataError when the data folder cannot be written or a mirror file is corrupt.
    """
    source = mirror / dataset.__name__ / "raw"
    missing = [filename for filename, _ in dataset.resources if not (source / filename).is_file()]
    if missing:
        raise MissingDataError(missing_data_message(dataset, root, f"the mirror {source} lacks {missing}"))
    raw = root / dataset.__name__ / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        staging_folder = tempfile.TemporaryDirectory(dir=raw, prefix=".staging-")
    except OSError as error:
        raise DataError(
            f"cannot write the {dataset.__name__} files into data.root={root}: {error.strerror or error} "
            f"({raw}); set data.root to a folder you can write, or put the extracted files "
            f"({', '.join(f.removesuffix('.gz') for f, _ in dataset.resources)}) into {raw} yourself"
        ) from None
    with staging_folder as staging:
        for filename, md5 in dataset.resources:
            staged = Path(staging) / filename
            shutil.copyfile(source / filename, staged)
            if verify_md5 and not check_md5(staged, md5):
                raise MissingDataError(f"{source / filename} is corrupt: its MD5 is not torchvision's {md5}")
            extract_gz(staged, source / filename, staging)
            extracted = Path(staging) / filename.removesuffix(".gz")
            problem = idx_problem(extracted)
            if problem is not None:
                raise DataError(f"{source / filename} is corrupt: once extracted, {problem}; copy it again")
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
    """Make `<root>/<Class>/raw/` hold the extracted IDX files torchvision reads, each whole.

    A truncated or damaged extracted file is replaced from the mirror when there is one, else it is a
    DataError naming the file. A `root` that is the mirror itself is refused (ConfigError).
    """
    refuse_root_in_mirror(root, mirror)
    raw = root / dataset.__name__ / "raw"
    extracted = [raw / filename.removesuffix(".gz") for filename, _ in dataset.resources]
    if all(path.is_file() for path in extracted):
        problems = {path: idx_problem(path) for path in extracted}
        broken = {path: problem for path, problem in problems.items() if problem is not None}
        if not broken:
            return
        path, problem = next(iter(broken.items()))
        if mirror is None:
            raise DataError(
                f"{path} is corrupt: {problem}; delete it and run again (the file is then copied from a "
                f"mirror, data.mirror=<folder> or {MIRROR_ENV}, or downloaded)"
            )
        log.warning("%s is corrupt (%s): copying it again from the mirror %s", path, problem, mirror)
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
