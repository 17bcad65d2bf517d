"""``python -m benchmark`` is ``clbench``."""

import sys

from benchmark.cli import main

sys.exit(main())
