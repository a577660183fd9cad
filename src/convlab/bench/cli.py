"""How fast is a conv layer? `python -m convlab.bench` times it against `nn.Conv2d`.

For every layer (`--impl`, repeatable, any layer spec: a registered name, `vanilla_original`,
`torch_no_onednn`, `pkg.mod:Class`, `path/to/file.py:Class`, `path/to/file.py:forward_fn[,backward_fn]`;
default all of convlab's; `torch`, i.e. `nn.Conv2d`, is always the baseline) and every shape in
`convlab.bench.shapes`: the forward and the forward+backward time, median and IQR over interleaved
repeats, and the ratio to `nn.Conv2d` paired round by round (`convlab.bench.timing` says why).

Python-loop layers (`vanilla`, `vanilla_original`, and a user's layer slow enough,
`convlab.bench.contenders.speed_probe`) run on `--slow-batch` images at the reference shapes only and are
compared per image; they, and every user's layer, are also timed at growing batch sizes
(`convlab.bench.growth`): how their cost grows with the batch, and why when it grows faster. From
all this, each layer's training step and MNIST epoch (`convlab.bench.projection`). Then the reference
network's whole training step per layer and the Lightning loop against a plain PyTorch loop
(`convlab.bench.network`).

Every run also reads the machine (`convlab.bench.trust`): on a busy or noisy one the tables and the
console say so, suggest `--threads 1 --clock cpu`, and projections inside the noise are not printed.
`--no-avx512` times, on a CPU with AVX-512, what one without gets: oneDNN and MKL limited to AVX2
(ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), `native` built for 32-byte vectors.

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
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from convlab.bench.contenders import (
    BASELINE,
    PASSES,
    BenchImpl,
    builtin_impls,
    make_contender,
    resolve_impl,
)
from convlab.bench.gemm import gemm_gflops
from convlab.bench.growth import Growth, explanation, growth_study
from convlab.bench.network import network_benchmark
from convlab.bench.projection import projections
from convlab.bench.shapes import LARGE_CASES, QUICK_CASES, REFERENCE_CASES, BenchCase
from convlab.bench.tables import duration, markdown_report
from convlab.bench.timing import (
    CLOCKS,
    CoreShare,
    interleaved_times,
    summarize_times,
    synchronizer,
    time_call,
)
from convlab.bench.trust import NOISY_SPREAD, MachineCheck, load_average, relative_spread
from convlab.conv import SpecError, UnsupportedFeature, resolve_conv
from convlab.conv.native.build import NO_AVX512_ENV, cpu_description, has_avx512
from convlab.training.allocator import keep_freed_memory
from convlab.training.run_record import code_version, cpu_name, describe_code
from convlab.training.threads import available_cores

DEFAULT_OUT = Path("outputs/bench/bench.json")


def limit_to_avx2() -> None:
    """Before the first convolution: oneDNN, MKL and native's build use AVX2 at most."""
    os.environ.update({"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", NO_AVX512_ENV: "1"})


