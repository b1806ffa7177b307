"""Stopping a run's worker threads (a backup's uploads, a restore's downloads)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def stop_workers(pool: ThreadPoolExecutor, client: object) -> None:
    """Stop now (Ctrl-C, the node gone): the queued work is dropped and the client's
    connections in flight are cut (its ``abort``, where it has one), so the node
    sees each transfer go and keeps nothing half-sent."""
    pool.shutdown(wait=False, cancel_futures=True)
    abort = getattr(client, "abort", None)
    if abort is not None:
        abort()
