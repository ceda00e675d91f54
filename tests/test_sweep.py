"""Sweeps on Dask distributed: the grid, sweep.json, resume, a worker killed mid-sweep, bad input."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import dask
import pytest
from _reference import assert_one_sentence
from distributed import Client, LocalCluster
from test_runs import _notebook, _record

from fundus_nb import runs
from fundus_nb.runs import RunError
from fundus_nb.runs.sweep import read_sweep


@pytest.fixture
def series(tmp_path):
    """One notebook recording its seed and strategy (the first of test_runs.py's tiny series)."""
    (tmp_path / "nbs").mkdir()
    params = 'run_dir = ""\nseed = 0\nstrategy = "egl"  # one of: egl, random\n'
    _notebook(tmp_path / "nbs" / "01_first.ipynb", params, _record("01_first", "{'seed': seed, 'strategy': strategy}"))
    return tmp_path / "nbs"


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("seed: 0\n")
    return str(path)


@pytest.fixture
def counting(tmp_path):
    """One stdlib-only notebook that naps, then appends its seed to a counter file (one line a run)."""
    d = tmp_path / "counting"
    d.mkdir()
    _notebook(
        d / "01_nap.ipynb",
        'run_dir = ""\nseed = 0\nnap = 0.0\ncounter = ""\n',
        "import pathlib, time\ntime.sleep(nap)\n"
        "with pathlib.Path(counter).open('a') as fh:\n    fh.write(f'{seed}\\n')\n",
    )
    return d


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes; a task whose worker dies fails at once (no retry)."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
            with Client(lc) as client:
                # import the package in the workers now, not inside the timed sweeps
                client.run(exec, "import fundus_nb.runs.sweep", {})
                yield lc, client


def _wait_for_workers(client, n, timeout=240):
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info()["workers"]) < n:
        assert time.monotonic() < deadline, "the cluster did not get its workers back"
        time.sleep(0.2)


def test_sweep_grid_expands_and_rejects_malformed_values():
    grid = runs.sweep_grid({"seed": "0,1", "strategy": "egl,random"})
    assert grid == [{"seed": "0", "strategy": "egl"}, {"seed": "0", "strategy": "random"},
                    {"seed": "1", "strategy": "egl"}, {"seed": "1", "strategy": "random"}]
    assert runs.point_name(grid[1]) == "seed=0,strategy=random"
    with pytest.raises(RunError, match="comma-separated"):
        runs.sweep_grid({"seed": "0,,1"})


def test_sweep_validates_every_point_before_starting(series, tmp_path):
    # the shipped quick preset names parameters the tiny notebooks do not declare
    with pytest.raises(RunError, match="unknown parameter"):
        runs.run_sweep({"seed": "0,1"}, "quick", sweep_dir=tmp_path / "bad", notebooks=series)
    assert not (tmp_path / "bad" / "sweep.json").exists()


