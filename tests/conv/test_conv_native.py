"""What `native` does that the others do not: a C kernel built at first use, and its paths by shape."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F

import convlab.conv.native.build as native_build
from convlab.conv.native import NativeConv2d


def gradients_match_f_conv2d(layer: NativeConv2d, x: torch.Tensor, rtol: float, atol: float) -> None:
    """Forward and every gradient of `layer` on x against F.conv2d with the same parameters."""
    x = x.clone().requires_grad_()
    out = layer(x)
    grad_out = torch.randn_like(out)
    actual = torch.autograd.grad(out, [x, layer.weight, layer.bias], grad_out)
    reference = x.detach().clone().requires_grad_()
    expected_out = F.conv2d(
        reference, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups
    )
    expected = torch.autograd.grad(expected_out, [reference, layer.weight, layer.bias], grad_out)
    torch.testing.assert_close(out, expected_out, rtol=rtol, atol=atol)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


# Each shape takes a different way through kernels.c (float64: 8 numbers a vector).
PATHS = {
    # stride 1, full-width columns; dW through dout^T (C_out/G = 16, whole vectors)
    "full width, dW by output": dict(in_channels=4, out_channels=32, kernel_size=3, groups=2, size=9),
    # long output rows (P >= 8 vectors), C_out/G = 3: dW as dot products of rows (gemm_t)
    "dW as dot products": dict(in_channels=2, out_channels=3, kernel_size=5, size=20),
    # short rows, C_out/G = 5: dW through the transposed columns
    "dW through transposed columns": dict(in_channels=3, out_channels=5, kernel_size=3, size=7),
    # transposed columns filling their area (32 pixels x 16): a run's vector-long store at the very end
    "transposed columns, full area": dict(
        in_channels=1, out_channels=3, kernel_size=3, stride=(2, 1), size=9
    ),
    # stride 2: compact columns, one output row at a time; dilation; rectangular kernel
    "strided, dilated": dict(
        in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), dilation=(1, 2), groups=2, size=11
    ),
    # depthwise: one weight row per group; forward and dx from the image's runs, no columns
    "depthwise": dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6, size=8),
    # depthwise with long rows: dW too reads the padded image in place (dot products of runs)
    "depthwise, long rows": dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, size=20),
    # two input channels per output channel, long rows, no padding: runs for the forward, columns for dW
    "one output per group": dict(in_channels=4, out_channels=2, kernel_size=3, groups=2, size=20),
    # wide rows relative to the output (W > 2 * W_out): compact columns at stride 1
    "stride 1, compact": dict(in_channels=2, out_channels=4, kernel_size=7, size=10),
    # zero padding, added per image in the kernels: full width on the padded copy
    "zero padded, full width": dict(in_channels=3, out_channels=16, kernel_size=3, padding=2, size=6),
    # 'same' with an even kernel pads unequally (top 1, bottom 2)
    "padded 'same', uneven": dict(in_channels=2, out_channels=5, kernel_size=(4, 2), padding="same", size=7),
    # padding with stride and groups: compact columns from the padded copy
    "padded, strided": dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=(1, 2), groups=2, size=9
    ),
}


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_kernel_path_matches_f_conv2d(path: str, dtype: torch.dtype) -> None:
    settings = dict(PATHS[path])
    size = settings.pop("size")
    torch.manual_seed(0)
    layer = NativeConv2d(**settings, dtype=dtype)
    x = torch.randn(3, layer.in_channels, size, size + 1, dtype=dtype)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    gradients_match_f_conv2d(layer, x, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
def test_inf_and_nan_reach_the_same_numbers_as_in_f_conv2d(path: str) -> None:
    """Full-width columns also hold numbers no output reads; an Inf there times a zero output
    gradient would be a NaN in dW where F.conv2d's is finite. Non-finite in the same places."""
    settings = dict(PATHS[path])
    size = settings.pop("size")
    torch.manual_seed(0)
    layer = NativeConv2d(**settings, dtype=torch.float64)
    x = torch.randn(3, layer.in_channels, size, size + 1, dtype=torch.float64)
    x[0, -1, size // 2, -1], x[1, 0, 1, 0] = float("inf"), float("nan")  # last and first columns
    x.requires_grad_()
    out = layer(x)
    grad_out = torch.randn_like(out)
    actual = (out, *torch.autograd.grad(out, [x, layer.weight], grad_out))
    settings = (layer.stride, layer.padding, layer.dilation, layer.groups)
    expected_out = F.conv2d(x, layer.weight, layer.bias, *settings)
    expected = (expected_out, *torch.autograd.grad(expected_out, [x, layer.weight], grad_out))
    assert not expected[0].isfinite().all() and not expected[2].isfinite().all()  # dx does not read x
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a.isfinite(), e.isfinite())
        torch.testing.assert_close(a[a.isfinite()], e[e.isfinite()], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("needed", ["dx only", "dW only"])
def test_padded_input_with_one_gradient(needed: str) -> None:
    """The kernels pad a copy for dW and crop dx out of a padded one: each on its own."""
    torch.manual_seed(0)
    layer = NativeConv2d(3, 8, 3, padding=1, dtype=torch.float64)
    reference = torch.nn.Conv2d(3, 8, 3, padding=1, dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=needed == "dx only")
    for conv in (layer, reference):
        conv.weight.requires_grad_(needed == "dW only")
        conv.bias.requires_grad_(False)
    grad_out = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    (actual,) = torch.autograd.grad(layer(x), [x if needed == "dx only" else layer.weight], grad_out)
    (expected,) = torch.autograd.grad(
        reference(x), [x if needed == "dx only" else reference.weight], grad_out
    )
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_zero_padding_makes_no_padded_copy_of_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pad(*args, **kwargs):
        raise AssertionError("F.pad was called")

    monkeypatch.setattr("convlab.conv.base.F.pad", no_pad)
    layer = NativeConv2d(2, 4, 3, padding=1)
    x = torch.randn(2, 2, 6, 6, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == x.shape


def test_one_thread_and_two_threads_agree() -> None:
    torch.manual_seed(0)
    layer = NativeConv2d(10, 20, 5, dtype=torch.float64)
    x = torch.randn(8, 10, 12, 12, dtype=torch.float64)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            gradients_match_f_conv2d(layer, x, rtol=1e-10, atol=1e-10)
            results.append(layer(x))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_other_dtypes_take_fasts_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_kernel(dtype: torch.dtype) -> None:
        raise AssertionError(f"the C kernel was asked for {dtype}")

    monkeypatch.setattr("convlab.conv.native.op.library", no_kernel)
    layer = NativeConv2d(2, 4, 3, padding=1, dtype=torch.bfloat16)
    x = torch.randn(2, 2, 6, 6, dtype=torch.bfloat16)
    expected = F.conv2d(x.double(), layer.weight.double(), layer.bias.double(), padding=1)
    torch.testing.assert_close(layer(x).double(), expected, rtol=0.05, atol=0.05)


def test_built_once_then_loaded_from_the_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLAB_CACHE", str(tmp_path))
    first = native_build.build(torch.float64)
    assert first.parent == tmp_path and first.exists()

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again although the cache holds the library")

    monkeypatch.setattr(native_build, "_run_compiler", no_compiler)
    assert native_build.build(torch.float64) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left


def test_an_edited_source_is_built_anew(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLAB_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "kernels.c"
    source.write_text(native_build.SOURCE.read_text())
    monkeypatch.setattr(native_build, "SOURCE", source)
    first = native_build.build(torch.float64)
    source.write_text(source.read_text() + "\n/* edited */\n")
    assert native_build.build(torch.float64) != first


def test_no_compiler_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(native_build.NativeBuildError, match=r"no C compiler.*conv=fast"):
        native_build.build(torch.float32)


def test_a_compile_error_shows_the_compilers_message(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLAB_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "kernels.c"
    source.write_text("this is not C;\n")
    monkeypatch.setattr(native_build, "SOURCE", source)
    with pytest.raises(native_build.NativeBuildError, match=r"(?s)compiling kernels.c failed.*error"):
        native_build.build(torch.float32)
    assert list((tmp_path / "cache").iterdir()) == []


def test_builds_without_openmp_on_one_thread(tmp_path) -> None:
    """Compilers without OpenMP (Apple's clang) get the same kernels, on one thread."""
    cpu = native_build.cpu_description()
    target = tmp_path / "serial.so"
    flags = native_build.compile_flags("double", cpu, openmp=False)
    result = native_build._run_compiler(native_build.find_compiler(), flags, target)
    assert result.returncode == 0, result.stderr
    lib = ctypes.CDLL(str(target))
    assert lib.native_threads(4, 8) == 1


@pytest.fixture
def build_without_avx512(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The kernels as built on a CPU without AVX-512 (32-byte vectors, 16 registers), cached apart."""
    if not native_build.has_avx512(native_build.cpu_description()):
        pytest.skip("without AVX-512 the default build is this one, tested everywhere else")
    monkeypatch.setenv(native_build.NO_AVX512_ENV, "1")
    monkeypatch.setenv("CONVLAB_CACHE", str(tmp_path))
    native_build.library.cache_clear()
    yield tmp_path
    native_build.library.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_kernel_path_without_avx512(build_without_avx512, dtype: torch.dtype) -> None:
    """Its smaller tiles (6 x 2 vectors, 2 x 4 dot products) compute the same as the AVX-512 ones."""
    assert native_build.build(dtype).parent == build_without_avx512
    flags = native_build.compile_flags(native_build.C_TYPES[dtype], native_build.cpu_description(), True)
    assert "-DVECTOR_BYTES=32" in flags
    for path in PATHS:
        test_every_kernel_path_matches_f_conv2d(path, dtype)


def test_vectors_follow_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native_build.NO_AVX512_ENV, raising=False)
    avx512, avx2 = "flags : fpu avx2 avx512f fma", "flags : fpu avx2 fma"
    assert native_build.vector_bytes(avx512) == 64
    assert native_build.vector_bytes(avx2) == 32
    assert "-DVECTOR_BYTES=32" in native_build.compile_flags("float", avx2, openmp=True)
    assert "-mno-avx512f" not in native_build.compile_flags("float", avx2, openmp=True)
    monkeypatch.setenv(native_build.NO_AVX512_ENV, "1")  # as a CPU without AVX-512 would be
    assert native_build.vector_bytes(avx512) == 32
    assert "-mno-avx512f" in native_build.compile_flags("float", avx512, openmp=True)
