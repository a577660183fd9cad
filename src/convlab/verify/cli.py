"""Is my layer correct? `python -m convlab.verify [NAME ...]` checks conv implementations against F.conv2d.

For every registered implementation (or the NAMEs given), over a grid of
configurations (kernel sizes, strides, paddings incl. 'same'/'valid', dilation,
groups incl. depthwise, bias on/off, the four padding modes, unbatched input,
non-square kernels and inputs, batch 0; see `convlab.verify.cases`):

- in float64 and float32, the output and the gradients of input, weight and bias
  against F.conv2d run in float64 on the same values;
- `torch.autograd.gradcheck` in float64 on tiny shapes.

Tolerance rule (`convlab.verify.tolerance`): rel = max|actual - expected| / max|expected|
must not exceed rtol = 4 * K * eps(dtype), K = the longest sum of products in the
forward or backward pass, eps = torch.finfo(dtype).eps. A failure that fits the
tolerance of a lower-precision dtype (a float32 result judged at float64's
tolerance: the np.allclose trap) is explained as such, with the tolerance that fits.

Exit status: 0 when every check passes, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convlab.conv import CONV_LAYERS
from convlab.verify.cases import GRADCHECK_GRID, GRID, QUICK_GRADCHECK_GRID, QUICK_GRID
from convlab.verify.checks import check_case, gradcheck_case
from convlab.verify.tables import ImplSummary, print_report

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def run_grid(args: argparse.Namespace, console: Console) -> int:
    """The default mode: every check of the grid for every chosen implementation."""
    cases, gradcheck_cases = (QUICK_GRID, QUICK_GRADCHECK_GRID) if args.quick else (GRID, GRADCHECK_GRID)
    dtypes = [DTYPES[name] for name in args.dtype or DTYPES]
    if torch.float64 not in dtypes:
        gradcheck_cases = ()  # finite differences need float64
    judged_at = DTYPES[args.tolerance_dtype] if args.tolerance_dtype else None
    per_impl = len(cases) * len(dtypes) + len(gradcheck_cases)
    summaries = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("verify", total=per_impl * len(args.names))
        for name in args.names:
            layer_cls, results, start = CONV_LAYERS[name], [], time.perf_counter()
            for case in cases:
                for dtype in dtypes:
                    progress.update(task, description=f"{name} [{case.name}] {dtype}")
                    results.append(check_case(name, layer_cls, case, dtype, judged_at))
                    progress.advance(task)
            for case in gradcheck_cases:
                progress.update(task, description=f"{name} [{case.name}] gradcheck")
                results.append(gradcheck_case(name, layer_cls, case))
                progress.advance(task)
            summaries.append(ImplSummary(name, results, time.perf_counter() - start))
    print_report(console, summaries, args.failures_only, args.markdown)
    return 0 if all(s.passed for s in summaries) else 1


# A mode is a flag in the parser's "mode" group plus a function here taking the parsed
# arguments and a console and returning the exit status.
MODES: dict[str, Callable[[argparse.Namespace, Console], int]] = {"grid": run_grid}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convlab.verify",
        description="Check conv implementations against F.conv2d: output and all three gradients.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"implementations to check (default: all of {list(CONV_LAYERS)})",
    )
    mode = parser.add_argument_group("mode").add_mutually_exclusive_group()
    mode.add_argument(
        "--grid",
        dest="mode",
        action="store_const",
        const="grid",
        help="(default) the configuration grid in float64 and float32, and gradcheck",
    )
    mode.add_argument(
        "--lockstep",
        action="store_true",
        help="conv=NAME: train NAME and nn.Conv2d side by side on real MNIST batches "
        "(its options: python -m convlab.lockstep --help)",
    )
    parser.set_defaults(mode="grid")
    grid = parser.add_argument_group("grid options")
    size = grid.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one configuration per feature")
    size.add_argument("--full", dest="quick", action="store_false", help="(default) the whole grid")
    grid.add_argument(
        "--dtype",
        action="append",
        choices=list(DTYPES),
        help="repeatable (default: both); gradcheck runs with float64",
    )
    grid.add_argument(
        "--tolerance-dtype",
        choices=list(DTYPES),
        help="judge every result at this dtype's tolerance (float64 on float32 runs: the np.allclose trap)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--failures-only", action="store_true", help="only failing rows in the check table")
    output.add_argument("--markdown", action="store_true", help="tables as GitHub markdown (for the README)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the chosen mode, return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--lockstep" in argv:
        # Lockstep has options of its own (steps, batch, data) and needs the training stack: its module
        # parses them, imported only here so the grid mode starts without Lightning.
        from convlab.verify import lockstep

        return lockstep.main([arg for arg in argv if arg != "--lockstep"])
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in CONV_LAYERS]
    if unknown:
        parser.error(f"unknown implementation(s) {unknown}; registered: {list(CONV_LAYERS)}")
    args.names = args.names or list(CONV_LAYERS)
    console = Console()
    if not console.is_terminal:
        console.width = 200  # piped to a file or a pager: do not squeeze the table to 80 columns
    return MODES[args.mode](args, console)


if __name__ == "__main__":
    sys.exit(main())
