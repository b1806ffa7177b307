"""Run every benchmark module (or those named on the command line) in its own process.

Each ``benchmarks/bench_*.py`` has a ``main()`` that prints one JSON object per line.
Running them in separate processes keeps peak-RSS figures honest. ``bench_tahoe`` runs
only when named (``make bench-tahoe``): it needs Tahoe-LAFS installed from PyPI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: benchmarks left out of a plain ``python -m benchmarks`` (they need a download)
NAMED_ONLY = {"bench_tahoe"}


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    wanted = [a for a in argv if not a.startswith("-")]
    if wanted:
        names = [n for n in names if any(w in n for w in wanted)]
    else:
        names = [n for n in names if n not in NAMED_ONLY]
    failed = []
    for name in names:
        print(f"# {name}", file=sys.stderr, flush=True)
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"])
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
