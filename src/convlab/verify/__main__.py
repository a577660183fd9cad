"""`python -m convlab.verify`: see `convlab.verify.cli`."""

import sys

from convlab.verify.cli import main

sys.exit(main())
