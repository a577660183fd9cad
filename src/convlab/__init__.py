"""convlab: hand-written Conv2d layers, checked, probed and timed.

`convlab.check(layer)` and `convlab.lockstep(layer, steps=10)` are the notebook API (`convlab.api`),
imported on first use so that `import convlab` stays cheap.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "check":
        from convlab.api import check

        return check
    if name == "lockstep":
        # The submodule, which is callable: `import convlab.lockstep` (as `python -m` does) binds the
        # module to this name, and it must still be the function a notebook calls.
        import convlab.lockstep

        return convlab.lockstep
    raise AttributeError(f"module 'convlab' has no attribute {name!r}")


__all__ = ["check", "lockstep"]
