"""Benchmark of the SeS sampler: sampler time per epoch against training time per epoch.

Run: ``.venv/bin/python tests/benchmarks/bench_ses.py [--images 8] [--size 256] [--batch 64]
[--batches 20] [--candidates 16777217] [--device cpu]``

Side by side in one process (the machine is shared, so compare ratios, not seconds):

* ``draw``: :meth:`SelectiveSampler.plan_epoch` (all indices, shifts and flips of one epoch);
* ``cut``: cutting and converting the epoch's patches (iterating the epoch's batches);
* ``train``: one SGD step per batch on SeSNet (forward + backward + step), the same batches;
* ``weights``: one weight pass (:meth:`SelectiveSampler.update_weights`, one dense map per
  negative image), which the paper runs once every 5 epochs;
* weighted draws on a pool of ``--candidates`` (default 2**24 + 1) float32 weights with
  :func:`ses.weighted_indices` (cumsum + searchsorted) and with ``numpy.Generator.choice(p=...)``,
  for the paper's epoch (4000 x 128 negatives).

Images are random noise discs of ``--size`` pixels (the sampler's cost does not depend on content);
half carry a small lesion so that there are positives.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fundus_nb import ses
from fundus_nb.data import FundusImage
from fundus_nb.models import SeSNet


def make_pool(n_images: int, size: int, seed: int = 0) -> list[FundusImage]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 2 - 1) ** 2
    recs = []
    for i in range(n_images):
        img = (rng.integers(0, 256, (size, size, 3)) * fov[..., None]).astype(np.uint8)
        mask = np.zeros((size, size), bool)
        if i % 2 == 0:
            mask[size // 3 : size // 3 + 5, size // 3 : size // 3 + 5] = True
        recs.append(FundusImage(id=f"b{i}", patient_id=f"p{i}", image_=img, hemorrhage_mask=mask, fov=fov))
    return recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=2**24 + 1)
    ap.add_argument("--paper-draws", type=int, default=4000 * 128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    recs = make_pool(args.images, args.size)
    sp = ses.SelectiveSampler(recs, batch_size=args.batch, batches_per_epoch=args.batches)
    torch.manual_seed(0)
    model = SeSNet().to(args.device)
    print(f"pool: {args.images} images of {args.size}x{args.size}, {sp.n_positives} positive and "
          f"{sp.n_negatives} negative candidates; epoch = {args.batches} x {args.batch}; device {args.device}")

    t0 = time.perf_counter()
    sp.update_weights(model)
    t_weights = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    plan = sp.plan_epoch(rng)
    t_draw = time.perf_counter() - t0
    from fundus_nb.ses import _EpochBatches

    t0 = time.perf_counter()
    batches = list(_EpochBatches(sp, plan))
    t_cut = time.perf_counter() - t0
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        x, y = x.to(args.device), y.to(args.device)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_train = time.perf_counter() - t0
    print(f"per epoch: draw {t_draw:.4f} s, cut {t_cut:.3f} s, train {t_train:.3f} s -> "
          f"sampler/train = {(t_draw + t_cut) / t_train:.3f}")
    print(f"weight pass: {t_weights:.2f} s for {len(sp.negative_images)} negative images "
          f"({t_weights / len(sp.negative_images):.2f} s per map) = {t_weights / t_train:.2f} training epochs; "
          f"every 5 epochs: {t_weights / (5 * t_train):.2f} x training time")

    n = args.candidates
    w = np.random.default_rng(1).random(n, dtype=np.float32)
    t0 = time.perf_counter()
    cum = np.cumsum(w, dtype=np.float64)
    t_cum = time.perf_counter() - t0
    t0 = time.perf_counter()
    ses.weighted_indices(w, args.paper_draws, np.random.default_rng(2), cumulative=cum)
    t_ss = time.perf_counter() - t0
    p = w.astype(np.float64)
    p /= p.sum()
    t0 = time.perf_counter()
    np.random.default_rng(2).choice(n, size=args.paper_draws, p=p)
    t_choice = time.perf_counter() - t0
    print(f"{n} candidates, {args.paper_draws} draws: cumsum once {t_cum:.3f} s, searchsorted {t_ss:.3f} s, "
          f"Generator.choice(p=...) {t_choice:.3f} s (it redoes the cumsum on every call)")
    try:
        torch.multinomial(torch.from_numpy(w), 10, replacement=True)
        print("torch.multinomial accepted the pool")
    except RuntimeError as err:
        print(f"torch.multinomial refuses: {str(err).splitlines()[0][:90]}")


if __name__ == "__main__":
    main()
