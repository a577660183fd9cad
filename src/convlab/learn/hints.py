"""One-line hints: the likely cause behind what the evidence found, each tied to the rule that fired.

A hint is advice, not a verdict: it names the common defect that produces the pattern, and where
to look. The rules (evidence from `convlab.learn.evidence`):

    zero_weight_grad   no conv layer's weights move                 -> weight gradient zero or absent
    input_grad_zero    an earlier conv layer is still, a later moves -> the later layer passes no
                                                                        input gradient: earlier ones starve
    gradient_sign      full training significantly worse than
                       frozen_conv while the weights move           -> the weight gradient has the wrong sign
    output_ignores     a layer's weights move, re-drawing them
                       keeps the accuracy                            -> the output does not read the weight
    init               frozen_conv stays at chance                   -> the init saturates or explodes the
                                                                        activations (or the learning rate)
    budget             nn.Conv2d not shown to learn in the setting   -> raise the budget
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from convlab.learn.evidence import LN10, Evidence, Points

LOSS_NEAR_LN10 = 0.05  # a test loss this close to ln 10: the network gives every image the same output


@dataclass(frozen=True)
class Hint:
    """rule: the name of the rule that fired (see the module docstring); text: one line."""

    rule: str
    text: str


def _find(items: Sequence[Evidence], rule: str, layer: str | None = None) -> Evidence | None:
    return next((item for item in items if item.rule == rule and item.layer == layer), None)


def _loss_text(test_loss: Mapping[str, Sequence[float]], probe: str) -> str:
    losses = test_loss.get(probe) or []
    if not losses:
        return ""
    mean = sum(losses) / len(losses)
    if math.isfinite(mean) and abs(mean - LN10) < LOSS_NEAR_LN10:
        return f"; its test loss stays at ln 10 = {LN10:.2f}: the same output for every image (saturated)"
    shown = "non-finite" if not math.isfinite(mean) else f"{mean:.3g}"
    return f"; its test loss is {shown} where an untrained network has ln 10 = {LN10:.2f}"


def hints_for(
    items: Sequence[Evidence],
    test_loss: Mapping[str, Sequence[float]] | None = None,
    budget: Mapping[str, object] | None = None,
    reference_not_learning: bool = False,
) -> list[Hint]:
    """The hints the evidence triggers, most specific first."""
    hints = []
    drifts = [item for item in items if item.rule == "drift" and item.points is not Points.ABSENT]
    still = [item.layer for item in drifts if item.points is Points.AGAINST]
    moving = [item.layer for item in drifts if item.points is Points.SUPPORTS]
    base, gain = _find(items, "baseline"), _find(items, "gain")
    if base is not None and base.points is Points.AGAINST:
        hints.append(
            Hint(
                "init",
                "even with the convs frozen the network stays at chance: the conv's init saturates or "
                "explodes the activations (all weights positive, as torch.rand draws them? nn.Conv2d draws "
                "U(-1/sqrt(fan_in), 1/sqrt(fan_in))) or the learning rate is too high; to judge the layer "
                "apart from its init, run the sweep again with model.net.conv_init=nn_conv2d"
                + _loss_text(test_loss or {}, "frozen_conv"),
            )
        )
    if drifts and not moving:
        hints.append(
            Hint(
                "zero_weight_grad",
                "no conv layer's weights move: their gradient is zero or absent (a .detach(), .data, "
                "torch.no_grad or a tensor rebuilt from the weight between the parameter and the output?)",
            )
        )
    elif still and moving:
        order = [item.layer for item in drifts]  # the network's order, input side first
        last_still = max(order.index(layer) for layer in still)
        later = [layer for layer in moving if order.index(layer) > last_still]
        if later:
            hints.append(
                Hint(
                    "input_grad_zero",
                    f"{', '.join(still)} does not move while {', '.join(later)} does: the later conv passes "
                    "no gradient to its input (input gradient zero or detached), so every layer before it "
                    "starves",
                )
            )
    if gain is not None and gain.points is Points.AGAINST and moving:
        hints.append(
            Hint(
                "gradient_sign",
                "the conv weights move and the network gets worse for it: the weight gradient likely has "
                "the wrong sign (each update climbs the loss); compare it with F.conv2d's in convlab.verify",
            )
        )
    # Per layer when the runs re-drew each layer alone, else all convs at once (layer None).
    trains = base is None or base.points is not Points.AGAINST  # at chance, nothing is used anyway
    for layer in [*moving, None] if moving and trains else []:
        redraw = _find(items, "redraw", layer)
        if redraw is not None and redraw.points is Points.AGAINST:
            what = f"{layer}'s weights move" if layer else "the conv weights move"
            hints.append(
                Hint(
                    "output_ignores",
                    f"{what} but re-drawing them changes nothing: the output does not depend "
                    "on the weight parameter (the forward reads a copy made at init, a buffer or .data?)",
                )
            )
    if reference_not_learning:
        knobs = ", ".join(f"{key} (now {value})" for key, value in (budget or {}).items())
        hints.append(
            Hint(
                "budget",
                "nn.Conv2d is not shown to learn at this budget, so no layer can be: raise "
                + (knobs or "data.train_subset, trainer.max_epochs or the number of seeds"),
            )
        )
    return hints
