"""Churn simulation of grid maintenance (p2pstore/testing/churn.py; docs/maintenance.md):
200 nodes, 1,000 files, 5 simulated years, 5 % of nodes leaving for good each month
and as many joining, every node offline 20 % of the time. One JSON line with
maintenance on and one with it off. ``python -m benchmarks churn``."""

from __future__ import annotations

import json
import sys
import time

from p2pstore.testing.churn import ChurnParams, simulate


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    params = ChurnParams(nodes=40, files=50, years=1.0) if "--quick" in args else ChurnParams()
    for maintenance in (True, False):
        t0 = time.perf_counter()
        report = simulate(params, maintenance=maintenance).summary()
        report["bench"] = "churn"
        report["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
