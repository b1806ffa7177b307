"""Small summaries of measured values for status() (lookup durations)."""

from __future__ import annotations

from collections.abc import Iterable


def percentiles(seconds: Iterable[float]) -> dict[str, float | int]:
    """Count, median and 99th percentile (in milliseconds) of durations in seconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"count": 0}
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
    }
