"""`python -m convlab.lockstep conv=NAME`: a layer and nn.Conv2d trained side by side (verify.lockstep)."""

import sys

from convlab.verify.lockstep import main

if __name__ == "__main__":
    sys.exit(main())
