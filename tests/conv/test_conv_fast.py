"""What `fast` does that the other implementations do not: chunks, reused memory, a second GEMM library."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

import convlab.conv.fast as fast


def reference_grads(layer, x: torch.Tensor, loss_of) -> list[torch.Tensor]:
    """The gradients F.conv2d gives for x and the layer's parameters under the same loss."""

    def conv(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            t, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups
        )

    return torch.autograd.grad(loss_of(conv), [x, layer.weight, layer.bias])


def assert_close(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("short_row", [0, 1000], ids=["one-step im2col", "two-step im2col"])
@pytest.mark.parametrize("short_k", [0, 1000], ids=["one matrix", "per image"])
@pytest.mark.parametrize("chunk_bytes", [fast.CHUNK_BYTES, 1], ids=["one chunk", "one image per chunk"])
def test_layer_used_twice_before_backward(
    monkeypatch, chunk_bytes: int, short_k: int, short_row: int
) -> None:
    """The second forward overwrites the columns the first one left for its backward: it must notice.

    Every path: both ways to multiply (SHORT_K), both gathers (SHORT_ROW), the batch in one chunk
    and in chunks of one image."""
    monkeypatch.setattr(fast, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(fast, "SHORT_K", short_k)
    monkeypatch.setattr(fast, "SHORT_ROW", short_row)
    layer = fast.FastConv2d(3, 3, 3, stride=(1, 2), padding=1, dilation=(2, 1), dtype=torch.float64)
    x = torch.randn(3, 3, 7, 8, dtype=torch.float64, requires_grad=True)

    def loss_of(conv):
        return (conv(x) ** 2).sum() + (conv(conv(x).tanh()) * 3).sum()

    actual = torch.autograd.grad(loss_of(layer), [x, layer.weight, layer.bias])
    assert_close(actual, reference_grads(layer, x, loss_of))


def test_chunks_fit_the_cache_on_a_cpu_and_only_bound_memory_elsewhere() -> None:
    """The bench's `wide` shape: 2.4 MB of columns per image, one image per chunk on a CPU; on a GPU,
    where each chunk is a round of kernel launches, the batch goes in one chunk."""
    g, shape = fast.FastConv2d(64, 64, 3).geometry(), (128, 64, 34, 34)  # 32 x 32 images, padded
    assert len(fast._Plan(g, shape, torch.device("cpu")).chunks(128)) == 128
    assert fast._Plan(g, shape, torch.device("cuda")).chunks(128) == [slice(0, 128)]
    # Memory stays bounded there too: a batch whose columns pass DEVICE_CHUNK_BYTES is split.
    assert len(fast._Plan(g, shape, torch.device("cuda")).chunks(1024)) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "chunk_bytes", [fast.DEVICE_CHUNK_BYTES, 1], ids=["one chunk", "one image per chunk"]
)
def test_chunked_and_whole_batches_match_f_conv2d_on_cuda(monkeypatch, chunk_bytes: int) -> None:
    monkeypatch.setattr(fast, "DEVICE_CHUNK_BYTES", chunk_bytes)
    layer = fast.FastConv2d(4, 6, 3, padding=1, dtype=torch.float64, device="cuda")
    x = torch.randn(5, 4, 9, 9, dtype=torch.float64, device="cuda", requires_grad=True)

    def loss_of(conv):
        return (conv(x) ** 2).sum()

    actual = torch.autograd.grad(loss_of(layer), [x, layer.weight, layer.bias])
    assert_close(actual, reference_grads(layer, x, loss_of))


def test_onednn_products_match_torch_matmul() -> None:
    if fast.ONEDNN_LINEAR is None:
        pytest.skip("torch built without oneDNN's inner product")
    a, b = torch.randn(1, 7, 30), torch.randn(1, 30, 11)
    torch.testing.assert_close(fast.matmul(a, b), torch.matmul(a, b), rtol=1e-5, atol=1e-5)
    # Strided operands, as the layer passes them: transposed views on either side.
    a_t, b_t = torch.randn(1, 30, 7).transpose(1, 2), torch.randn(1, 11, 30).transpose(1, 2)
    torch.testing.assert_close(fast.matmul(a_t, b_t), torch.matmul(a_t, b_t), rtol=1e-5, atol=1e-5)


def test_without_onednn_every_product_is_torch_matmul(monkeypatch) -> None:
    """The public fallback for the private oneDNN operator: a build without it (or a release that drops
    it) finds none, and the layer's float32 one-matrix path then gives F.conv2d's numbers."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert fast._find_onednn_linear() is None
    monkeypatch.setattr(fast, "ONEDNN_LINEAR", None)
    monkeypatch.setattr(fast, "SHORT_K", 0)  # every product one 2-D GEMM, the path oneDNN would take
    layer = fast.FastConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 7, 6, requires_grad=True)

    def loss_of(conv):
        return (conv(x) ** 2).sum()

    actual = torch.autograd.grad(loss_of(layer), [x, layer.weight, layer.bias])
    for a, e in zip(actual, reference_grads(layer, x, loss_of), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_weight_gradient_reads_the_forward_columns(monkeypatch) -> None:
    """One chunk: the backward reuses the forward's columns of the same input (one im2col in all);
    a second input through the layer in between overwrites them, and the backward rebuilds them."""
    calls = []
    im2col_into = fast.im2col_into
    monkeypatch.setattr(fast, "im2col_into", lambda *args: (calls.append(1), im2col_into(*args)))
    layer = fast.FastConv2d(2, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    layer(x).sum().backward()
    assert len(calls) == 1
    calls.clear()
    out = layer(x)
    layer(torch.randn_like(x))
    out.sum().backward()
    assert len(calls) == 3


def test_threads_have_their_own_scratch_memory() -> None:
    layer = fast.FastConv2d(2, 4, 3, dtype=torch.float64)
    inputs = [torch.randn(8, 2, 9, 9, dtype=torch.float64) for _ in range(4)]
    expected = [F.conv2d(x, layer.weight, layer.bias) for x in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def run(index: int) -> None:
        with torch.no_grad():
            results[index] = [layer(inputs[index]) for _ in range(50)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, outputs in results.items():
        for out in outputs:
            torch.testing.assert_close(out, expected[index], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("short_k", [0, 1000], ids=["one matrix", "per image"])
def test_strided_input_and_output_gradient(monkeypatch, short_k: int) -> None:
    """A channels-last input and an output gradient with permuted strides, as other layers may hand them."""
    monkeypatch.setattr(fast, "SHORT_K", short_k)
    layer = fast.FastConv2d(3, 4, 3, padding=1, dtype=torch.float64)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad_out = torch.randn(5, 6, 4, 2, dtype=torch.float64).permute(3, 2, 1, 0)  # (2, 4, 6, 5), strided

    def loss_of(conv):
        return (conv(x) * grad_out).sum()

    actual = torch.autograd.grad(loss_of(layer), [x, layer.weight, layer.bias])
    assert_close(actual, reference_grads(layer, x, loss_of))
