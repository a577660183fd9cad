"""`python -m convlab.bench` runs at tiny sizes and writes what it promises. No test asserts a time."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import convlab.conv.native.build as native_build
from convlab.bench.cli import main
from convlab.bench.contenders import PASSES, builtin_impls, make_contender
from convlab.bench.shapes import QUICK_CASES
from convlab.bench.timing import CLOCKS, interleaved_times, summarize_times

USER_LAYERS = Path(__file__).resolve().parents[1] / "user_layers"
LEARNER = f"{USER_LAYERS / 'learner_conv.py'}:VanillaConv2d"
NUMPY_LAYER = f"{USER_LAYERS / 'numpy_conv.py'}:NumpyConv"
SLOW = ("vanilla", "vanilla_original")

RECORD_KEYS = {
    "case",
    "case_batch",
    "mode",
    "impl",
    "batch",
    "repeats",
    "median_ms",
    "per_image_ms",
    "iqr_per_image_ms",
    "ratio",
    "ratio_iqr",
    "noisy",
    "rounds_s",
}


def run_bench(tmp_path, *args: str) -> tuple[dict, str]:
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["--quick", "--out", str(out), "--markdown", str(markdown), *args]) == 0
    return json.loads(out.read_text()), markdown.read_text()


def test_conv_part_writes_every_case_mode_and_impl(tmp_path, capsys):
    result, markdown = run_bench(
        tmp_path, "--impl", "unfold", "--impl", "vanilla", "--no-network", "--growth-budget", "0.5"
    )
    assert {"cpu", "device", "threads", "torch", "date", "gemm_gflops"} <= result["machine"].keys()
    assert result["machine"]["threads"] == torch.get_num_threads()
    assert set(result["machine"]["gemm_gflops"]) == {"mkl", "onednn"}
    assert result["settings"]["impls"] == ["torch", "unfold", "vanilla"]
    assert "network" not in result
    seen = {(r["case"], r["mode"], r["impl"]) for r in result["conv"]}
    batches = {case.name: case.batch for case in QUICK_CASES}
    for case in QUICK_CASES:
        for mode in PASSES:
            assert {(case.name, mode, "torch"), (case.name, mode, "unfold")} <= seen
            # The loop layer runs at the reference shapes only.
            assert ((case.name, mode, "vanilla") in seen) == case.reference
    for record in result["conv"]:
        assert record.keys() == RECORD_KEYS
        assert record["median_ms"] > 0 and record["repeats"] >= 1
        assert record["case_batch"] == batches[record["case"]]
        assert record["batch"] == (1 if record["impl"] in SLOW else batches[record["case"]])
        assert len(record["rounds_s"]) == record["repeats"]
        if record["impl"] == "torch":
            assert record["ratio"] == 1.0
    # The loop layer is also timed at growing batch sizes, up to the reference shapes' batch.
    assert set(result["growth"]) == {"vanilla"} and set(result["growth"]["vanilla"]) == {"conv1", "conv2"}
    for growth in result["growth"]["vanilla"].values():
        assert [p["batch"] for p in growth["points"]][:2] == [1, 2] and growth["inplace_writes"] == 0
    assert set(result["projection"]["per_impl"]) == {"torch", "unfold", "vanilla"}
    assert "machine" in result and "check" in result["machine"]
    # The markdown printed is the markdown written, with a row per implementation.
    assert markdown.strip() in capsys.readouterr().out
    assert "| `unfold` |" in markdown and "/image" in markdown and "growth exponent" in markdown


def test_network_part_times_training_steps_and_both_loops(tmp_path):
    result, markdown = run_bench(
        tmp_path, "--impl", "manual", "--impl", "vanilla_original", "--clock", "cpu", "--growth-budget", "0"
    )
    assert result["settings"]["clock"] == "cpu" and "median cpu time" in markdown
    network = result["network"]
    # Loop layers would take minutes per step: left out of the network part.
    assert [r["impl"] for r in network["training_step"]] == ["torch", "manual"]
    assert all(r["images_per_s"] > 0 for r in network["training_step"])
    loop = network["loop_overhead"]
    assert {"plain_images_per_s", "plain_with_sums_images_per_s", "lightning_images_per_s"} <= loop.keys()
    assert all(loop[f"{name}_images_per_s"] > 0 for name in ("plain", "plain_with_sums", "lightning"))
    assert loop["ratio"] > 0 and loop["ratio_to_bare_loop"] > 0 and loop["rounds"] == 2
    assert "Lightning" in markdown


def test_torch_no_onednn_runs_forward_and_backward_with_onednn_off():
    case = QUICK_CASES[1]
    impl = builtin_impls()["torch_no_onednn"]
    baseline = make_contender(case, impl, case.batch, torch.device("cpu"))
    seen = []
    baseline.layer.register_forward_hook(lambda *_: seen.append(torch.backends.mkldnn.enabled))
    baseline.x.register_hook(lambda grad: seen.append(torch.backends.mkldnn.enabled))
    baseline.call("fwd+bwd")()
    assert seen == [False, False]
    assert torch.backends.mkldnn.enabled  # switched back on afterwards


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error shown without CUDA")
def test_cuda_without_a_gpu_is_a_clear_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda", "--out", str(tmp_path / "bench.json")])
    assert exit_info.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_whole_bench_runs_on_cuda(tmp_path):
    """Every part, the network's too: a Lightning `fit` on the GPU hands its model back on the CPU, and
    the plain loops timed after it must still train on the GPU."""
    result, markdown = run_bench(tmp_path, "--device", "cuda", "--impl", "unfold", "--impl", "native")
    assert result["machine"]["gpu"] == torch.cuda.get_device_name()
    assert {r["impl"] for r in result["conv"]} == {"torch", "unfold", "native"}
    loops = result["network"]["loop_overhead"]
    assert all(loops[f"{name}_images_per_s"] > 0 for name in ("plain", "plain_with_sums", "lightning"))
    assert "Lightning" in markdown


def test_interleaving_shuffles_the_order_and_respects_the_budget():
    order = []

    def slow() -> None:
        order.append("slow")
        time.sleep(0.02)

    calls = {name: (lambda name=name: order.append(name)) for name in "abcd"} | {"slow": slow}
    times = interleaved_times(calls, repeats=40, warmup=1, budget_s=0.01, min_repeats=2, sync=lambda: None)
    assert all(len(times[name]) == 40 for name in "abcd")
    assert len(times["slow"]) == 2  # the budget affords none: the minimum
    timed = order[len(calls) :]  # after one warm-up call each
    rounds = [timed[i : i + 4] for i in range(10, len(timed), 4)]  # the rounds without `slow`
    assert all(sorted(r) == list("abcd") for r in rounds)  # every contender once per round
    # Shuffled, not rotated: each contender follows each other one in some round.
    followers = {(r[i], r[i + 1]) for r in rounds for i in range(3)}
    assert followers == {(x, y) for x in "abcd" for y in "abcd" if x != y}
    # Seeded: a second run calls them in the same order.
    first = list(order)
    order.clear()
    interleaved_times(calls, repeats=40, warmup=1, budget_s=0.01, min_repeats=2, sync=lambda: None)
    assert order == first


def test_ratios_are_paired_round_by_round():
    times = {"base": [1.0, 10.0, 2.0], "twice": [2.0, 20.0, 4.0], "short": [3.0]}
    stats = summarize_times(times, "base")
    assert stats["base"].ratio is None and stats["base"].median_s == 2.0
    # A noisy round slows both alike: the paired ratio stays exactly 2.
    assert stats["twice"].ratio == stats["twice"].ratio_q1 == stats["twice"].ratio_q3 == 2.0
    assert stats["short"].ratio == 3.0 and stats["short"].repeats == 1
    per_image = summarize_times(times, "base", scale={"base": 1 / 64, "twice": 1.0})
    assert per_image["twice"].ratio == pytest.approx(128.0)


def test_no_avx512_times_native_built_for_32_byte_vectors(tmp_path):
    """In a process of its own: oneDNN reads its ISA limit once per process, and the limit must not
    reach the other tests (forked DDP workers would inherit AVX2-only kernels)."""
    if not native_build.has_avx512(native_build.cpu_description()):
        pytest.skip("needs a CPU with AVX-512 to limit")
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    command = [sys.executable, "-m", "convlab.bench", "--quick", "--no-avx512", "--impl", "native"]
    command += ["--no-network", "--out", str(out), "--markdown", str(markdown)]
    env = {**os.environ, "CONVLAB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["settings"]["no_avx512"] and result["machine"]["cpu"].endswith("limited to AVX2")
    assert "limited to AVX2" in markdown.read_text() and "| `native` |" in markdown.read_text()
    # native was built for float32 into this test's cache (its flags: test_conv_native).
    assert [path.name.split("_")[2] for path in (tmp_path / "cache").glob("*.so")] == ["float"]
    assert native_build.NO_AVX512_ENV not in os.environ


def test_no_avx512_is_refused_where_there_is_nothing_to_limit(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setattr("convlab.bench.cli.has_avx512", lambda cpu: False)
    with pytest.raises(SystemExit):
        main(["--no-avx512", "--quick"])
    assert "limits a CPU that has AVX-512" in capsys.readouterr().err


def test_a_users_layer_is_timed_by_its_spec_with_what_it_cannot_do_said(tmp_path, capsys, monkeypatch):
    """The learner's layer (no groups, in-place writes) and a forward-only NumPy class, by file spec."""
    # Timed at every shape whatever the machine's load: on a busy one its speed probe would call it
    # slow, and slow layers are timed at the reference shapes only.
    monkeypatch.setattr("convlab.bench.contenders.SLOW_RATIO", float("inf"))
    monkeypatch.setattr("convlab.bench.contenders.SLOW_SECONDS_PER_IMAGE", float("inf"))
    result, markdown = run_bench(
        tmp_path, "--impl", LEARNER, "--impl", NUMPY_LAYER, "--no-network", "--growth-budget", "0.5"
    )
    assert result["settings"]["impls"] == ["torch", LEARNER, NUMPY_LAYER]
    cells = {(r["impl"], r["case"], r["mode"]): r for r in result["conv"]}
    for mode in PASSES:
        assert cells[LEARNER, "depthwise", mode]["unavailable"] == "not supported: groups"
        assert cells[LEARNER, "conv1", mode]["median_ms"] > 0
    assert cells[NUMPY_LAYER, "conv1", "fwd"]["median_ms"] > 0
    assert cells[NUMPY_LAYER, "conv1", "fwd+bwd"]["unavailable"].startswith("no backward")
    assert f"| `{LEARNER}` |" in markdown and "not supported: groups" in markdown
    # Growth with the batch: the learner's in-place writes are counted (one per output pixel) and
    # explained with the fix; the forward-only layer cannot be timed there and says why.
    conv1 = result["growth"][LEARNER]["conv1"]
    case = QUICK_CASES[0]
    pixels = case.out_channels * (case.size - case.kernel_size + 1) ** 2
    assert conv1["inplace_writes"] == pixels and conv1["output_elements"] == pixels
    assert "torch.stack" in result["explanations"][LEARNER] and "torch.stack" in markdown
    assert result["growth_errors"][NUMPY_LAYER]["conv1"].startswith("error: RuntimeError: no backward")
    assert result["projection"]["per_impl"][LEARNER]["source"] != "–"
    assert "no backward" in capsys.readouterr().err


