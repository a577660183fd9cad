"""Compiles `kernels.c` at first use and loads it with ctypes, once per element type.

The library is built for this machine (`-march=native`) and kept in a cache folder,
named by a hash of everything that shapes the binary (source, flags, compiler
version, CPU), so a later process loads it in milliseconds and an edit or another
CPU builds a new one. Several processes starting at once (a multirun, DDP) each
compile to a temporary name and move the result into place; the last move wins
and every copy is identical.

Nothing unverified is loaded: a library's file name ends in a checksum of its bytes (and
of the ABI string it was built with), checked before loading; a file that fails it
(truncated, empty, another element type's library under this name) is deleted and the
kernel compiled anew. Once loaded, the library's exported `native_abi()` must name this
source's build key and element type.

Cache folder: `$CONVLAB_CACHE`, else `$XDG_CACHE_HOME/convlab`, else `~/.cache/convlab`; where the
default cannot be made, a folder of this user's in the temporary directory. A folder that cannot be
written gives an error that says to set `CONVLAB_CACHE`.
Compiler: `$CC`, else the first of cc, gcc, clang on the PATH; stopped after COMPILE_TIMEOUT_S.
`$CONVLAB_NATIVE_NO_AVX512=1` builds for 32-byte vectors even on a CPU with AVX-512 (and tells
the compiler not to use it): what a CPU without it gets, for tests and `convlab.bench --no-avx512`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.c")
NO_AVX512_ENV = "CONVLAB_NATIVE_NO_AVX512"
C_TYPES = {torch.float32: "float", torch.float64: "double"}
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-std=gnu11"]
# Seconds a compiler call may take (the kernel compiles in about one).
COMPILE_TIMEOUT_S = 120


class NativeBuildError(RuntimeError):
    """The kernel could not be compiled or loaded; the message says what to do."""


class Shape(ctypes.Structure):
    """The `Shape` struct of kernels.c: sizes of a convolution, the input's padded and its own."""

    _fields_ = [
        (name, ctypes.c_long)
        for name in ("n", "c_in", "h", "w", "c_out", "kh", "kw")
        + ("sh", "sw", "dh", "dw", "groups", "h_out", "w_out", "h_in", "w_in", "top", "left")
    ]


