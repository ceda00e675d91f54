"""The runs layer: parameters, execution, failure handling, resume, summary, sweeps, models and splits."""

import ast
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
import torch

from fundus_nb import data, models, preprocess, runs
from fundus_nb.runs import Parameter, RunError


def _record(section: str, values: str) -> str:
    """Notebook source merging ``values`` (a dict, as Python source) into ``<run_dir>/metrics.json``.

    What ``runs.record_metrics`` does, with the standard library only: importing the package costs a
    toy notebook 4.8 s (torch, scikit-learn, pandas) on top of the 1.4 s a bare kernel takes.
    """
    return (
        "import json, pathlib\n"
        "_path = pathlib.Path(run_dir, 'metrics.json')\n"
        "_metrics = json.loads(_path.read_text()) if _path.is_file() else {}\n"
        f"_metrics[{section!r}] = {values}\n"
        "_path.write_text(json.dumps(_metrics))\n"
    )


def _notebook(path: Path, params_src: str, body: str, kernelspec: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    if kernelspec:
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params_src)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def series(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _notebook(
        d / "01_first.ipynb",
        'run_dir = ""\nseed = 0\nstrategy = "egl"  # one of: egl, random\n',
        _record("01_first", "{'seed': seed, 'strategy': strategy}"),
    )
    _notebook(
        d / "02_second.ipynb",
        'run_dir = ""\nscale = 1.5\nfail = False\n',
        "import pathlib\n"
        "pathlib.Path(run_dir, 'count.txt').open('a').write('x')\n"
        "if fail:\n    raise ValueError('asked to fail')\n"
        + _record("02_second", "{'scale': scale}"),
    )
    return d


def test_parameters_are_read_with_types_and_choices(series):
    params = runs.notebook_parameters(series / "01_first.ipynb")
    assert set(params) == {"run_dir", "seed", "strategy"}
    assert params["seed"].kind == "int" and params["strategy"].choices == ("egl", "random")


@pytest.mark.parametrize(
    "default,value,expected",
    [(0, "3", 3), (0.5, "2", 2.0), (True, "false", False), ("a", "b", "b"), (1, 4.0, 4)],
)
def test_coerce_accepts_valid_values(default, value, expected):
    out = Parameter("x", default).coerce(value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("default,value", [(0, "abc"), (0, "1.5"), (0.5, "nan"), (True, "maybe"), (0, True)])
def test_coerce_rejects_invalid_values(default, value):
    with pytest.raises(RunError, match="expects a"):
        Parameter("x", default).coerce(value)


def test_unknown_parameter_and_bad_choice_fail_before_anything_runs(series, tmp_path):
    nbs = runs.list_notebooks(series)
    with pytest.raises(RunError, match="unknown parameter.*'epochz'"):
        runs.resolve_parameters(nbs, {"seed": 0}, {"epochz": "3"})
    with pytest.raises(RunError, match="must be one of egl, random"):
        runs.resolve_parameters(nbs, {}, {"strategy": "entropy"})
    with pytest.raises(RunError, match="unknown preset 'fast'"):
        runs.load_preset("fast")


def test_shipped_presets_fit_the_shipped_notebooks():
    nbs = runs.list_notebooks()
    for preset in runs.PRESETS:
        per_nb = runs.resolve_parameters(nbs, preset)
        assert all(isinstance(v, dict) for v in per_nb.values())


def test_run_series_executes_in_order_and_writes_record_and_summary(series, tmp_path):
    run_dir = tmp_path / "run"
    result = runs.run_series({"seed": 3}, {"scale": "2"}, run_dir=run_dir, notebooks=series, progress=False)
    assert result.ok and [r.name for r in result.results] == ["01_first", "02_second"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == {"01_first": {"seed": 3, "strategy": "egl"}, "02_second": {"scale": 2.0}}
    executed = nbformat.read(str(run_dir / "01_first.ipynb"), as_version=4)
    assert executed.metadata["papermill"]["parameters"]["seed"] == 3
    record = json.loads((run_dir / "run.json").read_text())
    assert record["notebooks"]["02_second"]["status"] == "ok"
    assert "| 01_first | ok |" in (run_dir / "summary.md").read_text()


def test_failure_stops_the_run_and_resume_reruns_only_what_failed(series, tmp_path):
    run_dir = tmp_path / "run"
    result = runs.run_series({}, {"fail": "true"}, run_dir=run_dir, notebooks=series, progress=False)
    assert not result.ok
    failed = result.results[-1]
    assert failed.status == "failed" and "asked to fail" in failed.error and failed.output.is_file()
    # A second run into the same folder must be asked for explicitly.
    with pytest.raises(RunError, match="--resume"):
        runs.run_series({}, {}, run_dir=run_dir, notebooks=series, progress=False)
    result = runs.run_series({}, {"fail": "false"}, run_dir=run_dir, notebooks=series, resume=True, progress=False)
    assert [r.status for r in result.results] == ["skipped", "ok"]
    assert (run_dir / "count.txt").read_text() == "xx"  # 02 ran twice, 01 once


def test_resume_refuses_a_run_folder_from_another_version(series, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"version": "0.0.1", "notebooks": {}}))
    with pytest.raises(RunError, match="made by fundus_nb '0.0.1'"):
        runs.run_series({}, {}, run_dir=run_dir, notebooks=series, resume=True, progress=False)


def test_only_selects_notebooks_and_rejects_unknown_numbers(series, tmp_path):
    result = runs.run_series({}, {}, run_dir=tmp_path / "a", notebooks=series, only=["2"], progress=False)
    assert [r.name for r in result.results] == ["02_second"]
    with pytest.raises(RunError, match="unknown notebook number"):
        runs.run_series({}, {}, run_dir=tmp_path / "b", notebooks=series, only=["07"], progress=False)



def test_cli_reports_unknown_parameter_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "fundus_nb", "run", "--preset", "quick", "-p", "no_such_param", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown parameter(s) 'no_such_param'")


def test_collect_metrics_builds_a_tidy_table_with_run_parameters(tmp_path):
    for i, strategy in enumerate(["egl", "random"]):
        d = tmp_path / f"r{i}"
        runs.record_metrics(d, "03_lenet_egl", {"f1": 0.5 + i, "nested": {"x": i}, "label": "txt", "ok": True})
        (d / "run.json").write_text(json.dumps({
            "version": "0.1.0", "preset": "quick",
            "notebooks": {"03_lenet_egl": {"parameters": {"seed": i, "strategy": strategy, "run_dir": str(d)}}},
        }))
    table = runs.collect_metrics(tmp_path)
    assert sorted(table["metric"].unique()) == ["f1", "nested.x"]  # strings and booleans are dropped
    assert len(table) == 4 and "run_dir" not in table.columns
    row = table[(table["run"] == "r1") & (table["metric"] == "f1")].iloc[0]
    assert row["value"] == 1.5 and row["strategy"] == "random" and row["seed"] == 1
    with pytest.raises(FileNotFoundError, match="no folder"):
        runs.collect_metrics(tmp_path / "missing")


def test_dataset_overlay_sits_between_preset_and_overrides(series, tmp_path, monkeypatch):
    overlay_dir = tmp_path / "pkg" / "presets" / "datasets"
    overlay_dir.mkdir(parents=True)
    (overlay_dir / "mydata.yaml").write_text("seed: 7\nstrategy: random\n")
    monkeypatch.setattr(runs.params, "PACKAGE_DIR", tmp_path / "pkg")
    _notebook(series / "03_third.ipynb", 'dataset = "synthetic"\nrun_dir = ""\n', "pass")
    nbs = runs.list_notebooks(series)
    first = nbs[0]
    out = runs.resolve_parameters(nbs, {"seed": 1, "dataset": "mydata"}, {})
    assert out[first]["seed"] == 7 and out[first]["strategy"] == "random"
    out = runs.resolve_parameters(nbs, {"seed": 1}, {"dataset": "mydata", "seed": "3"})
    assert out[first]["seed"] == 3 and out[first]["strategy"] == "random"
    out = runs.resolve_parameters(nbs, {"seed": 1, "dataset": "synthetic"}, {})
    assert out[first]["seed"] == 1 and "strategy" not in out[first]  # notebook default applies


def test_update_readme_replaces_only_the_results_block(series, tmp_path):
    run_dir = tmp_path / "run"
    runs.run_series({"seed": 5}, {}, run_dir=run_dir, notebooks=series, progress=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{runs.README_START}\nold numbers\n{runs.README_END}\noutro\n")
    runs.update_readme(run_dir, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old numbers" not in text
    assert "| 01_first | ok |" in text and text.count(runs.README_START) == 1
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(RunError, match="no results block"):
        runs.update_readme(run_dir, tmp_path / "plain.md")




def test_run_without_preset_uses_the_default_preset(tmp_path):
    # `make run` passes no --preset; the sweep subcommand's "keep the recorded preset" once leaked into
    # the shared --preset option and made a plain run fail with a TypeError. Notebook 06 only reads files.
    proc = subprocess.run(
        [sys.executable, "-m", "fundus_nb", "run", "--run-dir", str(tmp_path / "run"), "--only", "06", "--quiet"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, TQDM_DISABLE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["preset"] == "default" and record["notebooks"]["06_compare_runs"]["status"] == "ok"
    params = record["notebooks"]["06_compare_runs"]["parameters"]
    assert params["quick"] is runs.load_preset("default")["quick"] is False


def test_kernels_talk_over_private_ipc_sockets_without_the_tcp_warning(series, tmp_path):
    # ipykernel warns "Kernel is running over TCP without encryption" on stderr once per notebook
    # when it listens on TCP ports; the runner's kernels use local IPC sockets instead.
    preset = tmp_path / "mine.yaml"
    preset.write_text("seed: 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fundus_nb", "run", "--preset", str(preset), "--notebooks", str(series),
         "--run-dir", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "without encryption" not in proc.stderr + proc.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["01_first"]["seed"] == 0
    km = runs.execute._local_kernel_manager()()
    assert km.transport == "ipc" and Path(km.ip).parent.name.startswith("fundus_nb-kernel-")
    km.cleanup_ipc_files()
    assert not Path(km.ip).parent.exists()


def test_summary_shows_the_ses_test_rows_and_na_when_absent(tmp_path):
    """Notebook 04/05 rows: the texts the notebooks record, 'n/a' for a run that lacks them."""
    run_dir = tmp_path / "r"
    ratio = {"plateau_ratio_ses_over_nses": {"text": "0.98 [0.74, 1.19] (3 seeds)"}}
    runs.record_metrics(run_dir, "04_ses_hemorrhage", ratio)
    test = {"size_text": "120 / 48 / 187 (synthetic)", "paired_text": "+0.114, p = 0.00035",
            "ses": {"text": "0.913 [0.842, 0.969] (width 0.127)", "froc_text": "0.59 [0.47, 0.70] / 0.79 [0.70, 0.86]"},
            "nses": {"text": "0.799 [0.703, 0.883] (width 0.179)"}}
    runs.record_metrics(run_dir, "05_evaluation", {"test": test})
    cells = [line[2:-2].split(" | ") for line in runs.summary_table(run_dir).splitlines() if line.startswith("| ")]
    rows = {c[0]: c[1] for c in cells if len(c) == 2}
    assert rows["SeS/NSeS epochs to plateau, mean [min, max] over seeds (paper 0.35)"] == "0.98 [0.74, 1.19] (3 seeds)"
    assert rows["Hemorrhage test set: images / with hemorrhages / lesions"] == "120 / 48 / 187 (synthetic)"
    assert rows["Test Az SeS [95% CI] (CI width)"] == "0.913 [0.842, 0.969] (width 0.127)"
    assert rows["Test Az NSeS [95% CI] (CI width)"] == "0.799 [0.703, 0.883] (width 0.179)"
    assert rows["Test Az SeS - NSeS, paired bootstrap p"] == "+0.114, p = 0.00035"
    assert rows["FROC sensitivity SeS @0.1 / @1 FP/image [95% CI]"] == "0.59 [0.47, 0.70] / 0.79 [0.70, 0.86]"
    assert rows["FROC sensitivity NSeS @0.1 / @1 FP/image [95% CI]"] == "n/a"


def test_a_cell_that_runs_past_the_cell_timeout_fails_the_notebook(tmp_path, monkeypatch):
    d = tmp_path / "nbs"
    d.mkdir()
    _notebook(d / "01_slow.ipynb", 'run_dir = ""\n', "import time\ntime.sleep(30)\n")
    monkeypatch.setenv("FUNDUS_NB_CELL_TIMEOUT", "3")
    result = runs.run_series({}, run_dir=tmp_path / "run", notebooks=d, progress=False, stop_on_error=False)
    assert result.results[0].status == "failed" and "3 seconds" in result.results[0].error
    monkeypatch.setenv("FUNDUS_NB_CELL_TIMEOUT", "soon")
    with pytest.raises(RunError, match="FUNDUS_NB_CELL_TIMEOUT must be a number"):
        runs.execute._cell_timeout()


# ---------------------------------------------------------------------------------------------
# Parameters read through papermill
# ---------------------------------------------------------------------------------------------


def _ast_parameters(path):
    """Independent reading of a parameters cell: Python's own parser, comments from the source lines."""
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    out = {}
    for node in ast.parse(cell.source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and node.value is not None:
            try:
                default = ast.literal_eval(node.value)
            except ValueError:
                continue
            comment = lines[node.lineno - 1].partition("#")[2]
            choices = None
            if "one of:" in comment:
                listed = comment.split("one of:")[1].replace("|", ",").split(",")
                choices = tuple(c.strip() for c in listed if c.strip())
            out[target.id] = (default, type(default), choices)
    return out


@pytest.mark.parametrize("path", runs.list_notebooks(), ids=lambda p: p.stem)
def test_papermill_reads_the_shipped_parameters_as_python_does(path):
    got = {n: (p.default, type(p.default), p.choices) for n, p in runs.notebook_parameters(path).items()}
    assert got == _ast_parameters(path)


def test_a_parameter_line_papermill_cannot_read_is_an_error(tmp_path):
    path = _notebook(tmp_path / "01_x.ipynb", 'run_dir = ""  # ("" = default)\nseed = 0\n', "pass")
    with pytest.raises(RunError, match="papermill cannot read parameter 'run_dir'.*remove the '='"):
        runs.notebook_parameters(path)


# ---------------------------------------------------------------------------------------------
# Metrics of all runs
# ---------------------------------------------------------------------------------------------


def _walk(node, prefix=""):
    """Brute-force flattening: every int/float leaf (not bool) under its dotted path."""
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _walk(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [(prefix, float(node))]
    return []


def test_collect_metrics_flattens_every_number_like_a_recursive_walk(tmp_path):
    values = {"a": 1, "b": {"c": 2.5, "d": {"e": -3, "f": "text", "g": None}, "h": {}},
              "i": [1, 2], "j": True, "k": {"l": False, "m": 0}}
    runs.record_metrics(tmp_path / "r", "05_evaluation", values)
    table = runs.collect_metrics(tmp_path)
    got = sorted(zip(table["metric"], table["value"], strict=True))
    assert got == sorted(_walk(values)) and len(got) == 4


# ---------------------------------------------------------------------------------------------
# Models and splits handed between notebooks
# ---------------------------------------------------------------------------------------------


def _trained_lenet(seed=0):
    torch.manual_seed(seed)
    model = models.LeNet()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # weights a fresh LeNet would not have
    return model


def test_save_and_load_model_round_trip(tmp_path):
    model = _trained_lenet()
    path = runs.save_model(tmp_path, "lenet_egl", model, {"seed": np.int64(3), "lr": np.float32(0.5),
                                                          "sizes": (48, 24)}, epoch=7)
    assert path == tmp_path.resolve() / "models" / "lenet_egl.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == {"seed": 3, "lr": 0.5, "sizes": [48, 24], "arch": "LeNet"} and raw["epoch"] == 7
    loaded = runs.load_model(tmp_path, "lenet_egl", models.LeNet, device="cpu")
    assert not loaded.training
    x = torch.rand(5, 3, 48, 48)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    built = runs.load_model(tmp_path, "lenet_egl", lambda cfg: models.LeNet() if cfg["seed"] == 3 else None)
    assert all(torch.equal(a, b.to(a.device)) for a, b in zip(built.state_dict().values(),
                                                             model.state_dict().values(), strict=True))


def test_load_model_errors_say_what_to_do(tmp_path):
    missing = r"lacks models/lenet_egl\.pt; run notebook 03_lenet_egl first with the same run_dir"
    with pytest.raises(FileNotFoundError, match=missing):
        runs.load_model(tmp_path, "lenet_egl", models.LeNet)
    runs.save_model(tmp_path, "lenet_egl", _trained_lenet(), {})
    with pytest.raises(ValueError, match="holds a LeNet, not a SeSNet; load it with models.LeNet"):
        runs.load_model(tmp_path, "lenet_egl", models.SeSNet)
    runs.save_model(tmp_path, "lin", torch.nn.Linear(3, 2), {})
    with pytest.raises(ValueError, match="do not fit this Linear.*size mismatch"):
        runs.load_model(tmp_path, "lin", lambda cfg: torch.nn.Linear(4, 2))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        runs.save_model(tmp_path, "x", {"w": 1}, {})
    with pytest.raises(TypeError, match="a checkpoint stores only"):
        runs.save_model(tmp_path, "x", torch.nn.Linear(1, 1), {"path": tmp_path})
    with pytest.raises(ValueError, match="plain file stem"):
        runs.save_model(tmp_path, "../x", torch.nn.Linear(1, 1), {})
    with pytest.raises(ValueError, match="model is a Linear"):
        runs.save_model(tmp_path, "x", torch.nn.Linear(1, 1), {"arch": "LeNet"})


_FAIL_MIDWAY = """
import resource, signal, sys, torch
from fundus_nb import runs
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write then raises OSError instead of killing us
big = torch.nn.Linear(1000, 1000)  # about 4 MB of weights
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    if sys.argv[2] == "runs":
        runs.save_model(sys.argv[1], "model", big, {})
    else:
        torch.save({"state_dict": big.state_dict()}, sys.argv[1] + "/models/model.pt")
except (OSError, RuntimeError) as exc:  # torch's own writer reports the failed write as RuntimeError
    print("failed:", type(exc).__name__, getattr(exc, "errno", ""))
"""


@pytest.mark.parametrize("writer", ["runs", "plain torch.save"])
def test_a_write_that_fails_midway_leaves_the_previous_checkpoint(tmp_path, writer):
    old = torch.nn.Linear(2, 2)
    path = runs.save_model(tmp_path, "model", old, {"version": 1})
    limit = 100_000  # bytes: far more than the old file, far less than the new one
    proc = subprocess.run([sys.executable, "-c", _FAIL_MIDWAY, str(tmp_path), writer, str(limit)],
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.startswith("failed:"), proc.stdout + proc.stderr  # the write really failed
    if writer == "runs":
        assert proc.stdout.split() == ["failed:", "OSError", "27"]  # EFBIG: file size limit exceeded
        assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary file left
        back = runs.load_model(tmp_path, "model", lambda cfg: torch.nn.Linear(2, 2), device="cpu")
        assert torch.equal(back.weight, old.weight)
    else:  # the failure this guards against: a truncated file in place of the old one
        assert 0 < path.stat().st_size <= limit
        with pytest.raises(Exception):  # noqa: B017 - torch raises RuntimeError or EOFError by version
            torch.load(path, weights_only=True)


def test_save_and_load_split_round_trip_and_errors(tmp_path):
    split = {"train": ["a", "b"], "test": ("c",), "image_size": np.int64(128), "contrast_enhance": np.bool_(True)}
    path = runs.save_split(tmp_path, "ses", split)
    assert path.name == "ses_split.json"
    assert runs.load_split(tmp_path, "ses") == {"train": ["a", "b"], "test": ["c"], "image_size": 128,
                                                "contrast_enhance": True}
    with pytest.raises(FileNotFoundError, match="lacks egl_split.json; run notebook 03_lenet_egl first"):
        runs.load_split(tmp_path, "egl")
    with pytest.raises(FileNotFoundError, match="lacks models/sesnet_ses.pt, egl_split.json; run notebook "
                                                "03_lenet_egl and 04_ses_hemorrhage first"):
        runs.require(tmp_path, models=["sesnet_ses"], splits=["egl", "ses"])
    with pytest.raises(TypeError, match="split must be a dict"):
        runs.save_split(tmp_path, "x", [["a"]])
    with pytest.raises(TypeError, match="name must be a str"):
        runs.load_split(tmp_path, 3)


def _brute_force_balanced(flags, n):
    """Every subset of size min(n, len) that takes the first a images with and the first b without;
    the one with the classes closest in size (the extra image to the class without) wins."""
    m = len(flags) if n == 0 else min(n, len(flags))
    best = None
    for subset in itertools.combinations(range(len(flags)), m):
        a = sum(flags[i] for i in subset)
        with_, without = [i for i, f in enumerate(flags) if f], [i for i, f in enumerate(flags) if not f]
        firsts = with_[:a] + without[: m - a]
        if sorted(firsts) == list(subset):
            key = (abs((m - a) - a), a > m - a)
            best = min(best or (key, subset), (key, subset))
    return [str(i) for i in best[1]]


def test_balanced_matches_a_brute_force_search_for_either_lesion():
    rng = np.random.default_rng(0)
    for _ in range(150):
        flags = [bool(f) for f in rng.random(rng.integers(0, 10)) < rng.random()]
        recs = [SimpleNamespace(id=str(i), has_hemorrhages=f, has_exudates=f) for i, f in enumerate(flags)]
        n = int(rng.integers(0, 12))
        expected = _brute_force_balanced(flags, n)
        assert [r.id for r in runs.balanced(recs, n, "exudates")] == expected, (flags, n)
        assert [r.id for r in runs.balanced(recs, n, "hemorrhages")] == expected, (flags, n)
    with pytest.raises(ValueError, match="lesion must be one of"):
        runs.balanced([], 1, "drusen")


@pytest.fixture(scope="module")
def synthetic_split(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("split_run")
    opts = {"n_patients": 4, "size": 128, "seed": 5}
    recs = data.load("synthetic", **opts)
    runs.save_split(run_dir, "ses", {
        "train": [r.id for r in recs[:4]], "monitor": [r.id for r in recs[4:5]], "test": [r.id for r in recs[5:]],
        "dataset_params": {"dataset": "synthetic", "data_root": "", **opts}, "image_size": 64,
        "contrast_enhance": True})
    return run_dir, recs


def test_split_records_rebuilds_the_test_images_as_the_notebook_prepared_them(synthetic_split):
    run_dir, recs = synthetic_split
    got = runs.split_records(run_dir, "ses")
    expected = [preprocess.standardize_record(r, size=64) for r in recs[5:]]
    assert [r.id for r in got] == [r.id for r in expected] and len(got) == 3
    for g, e in zip(got, expected, strict=True):
        assert np.array_equal(g.image, preprocess.contrast_enhance(e.image, fov=e.fov))
        assert np.array_equal(g.hemorrhage_mask, e.hemorrhage_mask) and g.image.shape == (64, 64, 3)
    capped = runs.split_records(run_dir, "ses", max_images=2, lesion="exudates")
    assert [r.id for r in capped] == [r.id for r in runs.balanced(recs[5:], 2, "exudates")]
    with pytest.raises(ValueError, match="has no part 'validation'; choose one of: monitor, test, train"):
        runs.split_records(run_dir, "ses", "validation")


def test_independent_records_refuse_images_used_for_training(synthetic_split):
    run_dir, recs = synthetic_split
    other = runs.independent_records(run_dir, "ses", "synthetic", n_patients=2, size=128, seed=99)
    assert len(other) == 4 and other[0].image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match=r"were in the train/monitor part of split 'ses'"):
        runs.independent_records(run_dir, "ses", "synthetic", n_patients=4, size=128, seed=5)


def test_a_cell_tagged_raises_exception_is_a_lesson_not_a_failure(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    path = _notebook(d / "01_lesson.ipynb", 'run_dir = ""\nuntagged = False\n',
                     "raise ValueError('x must be 1, got 2; pass 1')")
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[-1].metadata["tags"] = ["raises-exception"]
    nb.cells.append(nbformat.v4.new_code_cell("if untagged:\n    raise TypeError('a real failure')\nprint('went on')"))
    nbformat.write(nb, str(path))
    ok = runs.run_series({}, {}, run_dir=tmp_path / "a", notebooks=d, progress=False)
    assert ok.ok, ok.results[0].error
    executed = nbformat.read(str(ok.results[0].output), as_version=4)
    assert executed.cells[-2].outputs[0]["ename"] == "ValueError"  # the taught error really happened
    assert "went on" in executed.cells[-1].outputs[0]["text"]
    bad = runs.run_series({}, {"untagged": "true"}, run_dir=tmp_path / "b", notebooks=d, progress=False)
    assert not bad.ok and "TypeError: a real failure" in bad.results[0].error


# ---------------------------------------------------------------------------------------------
# Runs compared (notebook 06) and the README's sweep example
# ---------------------------------------------------------------------------------------------


def _readme_sweep_commands():
    """Every ``fundus_nb sweep`` command of the README that sets -p values, continuation lines joined."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\\n", " ")
    lines = [x.strip() for x in text.splitlines() if x.strip().startswith(".venv/bin/python -m fundus_nb sweep ")]
    return [shlex.split(x.split("  #")[0]) for x in lines if " -p " in x]


def test_the_readme_sweep_example_resolves_against_the_shipped_notebooks():
    commands = _readme_sweep_commands()
    assert commands, "the README shows no sweep example with -p"
    notebooks = runs.list_notebooks()
    for words in commands:
        pairs = [words[i + 1:i + 3] for i, w in enumerate(words) if w in ("-p", "--param")]
        preset = words[words.index("--preset") + 1] if "--preset" in words else "default"
        spec = runs.parse_overrides(pairs)
        assert len(spec) >= 2, f"the README's sweep example should sweep two parameters: {' '.join(words)}"
        grid = runs.sweep_grid(spec)
        assert len(grid) == int(np.prod([len(v.split(",")) for v in spec.values()]))
        for point in grid:
            per_notebook = runs.resolve_parameters(notebooks, preset, point)
            for name, value in point.items():
                users = [nb for nb, params in per_notebook.items() if name in params]
                assert users, f"no shipped notebook declares {name!r} of the README's sweep example"
                assert all(str(per_notebook[nb][name]) == value for nb in users), (name, value)


def _fake_run(folder, params, numbers, preset="quick", with_record=True):
    """A run folder holding ``numbers`` ({(section, key): value}) made with ``params``."""
    for (section, key), value in numbers.items():
        runs.record_metrics(folder, section, {**runs.load_metrics(folder).get(section, {}), key: value})
    if with_record:
        runs.write_record(folder, {"version": "0.1.0", "preset": preset, "notebooks": {
            s: {"status": "ok", "parameters": {**params, "run_dir": str(folder)}, "wall_s": 2.0}
            for s, _ in numbers}})
    return Path(folder)


def test_run_parameters_fall_back_to_the_executed_notebooks_papermill_metadata(series, tmp_path):
    run_dir = tmp_path / "run"
    runs.run_series({"seed": 4}, {"scale": "3"}, run_dir=run_dir, notebooks=series, progress=False)
    from_record = runs.run_parameters(run_dir)
    (run_dir / "run.json").unlink()
    from_notebooks = runs.run_parameters(run_dir)
    expected = {}
    for path in sorted(run_dir.glob("*.ipynb")):  # independent reading: nbformat, every notebook
        expected.update(nbformat.read(str(path), as_version=4).metadata["papermill"]["parameters"])
    expected.pop("run_dir")
    assert from_notebooks == {"preset": None, **expected}
    assert from_record == {"preset": "custom", **expected} and expected["seed"] == 4 and expected["scale"] == 3.0


def test_runs_table_and_swept_parameters_find_what_differs_within_a_preset(tmp_path):
    _fake_run(tmp_path / "a", {"seed": 0, "egl_k": 16, "lr": 0.1}, {("05_evaluation", "x"): 1.0})
    _fake_run(tmp_path / "b", {"seed": 1, "egl_k": 16, "lr": 0.1}, {("05_evaluation", "x"): 2.0})
    _fake_run(tmp_path / "c", {"seed": 0, "egl_k": 32, "lr": 0.1}, {("05_evaluation", "x"): 3.0})
    _fake_run(tmp_path / "d", {"seed": 0, "egl_k": 16, "lr": 0.5}, {("05_evaluation", "x"): 4.0}, preset="default")
    _fake_run(tmp_path / "e", {"seed": 0}, {("03_lenet_egl", "y"): 5.0})  # a run without egl_k
    (tmp_path / "sweep" / "empty").mkdir(parents=True)
    found = runs.runs_table(tmp_path)
    assert list(found["run"]) == ["a", "b", "c", "d", "e"] and list(found["wall_s"]) == [2.0] * 5
    assert found.loc[1, "seed"] == 1 and type(found.loc[1, "seed"]) is int and found.loc[4, "egl_k"] is None
    # lr differs only between presets, egl_k and seed within 'quick'; e's missing egl_k does not count
    assert runs.swept_parameters(found) == ["egl_k", "seed"]
    assert runs.swept_parameters(runs.collect_metrics(tmp_path)) == ["egl_k", "seed"]
    assert runs.replicate_groups(["egl_k", "eval_test_seed", "seed"]) == ["preset", "egl_k"]
    with pytest.raises(RunError, match="holds no run .*pass the folder that holds your runs"):
        runs.runs_table(tmp_path / "sweep")
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        runs.swept_parameters([{"run": "a"}])


def test_compare_runs_matches_a_brute_force_grouping(tmp_path):
    rng = np.random.default_rng(0)
    label, section, key = runs.COMPARED[3]
    expected = {}
    for i, (k, seed) in enumerate(itertools.product([16, 32], [0, 1, 2])):
        az = float(rng.random())
        expected.setdefault(str(k), []).append(az)
        _fake_run(tmp_path / f"r{i}", {"seed": seed, "egl_k": k}, {(section, "image_level.ses.az"): az})
    runs.record_metrics(tmp_path / "r0", "05_evaluation", {"image_level": {"ses": {"az": expected["16"][0]}},
                                                          "not_compared": 9.0})
    table = runs.collect_metrics(tmp_path)
    got = runs.compare_runs(table, ["preset", "egl_k"])
    assert list(got.columns) == ["preset", "egl_k", "metric", "runs", "seeds", "mean", "std", "min", "max"]
    assert list(got["metric"]) == [label, label] and list(got["egl_k"]) == ["16", "32"]
    for row in got.itertuples():
        v = np.array(expected[row.egl_k])
        assert row.runs == 3 and row.seeds == 3
        np.testing.assert_allclose([row.mean, row.std, row.min, row.max], [v.mean(), v.std(ddof=1), v.min(), v.max()])
    effects = runs.parameter_effects(table, ["egl_k", "seed"]).set_index("parameter")
    means = [np.mean(expected["16"]), np.mean(expected["32"])]
    np.testing.assert_allclose(effects.loc["egl_k", "effect"], abs(means[0] - means[1]))
    spread = np.mean([np.std(expected[k], ddof=1) for k in ("16", "32")])
    np.testing.assert_allclose(effects.loc["egl_k", "spread"], spread)
    assert effects.loc["egl_k", "bigger"] == (abs(means[0] - means[1]) > 2 * effects.loc["egl_k", "spread"])
    assert effects.loc["seed", "bigger"] is None  # each seed value holds one seed: no spread to weigh it
    with pytest.raises(ValueError, match="cannot group by strategy: no run recorded it"):
        runs.compare_runs(table, ["preset", "strategy"])
    text = runs.discuss_runs(runs.runs_table(tmp_path), table, ["egl_k", "seed"])
    assert "6 run folder(s) (quick ×6)" in text and "`egl_k` (16, 32)" in text
    assert f"moved {label} by {abs(means[0] - means[1]):.3f}" in text


def test_runner_kernel_client_polls_its_sockets_in_short_slices():
    # nbclient waits on the kernel's shell and iopub sockets with one long poll each; a wake-up missed
    # there (jupyter/nbclient#312) cost a widget cell the whole 240-s cell timeout. The runner's client
    # looks again every POLL_S seconds, still returns replies, and still times out when nothing comes.
    import asyncio
    from queue import Empty

    async def talk():
        km = runs.execute._local_kernel_manager()()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            assert type(kc.shell_channel).__name__ == type(kc.iopub_channel).__name__ == "PollingChannel"
            await kc.wait_for_ready(timeout=120)
            msg_id = kc.kernel_info()
            # wait_for_ready may have sent more kernel_info requests than it read replies to (a loaded
            # machine answers slowly): skip those stale replies, then ours must come
            reply = await kc.shell_channel.get_msg(timeout=30)
            while reply["parent_header"]["msg_id"] != msg_id and reply["msg_type"] == "kernel_info_reply":
                reply = await kc.shell_channel.get_msg(timeout=30)
            assert reply["parent_header"]["msg_id"] == msg_id and reply["msg_type"] == "kernel_info_reply"
            start = time.monotonic()
            with pytest.raises(Empty):
                await kc.shell_channel.get_msg(timeout=1.2)  # nothing was asked: nothing comes
            waited = time.monotonic() - start
            assert 1.2 <= waited < 1.2 + 2 * runs.execute.POLL_S + 1.0, waited
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            km.cleanup_ipc_files()

    asyncio.run(talk())


def test_a_notebook_without_a_kernelspec_is_read_and_run_with_python3(tmp_path):
    # nbformat.v4.new_notebook() (a notebook written by a script) names no kernel; papermill's
    # parameter inference alone stops with "No kernel name found"
    d = tmp_path / "nbs"
    d.mkdir()
    path = _notebook(d / "01_plain.ipynb", 'run_dir = ""\nseed = 3  # random seed\n',
                     _record("01_plain", "{'seed': seed}"),
                     kernelspec=False)
    before = path.read_bytes()
    params = runs.notebook_parameters(path)
    assert {name: p.default for name, p in params.items()} == {"run_dir": "", "seed": 3}
    assert path.read_bytes() == before  # the user's file is not rewritten
    result = runs.run_series({"seed": 5}, run_dir=tmp_path / "run", notebooks=d, progress=False)
    assert result.ok, result.results[0].error
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["01_plain"]["seed"] == 5
