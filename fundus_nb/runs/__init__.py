"""Run folders, notebook parameters, the main job, reports and sweeps for the notebook series.

Notebooks call :func:`prepare_run_dir`, :func:`save_figure`, :func:`record_metrics`, and hand models
and splits to later notebooks with :func:`save_model` / :func:`load_model` and :func:`save_split` /
:func:`load_split` / :func:`split_records`; the main job (``python -m fundus_nb run``) executes
the notebooks into ``runs/<run-id>/`` with :func:`run_series`.

Modules, each depending only on those before it: ``params`` (parameters, presets, overrides)
-> ``artifacts`` (run folders, figures, metrics, run record, models, splits) -> ``records``
(a split's images rebuilt) -> ``report`` (summary table, README block, all runs as one table)
-> ``execute`` (papermill, kernels) -> ``sweep`` (parameter grids).
"""

from .artifacts import (
    MADE_BY,
    RUN_RECORD,
    load_checkpoint,
    load_metrics,
    load_model,
    load_split,
    model_path,
    prepare_run_dir,
    read_record,
    record_metrics,
    require,
    save_figure,
    save_model,
    save_split,
    split_path,
    write_record,
)
from .execute import NotebookResult, RunResult, new_run_id, run_series
from .params import (
    PRESETS,
    Parameter,
    RunError,
    list_notebooks,
    load_dataset_overlay,
    load_preset,
    notebook_parameters,
    notebooks_dir,
    parse_overrides,
    resolve_parameters,
)
from .records import LESIONS, balanced, independent_records, split_records
from .report import (
    COMPARED,
    HEADLINES,
    README_END,
    README_START,
    collect_metrics,
    compare_runs,
    compared_metrics,
    discuss_runs,
    find_runs,
    parameter_effects,
    replicate_groups,
    run_parameters,
    runs_table,
    summary_table,
    swept_parameters,
    update_readme,
    write_summary,
)
from .sweep import point_name, read_sweep, run_sweep, sweep_grid

__all__ = [
    "COMPARED", "HEADLINES", "LESIONS", "MADE_BY", "PRESETS", "README_END", "README_START", "RUN_RECORD",
    "NotebookResult", "Parameter", "RunError", "RunResult",
    "balanced", "collect_metrics", "compare_runs", "compared_metrics", "discuss_runs", "find_runs",
    "parameter_effects", "replicate_groups", "run_parameters", "runs_table", "swept_parameters",
    "independent_records", "list_notebooks", "load_checkpoint",
    "load_dataset_overlay", "load_metrics", "load_model", "load_preset", "load_split", "model_path",
    "new_run_id", "notebook_parameters", "notebooks_dir", "parse_overrides", "point_name",
    "prepare_run_dir", "read_record", "record_metrics", "require", "resolve_parameters", "run_series",
    "read_sweep", "run_sweep", "save_figure", "save_model", "save_split", "split_path", "split_records",
    "summary_table", "sweep_grid", "update_readme", "write_record", "write_summary",
]
