"""Benchmark of fundus_nb.egl.expected_gradient_length against a naive per-sample loop (CPU).

Run: ``.venv/bin/python tests/benchmarks/bench_egl.py [--n 512] [--n-naive 48] [--threads 2]``

Measures, side by side in one run on the same 48x48 patches and the same LeNet, the throughput
(patches per second) of

* plain forward inference (``torch.no_grad``, batches of 512),
* EGL ``params="fc"`` (closed form from layer-output gradients),
* EGL ``params="all"`` (closed form for Linear, unfold per-sample gradients for Conv2d),
* the naive loop: one forward + one backward per patch and per class.

Bars (issue 4): fc >= 10x naive and >= 0.5x forward; all >= 3x naive. Exits 1 if one is missed.

Also reported (no bar; issue 10, notebook 03's time budget): the same forward and EGL ``fc`` with
the model in channels-last memory layout (notebook 03's ``new_lenet``), and SGD training on
batches of 32 (patches per second, contiguous and channels-last): a notebook-03 run costs about
``SGD steps x 32 / train rate + scored patches / egl rate + evaluated patches / forward rate``.
Each timing is the best of ``--repeat`` runs (the machine is shared, timings are noisy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fundus_nb.egl import expected_gradient_length
from fundus_nb.models import LeNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared references
from _reference import naive_egl as naive  # noqa: E402


def forward(model, x):
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x[s : s + 512]), 1) for s in range(0, len(x), 512)])


def best_rate(fn, n, repeat):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="patches for the batched methods")
    ap.add_argument("--n-naive", type=int, default=48, help="patches for the naive loop")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = LeNet().eval()
    x = torch.from_numpy(np.random.default_rng(0).random((a.n, 3, 48, 48), dtype=np.float32))
    xn = x[: a.n_naive]
    # correctness on the naive subset first (exactness is part of the bar)
    for params in ("fc", "all"):
        fast = expected_gradient_length(model, xn, params).numpy()
        ref = naive(model, xn, params)
        rel = float(np.max(np.abs(fast - ref) / np.abs(ref)))
        print(f"max relative difference {params}: {rel:.2e}")
    rates = {
        "forward": best_rate(lambda: forward(model, x), a.n, a.repeat),
        "egl_fc": best_rate(lambda: expected_gradient_length(model, x, "fc"), a.n, a.repeat),
        "egl_all": best_rate(lambda: expected_gradient_length(model, x, "all"), a.n, a.repeat),
        "naive_fc": best_rate(lambda: naive(model, xn, "fc"), a.n_naive, a.repeat),
        "naive_all": best_rate(lambda: naive(model, xn, "all"), a.n_naive, a.repeat),
    }
    cl = LeNet().eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    rates["forward_cl"] = best_rate(lambda: forward(cl, x), a.n, a.repeat)
    rates["egl_fc_cl"] = best_rate(lambda: expected_gradient_length(cl, x, "fc"), a.n, a.repeat)
    y = torch.randint(0, 2, (a.n,), generator=torch.Generator().manual_seed(0))
    for name, m in (("train", model), ("train_cl", cl)):
        opt = torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9)  # lr 0: the same work, weights kept

        def steps(m=m, opt=opt):
            m.train()
            for s in range(0, a.n, 32):
                opt.zero_grad()
                nn.functional.cross_entropy(m(x[s : s + 32]), y[s : s + 32]).backward()
                opt.step()
            m.eval()

        rates[name] = best_rate(steps, a.n, a.repeat)
    for k, v in rates.items():
        print(f"{k:10s} {v:10.1f} patches/s")
    ratios = {
        "fc / naive_fc": (rates["egl_fc"] / rates["naive_fc"], 10.0),
        "fc / forward": (rates["egl_fc"] / rates["forward"], 0.5),
        "all / naive_all": (rates["egl_all"] / rates["naive_all"], 3.0),
    }
    ok = True
    for name, (r, bar) in ratios.items():
        status = "ok" if r >= bar else "MISSED"
        ok &= r >= bar
        print(f"{name:16s} {r:7.2f}x  (bar >= {bar}x) {status}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
