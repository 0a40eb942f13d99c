"""Run every benchmark in this folder, one after the other.

Each ``bench_*.py`` is a standalone script that measures mailcli against a
ceiling taken in the same run on the same machine and prints the ratio, so
results are comparable across machines. Pass ``--quick`` for smaller sizes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    extra = sys.argv[1:]
    failures = 0
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        code = subprocess.call([sys.executable, str(script), *extra])
        failures += code != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
