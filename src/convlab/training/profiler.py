"""Lightning's "no profiler", without building a context manager per hook call.

Lightning wraps every hook it calls (module, callback and strategy hooks, the batch and the
optimiser step: dozens a training step) in `trainer.profiler.profile(name)`. Without a profiler
that is `PassThroughProfiler`, whose `profile` builds a new generator-based context manager on each
call only to start and stop nothing. `LeanPassThroughProfiler` overrides that public method and hands
back one shared `nullcontext` instead; nothing else of Lightning's is touched.

The training configs use it (`configs/trainer/default.yaml`); `trainer.profiler=simple`
(or `advanced`, `pytorch`) still profiles as Lightning documents.
"""

from __future__ import annotations

import contextlib

from lightning.pytorch.profilers import PassThroughProfiler

_NOTHING = contextlib.nullcontext()


class LeanPassThroughProfiler(PassThroughProfiler):
    """Profiles nothing, like `PassThroughProfiler`, with one reusable context for every action."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING
