"""`python -m undo.cli`: the same as the `undo` command."""

import sys

from . import main

sys.exit(main())
