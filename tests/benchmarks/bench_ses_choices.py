"""Two measured choices of notebook 04 (issue 11), reproducible on the default preset's data.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_ses_choices.py lr [LR ...]``
and ``... bench_ses_choices.py weights RUN_DIR`` (a run folder with notebook 04's checkpoints).

* ``lr``: SeSNet with the paper's init (normal, variance 0.05) trained 4 NSeS epochs of 20 x 64
  patches at each learning rate (momentum 0.9, weight decay 5e-4, seed 0) on the default
  preset's training images (70 synthetic patients, 256 px, enhanced, 32 images): the mean loss
  of each epoch, or the iteration where the loss became NaN.
* ``weights``: one SeS weight pass with exact maps (every candidate pixel) against the network's
  natural output stride (every 4th pixel, each candidate taking its nearest grid value), with the
  seed-0 SeS model after ``ses_epochs`` epochs: seconds of each, the total-variation distance
  between the two sampling distributions, their correlation, and how much of the exact top 1 %
  candidates' probability mass the strided weights keep.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fundus_nb import _io, data, models, monitor, patches, preprocess, ses, train


def training_images(size: int = 256, n_train: int = 32):
    raw = data.load("synthetic", n_patients=70)
    split = patches.split_by_patient(raw, (0.6, 0.2, 0.2), seed=0, stratify="has_hemorrhages",
                                     names=("train", "monitor", "test"))
    recs = monitor.balanced_subset([raw[i] for i in split["train"]], n_train)
    recs = [preprocess.standardize_record(r, size=size) for r in recs]
    for r in recs:
        r.image = preprocess.contrast_enhance(r.image, fov=r.fov)
    return recs


def probe_lr(lrs: list[float]) -> None:
    recs = training_images()
    for lr in lrs:
        _io.seed_everything(0)
        model = models.SeSNet(init="paper")
        sampler = ses.SelectiveSampler(recs, batch_size=64, batches_per_epoch=20, selective=False)
        try:
            h = train.fit(model, sampler.batches, epochs=4, lr=lr, momentum=0.9, weight_decay=5e-4, seed=0,
                          progress=False)
            print(f"lr {lr}: mean loss per epoch {np.round(h.losses.reshape(4, -1).mean(1), 3).tolist()}", flush=True)
        except FloatingPointError as exc:
            print(f"lr {lr}: diverged ({str(exc).split(';')[0]})", flush=True)


def weight_stride(run_dir: Path) -> None:
    params = json.loads((run_dir / "run.json").read_text())["notebooks"]["04_ses_hemorrhage"]["parameters"]
    recs = training_images(params["ses_image_size"], params["ses_max_train_images"])
    ckpt_dir = run_dir / "checkpoints" / "sesnet_ses_seed0"
    ckpt = train.load_checkpoint(train.checkpoint_path(ckpt_dir, params["ses_epochs"]))
    model = models.SeSNet()
    model.load_state_dict(ckpt["model"])
    model.eval()
    sampler = ses.SelectiveSampler(recs, batch_size=64, batches_per_epoch=20)
    t0 = time.perf_counter()
    exact = sampler.update_weights(model).copy()
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    strided = np.empty_like(exact)
    rc = sampler.neg_rc()
    d = models.output_stride(model)
    for i in sampler.negative_images:
        rec, sel = sampler.records[i], sampler.neg_image == i
        pmap = models.dense_probability_map(model, rec.image, rec.fov, stride=d)
        r = np.clip(np.rint(rc[sel, 0] / d).astype(int), 0, pmap.shape[0] - 1)
        c = np.clip(np.rint(rc[sel, 1] / d).astype(int), 0, pmap.shape[1] - 1)
        strided[sel] = pmap[r, c]
    t_strided = time.perf_counter() - t0
    p, q = exact / exact.sum(), strided / strided.sum()
    top = np.argsort(-p)[: max(1, p.size // 100)]
    print(f"{len(sampler.negative_images)} negative images, {p.size} candidates: exact pass {t_exact:.2f} s, "
          f"stride-{d} pass {t_strided:.2f} s; total-variation distance {0.5 * np.abs(p - q).sum():.3f}, "
          f"correlation {np.corrcoef(exact, strided)[0, 1]:.3f}; exact top 1 % hold {p[top].sum():.3f} of the "
          f"mass, {q[top].sum():.3f} under the strided weights")


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) >= 3 and sys.argv[1] == "lr":
        probe_lr([float(a) for a in sys.argv[2:]])
    elif len(sys.argv) == 3 and sys.argv[1] == "weights":
        weight_stride(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
