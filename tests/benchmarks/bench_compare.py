"""Benchmark: patch cutting and model-scale conversion, this checkout against an older commit, in one process.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_compare.py [--rev dfa7750] [--rounds 9]

The package of ``--rev`` is extracted with ``git archive`` into a temporary folder and imported as
``fundus_nb_old`` beside the working tree's ``fundus_nb``; every case runs on the same records,
old and new interleaved round by round (the machine is shared: both sides see the same load),
one thread. Each case first checks that both versions give the same output (``same``), then
prints the best and the median time per call of each and their ratio. Cases: ``PatchPool.get_batch``
(D4 and SeS schemes), ``extract``, ``to_tensor``, a ``SelectiveSampler`` epoch (cut + convert) and
its ``plan_epoch``. Not a timed test: a script with ``main()``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def old_package(rev: str, dest: Path) -> None:
    """Extract ``fundus_nb`` of ``rev`` into ``dest/fundus_nb_old`` and put ``dest`` on ``sys.path``."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "fundus_nb"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    (dest / "fundus_nb").rename(dest / "fundus_nb_old")
    sys.path.insert(0, str(dest))


def best_and_median(times: list[float]) -> tuple[float, float]:
    return min(times), float(np.median(times))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="dfa7750", help="the older commit (default: before issue 12's window path)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--images", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_compare_"))
    old_package(args.rev, tmp)
    import fundus_nb_old.patches as old_patches
    import fundus_nb_old.ses as old_ses

    from fundus_nb import data, preprocess
    from fundus_nb import patches as new_patches
    from fundus_nb import ses as new_ses

    recs = data.load("synthetic", n_patients=max(1, args.images // 2), seed=0, size=512)[: args.images]
    recs = [preprocess.standardize_record(r, size=512) for r in recs]
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 512, (2, 4096))
    u8 = rng.integers(0, 256, (256, 48, 48, 3), dtype=np.uint8)
    cases: dict[str, dict] = {}
    for tag, P, S in (("old", old_patches, old_ses), ("new", new_patches, new_ses)):
        ex = P.exudate_pool(recs, max_negatives_per_image=20000, seed=0)
        hem = P.hemorrhage_pool(recs, max_negatives_per_image=20000, seed=0)
        idx_ex = new_patches.balanced_sample(ex, 128, np.random.default_rng(0))
        idx_hem = new_patches.balanced_sample(hem, 128, np.random.default_rng(0))
        sampler = S.SelectiveSampler(recs, batch_size=64, batches_per_epoch=20)
        plan = sampler.plan_epoch(np.random.default_rng(3))
        cases[tag] = {
            "PatchPool.get_batch d4 (256)": lambda ex=ex, i=idx_ex: ex.get_batch(i, np.random.default_rng(0), True)[0],
            "PatchPool.get_batch ses (256)": lambda h=hem, i=idx_hem: h.get_batch(i, np.random.default_rng(0), True)[0],
            "extract 4096 x 48 px": lambda P=P: P.extract(recs[0].image, 0, rows, cols, 48),
            "to_tensor 256 x 48 px": lambda P=P: P.to_tensor(u8),
            "SelectiveSampler epoch 20 x 64 (cut + convert)":
                lambda s=sampler, p=plan, S=S: torch.stack([x for x, _ in S._EpochBatches(s, p)]),
            "SelectiveSampler.plan_epoch":
                lambda s=sampler: np.concatenate([v for v in s.plan_epoch(np.random.default_rng(3)).values()]),
        }
    same = {}
    for name in cases["old"]:
        a, b = cases["old"][name](), cases["new"][name]()
        same[name] = bool(torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b))
    times: dict[str, dict[str, list[float]]] = {name: {"old": [], "new": []} for name in cases["old"]}
    for k in range(args.rounds):
        for name in times:
            for tag in ("old", "new") if k % 2 == 0 else ("new", "old"):
                fn = cases[tag][name]
                t0 = time.perf_counter()
                n = 0
                while n < 3 or time.perf_counter() - t0 < 0.2:
                    fn()
                    n += 1
                times[name][tag].append((time.perf_counter() - t0) / n)
    print(f"old = {args.rev}, new = working tree; {len(recs)} images of 512 px; best / median of {args.rounds} "
          "interleaved rounds, 1 thread")
    print(f"{'case':48s} {'same':>5s} {'old ms':>16s} {'new ms':>16s} {'new/old best, median':>22s}")
    out = {}
    for name, t in times.items():
        (ob, om), (nb, nm) = best_and_median(t["old"]), best_and_median(t["new"])
        out[name] = {"same": same[name], "ratio_best": nb / ob, "ratio_median": nm / om}
        print(f"{name:48s} {str(same[name]):>5s} {ob * 1e3:7.2f} / {om * 1e3:6.2f} {nb * 1e3:7.2f} / {nm * 1e3:6.2f} "
              f"{nb / ob:10.2f} {nm / om:10.2f}")
    return out


if __name__ == "__main__":
    main()
