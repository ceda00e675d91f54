"""Benchmark: sampling + extraction + D4 augmentation of 48x48 patches into a ready float batch.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_patches.py [--images 8] [--rounds 8] [--batches 5] [--batch-size 256]

One CPU core (``torch.set_num_threads(1)``). Compares ``PatchPool.get_batch`` (batched gather
from a strided window view, augmentation fused into the cast) with a naive per-patch Python loop
(slice a once-padded image, ``np.rot90``/``np.flip``, ``torch`` per patch, ``torch.stack``) in the
same run; bar: >= 20,000 patches/s and >= 10x the loop. Also prints the memory of a pool of
1,000,000 positions. Not a timed test: a script with ``main()``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from fundus_nb import patches as P


def standardized_images(n_images: int, size: int, seed: int):
    """Standardized synthetic records when the generator is available, else random 512x512 images."""
    try:
        from fundus_nb import data, preprocess

        recs = data.load("synthetic", n_patients=max(1, n_images // 2), seed=seed, size=size)[:n_images]
        recs = [preprocess.standardize_record(r, size=size) for r in recs]
        return recs, "synthetic (data.load + preprocess.standardize_record)"
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        rng = np.random.default_rng(seed)
        from fundus_nb.data import FundusImage

        yy, xx = np.mgrid[:size, :size]
        fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2 - 2) ** 2
        recs = []
        for k in range(n_images):
            ex = np.zeros((size, size), bool)
            ex[rng.integers(50, size - 50, 40)[:, None] + np.arange(4), rng.integers(50, size - 50, 40)[:, None]] = True
            image = rng.integers(0, 256, (size, size, 3), np.uint8)
            recs.append(FundusImage(id=str(k), patient_id=str(k), image_=image,
                                    exudate_mask=ex, fov=fov))
        return recs, f"random images ({type(err).__name__}: synthetic generator unavailable)"


def naive_batch(padded: list[np.ndarray], pos: np.ndarray, labels: np.ndarray, idx: np.ndarray,
                rng: np.random.Generator, s: int):
    """Reference: one Python iteration per patch (images padded once beforehand, to be fair)."""
    xs = []
    for i in idx:
        k, r, c = pos[i]
        p = padded[k][r : r + s, c : c + s]
        e = rng.integers(0, 8)
        if e >= 4:
            p = np.flip(p, 1)
        p = np.rot90(p, e % 4)
        xs.append(torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1).float() / 255.0)
    return torch.stack(xs), torch.from_numpy(labels[idx].astype(np.int64))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batches", type=int, default=5, help="fast batches per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(1)
    s = P.EXUDATE_PATCH

    t0 = time.perf_counter()
    recs, source = standardized_images(args.images, 512, args.seed)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    pool = P.exudate_pool(recs, size=s, max_negatives_per_image=20000, seed=args.seed)
    t_pool = time.perf_counter() - t0
    print(f"data: {source}; {len(recs)} images in {t_data:.1f} s")
    print(f"pool: {pool} built in {t_pool:.2f} s (positions from the samplers)")

    n_each = args.batch_size // 2
    rng = np.random.default_rng(args.seed)
    padded = list(P.pad_images([r.image for r in recs], s))  # padded once, like the pool
    pool.get_batch(P.balanced_sample(pool, n_each, rng), rng, augment=True)  # warm-up

    def fast_batch():  # sampling + extraction + augmentation + float tensor
        idx = P.balanced_sample(pool, n_each, rng)
        return pool.get_batch(idx, rng, augment=True)

    def slow_batch():  # same sampling, then one Python iteration per patch
        idx = P.balanced_sample(pool, n_each, rng)
        return naive_batch(padded, pool.positions, pool.labels, idx, rng, s)

    # interleaved rounds (the machine is shared: both sides see the same load); per round the
    # time per batch of each; report the best round (least disturbed) and the median
    fast_t, slow_t = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            x, y = fast_batch()
        fast_t.append((time.perf_counter() - t0) / args.batches)
        t0 = time.perf_counter()
        xn, yn = slow_batch()
        slow_t.append(time.perf_counter() - t0)
    assert x.shape == xn.shape and x.dtype == xn.dtype
    bs = 2 * n_each
    fast, naive = bs / min(fast_t), bs / min(slow_t)
    fast_med, naive_med = bs / float(np.median(fast_t)), bs / float(np.median(slow_t))
    n = args.rounds * args.batches * bs
    m = args.rounds * bs

    mem = pool.memory(1_000_000)
    print(f"batched get_batch : {fast:12,.0f} patches/s  (best of {args.rounds} rounds; {n} patches, "
          f"{tuple(x.shape)} float32, 1 thread)")
    print(f"naive Python loop : {naive:12,.0f} patches/s  (best of {args.rounds} rounds; {m} patches)")
    print(f"ratio             : {fast / naive:12.1f} x   (bar: >= 20,000 patches/s and >= 10x)")
    print(f"median rounds     : {fast_med:12,.0f} vs {naive_med:,.0f} patches/s, ratio {fast_med / naive_med:.1f} x")
    print(f"memory            : {mem['bytes_per_position']} bytes/position; 1M positions = "
          f"{mem['positions'] / 2**20:.1f} MiB + images {mem['images'] / 2**20:.1f} MiB "
          f"({pool.n_images} padded {s}-patch images) = {mem['total'] / 2**20:.1f} MiB")
    print(f"bar met           : {fast >= 20000 and fast / naive >= 10}")
    return {"fast": fast, "naive": naive, "ratio": fast / naive, **mem}


if __name__ == "__main__":
    main()
