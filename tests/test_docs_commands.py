"""Every command README.md and docs/*.md print is run here exactly as printed.

What counts as a command:
- each line of a fenced `bash` block (a trailing `\\` continues it; `# ...` comments dropped); a comment
  saying `exit status N` expects that status instead of 0;
- each `$ ` line of a fenced `console` block; an `[exit status N]` line in its output expects N;
- a fenced `python` block, run as a script (slow: it imports torch);
- an inline code span that starts with `python `, `make ` or `uv run ` and holds no `<placeholder>`.

The commands of one block run in order in one workspace (scripts/docs_capture.py: a folder shaped like a
user's, the project's entry points linked in, the learner's layer as `my_conv.py`), so a report can read
the sweep the line before it ran. Each block is one test. How a command is exercised depends on what it
needs (TIERS): quick ones run in the default suite; ones that train or sweep are marked slow and run when
CONVLAB_DOCS_COMMANDS=all (`make docs-check`), with real MNIST from the mirror, skipped without one;
ones that need a GPU or a cluster are composed by Hydra (every override and group checked), not run;
make targets that rewrite the tree, serve forever or are the test suite itself are checked with `make -n`.
A command no rule classifies fails the test: a new command in the docs must say how it is exercised.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from convlab.bench.cli import main as bench_main

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


docs_capture = _load("docs_capture")
readme_include = _load("readme_include")

QUICK, SLOW, COMPOSE, DRY = "quick", "slow", "compose", "dry"
# First match wins. QUICK: seconds, in the default suite. SLOW: trains, sweeps or times (minutes).
# COMPOSE: needs hardware this suite cannot assume (a GPU, several, a SLURM cluster).
# DRY: rewrites the tree (format, readme), serves forever (tensorboard), or is the test suite itself.
TIERS: list[tuple[str, str]] = [
    (r"^make (install|test|lint|format|readme|clean|tensorboard|docs-check)\b", DRY),
    (r"^python -m pytest\b", DRY),
    (r"^make help$", QUICK),
    (
        r"^python train\.py .*(trainer=gpu|trainer=ddp trainer\.devices=4|hydra/launcher=slurm_example)",
        COMPOSE,
    ),
    (r"^python train\.py .*experiment=does_it_learn_full", COMPOSE),
    (r"^python -m convlab\.bench .*--device cuda", COMPOSE),
    # Answered before torch loads: help, the composed config, and the errors of a bad setting.
    (
        r"^python train\.py( --help| --cfg job| conv=nope| data\.batch_size=0| conv\.name=my_cnv\.py:\S+)$",
        QUICK,
    ),
    (r"^python scripts/readme_include\.py --check$", QUICK),
    (r"^python -m convlab\.conv$", QUICK),
    (r"^python scripts/docs_capture\.py ", SLOW),
    (r"^(python train\.py|make (train|sweep|does-it-learn|report|lockstep|verify|bench)\b)", SLOW),
    (r"^python -m convlab\.(verify|lockstep|bench|report|quick_check)\b", SLOW),
    (r"^python -m convlab\.learn\.", SLOW),
    (r"^diff <\(jq ", SLOW),
]
ENABLED = os.environ.get("CONVLAB_DOCS_COMMANDS", "quick")
EXIT_COMMENT = re.compile(r"exit status (\d+)")
INLINE = re.compile(r"`((?:python|make|uv run) [^`]+)`")


@dataclass
class Command:
    """One command as printed (a shell line, or a python block's code), where it is, and the exit
    status the page expects of it."""

    text: str
    line: int
    status: int = 0
    python: bool = False
    tier: str = field(init=False)

    def __post_init__(self) -> None:
        # A python block is run as a script: importing torch alone takes seconds on a busy machine.
        self.tier = SLOW if self.python else tier(self.text)


@dataclass
class Block:
    """The commands of one fenced block (or one inline span): one workspace, run in order."""

    page: Path
    line: int
    commands: list[Command]

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def tier(self) -> str:
        tiers = {command.tier for command in self.commands}
        return SLOW if SLOW in tiers else QUICK


def tier(text: str) -> str:
    """How a command is exercised (TIERS); a command no rule names is an error."""
    for pattern, name in TIERS:
        if re.search(pattern, text):
            return name
    raise ValueError(f"no rule in tests/test_docs_commands.py TIERS says how to exercise: {text}")


def strip_comment(line: str) -> tuple[str, str]:
    """A shell line split into its command and its `# comment` (a # inside quotes is kept)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def bash_commands(lines: list[tuple[int, str]]) -> list[Command]:
    """The commands of a bash block: `\\`-continued lines joined, comments dropped, blank lines skipped."""
    commands, pending, first = [], "", 0
    for number, raw in lines:
        if not pending:
            first = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1].rstrip() + " "
            continue
        text, comment = strip_comment(pending + raw.strip())
        pending = ""
        if text:
            expected = EXIT_COMMENT.search(comment)
            commands.append(Command(" ".join(text.split()), first, int(expected[1]) if expected else 0))
    return commands


def console_commands(lines: list[tuple[int, str]]) -> list[Command]:
    """The `$ ` lines of a console block (a trailing `\\` continues one), each with its expected status."""
    commands: list[Command] = []
    pending, first = None, 0
    for number, raw in lines:
        if pending is not None:
            pending += " " + raw.strip()
        elif raw.startswith("$ "):
            pending, first = raw[2:].strip(), number
        elif commands and (match := re.fullmatch(r"\[exit status (\d+)\]", raw.strip())):
            commands[-1].status = int(match[1])
        if pending is not None:
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
            else:
                commands.append(Command(" ".join(pending.split()), first))
                pending = None
    return commands


def blocks(page: Path) -> list[Block]:
    """Every block of commands on a page, in order."""
    found: list[Block] = []
    fence, info, start, body = None, "", 0, []
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
                info, start, body = stripped[len(fence) :].strip(), number, []
                continue
            for match in INLINE.finditer(line):
                if not re.search(r"<[^>]+>", match[1]):
                    found.append(Block(page, number, [Command(match[1], number)]))
        elif stripped == fence:
            if info == "bash":
                found.append(Block(page, start, bash_commands(body)))
            elif info == "console":
                found.append(Block(page, start, console_commands(body)))
            elif info == "python":
                found.append(
                    Block(page, start, [Command("\n".join(text for _, text in body), start, python=True)])
                )
            fence = None
        else:
            body.append((number, line))
    return [block for block in found if block.commands]


def all_blocks() -> list[Block]:
    return [block for page in readme_include.pages() for block in blocks(page)]


def compose_command(text: str) -> None:
    """A train.py command's config composed as Hydra would (sweeps: each list's first value), not run;
    a GPU bench command's arguments checked by the bench itself."""
    if text.startswith("python -m convlab.bench "):
        check_bench_arguments(shlex.split(text)[3:])
        return
    arguments = [a for a in shlex.split(text)[2:] if a not in ("-m", "--multirun")]
    overrides = []
    for override in OverridesParser.create().parse_overrides(arguments):
        value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else None
        overrides.append(
            f"{override.get_key_element()}={value}" if value is not None else override.input_line
        )
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
            compose(config_name="train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def check_bench_arguments(arguments: list[str]) -> None:
    """Without CUDA the bench stops at its CUDA check, after every option is parsed: an unknown option
    or a bad value would stop it earlier with another message. With CUDA it is not run here
    (minutes of GPU time): run it by hand on the GPU."""
    if torch.cuda.is_available():
        return
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as stopped:
        bench_main([*arguments, "--out", os.devnull])
    assert stopped.value.code == 2 and "no CUDA device is available" in stderr.getvalue(), stderr.getvalue()


def dry_run(text: str) -> None:
    """A make target checked with `make -n`; any other command only parsed."""
    words = shlex.split(text)
    if words[0] == "make":
        done = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, f"make -n {' '.join(words[1:])}: {done.stderr}"


def run_block(block: Block, run: bool = True) -> None:
    """Exercises every command of the block; with run=False only the composed and dry-run ones."""
    with docs_capture.workspace() as folder:
        for command in block.commands:
            if command.tier == COMPOSE:
                compose_command(command.text)
                continue
            if command.tier == DRY:
                dry_run(command.text)
                continue
            if not run:
                continue
            shell = command.text
            if command.python:
                (folder / "snippet.py").write_text(command.text + "\n")
                shell = "python snippet.py"
            timeout = 600 if command.tier == QUICK else 4 * 3600
            (result,) = docs_capture.run([shell], folder, timeout=timeout)
            assert result.status == command.status, (
                f"{block.id}: `{command.text}` exited {result.status}, the page expects {command.status}:\n"
                + result.output[-3000:]
            )


BLOCKS = all_blocks()


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(block, id=block.id, marks=[pytest.mark.slow] if block.tier == SLOW else [])
        for block in BLOCKS
    ],
)
def test_documented_commands_run_as_printed(block: Block) -> None:
    if block.tier == SLOW and ENABLED != "all":
        run_block(block, run=False)
        pytest.skip("trains, sweeps or times: CONVLAB_DOCS_COMMANDS=all runs it (make docs-check)")
    if block.tier == SLOW and docs_capture.environment(REPO).get("CONVLAB_DATA_MIRROR") is None:
        pytest.skip("needs real MNIST: set CONVLAB_DATA_MIRROR to a mirror folder")
    run_block(block)


