"""Tables for `python -m convlab.verify` and `convlab.check`: checks, capabilities, diagnoses, summary.

Each table is built once as a header and rows of strings, then printed with rich (console), written as
GitHub markdown (`--markdown`, for the README) or as HTML (a notebook's `_repr_html_`).
"""

from __future__ import annotations

import html
import io

from rich.console import Console
from rich.table import Table

from convlab.markdown import markdown_table
from convlab.training.run_record import provenance_line
from convlab.verify.capability import FAILS, PASSES
from convlab.verify.checks import TENSORS, CheckResult
from convlab.verify.layer_check import LayerCheck

CHECK_HEADER = ["impl", "configuration", "check", *(f"{t} abs / rel" for t in TENSORS), "rtol", "result"]
SUMMARY_HEADER = [
    "impl",
    "verdict",
    "grid checks passed",
    "gradchecks passed",
    "capabilities",
    "worst error / rtol",
    "time ~ batch^k",
    "time (s)",
]
DIAGNOSIS_HEADER = ["impl", "aspect", "finding"]


def verdict(check: LayerCheck) -> str:
    return "PASS" if check.passed else "FAIL"


def summary_row(check: LayerCheck) -> list[str]:
    growth = "—" if check.cost is None else f"{check.cost.exponent:.2f}"
    counts = [check.counts(gradcheck=False), check.counts(gradcheck=True)]
    return [
        check.label,
        verdict(check),
        *counts,
        check.capability_counts(),
        f"{check.worst():.3g}",
        growth,
        f"{check.seconds:.1f}",
    ]


def summary_line(check: LayerCheck) -> str:
    """e.g. 'vanilla: PASS, 76/76 grid checks, 4/4 gradchecks, capabilities: 14 passes, worst error ...'."""
    return (
        f"{check.label}: {verdict(check)}, {check.counts(False)} grid checks, "
        f"{check.counts(True)} gradchecks, capabilities: {check.capability_counts()}, "
        f"worst error {check.worst():.3g} of rtol, {check.seconds:.1f} s"
    )


def check_row(result: CheckResult) -> list[str]:
    cells = []
    for name in TENSORS:
        c = result.comparisons.get(name)
        cells.append("—" if c is None else f"{c.max_abs:.1e} / {c.max_rel:.1e}")
    outcome = "pass" if result.passed else ("not supported" if result.unsupported else "FAIL")
    return [result.impl, result.case.name, result.check, *cells, result.tolerance, outcome]


def failure_notes(results: list[CheckResult]) -> list[str]:
    """One line per failing tensor of a failing check: what failed and why."""
    return [
        f"FAIL {r.impl} [{r.case.name}] {r.check}: {note}" for r in results if r.failed for note in r.notes()
    ]


