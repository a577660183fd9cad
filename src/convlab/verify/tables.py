"""Tables for `python -m convlab.verify`: one row per check, one summary row per implementation.

Each table is built once as a header and rows of strings, then printed either with
rich (console) or as a GitHub markdown table (`--markdown`, for the README).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from convlab.markdown import markdown_table
from convlab.verify.checks import TENSORS, CheckResult

CHECK_HEADER = ["impl", "configuration", "check", *(f"{t} abs / rel" for t in TENSORS), "rtol", "result"]
SUMMARY_HEADER = [
    "impl",
    "verdict",
    "grid checks passed",
    "gradchecks passed",
    "worst error / rtol",
    "time (s)",
]


@dataclass
class ImplSummary:
    """Every check of one implementation, and how long they took."""

    impl: str
    results: list[CheckResult]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def counts(self, gradcheck: bool) -> str:
        chosen = [r for r in self.results if (r.check == "gradcheck") == gradcheck]
        return f"{sum(r.passed for r in chosen)}/{len(chosen)}"

    def worst(self) -> float:
        return max((r.worst_fraction_of_tolerance() for r in self.results), default=0.0)

    def row(self) -> list[str]:
        verdict = "PASS" if self.passed else "FAIL"
        counts = [self.counts(gradcheck=False), self.counts(gradcheck=True)]
        return [self.impl, verdict, *counts, f"{self.worst():.3g}", f"{self.seconds:.1f}"]

    def line(self) -> str:
        """e.g. 'vanilla: PASS, 76/76 grid checks, 4/4 gradchecks, worst error 0.014 of rtol, 6.1 s'."""
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{self.impl}: {verdict}, {self.counts(False)} grid checks, {self.counts(True)} gradchecks, "
            f"worst error {self.worst():.3g} of rtol, {self.seconds:.1f} s"
        )


def check_row(result: CheckResult) -> list[str]:
    cells = []
    for name in TENSORS:
        c = result.comparisons.get(name)
        cells.append("—" if c is None else f"{c.max_abs:.1e} / {c.max_rel:.1e}")
    verdict = "pass" if result.passed else "FAIL"
    return [result.impl, result.case.name, result.check, *cells, result.tolerance, verdict]


def failure_notes(results: list[CheckResult]) -> list[str]:
    """One line per failing tensor of a failing check: what failed and why."""
    return [
        f"FAIL {r.impl} [{r.case.name}] {r.check}: {note}"
        for r in results
        if not r.passed
        for note in r.notes()
    ]


def rich_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, header_style="bold")
    for name in header:
        table.add_column(name, justify="left" if name in ("impl", "configuration", "check") else "right")
    for row in rows:
        failed = "FAIL" in row
        table.add_row(*row, style="red" if failed else None)
    return table


def print_report(console: Console, summaries: list[ImplSummary], failures_only: bool, markdown: bool) -> None:
    """The check table (all rows, or the failing ones), failure notes, then the summary."""
    results = [r for s in summaries for r in s.results if not (failures_only and r.passed)]
    rows = [check_row(r) for r in results]
    notes = failure_notes(results)
    if markdown:
        blocks = [markdown_table(CHECK_HEADER, rows)] if rows else []
        blocks += ["\n".join(f"- {note}" for note in notes)] if notes else []
        blocks.append(markdown_table(SUMMARY_HEADER, [s.row() for s in summaries]))
        # Plain text: no rich markup (notes contain brackets), highlighting or wrapping.
        console.print("\n\n".join(blocks), markup=False, highlight=False, soft_wrap=True)
        return
    if rows:
        console.print(rich_table("checks against F.conv2d (float64 reference)", CHECK_HEADER, rows))
    for note in notes:
        console.print(note, style="red", markup=False, soft_wrap=True)
    for summary in summaries:
        console.print(
            summary.line(), style="green" if summary.passed else "red", markup=False, soft_wrap=True
        )
