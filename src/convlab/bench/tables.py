"""Markdown tables of a `convlab.bench` result (the dict written to bench.json)."""

from __future__ import annotations

from convlab.bench.shapes import BASELINE, MODES


def duration(ms: float) -> str:
    """A time with a unit that keeps 2-3 significant digits: 0.612 ms, 48.1 ms, 1.23 s, 4.5 h."""
    seconds = ms / 1e3
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{ms:.3g} ms"


def ratio_cell(ratio: float, spread: list[float]) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    return f"{ratio:.2f}× [{spread[0]:.2f}–{spread[1]:.2f}]"


def machine_line(machine: dict) -> str:
    device = machine.get("gpu", machine["cpu"])
    gemm = ", ".join(f"{name} {gflops:.0f}" for name, gflops in machine.get("gemm_gflops", {}).items())
    kept = machine.get("freed_memory_kept")
    allocator = " Freed memory kept in the process (no page-fault luck)." if kept else ""
    return (
        f"Machine: {device} ({machine['device']}), torch {machine['torch']}, "
        f"{machine['threads']} threads, {machine['date']}."
        + (f" Float32 GEMM (64×576 @ 576×8192), GFLOP/s: {gemm}." if gemm else "")
        + allocator
    )


def conv_table(result: dict, mode: str) -> list[str]:
    """Rows: implementations; columns: cases; cells: median time and paired ratio to nn.Conv2d."""
    records = [r for r in result["conv"] if r["mode"] == mode]
    cases = list(dict.fromkeys(r["case"] for r in records))
    impls = [name for name in result["settings"]["impls"] if any(r["impl"] == name for r in records)]
    cell = {(r["impl"], r["case"]): r for r in records}
    lines = [
        "| implementation | " + " | ".join(cases) + " |",
        "|---|" + "---|" * len(cases),
    ]
    for impl in impls:
        cells = []
        for case in cases:
            r = cell.get((impl, case))
            if r is None:
                cells.append("—")
            elif r["batch"] != r["case_batch"]:
                cells.append(f"{duration(r['per_image_ms'])}/image, {ratio_cell(r['ratio'], r['ratio_iqr'])}")
            else:
                cells.append(f"{duration(r['median_ms'])}, {ratio_cell(r['ratio'], r['ratio_iqr'])}")
        lines.append(f"| `{impl}` | " + " | ".join(cells) + " |")
    return lines


def epoch_table(result: dict) -> list[str]:
    per_image = {
        (r["impl"], r["case"]): r["per_image_ms"]
        for r in result["conv"]
        if r["mode"] == "fwd+bwd" and r["case"] in ("conv1", "conv2")
    }
    lines = [
        "| implementation | conv1 per image | conv2 per image | conv1 + conv2, one MNIST epoch |",
        "|---|---|---|---|",
    ]
    for impl, epoch_s in result["mnist_epoch_conv_s"].items():
        lines.append(
            f"| `{impl}` | {duration(per_image[impl, 'conv1'])} | {duration(per_image[impl, 'conv2'])} "
            f"| {duration(epoch_s * 1e3)} |"
        )
    return lines


def network_tables(network: dict) -> list[str]:
    lines = [
        f"Training step of the reference network (batch {network['batch_size']}, SGD), "
        "median over interleaved steps:",
        "",
        "| implementation | step | images/s | ratio to `torch` |",
        "|---|---|---|---|",
    ]
    for r in network["training_step"]:
        lines.append(
            f"| `{r['impl']}` | {duration(r['step_ms'])} | {r['images_per_s']:,.0f} "
            f"| {ratio_cell(r['ratio'], r['ratio_iqr'])} |"
        )
    loop = network["loop_overhead"]
    lines += [
        "",
        f"Training loop, conv=`{loop['conv']}`, {loop['images']:,} images per pass, "
        f"{loop['rounds']} passes each, in a shuffled order each round:",
        "",
        "| loop | images/s | time ratio to the plain loop with the same sums | to the bare plain loop |",
        "|---|---|---|---|",
        f"| plain PyTorch, bare | {loop['plain_images_per_s']:,.0f} | – | 1.00× |",
        f"| plain PyTorch + the epoch loss and accuracy sums `LitClassifier` keeps "
        f"| {loop['plain_with_sums_images_per_s']:,.0f} | 1.00× | {loop['sums_ratio_to_bare_loop']:.2f}× |",
        f"| Lightning `Trainer` + `LitClassifier` | {loop['lightning_images_per_s']:,.0f} "
        f"| {ratio_cell(loop['ratio'], loop['ratio_iqr'])} "
        f"| {ratio_cell(loop['ratio_to_bare_loop'], loop['ratio_to_bare_loop_iqr'])} |",
        "",
        "Lightning's one-off set-up per `fit` call (not in the ratio): "
        f"{duration(loop['lightning_setup_s'] * 1e3)}.",
    ]
    return lines


def markdown_report(result: dict) -> str:
    """The tables `make bench` prints, as one markdown string."""
    settings = result["settings"]
    lines = [machine_line(result["machine"]), ""]
    shapes = "; ".join(f"{name} {shape}" for name, shape in settings["cases"].items())
    lines += [f"Shapes (batch × C_in × H × W → C_out, kernel, stride, padding, groups): {shapes}", ""]
    titles = {"fwd": "Forward", "fwd+bwd": "Forward + backward"}
    reduced = sorted({(r["impl"], r["batch"]) for r in result["conv"] if r["batch"] != r["case_batch"]})
    if reduced:
        shown = ", ".join(f"`{impl}` {batch} image(s)" for impl, batch in reduced)
        lines += [
            f"Slow implementations run on fewer images per call and are compared per image: {shown}.",
            "",
        ]
    for mode in MODES:
        lines += [
            f"{titles[mode]}: median {settings.get('clock', 'wall')} time per call, ratio to `{BASELINE}` "
            f"(`nn.Conv2d`) paired in the same run [IQR], {settings['repeats']} repeats at most:",
            "",
            *conv_table(result, mode),
            "",
        ]
    if result["mnist_epoch_conv_s"]:
        lines += [
            "Conv layers alone, forward + backward, projected to the 60,000 MNIST training images:",
            "",
            *epoch_table(result),
            "",
        ]
    if "network" in result:
        lines += [*network_tables(result["network"]), ""]
    return "\n".join(lines)
