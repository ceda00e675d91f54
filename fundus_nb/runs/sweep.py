"""Sweeps: a grid of parameter values, each point an independent run in its own folder, on Dask.

Every grid point is one task on a Dask distributed cluster: ``scheduler="tcp://host:8786"`` for a
running cluster (``dask scheduler`` and ``dask worker tcp://host:8786``), or, by default, a
``LocalCluster`` of ``jobs`` single-threaded worker processes on this machine. A task runs
:func:`~fundus_nb.runs.run_series` for its point inside the worker, into
``<sweep_dir>/<point name>/``, so the sweep folder must be on a filesystem every worker mounts at
the same path (checked before anything is submitted).

``<sweep_dir>/sweep.json`` (written atomically by this process, the only writer) holds the grid
and the state of every point: ``pending``, ``running`` (with the worker), ``ok`` or ``failed``
(with the reason), its ``run_dir``, ``worker`` and ``wall_s``. Rerunning into the same folder
(or ``resume=True``, which also reuses the stored grid) runs only the points whose run folder does
not hold a successful run of every selected notebook; a point that was cut short resumes its run.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import secrets
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .._io import atomic_write_json, atomic_write_text, runs_dir
from .artifacts import read_record
from .execute import new_run_id, run_series
from .params import RunError, list_notebooks, resolve_parameters

SWEEP_FILE = "sweep.json"
#: Topic of the worker events that tell this process a point started (``Worker.log_event``).
EVENT_TOPIC = "fundus_nb-sweep"
_TOKEN_FILE = ".sweep-token"


def sweep_grid(spec: dict[str, str]) -> list[dict[str, str]]:
    """Expand ``{"seed": "0,1,2", "strategy": "egl,random"}`` into the list of grid points."""
    axes = []
    for name, text in spec.items():
        values = [v.strip() for v in str(text).split(",")]
        if not values or any(v == "" for v in values):
            raise RunError(
                f"-p {name} {text!r}: a sweep value is a comma-separated list without empty items, "
                f"e.g. -p {name} 0,1,2"
            )
        axes.append([(name, v) for v in values])
    return [dict(point) for point in itertools.product(*axes)]


def point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()) or "base"


def _distributed():
    """The ``distributed`` package, imported on first use.

    Imported here, not at the top: it takes seconds to import on a loaded machine, and every
    notebook kernel imports ``runs`` (figures, metrics) without ever running a sweep.
    """
    import distributed

    return distributed


def read_sweep(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The sweep record ``<sweep_dir>/sweep.json``, or None when there is none."""
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _finished(run_dir: Path, selected: list[str]) -> bool:
    record = read_record(run_dir)
    return bool(record) and all(record["notebooks"].get(n, {}).get("status") == "ok" for n in selected)


def run_point(
    preset: str,
    point: dict[str, str],
    run_dir: str,
    only: list[str] | None = None,
    notebooks: str | None = None,
) -> dict[str, Any]:
    """One grid point, run in a worker: :func:`run_series` into ``run_dir`` (resumed if it exists).

    Returns ``{"state": "ok"|"failed", "reason", "worker", "wall_s"}``; a failed notebook is a
    failed point, not an exception, so that the sweep goes on with the other points.
    """
    distributed = _distributed()
    try:
        worker = distributed.get_worker()
        address = worker.address
        worker.log_event(EVENT_TOPIC, {"name": point_name(point), "worker": address, "time": time.time()})
    except ValueError:  # called outside a worker (a plain function call)
        address = "local"
    start = time.perf_counter()
    target = Path(run_dir)
    reason = None
    try:
        result = run_series(
            preset, point, only=only, run_dir=target, resume=read_record(target) is not None,
            notebooks=notebooks, progress=False,
        )
        failed = next((r for r in result.results if r.status == "failed"), None)
        lines = [f"{r.status:>7}  {r.name}  {r.wall_s:7.1f} s  {r.error or ''}" for r in result.results]
        if failed:
            reason = f"notebook {failed.name} failed ({failed.error}); its partly executed copy is {failed.output}"
    except RunError as exc:
        reason = str(exc)
        lines = [f"error: {exc}"]
    (target / "sweep.log").write_text("\n".join(lines) + "\n")
    wall = round(time.perf_counter() - start, 2)
    return {"state": "failed" if reason else "ok", "reason": reason, "worker": address, "wall_s": wall}


