"""convlab: hand-written Conv2d layers, checked, probed and timed."""
