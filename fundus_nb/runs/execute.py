"""Executing the notebook series with papermill into one run folder (``python -m fundus_nb run``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from tqdm.auto import tqdm

from .. import __version__
from .._io import runs_dir
from .artifacts import prepare_run_dir, read_record, write_record
from .params import RunError, list_notebooks, notebook_parameters, resolve_parameters
from .report import write_summary


def new_run_id(preset: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{preset}"


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok", "failed", "skipped"
    wall_s: float = 0.0
    output: Path | None = None
    error: str | None = None


@dataclass
class RunResult:
    run_dir: Path
    results: list[NotebookResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status in ("ok", "skipped") for r in self.results)


def _cell_timeout() -> float | None:
    """Seconds one notebook cell may run (environment variable ``FUNDUS_NB_CELL_TIMEOUT``).

    Unset means no limit, as a paper-preset training cell runs for hours. ``make test`` sets it so
    that a kernel that stops answering fails the test instead of hanging it.
    """
    value = os.environ.get("FUNDUS_NB_CELL_TIMEOUT", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise RunError(
            f"FUNDUS_NB_CELL_TIMEOUT must be a number of seconds, got {value!r}; set e.g. 900 or unset it"
        ) from None
    if seconds <= 0:
        raise RunError(f"FUNDUS_NB_CELL_TIMEOUT must be positive, got {value!r}; unset it for no limit")
    return seconds


#: Seconds between two looks at a kernel socket (see ``PollingChannel`` in :func:`_local_kernel_manager`).
POLL_S = 0.5


def _local_kernel_manager():
    """The kernel manager papermill uses: local IPC sockets in a private temporary folder, and a
    client that polls its sockets in short slices.

    The kernel talks over IPC instead of TCP ports, so ipykernel does not warn about unencrypted TCP
    traffic (which a local run never sends) and parallel sweeps cannot collide on ports.
    """
    # Imported here: jupyter_client takes seconds to import on a loaded machine, and notebook
    # kernels import ``runs`` for figures and metrics without ever starting a kernel.
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, Type, default

    class PollingChannel(AsyncZMQSocketChannel):
        """A channel whose ``get_msg`` looks for a message at least every ``POLL_S`` seconds.

        One long ``poll`` on an asyncio zmq socket can miss the wake-up of a message that arrives
        while the client also polls the kernel's other socket (jupyter/nbclient#312, seen with
        widget cells): the message is noticed only when the poll times out, so a one-second cell
        "ran" for the whole cell timeout (240 s measured), or forever without one.
        """

        async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
                if await self.socket.poll(int(left * 1000)):
                    return await self._recv()
                if deadline is not None and time.monotonic() >= deadline:
                    raise Empty

    class PollingKernelClient(AsyncKernelClient):
        shell_channel_class = Type(PollingChannel)
        iopub_channel_class = Type(PollingChannel)

    class LocalIPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("client_factory")
        def _client_factory_default(self) -> type:
            return PollingKernelClient

        @default("ip")
        def _ip_default(self) -> str:
            return os.path.join(tempfile.mkdtemp(prefix="fundus_nb-kernel-"), "ipc")

        def cleanup_ipc_files(self) -> None:
            super().cleanup_ipc_files()
            if self.transport == "ipc":
                shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

    return LocalIPCKernelManager


def _select(all_notebooks: list[Path], only: list[str] | None) -> list[Path]:
    if not only:
        return all_notebooks
    wanted = {o.strip().zfill(2) for o in only if o.strip()}
    known = {nb.name[:2] for nb in all_notebooks}
    missing = sorted(wanted - known)
    if missing:
        raise RunError(
            f"--only names unknown notebook number(s) {', '.join(missing)}; choose from {', '.join(sorted(known))}"
        )
    return [nb for nb in all_notebooks if nb.name[:2] in wanted]


def _open_record(run_dir: Path, preset_name: str, resume: bool) -> dict[str, Any]:
    record = read_record(run_dir)
    if record and not resume:
        raise RunError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run-id"
        )
    if record and record.get("version") != __version__:
        raise RunError(
            f"{run_dir} was made by fundus_nb {record.get('version')!r}, this is {__version__}; "
            "start a new run (another --run-id) instead of resuming it"
        )
    prepare_run_dir(run_dir)
    record = record or {"version": __version__, "preset": preset_name, "notebooks": {}}
    record["preset"] = preset_name
    write_record(run_dir, record)
    return record


def _untagged_error(output: Path) -> str | None:
    """The first error of a cell not tagged ``raises-exception`` in an executed notebook."""
    import nbformat

    for cell in nbformat.read(str(output), as_version=4).cells:
        if cell.cell_type == "code" and "raises-exception" not in cell.metadata.get("tags", []):
            for out in cell.outputs:
                if out.output_type == "error":
                    return f"cell {cell.execution_count}: {out.ename}: {out.evalue}"
    return None


def _execute(nb: Path, output: Path, params: dict[str, Any], run_dir: Path) -> str | None:
    """Run one notebook with papermill; the error text when it failed, else None."""
    # Imported here: papermill takes seconds to import on a loaded machine (see _local_kernel_manager).
    import papermill as pm

    try:
        pm.execute_notebook(
            str(nb),
            str(output),
            parameters=params,
            cwd=str(run_dir),
            kernel_name="python3",
            language="python",  # a notebook without a kernelspec still gets its parameters injected
            kernel_manager_class=_local_kernel_manager(),
            execution_timeout=_cell_timeout(),
            progress_bar=False,
            log_output=False,
        )
    except pm.PapermillExecutionError as exc:
        # papermill runs on past a cell tagged raises-exception (a lesson's expected error) but still
        # raises at the end: the run failed only if an untagged cell raised.
        if output.is_file() and _untagged_error(output) is None:
            return None
        return f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel died, notebook unreadable, ...
        return f"{type(exc).__name__}: {exc}"
    return None


def run_series(
    preset: str | dict[str, Any] = "default",
    overrides: dict[str, Any] | None = None,
    *,
    only: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    notebooks: str | os.PathLike | None = None,
    progress: bool = True,
    stop_on_error: bool = True,
) -> RunResult:
    """Execute the notebooks in number order with papermill into ``run_dir``.

    ``preset`` is a preset name or a mapping of parameter values.
    Each notebook gets the preset's values (then ``overrides``) for the names its ``parameters``
    cell declares, plus ``run_dir``. ``only`` selects notebooks by number prefix ("03").
    With ``resume`` a notebook whose executed copy in ``run_dir`` succeeded with the same
    parameters is skipped. A failed notebook stops the run (``stop_on_error``) and its partly
    executed copy stays in ``run_dir``.
    """
    all_notebooks = list_notebooks(notebooks)
    params = resolve_parameters(all_notebooks, preset, overrides)
    selected = _select(all_notebooks, only)
    preset_name = preset if isinstance(preset, str) else "custom"
    if run_dir is None:
        run_dir = runs_dir() / new_run_id(preset_name)
    run_dir = Path(run_dir).expanduser().resolve()
    record = _open_record(run_dir, preset_name, resume)

    result = RunResult(run_dir)
    bar = tqdm(selected, desc="notebooks", unit="nb", disable=not progress)
    for nb in bar:
        name = nb.stem
        bar.set_postfix_str(name)
        nb_params = dict(params[nb])
        if "run_dir" in notebook_parameters(nb):
            nb_params["run_dir"] = str(run_dir)
        output = run_dir / nb.name
        previous = record["notebooks"].get(name, {})
        same = previous.get("parameters") == _jsonable(nb_params)
        if resume and previous.get("status") == "ok" and same and output.is_file():
            result.results.append(NotebookResult(name, "skipped", previous.get("wall_s", 0.0), output))
            continue
        record["notebooks"][name] = {"status": "running", "parameters": _jsonable(nb_params)}
        write_record(run_dir, record)
        start = time.perf_counter()
        error = _execute(nb, output, nb_params, run_dir)
        status = "failed" if error else "ok"
        wall = time.perf_counter() - start
        record["notebooks"][name] = {
            "status": status,
            "parameters": _jsonable(nb_params),
            "wall_s": round(wall, 2),
            **({"error": error} if error else {}),
        }
        write_record(run_dir, record)
        result.results.append(NotebookResult(name, status, wall, output, error))
        if error and stop_on_error:
            break
    bar.close()
    write_summary(run_dir)
    return result


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))
