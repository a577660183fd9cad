"""`python -m convlab.lockstep conv=SPEC`: a layer and nn.Conv2d trained side by side (verify.lockstep).

The module is also `convlab.lockstep(layer, steps=10)`, the notebook call (`convlab.api.lockstep`):
importing it as a submodule binds `convlab.lockstep` to this module, so the module itself is made
callable (a ModuleType subclass with `__call__`, assigned to its `__class__`, as the language allows),
rather than let an import shadow the function.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (`convlab.verify.lockstep.main`); imported here so the training stack loads late."""
    from convlab.verify.lockstep import main as run

    return run(argv)


class _CallableModule(types.ModuleType):
    def __call__(self, layer: Any, steps: int = 10, **options: Any) -> Any:
        """`convlab.api.lockstep(layer, steps, **options)`."""
        from convlab.api import lockstep

        return lockstep(layer, steps, **options)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
