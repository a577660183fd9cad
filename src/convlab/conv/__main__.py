"""`python -m convlab.conv`: the registered layers (see `convlab.conv.listing`)."""

import sys

from convlab.conv.listing import main

sys.exit(main())
