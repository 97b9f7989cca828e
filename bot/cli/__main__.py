"""`python -m bot.cli`: the `crabbot` command without the console script."""

import sys

from bot.cli import main

sys.exit(main())
