"""Every notebook of the series runs headless in the quick preset, and its checked outputs reproduce.

The whole series runs once (module-scoped fixture) through the main job's runner, exactly as
``python -m fundus_nb run --preset quick`` does; nbval then re-executes the executed copies
(``--nbval-lax``: only cells marked ``# NBVAL_CHECK_OUTPUT`` are compared) with ``interactive=True``
and a cell appended that moves every widget's controls (``tests/_widget_driver.py``).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import _widget_driver as widget_driver
import nbformat
import pytest

from fundus_nb import runs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_preprocessing", "02_patch_datasets", "03_lenet_egl", "04_ses_hemorrhage", "05_evaluation"]


def test_the_series_is_complete():
    names = [p.stem for p in NOTEBOOKS]
    missing = [n for n in EXPECTED if n not in names]
    assert not missing, f"missing notebooks: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {i} carries outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_conventions(path):
    nb = nbformat.read(str(path), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("#")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = runs.notebook_parameters(path)
    for common in ("seed", "quick", "run_dir"):
        assert common in params, f"{path.name} must declare {common!r}"
    assert any(c.cell_type == "markdown" and "learned" in c.source.lower() for c in nb.cells[-6:]), (
        f"{path.name} must end with what was learned"
    )
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"\b_io\b", code), (
        f"{path.name} uses the private fundus_nb._io; call fundus_nb.seed_everything / fundus_nb.default_device "
        "and runs.save_model / runs.save_split instead"
    )


#: Beside the quick run: an older run that left only its metrics.json (no run.json, so no preset).
OLDER_RUN = {
    "04_ses_hemorrhage": {"plateau_ratio_ses_over_nses": {"mean": 0.9}},
    "05_evaluation": {"image_level": {"ses": {"az": 0.81}, "nses": {"az": 0.74}},
                      "froc": {"ses": {"sens_at_1": 0.7}, "nses": {"sens_at_1": 0.5}}},
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    # a folder of its own (notebook 06 compares the runs beside run_dir, not other tests' folders),
    # holding one older run without a recorded preset
    root = tmp_path_factory.mktemp("quick_root")
    for section, values in OLDER_RUN.items():
        runs.record_metrics(root / "metrics_only", section, values)
    result = runs.run_series("quick", run_dir=root / "quick_run", progress=False, stop_on_error=False)
    return result


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_preset(quick_run, path):
    by_name = {r.name: r for r in quick_run.results}
    r = by_name[path.stem]
    assert r.status == "ok", f"{path.stem} failed: {r.error} (executed copy: {r.output})"
    executed = nbformat.read(str(r.output), as_version=4)
    # a cell tagged raises-exception teaches an error: it must raise, and no other cell may
    for i, c in enumerate(executed.cells):
        if c.cell_type != "code":
            continue
        raised = [o for o in c.outputs if o.output_type == "error"]
        if "raises-exception" in c.metadata.get("tags", []):
            assert raised, f"{path.stem} cell {i} is tagged raises-exception but raised nothing"
            assert raised[0].ename in ("ValueError", "TypeError", "FileNotFoundError", "RunError"), raised[0].ename
        else:
            assert not raised, f"{path.stem} cell {i} raised {raised[0].ename}: {raised[0].evalue}"


@pytest.mark.notebooks
def test_quick_run_records_metrics_for_each_notebook(quick_run):
    metrics = json.loads((quick_run.run_dir / "metrics.json").read_text())
    for path in NOTEBOOKS:
        if path.stem == "06_compare_runs":
            continue
        assert path.stem in metrics and metrics[path.stem], f"{path.stem} recorded no metrics"
    assert (quick_run.run_dir / "summary.md").is_file()
    assert any((quick_run.run_dir / "figures").glob("*.png"))


@pytest.mark.notebooks
def test_compare_notebook_reads_runs_without_a_recorded_preset(quick_run):
    # notebook 06 of the quick run compared it with the older run beside it, which has no preset: it
    # must group that one under n/a (it once divided by an empty group), and show both
    root = quick_run.run_dir.parent
    found = runs.runs_table(root)
    assert sorted(found["preset"].fillna("n/a")) == ["n/a", "quick"]
    executed = nbformat.read(str(quick_run.run_dir / "06_compare_runs.ipynb"), as_version=4)
    shown = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "metrics_only" in shown and "quick_run" in shown
    comparison = runs.compare_runs(runs.collect_metrics(root), ["preset"])
    older = comparison[(comparison["preset"] == "n/a") & (comparison["metric"] == "Test Az SeS")]
    assert older["mean"].tolist() == [OLDER_RUN["05_evaluation"]["image_level"]["ses"]["az"]]


@pytest.mark.notebooks
def test_executed_notebooks_reproduce_and_every_widget_responds_under_nbval(quick_run, tmp_path):
    # One re-execution checks two things: nbval compares the outputs of the cells marked
    # NBVAL_CHECK_OUTPUT with the quick run's, and, with interactive=True and the widget driver
    # appended (tests/_widget_driver.py), every widget is moved through each of its controls. The
    # copies keep the quick run's run_dir, so 04 resumes its finished checkpoints instead of training.
    # Two notebooks at a time (pytest-xdist, a notebook to a worker): each reads what the quick run left,
    # and what it writes (atomically) holds the values the quick run wrote.
    checked = {p.stem for p in NOTEBOOKS if "NBVAL_CHECK_OUTPUT" in p.read_text()}
    assert len(checked) >= 5 and set(widget_driver.EXPECTED) - checked == {"07_label_with_egl"}, sorted(checked)
    copies = []
    for r in quick_run.results:
        if r.name not in checked | set(widget_driver.EXPECTED):
            continue
        assert r.status == "ok", f"{r.name} failed in the quick run: {r.error}"
        nb = nbformat.read(str(r.output), as_version=4)
        if r.name in widget_driver.EXPECTED:
            nb = widget_driver.make_interactive(nb, r.name)
        copies.append(str(tmp_path / f"{r.name}.ipynb"))
        nbformat.write(nb, copies[-1])
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadfile",
         "--nbval-lax", "--nbval-current-env",
         "--nbval-cell-timeout", "600", "--sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"),
         "--rootdir", str(tmp_path), *copies],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    # the driver answered patch 1 "exudate" (toggle), then "e", "h" by keys, undid "h", answered
    # "skip" and asked for the next image: each reached the labels file
    lines = (quick_run.run_dir / "labelling" / "labels.jsonl").read_text().splitlines()
    tail = [(e["event"], e.get("label")) for e in map(json.loads, lines[-7:])]
    assert ("undo", None) in tail and ("label", "skip") in tail and ("label", "exudate") in tail, tail
    assert tail[-1][0] == "image", tail  # "next image" chose another image
