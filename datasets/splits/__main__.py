"""`python -m datasets.splits`: write a split file (see `datasets.splits.main`)."""

import sys

from datasets.splits import main

sys.exit(main())
