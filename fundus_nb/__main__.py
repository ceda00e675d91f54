"""Command line: ``python -m fundus_nb run|sweep|summary``.

``sweep`` runs every point of a parameter grid on Dask: a local cluster of ``--jobs`` worker
processes, or a running cluster given by ``--scheduler tcp://host:8786``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._io import runs_dir
from .runs import PRESETS, RunError, parse_overrides, run_series, run_sweep, summary_table, update_readme
from .runs.sweep import read_sweep


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fundus_nb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    # No default here: the parsers share this action, so a default set on one sets it for all (a
    # sweep's "keep the recorded preset" once made a plain `run` start with no preset); main() fills it.
    common.add_argument(
        "--preset",
        help=f"one of {', '.join(PRESETS)}, or a path to a YAML file of parameter values (default: default; "
        "a resumed sweep keeps its recorded preset)",
    )
    common.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
        help="override a notebook parameter (repeatable)",
    )
    common.add_argument("--only", help="comma-separated notebook numbers to run, e.g. 03,04")
    common.add_argument("--notebooks", help="folder of NN_topic.ipynb notebooks (default: the series)")

    run = sub.add_parser("run", parents=[common], help="execute the notebook series into runs/<run-id>/")
    run.add_argument("--run-id", help="name of the run folder under runs/ (default: timestamp-preset)")
    run.add_argument("--run-dir", help="explicit run folder (overrides --run-id)")
    run.add_argument("--resume", action="store_true", help="rerun only what failed or did not run")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    sweep = sub.add_parser("sweep", parents=[common], help="run a grid of parameter values (-p NAME a,b,c)")
    sweep.add_argument(
        "--jobs", type=int, default=1,
        help="without --scheduler: a local Dask cluster of this many single-threaded worker processes (default 1)",
    )
    sweep.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="run the points on a running Dask cluster (tcp://host:8786, printed by 'dask scheduler'); "
        "--sweep-dir must then be on a filesystem every worker mounts at the same path",
    )
    sweep.add_argument("--sweep-dir", help="folder for the grid's runs (default runs/sweep-<timestamp>)")
    sweep.add_argument(
        "--resume", action="store_true",
        help="finish the sweep recorded in --sweep-dir (its grid and preset unless given); finished points are kept",
    )

    summary = sub.add_parser("summary", help="print the results table of a run folder")
    summary.add_argument("run_dir", help="a run folder, or a run id under runs/")
    summary.add_argument("--update-readme", action="store_true", help="write the table into README.md's results block")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = args.only.split(",") if getattr(args, "only", None) else None
    try:
        if args.command == "summary":
            run_dir = Path(args.run_dir)
            if not run_dir.is_dir() and (runs_dir() / args.run_dir).is_dir():
                run_dir = runs_dir() / args.run_dir
            if not (run_dir / "metrics.json").is_file():
                raise RunError(
                    f"{run_dir} holds no metrics.json; pass a run folder made by 'python -m fundus_nb run'"
                )
            print(summary_table(run_dir))
            if args.update_readme:
                print(f"updated {update_readme(run_dir)}")
            return 0
        overrides = parse_overrides(args.param)
        if args.command == "run":
            run_dir = args.run_dir or (runs_dir() / args.run_id if args.run_id else None)
            if args.resume and run_dir is None:
                raise RunError("--resume needs the run to continue: pass --run-id NAME or --run-dir PATH")
            result = run_series(
                args.preset or "default", overrides, only=only, run_dir=run_dir, resume=args.resume,
                progress=not args.quiet, notebooks=args.notebooks,
            )
            for r in result.results:
                line = f"{r.status:>7}  {r.name}  {r.wall_s:7.1f} s"
                print(line + (f"  {r.error}" if r.error else ""))
            print()
            print(summary_table(result.run_dir))
            if not result.ok:
                failed = next(r for r in result.results if r.status == "failed")
                print(
                    f"error: notebook {failed.name} failed ({failed.error}); the partly executed copy is "
                    f"{failed.output}. Fix it, then rerun with --resume --run-dir {result.run_dir}",
                    file=sys.stderr,
                )
                return 1
            print(f"outputs: {result.run_dir}")
            return 0
        if args.command == "sweep":
            results = run_sweep(
                overrides, args.preset, sweep_dir=args.sweep_dir, jobs=args.jobs, only=only,
                notebooks=args.notebooks, scheduler=args.scheduler, resume=args.resume,
            )
            sweep_dir = results[0][1].parent if results else Path(args.sweep_dir or ".")
            states = (read_sweep(sweep_dir) or {}).get("points", {})
            bad = 0
            for _point, target, code in results:
                reason = states.get(target.name, {}).get("reason")
                print(f"{'ok' if code == 0 else 'FAILED':>6}  {target}" + (f"  {reason}" if code and reason else ""))
                bad += code != 0
            print(f"states: {sweep_dir / 'sweep.json'}")
            if bad:
                print(
                    f"error: {bad} point(s) failed; fix the cause, then finish the sweep with "
                    f"sweep --resume --sweep-dir {sweep_dir}",
                    file=sys.stderr,
                )
            return 1 if bad else 0
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
