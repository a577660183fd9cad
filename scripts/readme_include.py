"""Refresh the generated blocks of README.md from the files the project's tools wrote.

A block is everything between a pair of markers; the first names the file, and optionally
the part of it to take: from the first line starting with `start` (kept) to the next line
starting with `stop` (left out), each quoted:

    <!-- include: docs/results/bench.md -->
    ...replaced by the whole file...
    <!-- /include -->
    <!-- include: docs/results/does_it_learn/report.md start="| conv" stop="## Verdicts" -->
    ...replaced by the report's table...
    <!-- /include -->
    <!-- include: docs/results/verify/verify.md start="| impl | configuration" lines="10" -->
    ...replaced by the first 10 lines from `start` on...
    <!-- /include -->

So every results table in the README is what `make bench` or `python -m convlab.report`
wrote, never typed by hand. Usage: python scripts/readme_include.py [README.md] (`make readme`).
A missing file or a `start`/`stop` not found is an error, and then nothing is written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BLOCK = re.compile(
    r'(?P<open><!-- include: (?P<path>\S+)(?: start="(?P<start>[^"]*)")?(?: stop="(?P<stop>[^"]*)")?'
    r'(?: lines="(?P<lines>\d+)")? -->\n)'
    r"(?P<body>.*?)(?P<close><!-- /include -->)",
    re.DOTALL,
)


def excerpt(text: str, start: str | None, stop: str | None, path: str, limit: int | None = None) -> str:
    """The lines of text from the first starting with `start` up to the next starting with `stop`,
    at most `limit` of them."""
    lines = text.rstrip("\n").split("\n")
    first = 0
    if start is not None:
        first = next((i for i, line in enumerate(lines) if line.startswith(start)), None)
        if first is None:
            raise ValueError(f"{path}: no line starts with {start!r}")
    last = len(lines)
    if stop is not None:
        last = next((i for i in range(first + 1, len(lines)) if lines[i].startswith(stop)), None)
        if last is None:
            raise ValueError(f"{path}: no line after {start!r} starts with {stop!r}")
    if limit is not None:
        last = min(last, first + limit)
    return "\n".join(lines[first:last]).strip("\n") + "\n"


def refresh(readme: Path) -> list[str]:
    """Rewrites readme with every block's excerpt; returns the paths included."""
    text = readme.read_text()
    blocks = list(BLOCK.finditer(text))
    missing = sorted({m["path"] for m in blocks if not (readme.parent / m["path"]).is_file()})
    if missing:
        raise ValueError(f"{readme}: included file(s) missing: {', '.join(missing)}")
    pieces, end = [], 0
    for match in blocks:
        source = (readme.parent / match["path"]).read_text()
        limit = None if match["lines"] is None else int(match["lines"])
        body = excerpt(source, match["start"], match["stop"], match["path"], limit)
        pieces += [text[end : match.start()], match["open"], body, match["close"]]
        end = match.end()
    readme.write_text("".join(pieces) + text[end:])
    return [match["path"] for match in blocks]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    try:
        for path in refresh(target):
            print(f"{target}: refreshed from {path}")
    except ValueError as error:
        sys.exit(f"error: {error}")