def _probe_folder(sweep_dir: str, token: str) -> str | None:
    """Run on a worker: None when it sees ``token`` in the sweep folder and can write there, else why."""
    folder = Path(sweep_dir)
    try:
        seen = "other content" if (folder / _TOKEN_FILE).read_text() != token else None
    except OSError as exc:
        seen = f"{type(exc).__name__}"
    if seen:
        return (
            f"does not see the sweep folder {folder} that this machine wrote ({seen}); "
            "put --sweep-dir on a filesystem that every worker mounts at the same path"
        )
    probe = folder / f".write-probe-{os.uname().nodename}-{os.getpid()}"
    try:
        probe.write_text(token)
        probe.unlink()
    except OSError as exc:
        return (
            f"cannot write into the sweep folder {folder} ({type(exc).__name__}: {exc}); "
            "make it writable for the user the workers run as"
        )
    return None


def _connect(scheduler: str | None, jobs: int, timeout: float):
    """A Dask client: to ``scheduler``, or to a new LocalCluster of ``jobs`` single-threaded processes."""
    distributed = _distributed()
    if scheduler is None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise RunError(f"--jobs must be a positive number of worker processes; got {jobs!r}")
        cluster = distributed.LocalCluster(
            n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
        )
        return distributed.Client(cluster), cluster
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RunError(
            f"could not reach the Dask scheduler at {scheduler!r} within {timeout:g} s ({type(exc).__name__}); "
            "start one with 'dask scheduler' and pass the address it prints, e.g. tcp://host:8786"
        ) from None
    return client, None


def check_workers(client, sweep_dir: Path, timeout: float = 10.0) -> list[str]:
    """Before submitting: there are workers, each imports ``fundus_nb`` and can write ``sweep_dir``.

    Returns the worker addresses; raises :class:`RunError` naming the first worker that fails.
    """
    address = client.scheduler.address
    deadline = time.monotonic() + timeout
    while not client.scheduler_info()["workers"]:
        if time.monotonic() > deadline:
            raise RunError(
                f"no worker is connected to the Dask scheduler at {address} after {timeout:g} s; "
                f"start some with 'dask worker {address}'"
            )
        time.sleep(0.2)
    # eval of a fixed expression: a builtin that unpickles on a worker without the package (a function
    # of fundus_nb would fail to unpickle there before it could report anything)
    versions = client.run(eval, "__import__('fundus_nb').__version__", on_error="return")
    for worker, version in sorted(versions.items()):
        if isinstance(version, BaseException):
            raise RunError(
                f"worker {worker} cannot import fundus_nb ({type(version).__name__}: {version}); "
                "install the package in the workers' environment (pip install -e . on a shared checkout)"
            )
        if version != __version__:
            raise RunError(
                f"worker {worker} has fundus_nb {version}, this machine {__version__}; "
                "install the same version on every worker"
            )
    token = secrets.token_hex(8)
    atomic_write_text(sweep_dir / _TOKEN_FILE, token)
    problems = client.run(_probe_folder, str(sweep_dir), token, on_error="return")
    for worker, problem in sorted(problems.items()):
        if isinstance(problem, BaseException):
            problem = f"cannot check the sweep folder {sweep_dir} ({type(problem).__name__}: {problem})"
        if problem:
            raise RunError(f"worker {worker} {problem}")
    return sorted(versions)


