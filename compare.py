"""Compare the jobs of a training sweep: ``python compare.py [SWEEP_DIR] [--outputs DIR]``.

Thin entry point; see :mod:`seqft_lightning.compare.cli`.
"""

import sys

from seqft_lightning.compare.cli import main

if __name__ == "__main__":
    sys.exit(main())
