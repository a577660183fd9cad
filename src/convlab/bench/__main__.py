"""`python -m convlab.bench`: see `convlab.bench.cli`."""

import sys

from convlab.bench.cli import main

sys.exit(main())
