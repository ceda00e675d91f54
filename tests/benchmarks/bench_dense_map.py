"""Benchmark: exact dense probability map vs batched sliding-window classification.

Run: ``.venv/bin/python tests/benchmarks/bench_dense_map.py [--size 512] [--rows 4] [--device cpu]``

For each model (SeSNet, LeNet) it times ``models.dense_probability_map`` on a random size x size
image, and batched sliding-window classification (patches cut from the zero-padded image with
``unfold``, classified by ``predict_proba`` in batches) on ``--rows`` randomly chosen image rows;
the sliding-window time of a whole map is extrapolated linearly from those rows (stated in the
output). It also checks that the two agree on the rows measured. Both run side by side in one
process, so the ratio is meaningful even on a busy machine.

The hardware limit: one matrix multiply (512 x 512 by 512 x n, float32) with the same number of
multiply-adds as the exact dense map (every conv and FC layer at every pixel), timed in the same
process and thread setting; ``map / matmul`` is the map's overhead over that limit (goal <= 1.5).
Also timed: the map restricted to a circular FOV, and the map at the natural output stride.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from fundus_nb.models import LeNet, SeSNet, dense_probability_map, output_stride, predict_proba


def sliding_window_rows(model, image: torch.Tensor, rows: np.ndarray, batch_size: int = 512,
                        device: str = "cpu") -> np.ndarray:
    """p(positive) for every pixel of the given rows, patch by patch (the classic way)."""
    s = model.patch_size
    _, h, w = image.shape
    padded = F.pad(image, (s // 2, s - 1 - s // 2, s // 2, s - 1 - s // 2))
    out = np.empty((len(rows), w), dtype=np.float32)
    for i, r in enumerate(rows):
        strip = padded[:, r : r + s, :]  # (3, s, w + s - 1)
        patches = strip.unfold(2, s, 1).permute(2, 0, 1, 3).contiguous()  # (w, 3, s, s)
        out[i] = predict_proba(model, patches, batch_size=batch_size, device=device)
    return out


def multiply_adds_per_pixel(model) -> int:
    """Multiply-adds of one output pixel of the exact dense map (convs + FC layers, last layer
    reduced to the logit difference as the dense map does)."""
    macs = 0
    for m in model.features:
        if isinstance(m, torch.nn.Conv2d):
            macs += m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    for m in linears[:-1]:
        macs += m.in_features * m.out_features
    return macs + linears[-1].in_features


def best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_reference(total_macs: float, device: str) -> float:
    """Seconds of one (512 x 512) @ (512 x n) float32 product with ``total_macs`` multiply-adds."""
    n = int(round(total_macs / (512 * 512)))
    a, b = torch.rand(512, 512, device=device), torch.rand(512, n, device=device)

    def run():
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    run()
    return best_of(run)


def bench(model, size: int, n_rows: int, device: str, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))
    model = model.to(device).eval()
    dense_probability_map(model, image[:, :64, :64], device=device)  # warm-up
    rows = np.sort(rng.choice(size, size=n_rows, replace=False))
    dense = dense_probability_map(model, image, device=device)
    t_dense = best_of(lambda: dense_probability_map(model, image, device=device))
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (size / 2) ** 2
    t_fov = best_of(lambda: dense_probability_map(model, image, fov, device=device))
    k = output_stride(model)
    t_strided = best_of(lambda: dense_probability_map(model, image, stride=k, device=device))
    macs = multiply_adds_per_pixel(model) * size * size
    t_mm = matmul_reference(macs, device)
    t0 = time.perf_counter()
    sw = sliding_window_rows(model, image, rows, device=device)
    t_rows = time.perf_counter() - t0
    t_sw = t_rows * size / n_rows
    return {
        "dense_s": t_dense,
        "dense_fov_s": t_fov,
        "strided_s": t_strided,
        "output_stride": k,
        "gmacs": macs / 1e9,
        "matmul_s": t_mm,
        "map_over_matmul": t_dense / t_mm,
        "sliding_rows_s": t_rows,
        "sliding_full_s_extrapolated": t_sw,
        "speedup": t_sw / t_dense,
        "max_abs_diff": float(np.abs(dense[rows] - sw).max()),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rows", type=int, default=4, help="rows classified patch by patch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device={args.device} torch threads={torch.get_num_threads()} image={args.size}x{args.size}")
    print(f"sliding window measured on {args.rows} random rows ({args.rows * args.size} patches), "
          f"extrapolated linearly to all {args.size} rows")  # fmt: skip
    results = {}
    for name, model in (("SeSNet", SeSNet()), ("LeNet", LeNet())):
        r = bench(model, args.size, args.rows, args.device)
        results[name] = r
        print(f"{name:7s} dense map {r['dense_s']:.2f} s/map | sliding window "
              f"{r['sliding_full_s_extrapolated']:.1f} s/map (measured {r['sliding_rows_s']:.2f} s "
              f"on {args.rows} rows) | speed-up x{r['speedup']:.1f} | "
              f"max |dense - sliding| {r['max_abs_diff']:.1e}")  # fmt: skip
        print(f"        {r['gmacs']:.1f} G multiply-adds: one matmul of the same work {r['matmul_s']:.2f} s -> "
              f"map / matmul = {r['map_over_matmul']:.2f}x | map inside a disc FOV {r['dense_fov_s']:.2f} s | "
              f"stride-{r['output_stride']} map {r['strided_s']:.2f} s")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
