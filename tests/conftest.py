"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real annotated samples for tests, beside the checkout (absent in a user's clone).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` relative to the repository root, or skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not present at {SHARED_DATA} (only in the project workspace, never in a clone)")
    return SHARED_DATA
