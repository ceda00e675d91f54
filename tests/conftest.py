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


#: The files that execute notebooks, longest first: the quick series with its nbval re-execution, the
#: IDRiD series, JupyterLab in Chromium.
LONG_FILES = ("tests/test_notebooks.py", "tests/test_real_data.py", "tests/test_browser.py")


def pytest_collection_modifyitems(config, items):
    """Run the long files first, then the others by their number of tests.

    ``make test`` hands whole files to its pytest-xdist workers in this order (``--dist loadfile
    --no-loadscope-reorder``): the long files start at once and the short ones fill in beside them,
    instead of a long file running alone at the end while the other worker idles. The tests of a
    file keep their order.
    """
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)

    def rank(name: str) -> tuple[int, int]:
        return (LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)), -len(files[name])

    items[:] = [item for name in sorted(files, key=rank) for item in files[name]]