def test_every_page_has_commands_and_none_holds_a_placeholder() -> None:
    by_page = {page: blocks(page) for page in readme_include.pages()}
    assert all(by_page.values()), [str(page) for page, found in by_page.items() if not found]
    placeholders = [
        f"{block.id}: {command.text}"
        for found in by_page.values()
        for block in found
        for command in block.commands
        if re.search(r"<[a-z][^>]*>", command.text) and not command.text.startswith("diff <(")
    ]
    assert not placeholders, "a command a reader cannot run as printed"


def test_extraction_of_bash_console_and_inline_commands(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `python train.py --help` or `python -m convlab.report <sweep dir>`.\n"
        "```bash\n"
        "make help   # every target\n"
        "python train.py -m 'conv=glob(*)' \\\n"
        "    seed=0,1   # two # seeds\n"
        "python -m convlab.verify torch --quick   # exit status 1\n"
        "```\n"
        "```console\n$ python train.py conv=nope\nIn 'train': ...\n[exit status 1]\n"
        "$ make help\n  help ...\n```\n"
        "```\nmake help\n```\n"
    )
    found = blocks(page)
    assert [(b.line, [(c.text, c.status) for c in b.commands]) for b in found] == [
        (1, [("python train.py --help", 0)]),
        (
            2,
            [
                ("make help", 0),
                ("python train.py -m 'conv=glob(*)' seed=0,1", 0),
                ("python -m convlab.verify torch --quick", 1),
            ],
        ),
        (8, [("python train.py conv=nope", 1), ("make help", 0)]),
    ]
    assert [c.tier for c in found[1].commands] == [QUICK, SLOW, SLOW]


def test_an_unclassified_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="no rule .* TIERS says how to exercise: python somewhere.py"):
        tier("python somewhere.py")
