"""scripts/readme_include.py: README and docs blocks refreshed from tool output, whole files or excerpts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_include.py"
spec = importlib.util.spec_from_file_location("readme_include", SCRIPT)
readme_include = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_include)

REPORT = "# Title\n\n3 runs.\n\n| conv | a |\n|---|---|\n| x | 1 |\n\n## Verdicts\n\n- x: learns\n"


def test_whole_file_and_excerpts_replace_old_content(tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text(REPORT)
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n"
        "<!-- include: report.md -->\nstale\n<!-- /include -->\n"
        'middle\n<!-- include: report.md start="| conv" stop="## Verdicts" -->\n'
        "old table\n<!-- /include -->\n"
        '<!-- include: report.md start="- " -->\n<!-- /include -->\nend\n'
    )
    assert readme_include.refresh(readme) == ["report.md"] * 3
    assert readme.read_text() == (
        "intro\n"
        f"<!-- include: report.md -->\n{REPORT}<!-- /include -->\n"
        'middle\n<!-- include: report.md start="| conv" stop="## Verdicts" -->\n'
        "| conv | a |\n|---|---|\n| x | 1 |\n<!-- /include -->\n"
        '<!-- include: report.md start="- " -->\n- x: learns\n<!-- /include -->\nend\n'
    )
    before = readme.read_text()
    readme_include.refresh(readme)
    assert readme.read_text() == before  # idempotent


def test_fence_wraps_the_excerpt_in_a_code_block(tmp_path: Path) -> None:
    (tmp_path / "layer.py").write_text("import torch\n\n\nclass Conv:\n    pass\n")
    page = tmp_path / "README.md"
    marker = '<!-- include: layer.py start="class" fence="python" -->\n'
    page.write_text(marker + "<!-- /include -->\n")
    readme_include.refresh(page)
    assert page.read_text() == marker + "```python\nclass Conv:\n    pass\n```\n<!-- /include -->\n"


def test_lines_keeps_the_first_lines_from_start(tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text(REPORT)
    readme = tmp_path / "README.md"
    marker = '<!-- include: report.md start="| conv" lines="2" -->\n'
    readme.write_text(marker + "old\n<!-- /include -->\n")
    readme_include.refresh(readme)
    assert readme.read_text() == marker + "| conv | a |\n|---|---|\n<!-- /include -->\n"


@pytest.mark.parametrize(
    "marker, message",
    [
        ("<!-- include: nowhere.md -->", "missing: nowhere.md"),
        ('<!-- include: report.md start="| nope" -->', "no line starts with '| nope'"),
        ('<!-- include: report.md start="| conv" stop="## Nope" -->', "starts with '## Nope'"),
        ('<!-- include: report.md begin="| conv" -->', "unknown attribute\\(s\\) begin"),
        ('<!-- include: report.md lines="ten" -->', "lines='ten' is not a number"),
    ],
)
def test_bad_blocks_change_nothing(tmp_path: Path, marker: str, message: str) -> None:
    (tmp_path / "report.md").write_text(REPORT)
    readme = tmp_path / "README.md"
    original = f"intro\n{marker}\nkept\n<!-- /include -->\n"
    readme.write_text(original)
    with pytest.raises(ValueError, match=message):
        readme_include.refresh(readme)
    assert readme.read_text() == original


def test_docs_pages_include_relative_to_themselves_and_a_bad_page_writes_none(tmp_path: Path) -> None:
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "report.md").write_text(REPORT)
    readme = tmp_path / "README.md"
    page = tmp_path / "docs" / "learning.md"
    readme.write_text('<!-- include: docs/results/report.md start="- " -->\nold\n<!-- /include -->\n')
    page.write_text('<!-- include: results/report.md start="- " -->\nold\n<!-- /include -->\n')
    bad = tmp_path / "docs" / "speed.md"
    bad.write_text("<!-- include: results/nowhere.md -->\nold\n<!-- /include -->\n")
    assert readme_include.pages(tmp_path) == [readme, bad.parent / "learning.md", bad]

    with pytest.raises(ValueError, match="speed.md: included file\\(s\\) missing: results/nowhere.md"):
        readme_include.refresh(readme, page, bad)
    assert (
        "old" in readme.read_text() and "old" in page.read_text()
    )  # all pages rendered before any is written

    assert readme_include.stale(readme, page) == [readme, page]
    readme_include.refresh(readme, page)
    assert (
        page.read_text() == '<!-- include: results/report.md start="- " -->\n- x: learns\n<!-- /include -->\n'
    )
    assert readme_include.stale(readme, page) == []


def test_check_reports_stale_pages_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "report.md").write_text(REPORT)
    page = tmp_path / "page.md"
    page.write_text('<!-- include: report.md start="- " -->\nold\n<!-- /include -->\n')
    assert readme_include.main(["--check", str(page)]) == 1
    assert "page.md: out of date" in capsys.readouterr().out
    assert "old" in page.read_text()
    assert readme_include.main([str(page)]) == 0
    assert readme_include.main(["--check", str(page)]) == 0


def test_the_committed_readme_and_docs_match_the_results_they_include() -> None:
    """A results file regenerated without `make readme` leaves a page showing old output: caught here."""
    out_of_date = readme_include.stale(*readme_include.pages())
    assert not out_of_date, f"run make readme: {', '.join(str(p) for p in out_of_date)}"


def test_start_and_stop_ignore_leading_blanks(tmp_path: Path) -> None:
    (tmp_path / "out.md").write_text("x\n      capabilities\n| a |\n   diagnoses\n")
    page = tmp_path / "page.md"
    marker = '<!-- include: out.md start="capabilities" stop="diagnoses" -->\n'
    page.write_text(marker + "<!-- /include -->\n")
    readme_include.refresh(page)
    assert page.read_text() == marker + "      capabilities\n| a |\n<!-- /include -->\n"
