"""How fast is each conv implementation? `python -m convlab.bench` times them against `nn.Conv2d`.

For every implementation (`--impl` to choose; `torch`, i.e. `nn.Conv2d`, is always
the baseline) and every shape in `convlab.bench.shapes` (the reference network's
conv1 and conv2, three larger layers): the forward and the forward+backward time,
median and IQR over interleaved repeats, and the ratio to `nn.Conv2d` paired
round by round in the same run (`convlab.bench.timing` says why). The Python-loop
layers (`vanilla`, and `vanilla_original`, the learner's first version kept as a
baseline) run on `--slow-batch` images at the reference shapes only and are
compared per image; from the per-image times comes the projected conv time of one
MNIST epoch. Then the reference network's whole training step per implementation
and the Lightning loop against a plain PyTorch loop (`convlab.bench.network`).
`--no-avx512` times, on a CPU with AVX-512, what one without gets: oneDNN and MKL
limited to AVX2 (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), `native` built for
32-byte vectors.

Writes `--out` (default outputs/bench/bench.json: machine, settings, every measurement) and prints the
markdown tables (also written to `--markdown` when given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from convlab.bench.gemm import gemm_gflops
from convlab.bench.network import network_benchmark
from convlab.bench.shapes import (
    BASELINE,
    CPU_ONLY,
    IMPLEMENTATIONS,
    LARGE_CASES,
    MODES,
    QUICK_CASES,
    REFERENCE_CASES,
    SLOW_IMPLS,
    ConvCase,
    contender,
)
from convlab.bench.tables import markdown_report
from convlab.bench.timing import CLOCKS, interleaved_times, summarize, synchronizer
from convlab.conv.native.build import NO_AVX512_ENV, cpu_description, has_avx512
from convlab.training.allocator import keep_freed_memory

MNIST_TRAIN_IMAGES = 60_000
DEFAULT_OUT = Path("outputs/bench/bench.json")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def limit_to_avx2() -> None:
    """Before the first convolution: oneDNN, MKL and native's build use AVX2 at most."""
    os.environ.update({"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", NO_AVX512_ENV: "1"})


def machine_info(device: torch.device, allocator_pinned: bool, no_avx512: bool = False) -> dict:
    info = {
        "cpu": cpu_model() + (", limited to AVX2" if no_avx512 else ""),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "freed_memory_kept": allocator_pinned,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m convlab.bench", description=__doc__.split("\n\n")[0])
    names = list(IMPLEMENTATIONS)
    parser.add_argument(
        "--impl",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"implementation to time, repeatable (default: all of {', '.join(names)}); torch always runs",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument(
        "--budget",
        type=float,
        default=8.0,
        help="seconds one implementation may spend on one measurement; slower ones get fewer repeats "
        "(at least 3) (default 8)",
    )
    parser.add_argument("--slow-batch", type=int, default=1, help="images per call for the loop layers")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall time (default), or the process's CPU time: robust on a busy machine with --threads 1",
    )
    parser.add_argument(
        "--no-avx512",
        action="store_true",
        help="time what a CPU without AVX-512 gets: oneDNN and MKL limited to AVX2, native built for "
        "32-byte vectors (x86 CPUs with AVX-512 only)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (a smoke test)")
    parser.add_argument("--no-network", action="store_true", help="skip the training-step measurements")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--markdown", type=Path, help="also write the markdown tables to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.slow_batch < 1:
        parser.error("--repeats and --slow-batch must be positive, --warmup not negative")
    try:
        args.device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    if args.device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device}")
    if args.no_avx512 and (args.device.type != "cpu" or not has_avx512(cpu_description())):
        parser.error("--no-avx512 limits a CPU that has AVX-512 (it times the CPU, so no --device cuda)")
    if args.clock == "cpu" and args.device.type == "cuda":
        parser.error("--clock cpu measures the host only: use the wall clock with --device cuda")
    chosen = [name for name in args.impl or names if args.device.type == "cpu" or name not in CPU_ONLY]
    args.impls = [BASELINE] + [name for name in dict.fromkeys(chosen) if name != BASELINE]
    if args.quick:
        args.repeats, args.warmup, args.budget = (
            min(args.repeats, 3),
            min(args.warmup, 1),
            min(args.budget, 2.0),
        )
    return args


