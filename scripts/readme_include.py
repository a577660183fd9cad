"""Refresh the generated blocks of README.md and docs/*.md from the files the project's tools wrote.

A block is everything between a pair of markers; the first names the file (relative to the page that
includes it), and optionally the part of it to take: from the first line starting with `start` (kept)
to the next line starting with `stop` (left out), leading blanks ignored, at most `lines` lines, each
quoted; `fence` wraps the text in a fenced code block of that language (the markers cannot sit inside
one):

    <!-- include: docs/results/bench/bench.md -->
    ...replaced by the whole file...
    <!-- /include -->
    <!-- include: results/does_it_learn/report.md start="| conv" stop="## Verdicts" -->
    ...replaced by the report's table (in docs/learning.md, beside docs/results/)...
    <!-- /include -->
    <!-- include: docs/results/verify/verify.md start="| impl | configuration" lines="10" -->
    ...replaced by the first 10 lines from `start` on...
    <!-- /include -->
    <!-- include: tests/user_layers/learner_conv.py start="class" fence="python" -->
    ...replaced by the class, in a python code block...
    <!-- /include -->

So every result a page shows is what a tool wrote (`make bench`, `python -m convlab.report`, or a
command run by scripts/docs_capture.py, which stamps date, machine and versions), never typed by hand.

    python scripts/readme_include.py              # README.md and docs/*.md  (make readme)
    python scripts/readme_include.py docs/speed.md
    python scripts/readme_include.py --check      # exit 1, naming the pages, when one is out of date

A missing file or a `start`/`stop` not found is an error naming the page, and then no page is written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r'(?P<open><!-- include: (?P<path>\S+)(?P<attrs>(?: \w+="[^"]*")*) -->\n)'
    r"(?P<body>.*?)(?P<close><!-- /include -->)",
    re.DOTALL,
)
ATTRIBUTE = re.compile(r' (\w+)="([^"]*)"')
ATTRIBUTES = ("start", "stop", "lines", "fence")


def pages(root: Path = REPO) -> list[Path]:
    """The pages that may hold include blocks: README.md and every docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def excerpt(text: str, start: str | None, stop: str | None, path: str, limit: int | None = None) -> str:
    """The lines of text from the first starting with `start` up to the next starting with `stop`,
    at most `limit` of them. Leading blanks do not count: a centred table title matches its words."""
    lines = text.rstrip("\n").split("\n")
    first = 0
    if start is not None:
        first = next((i for i, line in enumerate(lines) if line.lstrip().startswith(start)), None)
        if first is None:
            raise ValueError(f"{path}: no line starts with {start!r}")
    last = len(lines)
    if stop is not None:
        last = next((i for i in range(first + 1, len(lines)) if lines[i].lstrip().startswith(stop)), None)
        if last is None:
            raise ValueError(f"{path}: no line after {start!r} starts with {stop!r}")
    if limit is not None:
        last = min(last, first + limit)
    return "\n".join(lines[first:last]).strip("\n") + "\n"


def attributes(text: str, path: str) -> dict[str, str]:
    """The block's `key="value"` attributes; an unknown key or a `lines` that is not a number is an error."""
    attrs = dict(ATTRIBUTE.findall(text))
    unknown = sorted(set(attrs) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(
            f"{path}: unknown attribute(s) {', '.join(unknown)} (known: {', '.join(ATTRIBUTES)})"
        )
    if "lines" in attrs and not attrs["lines"].isdigit():
        raise ValueError(f"{path}: lines={attrs['lines']!r} is not a number of lines")
    return attrs


def rendered(page: Path) -> tuple[str, list[str]]:
    """The page's text with every block replaced by its excerpt, and the paths it includes."""
    text = page.read_text()
    blocks = list(BLOCK.finditer(text))
    missing = sorted({m["path"] for m in blocks if not (page.parent / m["path"]).is_file()})
    if missing:
        raise ValueError(f"{page}: included file(s) missing: {', '.join(missing)}")
    pieces, end = [], 0
    for match in blocks:
        source = (page.parent / match["path"]).read_text()
        try:
            attrs = attributes(match["attrs"], match["path"])
            limit = int(attrs["lines"]) if "lines" in attrs else None
            body = excerpt(source, attrs.get("start"), attrs.get("stop"), match["path"], limit)
        except ValueError as error:
            raise ValueError(f"{page}: {error}") from None
        if "fence" in attrs:
            body = f"```{attrs['fence']}\n{body}```\n"
        pieces += [text[end : match.start()], match["open"], body, match["close"]]
        end = match.end()
    return "".join(pieces) + text[end:], [match["path"] for match in blocks]


def refresh(*targets: Path) -> list[str]:
    """Rewrites each page with every block's excerpt; returns the paths included.

    Every page is rendered before any is written, so one bad block leaves all of them as they were.
    """
    results = [(page, *rendered(page)) for page in targets]
    for page, text, _ in results:
        if page.read_text() != text:
            page.write_text(text)
    return [path for _, _, paths in results for path in paths]


def stale(*targets: Path) -> list[Path]:
    """The pages whose blocks differ from the files they include (nothing is written)."""
    return [page for page in targets if rendered(page)[0] != page.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="default: README.md and docs/*.md")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a page is out of date"
    )
    args = parser.parse_args(argv)
    targets = args.pages or pages()
    try:
        if args.check:
            out_of_date = stale(*targets)
            for page in out_of_date:
                print(f"{page}: out of date with the files it includes (run make readme)")
            return 1 if out_of_date else 0
        for page in targets:
            for path in rendered(page)[1]:
                print(f"{page}: refreshed from {path}")
        refresh(*targets)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
