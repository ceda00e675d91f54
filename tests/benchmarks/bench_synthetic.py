"""Benchmark: generate the default synthetic dataset, then read it back from the cache.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_synthetic.py [--n-patients 32] [--size 512]

It generates into a temporary cache folder (``FUNDUS_NB_HOME``), so the project's own cache is
neither used nor touched, and prints the generation time (wall clock and this process's CPU
time: on a shared, overloaded machine the wall time includes waiting for a core), the cached-load
time and their ratio.
The design budget is <= 30 s for the default dataset on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=None, help="default: the loader's default")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory() as home:
        os.environ["FUNDUS_NB_HOME"] = home
        from fundus_nb import data

        opts = {"size": args.size, "seed": args.seed}
        if args.n_patients is not None:
            opts["n_patients"] = args.n_patients
        t0, c0 = time.perf_counter(), time.process_time()
        recs = data.load("synthetic", **opts)
        t_gen, c_gen = time.perf_counter() - t0, time.process_time() - c0
        path = data.synthetic_cache_path(**opts)
        t0 = time.perf_counter()
        again = data.load("synthetic", **opts)
        t_load = time.perf_counter() - t0
        assert len(again) == len(recs)
        n = len(recs)
        print(f"images: {n} ({n // 2} patients), size {args.size}x{args.size}, cpu cores: {os.cpu_count()}")
        print(f"generate (incl. cache write): {t_gen:6.2f} s  ({t_gen / n * 1000:.0f} ms per image)  budget 30 s: "
              f"{'OK' if t_gen <= 30 else 'OVER'}")
        print(f"  CPU time of this process:   {c_gen:6.2f} s  (wall minus waiting for a shared CPU)")
        print(f"load from cache:              {t_load:6.2f} s  (cache file {path.stat().st_size / 1e6:.1f} MB)")
        print(f"speed-up of the cached load:  {t_gen / t_load:6.1f}x")


if __name__ == "__main__":
    main()
