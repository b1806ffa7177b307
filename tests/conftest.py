"""Shared test configuration.

Hypothesis: no per-example deadline (the machines are 2-core and shared, so wall-clock
deadlines flake); ``HYPOTHESIS_PROFILE=thorough`` raises the example count for
deeper local runs.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def stepwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every share is sent in steps (allocate, blocks, trailer and header, close), as a
    large file's are, however small the test's file: for tests of what happens part-way
    through a share (small shares otherwise go in one ``storage.put``)."""
    from p2pstore.grid import sender

    monkeypatch.setattr(sender, "WHOLE_SHARE_MAX", 0)
