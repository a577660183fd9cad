"""Is my layer correct? Forward and backward against F.conv2d, tolerances that fit the dtype, lockstep."""