def cache_dir() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    if "CONVLAB_CACHE" in os.environ:
        return Path(os.environ["CONVLAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "convlab"


def find_compiler() -> str:
    """$CC or the first C compiler on the PATH; NativeBuildError if there is none."""
    candidates = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    for name in candidates:
        if path := shutil.which(name):
            return path
    raise NativeBuildError(
        f"conv=native compiles a small C kernel at first use and found no C compiler (tried {candidates}). "
        "Install one (Debian/Ubuntu: apt install gcc; macOS: xcode-select --install) or set CC, "
        "or use conv=fast, the fastest layer written in PyTorch alone."
    )


def cpu_description() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else the platform."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.startswith(wanted)}))


def has_avx512(cpu: str) -> bool:
    return "avx512f" in cpu.split()


def vector_bytes(cpu: str) -> int:
    """Width of the kernels' vectors: one AVX-512 register where the CPU has them (and
    $CONVLAB_NATIVE_NO_AVX512 is not 1), else 32 bytes."""
    return 64 if has_avx512(cpu) and os.environ.get(NO_AVX512_ENV) != "1" else 32


def compile_flags(c_type: str, cpu: str, openmp: bool) -> list[str]:
    """The compiler's options for one element type (float, double) on this CPU."""
    openmp_flags = ["-fopenmp"] if openmp else []
    # Without AVX-512's 32 vector registers: -march=native would otherwise still use 16 more.
    narrowed = ["-mno-avx512f"] if has_avx512(cpu) and vector_bytes(cpu) == 32 else []
    return [*FLAGS, *narrowed, f"-DREAL={c_type}", f"-DVECTOR_BYTES={vector_bytes(cpu)}", *openmp_flags]


def _run_compiler(compiler: str, flags: list[str], target: Path) -> subprocess.CompletedProcess:
    """Compiles SOURCE into `target`; NativeBuildError if the compiler runs past COMPILE_TIMEOUT_S."""
    try:
        return subprocess.run(
            [compiler, *flags, str(SOURCE), "-o", str(target)],
            capture_output=True,
            text=True,
            check=False,
            timeout=COMPILE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise NativeBuildError(
            f"compiling {SOURCE.name} with {compiler} took longer than {COMPILE_TIMEOUT_S} s and was "
            "stopped. Set CC to another compiler, or use conv=fast (the fastest layer in PyTorch alone)."
        ) from None


def abi(c_type: str, key: str) -> str:
    """What a library built from `key` for `c_type` says it is (its exported `native_abi()`)."""
    return f"convlab native {c_type} {key}"


def checksum(path: Path, expected_abi: str) -> str:
    """The digest a verified library carries in its file name: sha256 of its ABI string and its bytes."""
    digest = hashlib.sha256(expected_abi.encode())
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def verified(folder: Path, stem: str, expected_abi: str) -> Path | None:
    """A library in `folder` named `<stem>_<digest>.so` whose bytes give that digest, or None.

    Anything else under that name (truncated, empty, garbage, another element type's library) is
    never loaded: it is deleted, so that it is built anew.
    """
    for path in sorted(folder.glob(f"{stem}_*.so")):
        try:
            if path.name == f"{stem}_{checksum(path, expected_abi)}.so":
                return path
            path.unlink()
        except OSError:  # deleted by another process meanwhile, or a folder we may only read
            continue
    return None


def _writable_cache() -> Path:
    """cache_dir(), made if need be; a default location that cannot be made gives way to a folder of this
    user's in the temporary directory. NativeBuildError naming CONVLAB_CACHE where neither can be made."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError as error:
        if "CONVLAB_CACHE" in os.environ:
            raise _unwritable(folder, error) from None
    folder = Path(tempfile.gettempdir()) / f"convlab-cache-{os.getuid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(folder, error) from None
    return folder


def _unwritable(folder: Path, error: OSError) -> NativeBuildError:
    return NativeBuildError(
        f"conv=native keeps its compiled kernel in {folder}, which cannot be written "
        f"({error.strerror or error}). "
        "Set CONVLAB_CACHE to a folder you can write (export CONVLAB_CACHE=/path/to/folder), "
        "or fix that folder's permissions."
    )


def build(dtype: torch.dtype) -> Path:
    """The compiled library for `dtype` (float32 or float64), built now unless already in the cache.

    With OpenMP when the compiler has it (the threads are then torch's own: the library
    links the libgomp that torch has loaded), on one thread otherwise. Only a library whose
    bytes match the checksum in its name is returned (`verified`).
    """
    c_type = C_TYPES[dtype]
    compiler, cpu = find_compiler(), cpu_description()
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=False, timeout=COMPILE_TIMEOUT_S
        ).stdout
    except subprocess.TimeoutExpired:
        raise NativeBuildError(f"{compiler} --version did not answer within {COMPILE_TIMEOUT_S} s") from None
    for openmp in (True, False):
        flags = compile_flags(c_type, cpu, openmp)
        key = hashlib.sha256("\0".join([SOURCE.read_text(), *flags, version, cpu]).encode()).hexdigest()[:16]
        stem, expected_abi = f"native_kernels_{c_type}_{key}", abi(c_type, key)
        if cache_dir().is_dir() and (found := verified(cache_dir(), stem, expected_abi)):
            return found
        folder = _writable_cache()
        if folder != cache_dir() and (found := verified(folder, stem, expected_abi)):
            return found
        try:
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                partial = Path(scratch) / f"{stem}.so"
                result = _run_compiler(compiler, [*flags, f'-DNATIVE_ABI="{expected_abi}"'], partial)
                if result.returncode == 0:
                    target = folder / f"{stem}_{checksum(partial, expected_abi)}.so"
                    os.replace(partial, target)
                    return target
        except PermissionError as error:
            raise _unwritable(folder, error) from None
    raise NativeBuildError(
        f"compiling {SOURCE.name} failed ({compiler} {' '.join(flags)}):\n{result.stderr.strip()}\n"
        "Use conv=fast, the fastest layer written in PyTorch alone, meanwhile."
    )


@functools.cache
def library(dtype: torch.dtype) -> ctypes.CDLL:
    """The loaded kernels for `dtype`, with their argument types declared, after checking that the
    library says it is the one built from this source for this element type."""
    path = build(dtype)
    lib = ctypes.CDLL(str(path))
    expected = abi(C_TYPES[dtype], path.stem.split("_")[-2])
    lib.native_abi.argtypes, lib.native_abi.restype = [], ctypes.c_char_p
    if lib.native_abi().decode() != expected:
        raise NativeBuildError(
            f"{path} says it is {lib.native_abi().decode()!r}, not {expected!r}. Delete it (or the whole "
            f"folder {path.parent}) and run again: the kernel is then compiled anew."
        )
    pointer, shape = ctypes.c_void_p, ctypes.POINTER(Shape)
    lib.native_threads.argtypes, lib.native_threads.restype = [ctypes.c_int, ctypes.c_long], ctypes.c_int
    lib.native_workspace.argtypes, lib.native_workspace.restype = [shape, ctypes.c_int], ctypes.c_long
    lib.native_forward.argtypes = [shape, pointer, pointer, pointer, pointer, pointer, ctypes.c_int]
    lib.native_backward.argtypes = [shape, pointer, pointer, pointer, pointer, pointer, pointer, ctypes.c_int]
    lib.native_forward.restype = lib.native_backward.restype = None
    return lib
