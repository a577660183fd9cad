"""A clean stop on Ctrl-C (SIGINT) or SIGTERM, and the exact command that resumes the run.

Lightning already stops gracefully: on SIGINT it ends fit or test with `sys.exit(1)`, on SIGTERM it
raises `SIGTERMException` (a `SystemExit`, status 0) at the next batch boundary; both call the
callbacks' `on_exception` first. A batch boundary can be minutes away with a loop-per-pixel layer, so
`SignalWatch` raises that same exception at once instead (after Lightning's own handler has run, which
also passes the signal on to DDP workers): Python runs the handler between two bytecodes of the layer.
`SignalWatch` records which signal it was, so the task can mark
results.json "interrupted", print the resume command, and exit with 128 + the signal's number
(130 / 143) instead of Lightning's 1 or 0, which a scheduler would count as a failure or a success.

The resume point is `last.ckpt`, written at the end of every epoch: resuming repeats the batches of
the epoch that was stopped, and then continues exactly as a run never stopped. (A checkpoint taken
mid-epoch would resume at the wrong batches: the in-memory loader keeps no position.)
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SignalWatch(Callback):
    """Records the signal (SIGINT / SIGTERM) that stopped fit or test; `signum` is None otherwise."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Make SIGTERM stop the step under way rather than wait for the batch boundary."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set in the main thread
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_IGN, None):
            return

        def stop_now(signum: int, frame: FrameType | None) -> None:
            if callable(previous):
                previous(signum, frame)  # Lightning's: marks trainer.received_sigterm, tells the workers
            self.signum = signal.SIGTERM
            raise SIGTERMException

        # Lightning restores the handlers it found when fit ends (its signal connector's teardown).
        signal.signal(signal.SIGTERM, stop_now)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signum = signal.SIGINT
        elif trainer.received_sigterm or isinstance(exception, SIGTERMException):
            self.signum = signal.SIGTERM


def resume_command(overrides: Iterable[str], checkpoint: Path, multirun: bool = False) -> str:
    """`python train.py <overrides> ckpt_path=<checkpoint>`, shell-quoted; a sweep job resumes as one run."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith("ckpt_path=")]
    if multirun:
        kept.append("hydra.mode=RUN")
    words = ["python", "train.py", *kept, f"ckpt_path={checkpoint}"]
    return " ".join(shlex.quote(word) for word in words)


def interrupted_message(
    signum: int, overrides: Iterable[str], checkpoint: Path | None, epoch: int | None, multirun: bool = False
) -> str:
    """What the console says after a stop on `signum`: where the run stands and how to resume it."""
    name = signal.Signals(signum).name
    if checkpoint is None:
        return (
            f"stopped by {name} before the first epoch ended: no checkpoint to resume; run the command again"
        )
    done = "" if epoch is None else f" (the end of epoch {epoch + 1}; the stopped epoch is trained again)"
    return (
        f"stopped by {name}; the last checkpoint is {checkpoint}{done}. Resume with:\n"
        f"  {resume_command(overrides, checkpoint, multirun)}"
    )
