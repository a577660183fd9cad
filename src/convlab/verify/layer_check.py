"""Everything verify checks for one layer, as data: the grid, the capability table, diagnoses and cost.

`check_layer` is what `python -m convlab.verify SPEC` and `convlab.check(...)` both run; the tables
module renders its result for a terminal, a README or a notebook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from convlab.conv import conv_label, resolve_conv
from convlab.verify.autograd_checks import autograd_capabilities
from convlab.verify.capability import FAILS, UNSUPPORTED, Capability, capability_table
from convlab.verify.cases import GRADCHECK_GRID, GRID, QUICK_GRADCHECK_GRID, QUICK_GRID
from convlab.verify.checks import CheckResult, check_case, forward_only, gradcheck_case
from convlab.verify.cost import Cost, measure
from convlab.verify.diagnose import Diagnosis, diagnose


@dataclass
class LayerCheck:
    """One layer's verification.

    results: the grid's checks (each dtype) and gradchecks. capabilities: one row per nn.Conv2d feature,
    then the autograd rows. diagnoses: rows with hints. cost: the growth of its time with the batch.
    strict: unsupported features count as failures.
    """

    label: str
    results: list[CheckResult] = field(default_factory=list)
    capabilities: list[Capability] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    cost: Cost | None = None
    seconds: float = 0.0
    strict: bool = False

    @property
    def failed_results(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed or (self.strict and r.unsupported)]

    @property
    def failed_capabilities(self) -> list[Capability]:
        return [c for c in self.capabilities if c.failed or (self.strict and c.status == UNSUPPORTED)]

    @property
    def passed(self) -> bool:
        """No failure of a supported feature (with strict: no unsupported feature either)."""
        return not self.failed_results and not self.failed_capabilities

    @property
    def problems(self) -> list[Diagnosis]:
        return [d for d in self.diagnoses if d.problem]

    def capability(self, feature: str) -> Capability:
        """The row for `feature` (a KeyError naming the features otherwise)."""
        for row in self.capabilities:
            if row.feature == feature:
                return row
        raise KeyError(f"no capability {feature!r}; rows: {[c.feature for c in self.capabilities]}")

    def counts(self, gradcheck: bool) -> str:
        """'passed/supported' of the grid (or gradchecks), with the unsupported ones named if any."""
        chosen = [r for r in self.results if (r.check == "gradcheck") == gradcheck]
        unsupported = sum(bool(r.unsupported) for r in chosen)
        text = f"{sum(r.passed for r in chosen)}/{len(chosen) - unsupported}"
        return text + (f" (+{unsupported} not supported)" if unsupported else "")

    def capability_counts(self) -> str:
        statuses = [c.status for c in self.capabilities]
        return ", ".join(f"{statuses.count(s)} {s}" for s in ("passes", FAILS, UNSUPPORTED) if s in statuses)

    def worst(self) -> float:
        return max((r.worst_fraction_of_tolerance() for r in self.results), default=0.0)

    def table(self) -> list[dict[str, str]]:
        """The capability table as data: one {'feature', 'status', 'detail'} per row."""
        return [{"feature": c.feature, "status": c.status, "detail": c.detail} for c in self.capabilities]

    # Rendering lives in convlab.verify.tables (which imports this module): imported when used.
    def __str__(self) -> str:
        from convlab.verify.tables import text_report

        return text_report(self)

    def _repr_html_(self) -> str:
        from convlab.verify.tables import html_report

        return html_report(self)

    def _repr_markdown_(self) -> str:
        from convlab.verify.tables import markdown_report

        return markdown_report(self)

    def __repr__(self) -> str:
        from convlab.verify.tables import summary_line

        return f"<LayerCheck {summary_line(self)}>"


def check_layer(
    spec: object,
    *,
    dtypes: list[torch.dtype] = (torch.float64, torch.float32),
    quick: bool = False,
    weight: str | None = None,
    bias: str | None = None,
    strict: bool = False,
    judged_at: torch.dtype | None = None,
    compile: bool | None = None,
    cost: bool = True,
    on_check: Callable[[str], None] = lambda description: None,
) -> LayerCheck:
    """Verify one layer given by a spec (name, spec string, class, function or pair; see resolve_conv).

    dtypes: the grid's and capability table's dtypes; gradcheck and the autograd rows run in float64 when
    it is among them (float32 otherwise, and no gradcheck). quick: the short grid, and no torch.compile
    row unless `compile` says so. judged_at: judge every result at this dtype's tolerance.
    Raises SpecError for a spec that does not resolve.
    """
    layer_cls: type[nn.Module] = resolve_conv(spec, weight=weight, bias=bias)
    label = conv_label(spec)
    start = time.perf_counter()
    dtypes = list(dtypes)
    cases, gradchecks = (QUICK_GRID, QUICK_GRADCHECK_GRID) if quick else (GRID, GRADCHECK_GRID)
    first_dtype = torch.float64 if torch.float64 in dtypes else dtypes[0]
    if first_dtype != torch.float64:
        gradchecks = ()  # finite differences need float64
    check = LayerCheck(label, strict=strict)
    for case in cases:
        for dtype in dtypes:
            on_check(f"{label} [{case.name}] {dtype}")
            check.results.append(check_case(label, layer_cls, case, dtype, judged_at))
    for case in gradchecks:
        on_check(f"{label} [{case.name}] gradcheck")
        check.results.append(gradcheck_case(label, layer_cls, case))
    check.capabilities = capability_table(label, layer_cls, dtypes, on_check)
    compile = (not quick) if compile is None else compile
    check.capabilities += autograd_capabilities(
        layer_cls, first_dtype, compile, lambda d: on_check(f"{label} {d} {first_dtype}")
    )
    on_check(f"{label} diagnoses")
    check.diagnoses = diagnose(
        layer_cls, first_dtype, check.results + [r for c in check.capabilities for r in c.results]
    )
    if cost:
        on_check(f"{label} cost")
        try:
            check.cost = measure(layer_cls, backward=not forward_only(layer_cls))
        except Exception as error:  # a layer that cannot run the cost shape is reported by the checks
            check.diagnoses.append(Diagnosis("cost", f"not measured: {type(error).__name__}: {error}"))
    check.seconds = time.perf_counter() - start
    return check


def planned_checks(
    quick: bool, dtypes: list[torch.dtype], compile: bool | None = None, cost: bool = True
) -> int:
    """How many times `check_layer` calls on_check with these options (a progress bar's total)."""
    from convlab.verify.autograd_checks import CHECKS
    from convlab.verify.capability import FEATURES

    cases, gradchecks = (QUICK_GRID, QUICK_GRADCHECK_GRID) if quick else (GRID, GRADCHECK_GRID)
    compile = (not quick) if compile is None else compile
    n_gradchecks = len(gradchecks) if torch.float64 in dtypes else 0
    n_capability = sum(len(c) for c in FEATURES.values()) * len(dtypes)
    return len(cases) * len(dtypes) + n_gradchecks + n_capability + len(CHECKS) - (not compile) + 1 + cost
