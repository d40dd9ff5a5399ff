"""`python -m stepsift.cli ...`: the `stepsift` command (the tests run it this way)."""

import sys

from stepsift.cli import main

sys.exit(main())
