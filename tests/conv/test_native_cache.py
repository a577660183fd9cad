"""native's kernel cache: nothing unverified is loaded, a bad file is built anew, errors say what to do."""

from __future__ import annotations

import ctypes
import subprocess

import pytest
import torch

import convlab.conv.native.build as native_build


@pytest.fixture
def cache(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONVLAB_CACHE", str(tmp_path))
    return tmp_path


def loads_as(path, dtype: torch.dtype) -> None:
    """The library at `path` loads and says it is the kernel for `dtype` built from this source."""
    lib = ctypes.CDLL(str(path))
    lib.native_abi.restype = ctypes.c_char_p
    assert lib.native_abi().decode().startswith(f"convlab native {native_build.C_TYPES[dtype]} ")


def corrupt(path, how: str, cache) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:4096])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"not a shared library\n" * 100)
    else:  # the float32 library under the float64 library's name
        path.write_bytes(native_build.build(torch.float32).read_bytes())


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "other dtype"])
def test_a_bad_library_in_the_cache_is_built_anew(cache, how: str) -> None:
    good = native_build.build(torch.float64)
    original = good.read_bytes()
    corrupt(good, how, cache)
    rebuilt = native_build.build(torch.float64)
    assert rebuilt.read_bytes() != b"" and native_build.checksum(rebuilt, "") != ""
    assert rebuilt.name.startswith("native_kernels_double_")
    assert len(original) > 0
    loads_as(rebuilt, torch.float64)


def test_the_checksum_is_in_the_name(cache) -> None:
    path = native_build.build(torch.float64)
    stem, digest = path.stem.rsplit("_", 1)
    key = stem.split("_")[-1]
    assert digest == native_build.checksum(path, native_build.abi("double", key))


def test_a_file_that_fails_its_checksum_is_never_loaded(cache, monkeypatch: pytest.MonkeyPatch) -> None:
    good = native_build.build(torch.float64)
    good.write_bytes(b"\0" * 100)
    loaded = []
    monkeypatch.setattr(native_build.ctypes, "CDLL", lambda path: loaded.append(path))
    monkeypatch.setattr(native_build, "_run_compiler", lambda *a: subprocess.CompletedProcess(a, 1, "", "no"))
    native_build.library.cache_clear()
    try:
        with pytest.raises(native_build.NativeBuildError):
            native_build.library(torch.float64)
    finally:
        native_build.library.cache_clear()
    assert loaded == [] and not good.exists()


def test_an_unwritable_cache_names_convlab_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("CONVLAB_CACHE", str(blocker / "cache"))  # a folder inside a file cannot be made
    with pytest.raises(native_build.NativeBuildError, match=r"cannot be written.*CONVLAB_CACHE"):
        native_build.build(torch.float64)


def test_a_compiler_that_hangs_is_stopped(cache, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = tmp_path / "slowcc"
    slow.write_text('#!/bin/sh\n[ "$1" = --version ] && echo slowcc 1 && exit 0\nsleep 30\n')
    slow.chmod(0o755)
    monkeypatch.setenv("CC", str(slow))
    monkeypatch.setattr(native_build, "COMPILE_TIMEOUT_S", 1)
    with pytest.raises(native_build.NativeBuildError, match=r"took longer than 1 s.*conv=fast"):
        native_build.build(torch.float64)
