"""`python -m convlab.quick_check SPEC`: one-batch sanity check that a layer can learn (learn.quick_check)."""

import sys

from convlab.learn.quick_check import main

if __name__ == "__main__":
    sys.exit(main())
