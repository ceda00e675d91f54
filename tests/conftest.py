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


#: The files handed out first, in this order: the three that execute notebooks (the quick series with
#: its nbval re-execution, the IDRiD series, JupyterLab in Chromium), one to each of make test's three
#: workers; three files of a few seconds that xdist queues behind them (it gives every worker two
#: files at the start, and the second should not lengthen the longest worker's run); then the slowest
#: of the rest. All other files follow by their number of tests, most first.
FIRST_FILES = (
    "tests/test_notebooks.py", "tests/test_real_data.py", "tests/test_browser.py",
    "tests/test_plots.py", "tests/test_packaging.py", "tests/test_widgets.py",
    "tests/test_runs.py", "tests/test_sweep.py",
)


def pytest_collection_modifyitems(config, items):
    """Order the test files as ``FIRST_FILES`` says; the tests of a file keep their order.

    ``make test`` hands whole files to its pytest-xdist workers in this order (``--dist loadfile
    --no-loadscope-reorder``): the long files start at once and the short ones fill in beside them,
    instead of a long file running alone at the end while the other workers idle.
    """
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)

    def rank(name: str) -> tuple[int, int]:
        return (FIRST_FILES.index(name) if name in FIRST_FILES else len(FIRST_FILES)), -len(files[name])

    items[:] = [item for name in sorted(files, key=rank) for item in files[name]]
