"""Is my layer correct? `python -m convlab.verify [SPEC ...]` checks conv layers against F.conv2d.

SPEC is a registered name or a user's layer: `path/to/my_conv.py:VanillaConv2d`, `package.module:Class`,
`path/to/layers.py:conv_forward_naive[,conv_backward_naive]` (see `convlab.conv.spec`). For every
registered implementation (or the SPECs given), over a grid of
configurations (kernel sizes, strides, paddings incl. 'same'/'valid', dilation,
groups incl. depthwise, bias on/off, the four padding modes, unbatched input,
non-square kernels and inputs, batch 0; see `convlab.verify.cases`):

- in float64 and float32, the output and the gradients of input, weight and bias
  against F.conv2d run in float64 on the same values;
- `torch.autograd.gradcheck` in float64 on tiny shapes.

then the capability table (`convlab.verify.capability`, `convlab.verify.autograd_checks`: each nn.Conv2d
feature and autograd capability passes, fails, or is not supported by the layer), diagnoses with hints
(`convlab.verify.diagnose`) and one cost line (`convlab.verify.cost`).

Tolerance rule (`convlab.verify.tolerance`): rel = max|actual - expected| / max|expected|
must not exceed rtol = 4 * K * eps(dtype), K = the longest sum of products in the
forward or backward pass, eps = torch.finfo(dtype).eps. A failure that fits the
tolerance of a lower-precision dtype (a float32 result judged at float64's
tolerance: the np.allclose trap) is explained as such, with the tolerance that fits.

Exit status: 0 when every supported feature passes (with --strict: and none is unsupported), 1 otherwise,
2 on a usage error (including a spec that does not resolve).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convlab.conv import CONV_LAYERS, SpecError, resolve_conv
from convlab.verify.layer_check import check_layer, planned_checks
from convlab.verify.tables import print_report
from convlab.verify.tolerance import DTYPES


def run_grid(args: argparse.Namespace, console: Console) -> int:
    """The default mode: the grid, capability table, diagnoses and cost for every chosen layer."""
    dtypes = [DTYPES[name] for name in args.dtype or DTYPES]
    judged_at = DTYPES[args.tolerance_dtype] if args.tolerance_dtype else None
    per_layer = planned_checks(args.quick, dtypes, args.compile, args.cost)
    checks = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("verify", total=per_layer * len(args.names))

        def on_check(description: str) -> None:
            progress.update(task, description=description)
            progress.advance(task)

        for spec in args.names:
            checks.append(
                check_layer(
                    spec,
                    dtypes=dtypes,
                    quick=args.quick,
                    weight=args.weight,
                    bias=args.bias,
                    strict=args.strict,
                    judged_at=judged_at,
                    compile=args.compile,
                    cost=args.cost,
                    on_check=on_check,
                )
            )
    print_report(console, checks, args.failures_only, args.markdown)
    return 0 if all(c.passed for c in checks) else 1


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
        metavar="SPEC",
        help=f"layers to check: registered names (default: all of {list(CONV_LAYERS)}), "
        "path/to/file.py:Class, package.module:Class or path/to/file.py:forward_fn[,backward_fn]",
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
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the torch.compile row (default: on, except with --quick; its first use costs seconds)",
    )
    grid.add_argument(
        "--no-cost", dest="cost", action="store_false", help="skip the forward+backward timing line"
    )
    grid.add_argument("--weight", metavar="NAME", help="the layer's weight parameter, if not found by shape")
    grid.add_argument("--bias", metavar="NAME", help="the layer's bias parameter, if not found by shape")
    grid.add_argument(
        "--strict", action="store_true", help="count features the layer does not support as failures"
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
    for spec in args.names:  # every spec resolves before any check runs: a typo costs nothing
        try:
            resolve_conv(spec, weight=args.weight, bias=args.bias)
        except SpecError as error:
            parser.error(str(error))
    args.names = args.names or list(CONV_LAYERS)
    console = Console()
    if not console.is_terminal:
        console.width = 200  # piped to a file or a pager: do not squeeze the table to 80 columns
    return MODES[args.mode](args, console)


if __name__ == "__main__":
    sys.exit(main())
