"""Markdown tables of a `convlab.bench` result (the dict written to bench.json).

A busy or noisy machine is said first, before any number; noisy measurements are marked `*`; a
projection refused for its spread shows "–" and the reason.
"""

from __future__ import annotations

import statistics

from convlab.bench.contenders import BASELINE, PASSES
from convlab.bench.trust import NOISY_SPREAD
from convlab.markdown import markdown_table


def duration(ms: float) -> str:
    """A time with a unit that keeps 2-3 significant digits: 0.612 ms, 48.1 ms, 1.23 s, 4.5 h."""
    seconds = ms / 1e3
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{ms:.3g} ms"


def ratio_cell(ratio: float, spread: list[float]) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    return f"{ratio:.2f}× [{spread[0]:.2f}–{spread[1]:.2f}]"


def short_ratio(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.2f}×"


def machine_line(machine: dict) -> str:
    device = machine.get("gpu", machine["cpu"])
    gemm = ", ".join(f"{name} {gflops:.0f}" for name, gflops in machine.get("gemm_gflops", {}).items())
    kept = machine.get("freed_memory_kept")
    allocator = " Freed memory kept in the process (no page-fault luck)." if kept else ""
    cores = f", {machine['cores']} cores available" if "cores" in machine else ""
    return (
        f"Machine: {device} ({machine['device']}{cores}), torch {machine['torch']}, "
        f"{machine['threads']} threads, {machine['date']}"
        + (f", {machine['convlab']}." if "convlab" in machine else ".")
        + (f" Float32 GEMM (64×576 @ 576×8192), GFLOP/s: {gemm}." if gemm else "")
        + allocator
    )


def trust_lines(machine: dict) -> list[str]:
    """The busy-machine warning (with what to do), or one line saying the machine looked quiet."""
    check = machine.get("check")
    if check is None:
        return []
    if check["busy"]:
        advice = (
            "one thread is already timed on its CPU clock: for less spread, an idle machine"
            if check["threads"] == 1 and check["clock"] == "cpu"
            else "for numbers to rely on, rerun with `--threads 1 --clock cpu`, or on an idle machine"
        )
        return [
            "**⚠ Busy or noisy machine:** " + "; ".join(check["reasons"]) + ". Times include other "
            "processes' work and ratios may be off, even turned round; " + advice + ".",
            "",
        ]
    share = f", {check['core_share']:.0%} of a core in the timed calls" if check.get("core_share") else ""
    before, after = check["load_before"], check["load_after"]
    return [
        f"Quiet machine: load average {before:.2f} before, {after:.2f} after{share}.",
        "",
    ]


def record_cell(r: dict) -> str:
    if "unavailable" in r:
        return r["unavailable"]
    mark = "*" if r.get("noisy") else ""
    if r["batch"] != r["case_batch"]:
        return f"{duration(r['per_image_ms'])}/image{mark}, {ratio_cell(r['ratio'], r['ratio_iqr'])}"
    return f"{duration(r['median_ms'])}{mark}, {ratio_cell(r['ratio'], r['ratio_iqr'])}"


def conv_table(result: dict, mode: str) -> str:
    """Rows: layers; columns: cases; cells: median time and paired ratio to nn.Conv2d, or why not timed."""
    records = [r for r in result["conv"] if r["mode"] == mode]
    cases = list(dict.fromkeys(r["case"] for r in records))
    impls = [name for name in result["settings"]["impls"] if any(r["impl"] == name for r in records)]
    cell = {(r["impl"], r["case"]): r for r in records}
    rows = [
        [f"`{impl}`", *(record_cell(cell[impl, case]) if (impl, case) in cell else "—" for case in cases)]
        for impl in impls
    ]
    return markdown_table(["implementation", *cases], rows)


def growth_table(result: dict) -> str:
    """Per slow or user's layer and reference shape: per-image time at each batch size, exponent, verdict."""
    rows = []
    for impl, per_case in result.get("growth", {}).items():
        for case, g in per_case.items():
            times = [
                f"{p['batch']}: {duration(statistics.median(p['times_s']) / p['batch'] * 1e3)}"
                for p in g["points"]
            ]
            exponent = (
                "–"
                if g["exponent"] is None
                else f"{g['exponent']:.2f} [{g['exponent_range'][0]:.2f}–{g['exponent_range'][1]:.2f}]"
            )
            writes = "–" if g["inplace_writes"] is None else f"{g['inplace_writes']:,}"
            rows.append([f"`{impl}`", case, " · ".join(times), exponent, g["verdict"], writes])
    for impl, per_case in result.get("growth_errors", {}).items():
        for case, why in per_case.items():
            rows.append([f"`{impl}`", case, why, "–", "–", "–"])
    header = [
        "implementation",
        "shape",
        "forward+backward per image, by batch size",
        "exponent k [range]",
        "growth",
        "in-place writes per image",
    ]
    return markdown_table(header, rows)


