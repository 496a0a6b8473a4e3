"""Calibrate the simulator from your own transaction log; the same as ``rapport-calibrate``.

    python scripts/calibrate.py --transactions tests/data/cdnow_sample.csv \\
        --calibration-end 1997-09-30 --holdout-end 1998-06-30 --out runs/cdnow --keep-duplicates

See :mod:`rapport.experiments.calibrate` for the options, the cleaning rules and the exit statuses.
"""

import sys

from rapport.experiments.calibrate import EXIT_BAD_INPUT, build_parser, main

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