@pytest.mark.notebooks
def test_sweep_on_a_local_cluster_writes_every_point_and_reruns_nothing_finished(series, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("seed: 0\n")
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "fundus_nb", "sweep", "--preset", str(preset), "--notebooks", str(series),
           "--sweep-dir", str(sweep_dir), "--jobs", "2", "-p", "seed", "1,2", "-p", "strategy", "egl,random"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((sweep_dir / "seed=2,strategy=random" / "metrics.json").read_text())
    assert metrics == {"01_first": {"seed": 2, "strategy": "random"}}
    state = read_sweep(sweep_dir)
    assert state["spec"] == {"seed": "1,2", "strategy": "egl,random"}
    assert sorted(state["points"]) == sorted(runs.point_name(p) for p in runs.sweep_grid(state["spec"]))
    for name, entry in state["points"].items():
        assert entry["state"] == "ok" and entry["reason"] is None, entry
        assert entry["run_dir"] == str(sweep_dir.resolve() / name)
        assert entry["worker"].startswith("tcp://") and entry["wall_s"] > 0
    mtime = (sweep_dir / "seed=1,strategy=egl" / "run.json").stat().st_mtime
    again = runs.run_sweep(None, None, sweep_dir=sweep_dir, resume=True)  # the stored grid, nothing to do
    assert [code for _, _, code in again] == [0, 0, 0, 0]
    assert (sweep_dir / "seed=1,strategy=egl" / "run.json").stat().st_mtime == mtime  # not rerun


@pytest.mark.notebooks
def test_a_worker_killed_mid_sweep_loses_nothing_finished_and_resume_completes_the_rest(
    counting, tmp_path, cluster
):
    lc, client = cluster
    _wait_for_workers(client, 2)
    counter = tmp_path / "counter.txt"
    preset = tmp_path / "nap.yaml"
    preset.write_text(f"nap: 2.0\ncounter: {json.dumps(str(counter))}\n")
    sweep_dir = tmp_path / "sweep"
    spec = {"seed": "0,1,2,3"}
    outcome = {}

    def sweep():
        try:
            outcome["results"] = runs.run_sweep(
                spec, str(preset), sweep_dir=sweep_dir, notebooks=counting, scheduler=lc.scheduler_address)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=sweep)
    thread.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and thread.is_alive() and time.monotonic() < deadline:
        state = read_sweep(sweep_dir) if (sweep_dir / "sweep.json").is_file() else None
        running = [e for e in (state or {}).get("points", {}).values() if e["state"] == "running"]
        if running:
            victim = running[0]
        else:
            time.sleep(0.1)
    assert victim is not None, f"no point was seen running: {outcome}"
    pids = client.run(os.getpid)
    os.kill(pids[victim["worker"]], signal.SIGKILL)  # the worker process, in the middle of its point
    thread.join(120)
    assert not thread.is_alive() and "error" not in outcome, outcome
    state = read_sweep(sweep_dir)
    points = state["points"]
    killed = runs.point_name(victim["point"])
    assert points[killed]["state"] == "failed" and "worker running it died" in points[killed]["reason"]
    ok_first = {name for name, e in points.items() if e["state"] == "ok"}
    assert ok_first, points  # the other worker finished points
    for entry in points.values():
        assert entry["state"] in ("ok", "failed"), entry
        if entry["state"] == "failed":
            assert entry["reason"]
    codes = {runs.point_name(p): code for p, _, code in outcome["results"]}
    assert {n for n, c in codes.items() if c == 0} == ok_first

    # the nanny restarts the killed worker in the background; the surviving one is enough to resume
    again = runs.run_sweep(None, None, sweep_dir=sweep_dir, resume=True, scheduler=lc.scheduler_address)
    assert [code for _, _, code in again] == [0, 0, 0, 0]
    final = read_sweep(sweep_dir)["points"]
    assert all(e["state"] == "ok" for e in final.values()), final
    seeds = counter.read_text().split()
    for name in ok_first:  # finished before the kill and never run again
        assert seeds.count(name.split("=")[1]) == 1, (name, seeds)
    assert sorted(set(seeds)) == ["0", "1", "2", "3"]  # everything missing was completed


def test_an_unreachable_scheduler_is_one_sentence_within_seconds(series, preset, tmp_path):
    sweep_dir = tmp_path / "sweep"
    start = time.monotonic()
    with pytest.raises(RunError) as info:
        runs.run_sweep({"seed": "0,1"}, preset, sweep_dir=sweep_dir, notebooks=series,
                       scheduler="tcp://127.0.0.1:9", connect_timeout=2.0)
    assert time.monotonic() - start < 20  # 2 s of connection attempts plus imports on a loaded machine
    assert "could not reach the Dask scheduler at 'tcp://127.0.0.1:9'" in str(info.value)
    assert "dask scheduler" in str(info.value)
    assert_one_sentence(str(info.value))
    assert not (sweep_dir / "sweep.json").exists()  # nothing marked running, nothing started


def test_a_worker_without_the_package_or_without_write_access_stops_the_sweep_before_it_starts(
    series, preset, tmp_path, cluster
):
    lc, client = cluster
    _wait_for_workers(client, 2)
    first, second = sorted(client.scheduler_info()["workers"])
    sweep_dir = tmp_path / "sweep"
    args = dict(sweep_dir=sweep_dir, notebooks=series, scheduler=lc.scheduler_address)
    # import fundus_nb fails in that worker process from now on (the module is set aside, then put back)
    hide = "import sys; sys.modules['_hidden'] = sys.modules['fundus_nb']; sys.modules['fundus_nb'] = None"
    client.run(exec, hide, {}, workers=[first])
    try:
        with pytest.raises(RunError) as info:
            runs.run_sweep({"seed": "0,1"}, preset, **args)
    finally:
        client.run(exec, "import sys; sys.modules['fundus_nb'] = sys.modules.pop('_hidden')", {}, workers=[first])
    assert str(info.value).startswith(f"worker {first} cannot import fundus_nb")
    assert_one_sentence(str(info.value))

    _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    client.run(resource.setrlimit, resource.RLIMIT_FSIZE, (0, hard), workers=[second])  # no byte can be written
    try:
        with pytest.raises(RunError) as info:
            runs.run_sweep({"seed": "0,1"}, preset, **args)
    finally:
        client.run(resource.setrlimit, resource.RLIMIT_FSIZE, (hard, hard), workers=[second])
    assert str(info.value).startswith(f"worker {second} cannot write into the sweep folder {sweep_dir.resolve()}")
    assert_one_sentence(str(info.value))
    state = read_sweep(sweep_dir)
    assert state is None or all(e["state"] != "running" for e in state["points"].values())
    assert not list(sweep_dir.glob("seed=*"))  # no point started
