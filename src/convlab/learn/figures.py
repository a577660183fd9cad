"""What conv1 learned, as pictures: filters at init and after training, one digit's activation maps.

Reads the `filters.pt` a run saves (`convlab.training.filter_images.FilterImages`):

    layer        "conv1"
    init         (C_out, C_in, kH, kW) the weights the run started from
    trained      (C_out, C_in, kH, kW) the weights at the end of training
    digit        (C_in, H, W)          one test image
    label        its class
    activations  (C_out, H_out, W_out) the trained layer's output for that image

Learned first-layer filters of a network that learns look like strokes and edges (smooth, signed
blobs); filters at init are noise, and a layer whose weights never train keeps them so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

FILTERS_FILE = "filters.pt"
KEYS = ("layer", "init", "trained", "digit", "activations")


def read_filters(run_dir: Path) -> dict | None:
    """run_dir/filters.pt with every key present, or None (not saved, unreadable or another layout)."""
    path = run_dir / FILTERS_FILE
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    if not isinstance(saved, dict) or any(key not in saved for key in KEYS):
        return None
    return saved


def tile(maps: torch.Tensor, columns: int) -> np.ndarray:
    """maps (N, h, w) -> one image (rows*(h+1)-1, columns*(w+1)-1), each map min-max scaled to [0, 1]
    on its own (structure, not scale, is what a glance compares); NaN between tiles."""
    maps = maps.detach().double().cpu()
    n, h, w = maps.shape
    rows = -(-n // columns)
    image = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan)
    for i, m in enumerate(maps):
        low, high = m.min().item(), m.max().item()
        scaled = (m - low) / (high - low) if high > low else torch.full_like(m, 0.5)
        r, c = divmod(i, columns)
        image[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = scaled.numpy()
    return image


def write_filters_figure(runs: Mapping[str, Sequence[Path]], path: Path) -> Path | None:
    """One row per implementation (label -> its probe=none run folders; the first with filters.pt is
    shown): the digit, filters at init, filters trained, the digit's activation maps. None, and no
    file, when no run saved filters."""
    rows = []
    for label, run_dirs in runs.items():
        saved = next((s for s in map(read_filters, run_dirs) if s is not None), None)
        if saved is not None:
            rows.append((label, saved))
    if not rows:
        return None
    fig = Figure(figsize=(12, 1.5 * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False, width_ratios=[1, 3, 3, 4])
    titles = ("test digit", "{layer} filters at init", "{layer} filters trained", "activation maps (trained)")
    for r, (label, saved) in enumerate(rows):
        filters_init = saved["init"].flatten(0, 1)  # one tile per (filter, input channel)
        filters_trained = saved["trained"].flatten(0, 1)
        columns = max(1, -(-filters_init.shape[0] // 2))
        panels = (
            tile(saved["digit"][:1], 1),
            tile(filters_init, columns),
            tile(filters_trained, columns),
            tile(saved["activations"], max(1, -(-saved["activations"].shape[0] // 2))),
        )
        for c, (ax, image) in enumerate(zip(axes[r], panels, strict=True)):
            ax.imshow(np.ma.masked_invalid(image), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c].format(layer=saved["layer"]), fontsize="small")
        # A file spec's folders take the width the pictures need: the file and class name the layer.
        axes[r][0].set_ylabel(label.rsplit("/", 1)[-1], fontsize="small", rotation=0, ha="right", va="center")
    fig.savefig(path, dpi=110)
    return path