def test_a_spec_that_does_not_resolve_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--impl", str(tmp_path / "missing.py") + ":Conv", "--out", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2
    assert "missing.py: no such file" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_a_busy_machine_is_said_and_projections_inside_the_noise_are_refused(tmp_path, monkeypatch, capsys):
    """A staged machine: a load average of 9 and a clock whose every interval is random noise, so the
    two layers' ratio is noise around one. No real time is asserted."""
    noise, now = random.Random(0), [0.0]

    def noisy_clock() -> float:
        now[0] += noise.uniform(1e-3, 0.1)
        return now[0]

    monkeypatch.setitem(CLOCKS, "wall", noisy_clock)
    monkeypatch.setattr("convlab.bench.cli.load_average", lambda: 9.0)
    result, markdown = run_bench(tmp_path, "--impl", "unfold", "--no-network", "--growth-budget", "0")
    check = result["machine"]["check"]
    assert check["busy"] and check["load_before"] == 9.0
    assert any("measurements vary" in reason for reason in check["reasons"])
    assert "Busy or noisy machine" in markdown and "`--threads 1 --clock cpu`" in markdown
    assert "--threads 1 --clock cpu" in capsys.readouterr().err
    unfold = result["projection"]["per_impl"]["unfold"]
    assert unfold["refused"] and "wider than the difference" in unfold["refused"]
    assert "| `unfold` | – | – | – |" in markdown


def test_a_slow_users_layer_stays_on_few_images_even_when_nn_conv2d_is_slowed_down(monkeypatch):
    """On a busy machine nn.Conv2d's spinning threads can make the ratio small: seconds per image decide."""
    from convlab.bench import contenders

    staged = {"user": 2.5, "torch": 0.09}  # the learner's layer and a busy machine's nn.Conv2d, per image
    monkeypatch.setattr(
        contenders,
        "per_image_seconds",
        lambda cls, case, device, calls: staged["torch" if cls is torch.nn.Conv2d else "user"],
    )
    assert contenders.speed_probe(object, QUICK_CASES[0], torch.device("cpu")) == (True, None)
    staged.update(user=0.009, torch=0.0001)  # 90x, and fast in seconds: large shapes on fewer images
    assert contenders.speed_probe(object, QUICK_CASES[0], torch.device("cpu")) == (False, 8)