def run_sweep(
    spec: dict[str, str] | None = None,
    preset: str | None = None,
    *,
    sweep_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    only: list[str] | None = None,
    notebooks: str | os.PathLike | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    connect_timeout: float = 5.0,
) -> list[tuple[dict[str, str], Path, int]]:
    """Run every grid point of ``spec`` as a Dask task, each into ``<sweep_dir>/<point name>/``.

    ``scheduler`` is the address of a running Dask scheduler (``tcp://host:8786``); without it a
    ``LocalCluster`` of ``jobs`` single-threaded worker processes runs the points here. Points whose
    folder already holds a successful run are not run again. ``resume=True`` continues the sweep
    recorded in ``sweep_dir`` (its grid, preset, notebooks and ``--only`` unless given). Every
    point is validated, the scheduler reached within ``connect_timeout`` seconds and every worker
    checked (imports ``fundus_nb``, writes the sweep folder) before anything is submitted.
    Returns ``(point, run_dir, exit_code)`` per point (0 for ok and for skipped points).
    """
    if resume:
        if sweep_dir is None:
            raise RunError("--resume needs the sweep to continue: pass --sweep-dir PATH")
        stored = read_sweep(sweep_dir)
        if stored is None:
            raise RunError(f"{Path(sweep_dir) / SWEEP_FILE} does not exist; start the sweep without --resume")
        spec = spec or stored["spec"]
        preset = preset or stored["preset"]
        only = only or stored.get("only")
        notebooks = notebooks or stored.get("notebooks")
    spec = dict(spec or {})
    preset = preset or "default"
    points = sweep_grid(spec)
    nb_paths = list_notebooks(notebooks)
    for point in points:  # validate everything before starting anything
        resolve_parameters(nb_paths, preset, point)
    sweep_dir = Path(sweep_dir) if sweep_dir else runs_dir() / f"sweep-{new_run_id(preset)}"
    sweep_dir = sweep_dir.expanduser().resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    wanted = {o.zfill(2) for o in only or []}
    selected = [nb.stem for nb in nb_paths if not only or nb.name[:2] in wanted]
    notebooks = str(Path(notebooks).expanduser().resolve()) if notebooks else None
    previous = (read_sweep(sweep_dir) or {}).get("points", {})
    state: dict[str, Any] = {
        "version": __version__, "spec": spec, "preset": preset, "only": only, "notebooks": notebooks,
        "scheduler": scheduler or f"LocalCluster({jobs} workers)", "points": {},
    }
    todo = []
    for point in points:
        name = point_name(point)
        entry = {"point": point, "run_dir": str(sweep_dir / name), "state": "pending",
                 "worker": None, "wall_s": None, "reason": None}
        if _finished(sweep_dir / name, selected):
            old = previous.get(name, {})
            entry.update(state="ok", worker=old.get("worker"), wall_s=old.get("wall_s"))
        else:
            todo.append(point)
        state["points"][name] = entry
    if todo:
        client, cluster = _connect(scheduler, jobs, connect_timeout)
        try:
            check_workers(client, sweep_dir, timeout=max(connect_timeout, 10.0))
            atomic_write_json(sweep_dir / SWEEP_FILE, state)
            _submit_and_follow(client, state, todo, sweep_dir, preset, only, notebooks)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    atomic_write_json(sweep_dir / SWEEP_FILE, state)
    return [(p, sweep_dir / point_name(p), 0 if state["points"][point_name(p)]["state"] == "ok" else 1)
            for p in points]


def _submit_and_follow(client, state, todo, sweep_dir, preset, only, notebooks, poll_s: float = 0.25) -> None:
    """Submit one task per point and record every start and end in ``sweep.json`` as it happens."""
    started: queue.Queue = queue.Queue()
    client.subscribe_topic(EVENT_TOPIC, started.put)
    points = state["points"]
    remaining = {}
    for point in todo:
        name = point_name(point)
        remaining[name] = client.submit(
            run_point, preset, point, points[name]["run_dir"], only, notebooks,
            key=f"fundus_nb-sweep-{secrets.token_hex(4)}-{name}", pure=False,
        )
    try:
        while remaining:
            changed = _drain(started, points)
            for name, future in list(remaining.items()):
                if not future.done():
                    continue
                del remaining[name]
                changed = True
                if future.status == "finished":
                    points[name].update(future.result())
                else:
                    exc = future.exception() if future.status == "error" else None
                    points[name].update(state="failed", reason=_task_error(exc))
            if changed:
                atomic_write_json(sweep_dir / SWEEP_FILE, state)
            else:
                time.sleep(poll_s)
    finally:
        client.unsubscribe_topic(EVENT_TOPIC)


def _drain(started: queue.Queue, points: dict[str, Any]) -> bool:
    """Mark the points whose start events arrived as running; True when any did."""
    changed = False
    while True:
        try:
            _time, msg = started.get_nowait()
        except queue.Empty:
            return changed
        entry = points.get(msg.get("name"))
        if entry is not None and entry["state"] in ("pending", "running"):
            entry.update(state="running", worker=msg.get("worker"))
            changed = True


def _task_error(exc: BaseException | None) -> str:
    if exc is None:
        return "the task was cancelled (the client or the cluster shut down); rerun the sweep with --resume"
    if type(exc).__name__ == "KilledWorker":
        return (
            f"the worker running it died ({exc}); rerun the sweep with --resume to finish it "
            "(its run folder resumes where it stopped)"
        )
    return f"{type(exc).__name__}: {exc}"