def capability_matrix(checks: list[LayerCheck], failures_only: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per feature, one column per layer, cells passes / FAILS / not supported."""
    header = ["feature", *(c.label for c in checks)]
    features = [row.feature for row in checks[0].capabilities] if checks else []
    rows = []
    for feature in features:
        cells = []
        for check in checks:
            status = check.capability(feature).status
            cells.append("FAILS" if status == FAILS else status)
        if failures_only and "FAILS" not in cells:
            continue
        rows.append([feature, *cells])
    return header, rows


def capability_notes(checks: list[LayerCheck], failures_only: bool) -> list[str]:
    """Why each feature that did not pass did not: the exception, or the failing note."""
    return [
        f"{'FAIL' if row.failed else 'not supported'} {check.label} {row.feature}: {row.detail}"
        for check in checks
        for row in check.capabilities
        if row.status != PASSES and (row.failed or not failures_only)
    ] + [
        f"note {check.label} {row.feature}: {row.detail}"
        for check in checks
        for row in check.capabilities
        if row.status == PASSES and row.detail and not failures_only
    ]


def diagnosis_rows(checks: list[LayerCheck], failures_only: bool) -> list[list[str]]:
    return [
        [check.label, d.aspect, ("PROBLEM: " if d.problem else "") + d.finding]
        for check in checks
        for d in check.diagnoses
        if d.problem or not failures_only
    ]


def hint_lines(checks: list[LayerCheck]) -> list[str]:
    return [f"hint {check.label} {d.aspect}: {d.hint}" for check in checks for d in check.problems if d.hint]


def cost_lines(checks: list[LayerCheck]) -> list[str]:
    return [f"cost {check.label}: {check.cost.line()}" for check in checks if check.cost is not None]


def rich_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, header_style="bold")
    for name in header:
        left = name in ("impl", "configuration", "check", "feature", "aspect", "finding")
        table.add_column(name, justify="left" if left else "right")
    for row in rows:
        bad = any(cell in ("FAIL", "FAILS") or cell.startswith("PROBLEM") for cell in row)
        table.add_row(*row, style="red" if bad else None)
    return table


def print_report(console: Console, checks: list[LayerCheck], failures_only: bool, markdown: bool) -> None:
    """The check table (all rows, or the failing ones), capability table, diagnoses, cost, summary."""
    results = [r for c in checks for r in c.results if not (failures_only and not r.failed)]
    rows = [check_row(r) for r in results]
    notes = failure_notes(results)
    cap_header, cap_rows = capability_matrix(checks, failures_only)
    cap_notes = capability_notes(checks, failures_only)
    diagnoses = diagnosis_rows(checks, failures_only)
    hints = hint_lines(checks)
    costs = [] if failures_only else cost_lines(checks)
    if markdown:
        blocks = [provenance_line()]
        blocks += [markdown_table(CHECK_HEADER, rows)] if rows else []
        blocks += ["\n".join(f"- {note}" for note in notes)] if notes else []
        blocks += [markdown_table(cap_header, cap_rows)] if cap_rows else []
        blocks += ["\n".join(f"- {note}" for note in cap_notes)] if cap_notes else []
        blocks += [markdown_table(DIAGNOSIS_HEADER, diagnoses)] if diagnoses else []
        blocks += ["\n".join(f"- {line}" for line in hints + costs)] if hints or costs else []
        blocks.append(markdown_table(SUMMARY_HEADER, [summary_row(c) for c in checks]))
        # Plain text: no rich markup (notes contain brackets), highlighting or wrapping.
        console.print("\n\n".join(blocks), markup=False, highlight=False, soft_wrap=True)
        return
    if rows:
        console.print(rich_table("checks against F.conv2d (float64 reference)", CHECK_HEADER, rows))
    for note in notes:
        console.print(note, style="red", markup=False, soft_wrap=True)
    if cap_rows:
        console.print(rich_table("capabilities (nn.Conv2d features and autograd)", cap_header, cap_rows))
    for note in cap_notes:
        console.print(note, style="red" if note.startswith("FAIL") else None, markup=False, soft_wrap=True)
    if diagnoses:
        console.print(rich_table("diagnoses", DIAGNOSIS_HEADER, diagnoses))
    for line in hints + costs:
        console.print(line, markup=False, soft_wrap=True)
    for check in checks:
        console.print(
            summary_line(check), style="green" if check.passed else "red", markup=False, soft_wrap=True
        )


def html_report(check: LayerCheck) -> str:
    """A notebook's view of one layer: summary, capability table with details, diagnoses with hints."""

    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    capabilities = [[c.feature, c.status, c.detail] for c in check.capabilities]
    diagnoses = [[d.aspect, d.finding, d.hint] for d in check.diagnoses]
    failures = failure_notes(check.results)
    parts = [
        f"<p><b>{html.escape(summary_line(check))}</b></p>",
        table(["feature", "status", "detail"], capabilities),
        table(["aspect", "finding", "hint"], diagnoses),
    ]
    if check.cost is not None:
        parts.append(f"<p>cost: {html.escape(check.cost.line())}</p>")
    if failures:
        parts.append("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in failures) + "</ul>")
    return "\n".join(parts)


def markdown_report(check: LayerCheck) -> str:
    """The same as `html_report`, in markdown."""
    parts = [
        f"**{summary_line(check)}**",
        markdown_table(
            ["feature", "status", "detail"], [[c.feature, c.status, c.detail] for c in check.capabilities]
        ),
        markdown_table(
            ["aspect", "finding", "hint"], [[d.aspect, d.finding, d.hint] for d in check.diagnoses]
        ),
    ]
    if check.cost is not None:
        parts.append(f"cost: {check.cost.line()}")
    parts += [f"- {f}" for f in failure_notes(check.results)]
    return "\n\n".join(parts)


def text_report(check: LayerCheck) -> str:
    """A terminal's view of one layer, plain text, for `print(convlab.check(...))`."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(summary_line(check), markup=False, soft_wrap=True)
    capabilities = [[c.feature, c.status, c.detail] for c in check.capabilities]
    console.print(rich_table(f"capabilities of {check.label}", ["feature", "status", "detail"], capabilities))
    diagnoses = [[d.aspect, d.finding, d.hint] for d in check.diagnoses]
    console.print(rich_table("diagnoses", ["aspect", "finding", "hint"], diagnoses))
    for line in cost_lines([check]) + failure_notes(check.results):
        console.print(line, markup=False, soft_wrap=True)
    return console.file.getvalue()
