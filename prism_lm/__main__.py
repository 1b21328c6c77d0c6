"""``python -m prism_lm``: the same as the ``prism`` command."""

import sys

from prism_lm.cli import main

sys.exit(main())
