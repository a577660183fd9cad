"""How fast? Conv shapes and the reference network timed against nn.Conv2d in the same run."""
