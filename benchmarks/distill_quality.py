"""Runner of the distillation quality study (:mod:`benchmarks.quality_study`):
``python benchmarks/distill_quality.py --preset cpu`` = ``python -m benchmarks.quality_study --preset cpu``."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where `benchmarks` lives
    from benchmarks.quality_study.__main__ import main

    sys.exit(main())
