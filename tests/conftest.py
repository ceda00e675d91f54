"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real annotated samples for tests, beside the checkout (absent in a user's clone); see
#: ``../shared/data/README.md``.
IDRID_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "idrid"


@pytest.fixture(scope="session")
def idrid_root() -> Path:
    """The 20 shared IDRiD samples (``../shared/data/idrid``, the official layout), or skip when absent.

    The one way a test finds real data: pass it as ``root`` to ``data.load("idrid", ...)``.
    """
    if not (IDRID_SAMPLES / "A. Segmentation").is_dir():
        pytest.skip(f"IDRiD samples not present at {IDRID_SAMPLES} (only in the project workspace, never in a clone)")
    return IDRID_SAMPLES