def conv_cases(args: argparse.Namespace) -> list[ConvCase]:
    return list(QUICK_CASES) if args.quick else [*REFERENCE_CASES, *LARGE_CASES]


def time_case(case: ConvCase, args: argparse.Namespace, progress: Progress) -> list[dict]:
    """Forward and forward+backward of every implementation at one shape, one record per (impl, mode)."""
    names = [name for name in args.impls if case.reference or name not in SLOW_IMPLS]
    batches = {name: case.batch_for(name, args.slow_batch) for name in names}
    contenders = {name: contender(case, name, batches[name], args.device) for name in names}
    sync = synchronizer(args.device)
    per_image = {name: 1.0 / batches[name] for name in names}
    records = []
    for mode in MODES:
        task = progress.add_task(f"{case.name} {mode}", total=None)
        times = interleaved_times(
            {name: c.call(mode) for name, c in contenders.items()},
            repeats=args.repeats,
            warmup=args.warmup,
            budget_s=args.budget,
            min_repeats=min(3, args.repeats),
            sync=sync,
            clock=CLOCKS[args.clock],
            prepare=lambda name: contenders[name].zero_grad(),
            on_round=lambda done, total, task=task: progress.update(task, completed=done, total=total),
        )
        stats = summarize(times, BASELINE, scale=per_image)
        for name, s in stats.items():
            records.append(
                {
                    "case": case.name,
                    "mode": mode,
                    "impl": name,
                    "batch": batches[name],
                    "case_batch": case.batch,
                    "repeats": s.repeats,
                    "median_ms": s.median_s * batches[name] * 1e3,
                    "per_image_ms": s.median_s * 1e3,
                    "iqr_per_image_ms": [s.q1_s * 1e3, s.q3_s * 1e3],
                    "ratio": 1.0 if s.ratio is None else s.ratio,
                    "ratio_iqr": [1.0, 1.0] if s.ratio is None else [s.ratio_q1, s.ratio_q3],
                }
            )
        progress.remove_task(task)
    return records


def epoch_projection(records: list[dict]) -> dict[str, float]:
    """impl -> seconds the two conv layers need, forward+backward, for one epoch of MNIST training images."""
    per_image: dict[str, dict[str, float]] = {}
    for r in records:
        if r["mode"] == "fwd+bwd" and r["case"] in ("conv1", "conv2"):
            per_image.setdefault(r["impl"], {})[r["case"]] = r["per_image_ms"]
    return {
        impl: MNIST_TRAIN_IMAGES * (ms["conv1"] + ms["conv2"]) / 1e3
        for impl, ms in per_image.items()
        if len(ms) == 2
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_avx512:
        limit_to_avx2()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Every contender allocates at the same cost, whatever the heap's layout (convlab.training.allocator).
    allocator_pinned = keep_freed_memory()
    console = Console(stderr=True)
    cases = conv_cases(args)
    result: dict = {
        "machine": machine_info(args.device, allocator_pinned, args.no_avx512),
        "settings": {
            "impls": args.impls,
            "baseline": BASELINE,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "budget_s": args.budget,
            "slow_batch": args.slow_batch,
            "clock": args.clock,
            "quick": args.quick,
            "no_avx512": args.no_avx512,
            "cases": {case.name: case.describe() for case in cases},
        },
    }
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    records: list[dict] = []
    with progress:
        console.print("timing matrix multiplies (MKL, oneDNN)")
        result["machine"]["gemm_gflops"] = gemm_gflops(
            args.device, args.repeats, args.warmup, CLOCKS[args.clock]
        )
        for case in cases:
            console.print(f"timing {case.name}: {case.describe()}")
            records += time_case(case, args, progress)
        result["conv"] = records
        result["mnist_epoch_conv_s"] = epoch_projection(records)
        if not args.no_network:
            console.print("timing the reference network's training step")
            result["network"] = network_benchmark(args, progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_report(result)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(table)
    console.print(f"wrote {args.out}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
