"""Run documented commands and keep what they print, stamped, as a results file for the docs.

    python scripts/docs_capture.py docs/results/learner/verify.md \\
        'python -m convlab.verify my_conv.py:VanillaConv2d --quick'

The commands run one after another in a workspace: a temporary folder that looks like the one a user
works in, the project's entry points in it (train.py, configs/, Makefile, the environment) and the
user-layer fixtures copied in under the names the docs use (USER_FILES: `my_conv.py` is the learner's
layer, `numpy_conv.py` the notebook's NumPy class, `layers.py` the assignment-style function pairs).
The file written holds a stamp (date, machine, Python, torch and convlab versions, the command that
re-creates it) and a `console` block with each command after `$ ` and its output as a terminal would
leave it (progress bars at their last redraw, colours removed), then `[exit status N]` when N is not 0.

Docs include these files through `scripts/readme_include.py`; `tests/test_docs_commands.py` runs every
command of the docs in the same kind of workspace (`workspace()` below), so what the docs print and
what a test runs cannot drift apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a workspace takes from the project (the clone a user has): train.py copied, because it finds the
# project's root (where outputs/ go) from its own path; the rest linked. Then the user's own files, copied.
COPIED = ("train.py",)
LINKED = ("configs", "Makefile", "pyproject.toml", "uv.lock", ".venv", "src", "scripts", "tests", "data")
USER_FILES = {
    "my_conv.py": "tests/user_layers/learner_conv.py",
    "numpy_conv.py": "tests/user_layers/numpy_conv.py",
    "layers.py": "tests/user_layers/assignment_layers.py",
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@dataclass(frozen=True)
class Result:
    """One command as run: its text as printed, what it printed (cleaned) and its exit status."""

    command: str
    output: str
    status: int


@contextmanager
def workspace(root: Path | None = None) -> Iterator[Path]:
    """A temporary folder with the project's entry points and the user-layer fixtures in it.

    Runs started there write their outputs/ there. The environment (.venv) and data/ are links shared
    with the clone, so nothing is installed or downloaded again. `root` (default: this repository) is
    the project to take them from.
    """
    root = root or REPO
    (root / "data").mkdir(exist_ok=True)  # shared extracted MNIST: the first run fills it, later ones read it
    with tempfile.TemporaryDirectory(prefix="convlab-docs-") as tmp:
        folder = Path(tmp)
        for name in COPIED:
            if (root / name).is_file():
                (folder / name).write_text((root / name).read_text())
        for name in LINKED:
            if (root / name).exists():
                (folder / name).symlink_to(root / name)
        for name, source in USER_FILES.items():
            if (root / source).is_file():
                (folder / name).write_text((root / source).read_text())
        yield folder


def environment(folder: Path) -> dict[str, str]:
    """The environment a documented command runs in: the project's .venv active, uv never re-syncing it,
    a terminal 120 columns wide.

    UV_NO_SYNC keeps `uv run` (the Makefile's) from installing the project into the shared environment
    from the workspace's path; the real MNIST mirror is used when one is configured or sits beside the clone.
    """
    env = dict(os.environ)
    venv = folder / ".venv"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["UV_NO_SYNC"] = "1"
    # Tables (rich) as wide as a page shows without scrolling; a terminal of this width shows the same.
    env["COLUMNS"] = "120"
    env.pop("PYTHONPATH", None)
    mirror = REPO.parent / "shared" / "data"
    if "CONVLAB_DATA_MIRROR" not in env and mirror.is_dir():
        env["CONVLAB_DATA_MIRROR"] = str(mirror)
    return env


def clean(text: str, folder: Path) -> str:
    """Terminal output as a reader would see it: colours removed, each line at its last carriage-return
    redraw, the workspace's temporary path shown as `.`, trailing blanks dropped."""
    text = ANSI.sub("", text).replace(str(folder.resolve()), ".").replace(str(folder), ".")
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def run(commands: list[str], folder: Path, timeout: float | None = None) -> list[Result]:
    """Runs each command with bash in `folder`, one after another, stdout and stderr together.

    A command still running after `timeout` seconds is killed with everything it started: TimeoutError.
    """
    results = []
    for command in commands:
        # A session of its own, so that a timeout ends the command's children too, not bash alone.
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=folder,
            env=environment(folder),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        # Its own session also hides it from a signal sent to this script: pass SIGTERM on.
        previous = signal.signal(signal.SIGTERM, _stop_group(process))
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TimeoutError(f"`{command}` ran past {timeout:g} s and was stopped") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        results.append(Result(command, clean(output, folder), process.returncode))
    return results


def _stop_group(process: subprocess.Popen):
    """A SIGTERM handler that ends the command's whole process group, then this script."""

    def handler(signum, frame):
        with suppress(ProcessLookupError):  # ended meanwhile
            os.killpg(process.pid, signal.SIGKILL)
        raise SystemExit(128 + signum)

    return handler


def code_version() -> str:
    """The repository's commit, marked when the working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return commit + (" with uncommitted changes under src/" if dirty.stdout.strip() else "")


def machine() -> str:
    """CPU model and core count, from /proc/cpuinfo where there is one."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def torch_version(folder: Path) -> str:
    """torch's version in the environment the commands ran in, as `torch.__version__` gives it.

    Imported rather than read from the distribution's metadata, which leaves out the build tag
    (`+cu132`, `+cpu`): the tag tells which wheel produced the output.
    """
    done = subprocess.run(
        ["python", "-c", "import torch; print(torch.__version__)"],
        cwd=folder,
        env=environment(folder),
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "not importable"


def stamp(folder: Path, rerun: str, when: dt.datetime | None = None) -> str:
    """The provenance line of a results file: when, where, with which versions, and how to re-create it."""
    when = when or dt.datetime.now(dt.timezone.utc)
    return (
        f"<!-- generated by scripts/docs_capture.py; do not edit, re-create it with: {rerun} -->\n"
        f"Run {when:%Y-%m-%d %H:%M} UTC on {machine()}; Python {platform.python_version()}, "
        f"torch {torch_version(folder)}, convlab {code_version()}.\n"
    )


def render(results: list[Result]) -> str:
    """A console block: each command after `$ `, its output, `[exit status N]` when N is not 0."""
    body = []
    for result in results:
        body.append(f"$ {result.command}")
        if result.output:
            body.append(result.output)
        if result.status != 0:
            body.append(f"[exit status {result.status}]")
    return "```console\n" + "\n".join(body) + "\n```\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out", type=Path, help="the results file to write, e.g. docs/results/learner/verify.md"
    )
    parser.add_argument("commands", nargs="+", help="each command exactly as the docs print it")
    parser.add_argument("--timeout", type=float, default=None, help="seconds each command may take")
    parser.add_argument(
        "--expect-status",
        type=int,
        action="append",
        default=None,
        help="exit status each command must end with (once per command; default 0), else nothing is written",
    )
    args = parser.parse_args(argv)
    expected = args.expect_status or [0] * len(args.commands)
    if len(expected) != len(args.commands):
        parser.error(f"{len(args.commands)} command(s) but {len(expected)} --expect-status value(s)")
    with workspace() as folder:
        results = run(args.commands, folder, args.timeout)
        unexpected = [(r, e) for r, e in zip(results, expected, strict=True) if r.status != e]
        if unexpected:
            for result, status in unexpected:
                print(f"$ {result.command}\n{result.output}", file=sys.stderr)
                print(f"error: exit status {result.status}, expected {status}", file=sys.stderr)
            return 1
        rerun = "python scripts/docs_capture.py " + shlex.join(
            [str(args.out), *args.commands] + [f"--expect-status={s}" for s in (args.expect_status or [])]
        )
        text = stamp(folder, rerun) + "\n" + render(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"{args.out}: {len(results)} command(s), {sum(len(r.output.splitlines()) for r in results)} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
