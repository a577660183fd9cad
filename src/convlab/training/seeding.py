"""Seeds derived from the run's seed, so each random stream is fixed yet independent of the others."""

from __future__ import annotations

import hashlib


def derived_seed(seed: int, *purpose: object) -> int:
    """A 63-bit seed fixed by (seed, *purpose), e.g. `derived_seed(0, "epoch", 3)`.

    Hashing rather than `seed + k` keeps the streams of neighbouring seeds from overlapping
    (seed 1 epoch 0 would otherwise be seed 0 epoch 1).
    """
    digest = hashlib.sha256(repr((seed, *purpose)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