def machine_info(device: torch.device, allocator_pinned: bool, no_avx512: bool = False) -> dict:
    info = {
        "cpu": cpu_name() + (", limited to AVX2" if no_avx512 else ""),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cores": available_cores(),
        "freed_memory_kept": allocator_pinned,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "convlab": describe_code(code_version()),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m convlab.bench", description=__doc__.split("\n\n")[0])
    names = list(builtin_impls())
    parser.add_argument(
        "--impl",
        action="append",
        metavar="SPEC",
        help=f"layer to time, repeatable: one of {', '.join(names)} (default: all of them), or a layer "
        "spec pkg.mod:Class, path/to/file.py:Class, path/to/file.py:forward_fn[,backward_fn]; "
        "torch always runs",
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
    parser.add_argument(
        "--growth-budget",
        type=float,
        default=30.0,
        help="seconds a slow or user's layer may spend per shape on the growing batch sizes "
        "(default 30, --quick 3; 0 skips them)",
    )
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
    if args.growth_budget < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--growth-budget must not be negative, --threads must be positive")
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
    specs = [spec.strip() for spec in args.impl or names]
    for spec in specs:
        if spec not in names:
            try:
                resolve_conv(spec)  # a spec that cannot resolve is a usage error, before any timing
            except SpecError as error:
                parser.error(f"--impl {spec}: {error}")
    args.specs = [BASELINE] + [spec for spec in dict.fromkeys(specs) if spec != BASELINE]
    if args.quick:
        args.repeats, args.warmup, args.budget = (
            min(args.repeats, 3),
            min(args.warmup, 1),
            min(args.budget, 2.0),
        )
        args.growth_budget = min(args.growth_budget, 3.0)
    return args


def conv_cases(args: argparse.Namespace) -> list[BenchCase]:
    return list(QUICK_CASES) if args.quick else [*REFERENCE_CASES, *LARGE_CASES]


def bench_impls(args: argparse.Namespace, cases: list[BenchCase]) -> list[BenchImpl]:
    """The layers to time, baseline first; CPU-only baselines dropped on a GPU."""
    impls = [resolve_impl(spec, cases[0], args.device) for spec in args.specs]
    return [impl for impl in impls if args.device.type == "cpu" or not impl.cpu_only]


def unavailable(error: Exception) -> str:
    """The table cell for a layer that cannot run a case."""
    if isinstance(error, UnsupportedFeature):
        return f"not supported: {error.feature}"
    return f"error: {type(error).__name__}: {error}".splitlines()[0]


class Bench:
    """One run's settings, progress display, machine check and clock, shared by its measurements."""

    def __init__(self, args: argparse.Namespace, console: Console, progress: Progress) -> None:
        self.args, self.console, self.progress = args, console, progress
        self.sync = synchronizer(args.device)
        self.clock = CLOCKS[args.clock]
        self.core_share = CoreShare() if args.device.type == "cpu" else None
        self.check = MachineCheck(cores=available_cores(), threads=torch.get_num_threads(), clock=args.clock)

    def time_case(self, case: BenchCase, impls: list[BenchImpl]) -> list[dict]:
        """Forward and forward+backward of every layer at one shape, one record per (layer, pass)."""
        args, records = self.args, []
        impls = [impl for impl in impls if case.reference or not impl.slow]
        contenders, failed = {}, {}
        for impl in impls:
            try:
                contenders[impl.label] = make_contender(
                    case, impl, impl.batch_for(case, args.slow_batch), args.device
                )
            except Exception as error:  # noqa: BLE001 - a layer's failure is a table cell, the run goes on
                failed[impl.label] = unavailable(error)
                self.console.print(f"  {impl.label} at {case.name}: {failed[impl.label]}")
        for mode in PASSES:
            if mode == "fwd+bwd":
                for label, c in list(contenders.items()):
                    if c.backward_error:
                        failed[label] = f"no backward: {c.backward_error}".splitlines()[0]
                        self.console.print(f"  {label} at {case.name}: {failed[label]}")
                        del contenders[label]
            records += [
                {"case": case.name, "mode": mode, "impl": label, "unavailable": why}
                for label, why in failed.items()
            ]
            if BASELINE not in contenders:
                continue
            task = self.progress.add_task(f"{case.name} {mode}", total=None)
            times = interleaved_times(
                {label: c.call(mode) for label, c in contenders.items()},
                repeats=args.repeats,
                warmup=args.warmup,
                budget_s=args.budget,
                min_repeats=min(3, args.repeats),
                sync=self.sync,
                clock=self.clock,
                prepare=lambda label: contenders[label].zero_grad(),
                on_round=lambda done, total, task=task: self.progress.update(
                    task, completed=done, total=total
                ),
                core_share=self.core_share,
            )
            self.progress.remove_task(task)
            per_image = {label: 1.0 / c.batch for label, c in contenders.items()}
            for label, s in summarize_times(times, BASELINE, scale=per_image).items():
                spread = relative_spread(s.q1_s, s.median_s, s.q3_s)
                self.check.count(spread)
                batch = contenders[label].batch
                records.append(
                    {
                        "case": case.name,
                        "mode": mode,
                        "impl": label,
                        "batch": batch,
                        "case_batch": case.batch,
                        "repeats": s.repeats,
                        "median_ms": s.median_s * batch * 1e3,
                        "per_image_ms": s.median_s * 1e3,
                        "iqr_per_image_ms": [s.q1_s * 1e3, s.q3_s * 1e3],
                        "ratio": 1.0 if s.ratio is None else s.ratio,
                        "ratio_iqr": [1.0, 1.0] if s.ratio is None else [s.ratio_q1, s.ratio_q3],
                        "noisy": spread > NOISY_SPREAD,
                        "rounds_s": times[label],
                    }
                )
        return records

    def growth(self, case: BenchCase, impl: BenchImpl) -> Growth | str:
        """`impl`'s cost at growing batch sizes at `case`, or why it could not be timed."""
        args = self.args

        def call_at(batch: int):
            contender = make_contender(case, impl, batch, args.device)
            if contender.backward_error:
                raise RuntimeError(f"no backward: {contender.backward_error}")
            call = contender.call("fwd+bwd")

            def timed() -> float:
                contender.zero_grad()
                started = self.core_share.start() if self.core_share else None
                seconds = time_call(call, self.sync, self.clock)
                if self.core_share:
                    self.core_share.stop(started)
                return seconds

            return timed

        task = self.progress.add_task(f"{impl.label} {case.name}, growing batch", total=None)

        def on_point(batch: int, calls: int, expected_s: float | None) -> None:
            expected = f" of about {duration(expected_s * 1e3)}" if expected_s else ""
            self.progress.update(
                task, description=f"{impl.label} {case.name}: batch {batch}, {calls} calls{expected}"
            )

        try:
            return growth_study(
                call_at,
                lambda: case.layer(impl.cls, args.device)(case.input(1, args.device)),
                max_batch=case.batch,
                budget_s=args.growth_budget,
                repeats=3,
                clock=self.clock,
                sync=self.sync,
                on_point=on_point,
            )
        except Exception as error:  # noqa: BLE001 - reported in the growth table
            return unavailable(error)
        finally:
            self.progress.remove_task(task)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_avx512:
        limit_to_avx2()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Every contender allocates at the same cost, whatever the heap's layout (convlab.training.allocator).
    allocator_pinned = keep_freed_memory()
    console = Console(stderr=True, soft_wrap=True)
    cases = conv_cases(args)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    bench = Bench(args, console, progress)
    bench.check.load_before = load_average()
    started = time.perf_counter()
    impls = bench_impls(args, cases)
    labels = [impl.label for impl in impls]
    result: dict = {
        "machine": machine_info(args.device, allocator_pinned, args.no_avx512),
        "settings": {
            "impls": labels,
            "baseline": BASELINE,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "budget_s": args.budget,
            "growth_budget_s": args.growth_budget,
            "slow_batch": args.slow_batch,
            "clock": args.clock,
            "quick": args.quick,
            "no_avx512": args.no_avx512,
            "cases": {case.name: case.describe() for case in cases},
        },
    }
    records: list[dict] = []
    growths: dict[str, dict[str, Growth]] = {}
    growth_errors: dict[str, dict[str, str]] = {}
    with progress:
        console.print("timing matrix multiplies (MKL, oneDNN)")
        result["machine"]["gemm_gflops"] = gemm_gflops(args.device, args.repeats, args.warmup, bench.clock)
        for case in cases:
            console.print(f"timing {case.name}: {case.describe()}")
            records += bench.time_case(case, impls)
        if args.growth_budget > 0:
            for impl in impls:
                if not (impl.slow or not impl.builtin):
                    continue
                for case in (c for c in cases if c.reference):
                    console.print(f"timing {impl.label} at {case.name} on growing batches")
                    found = bench.growth(case, impl)
                    if isinstance(found, Growth):
                        growths.setdefault(impl.label, {})[case.name] = found
                    else:
                        growth_errors.setdefault(impl.label, {})[case.name] = found
        result["conv"] = records
        training_batch = next(case.batch for case in cases if case.reference)
        result["growth"] = {
            label: {case: g.to_dict() for case, g in per_case.items()} for label, per_case in growths.items()
        }
        result["growth_errors"] = growth_errors
        result["projection"] = {
            "batch": training_batch,
            "per_impl": projections(records, growths, labels, training_batch),
        }
        result["explanations"] = {
            label: text
            for label, per_case in growths.items()
            if (text := explanation(label, per_case, training_batch)) is not None
        }
        if not args.no_network:
            console.print("timing the reference network's training step")
            result["network"] = network_benchmark(args, impls, progress, bench.core_share)
    bench.check.load_after = load_average()
    bench.check.elapsed_s = time.perf_counter() - started
    bench.check.core_share = bench.core_share.share if bench.core_share else None
    result["machine"]["check"] = bench.check.to_dict()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_report(result)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(table)
    warning = bench.check.warning()
    if warning:
        console.print(warning, style="bold yellow", markup=False)
    console.print(f"wrote {args.out}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
