"""The errors a run reports as one line: bad settings, bad data, a bad checkpoint, a stop on a signal.

train.py prints `error: <message>` for each (no traceback: the message names the key or file, why, and
the fix) and exits with the error's `exit_code`. Importing this module loads nothing heavy, so the
entry point can catch them before torch and Lightning are imported.
"""

from __future__ import annotations

import signal


class RunError(Exception):
    """An error whose message is the whole story for the user; train.py exits with `exit_code`."""

    exit_code = 1


class ConfigError(RunError, ValueError):
    """A config value that cannot work: the message names the key, the value and what is allowed."""

    exit_code = 2  # the usual exit status of a command-line usage error


class DataError(RunError, RuntimeError):
    """The data files are missing, unreadable or corrupt: the message names the file and the fix."""


class CheckpointError(RunError, RuntimeError):
    """A checkpoint to resume from is missing or corrupt: the message names it and a good one if any."""


class RunInterrupted(RunError):
    """The run stopped on SIGINT (Ctrl-C) or SIGTERM; the message says how to resume it.

    exit_code is the shell's convention for a process ended by that signal: 128 + its number
    (130 for SIGINT, 143 for SIGTERM), so schedulers and scripts never count the run as a success.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name