def projection_table(result: dict) -> str:
    projection = result["projection"]
    batch = projection["batch"]
    rows = []
    for impl, p in projection["per_impl"].items():
        if p.get("refused") or p["step_s"] is None:
            rows.append([f"`{impl}`", "–", "–", "–", p["source"], p.get("refused") or ""])
            continue
        low, high = p["step_range_s"]
        ratio = "1.00×" if impl == BASELINE else "–" if p["ratio"] is None else short_ratio(p["ratio"])
        step = f"{duration(p['step_s'] * 1e3)} [{duration(low * 1e3)}–{duration(high * 1e3)}]"
        rows.append([f"`{impl}`", step, duration(p["epoch_s"] * 1e3), ratio, p["source"], ""])
    header = [
        "implementation",
        f"conv1 + conv2, forward + backward, one step of {batch} [range]",
        "one MNIST epoch (60,000 images)",
        "ratio to `torch`",
        "from",
        "not shown because",
    ]
    return markdown_table(header, rows)


def network_tables(network: dict) -> list[str]:
    rows = []
    for r in network["training_step"]:
        if "unavailable" in r:
            rows.append([f"`{r['impl']}`", r["unavailable"], "–", "–"])
        else:
            rows.append(
                [
                    f"`{r['impl']}`",
                    duration(r["step_ms"]),
                    f"{r['images_per_s']:,.0f}",
                    ratio_cell(r["ratio"], r["ratio_iqr"]),
                ]
            )
    loop = network["loop_overhead"]
    loop_rows = [
        ["plain PyTorch, bare", f"{loop['plain_images_per_s']:,.0f}", "–", "1.00×"],
        [
            "plain PyTorch + the epoch loss and accuracy sums `LitClassifier` keeps",
            f"{loop['plain_with_sums_images_per_s']:,.0f}",
            "1.00×",
            f"{loop['sums_ratio_to_bare_loop']:.2f}×",
        ],
        [
            "Lightning `Trainer` + `LitClassifier`",
            f"{loop['lightning_images_per_s']:,.0f}",
            ratio_cell(loop["ratio"], loop["ratio_iqr"]),
            ratio_cell(loop["ratio_to_bare_loop"], loop["ratio_to_bare_loop_iqr"]),
        ],
    ]
    return [
        f"Training step of the reference network (batch {network['batch_size']}, SGD), "
        "median over interleaved steps:",
        "",
        markdown_table(["implementation", "step", "images/s", "ratio to `torch`"], rows),
        "",
        f"Training loop, conv=`{loop['conv']}`, {loop['images']:,} images per pass, "
        f"{loop['rounds']} passes each, in a shuffled order each round (what Lightning's loop costs, "
        "for information):",
        "",
        markdown_table(
            ["loop", "images/s", "time ratio to the plain loop with the same sums", "to the bare plain loop"],
            loop_rows,
        ),
        "",
        "Lightning's one-off set-up per `fit` call (not in the ratio): "
        f"{duration(loop['lightning_setup_s'] * 1e3)}.",
    ]


def markdown_report(result: dict) -> str:
    """The tables `make bench` prints, as one markdown string."""
    settings = result["settings"]
    lines = [machine_line(result["machine"]), "", *trust_lines(result["machine"])]
    shapes = "; ".join(f"{name} {shape}" for name, shape in settings["cases"].items())
    lines += [f"Shapes (batch × C_in × H × W → C_out, kernel, stride, padding, groups): {shapes}", ""]
    titles = {"fwd": "Forward", "fwd+bwd": "Forward + backward"}
    timed = [r for r in result["conv"] if "unavailable" not in r]
    reduced = sorted({(r["impl"], r["batch"]) for r in timed if r["batch"] != r["case_batch"]})
    if reduced:
        shown = ", ".join(f"`{impl}` {batch} image(s)" for impl, batch in reduced)
        lines += [
            f"Slow implementations run on fewer images per call and are compared per image: {shown}.",
            "",
        ]
    for mode in PASSES:
        lines += [
            f"{titles[mode]}: median {settings.get('clock', 'wall')} time per call, ratio to `{BASELINE}` "
            f"(`nn.Conv2d`) paired in the same run [IQR], {settings['repeats']} repeats at most"
            f" (`*`: spread over {NOISY_SPREAD:.0%} of the median):",
            "",
            conv_table(result, mode),
            "",
        ]
    if result.get("growth") or result.get("growth_errors"):
        lines += [
            "Cost against the batch size (slow and user's layers), forward + backward: growth exponent k "
            "of time ∝ batch^k (1: linear) with its range over the rounds:",
            "",
            growth_table(result),
            "",
        ]
    if result.get("projection"):
        lines += [
            "A training step's conv layers and an MNIST epoch of them (refused where the spread is "
            "wider than the difference from `nn.Conv2d`):",
            "",
            projection_table(result),
            "",
        ]
    for text in result.get("explanations", {}).values():
        lines += [text, ""]
    if "network" in result:
        lines += [*network_tables(result["network"]), ""]
    return "\n".join(lines)
