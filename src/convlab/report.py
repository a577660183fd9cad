"""`python -m convlab.report [SWEEP]`: the does-it-learn report of a sweep (see `convlab.learn.report`)."""

import sys

from convlab.learn.report import main

if __name__ == "__main__":
    sys.exit(main())
