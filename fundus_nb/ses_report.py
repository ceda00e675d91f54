"""Notebook 04's bookkeeping: settings checks, the monitoring evaluator, Az curves, plateau diagnostics,
figures, the metrics.json record, the paper-vs-run table and the generated discussion.

The lesson itself (the SeS draw, the dense map, ``train.fit`` with the sampler) stays in the notebook;
this module only prepares, summarises and words what those produced. Module order: after
:mod:`fundus_nb.metrics` and :mod:`fundus_nb.egl_report`, before :mod:`fundus_nb.runs` (so it returns
dicts and figures; the notebook saves them through ``runs``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score

from . import metrics, models, monitor, patches, preprocess, train

__all__ = [
    "PAPER",
    "check_settings",
    "prepare_records",
    "monitoring_level",
    "PixelAz",
    "make_evaluator",
    "run_fingerprint",
    "az_curves",
    "plateaus",
    "plot_az_curves",
    "smooth",
    "diagnostics",
    "plateau_reading",
    "checkpoint_map",
    "plot_maps",
    "plot_weight_map",
    "top_share",
    "effective_sample_size",
    "model_config",
    "split_record",
    "notebook_metrics",
    "paper_table",
    "discussion",
]

#: The paper's numbers this notebook compares with (van Grinsven et al. 2016, Sections III-V).
PAPER = {
    "epochs_to_plateau": {"SeS": 60, "NSeS": 170},
    "test_az_ses": {"Kaggle": 0.894, "Messidor": 0.972},
    "image_size": 512,
    "patches_per_epoch": 4000 * 256,
    "refresh_every": 5,
    "n_images": 6679,
    "minutes_per_epoch_gpu": 16,
    "weight_pass_minutes": 54,
    "weight_pass_images": 3959,
}


# --------------------------------------------------------------------------------------------------
# settings and data


def check_settings(counts: dict) -> None:
    """One clear error for the first count setting that is not a whole number >= 1
    (``TypeError`` for a wrong type, ``ValueError`` for a value below 1).
    """
    wrong = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer))}
    for name, value in wrong.items():
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}; pass a whole number")
    low = {k: v for k, v in counts.items() if v < 1}
    for name, value in low.items():
        raise ValueError(f"{name} must be >= 1, got {value}; pass a positive whole number")


def prepare_records(raw: Sequence, indices: Sequence[int], n: int, *, size: int, enhance: bool) -> list:
    """At most ``n`` class-balanced records of ``raw[indices]``, standardized to ``size`` px and,
    when ``enhance``, contrast-enhanced inside their FOV (``n = 0`` keeps them all).
    """
    recs = monitor.balanced_subset([raw[i] for i in indices], n)
    recs = [preprocess.standardize_record(r, size=size) for r in recs]
    for r in recs if enhance else []:
        r.image = preprocess.contrast_enhance(r.image, fov=r.fov)
    return recs


def monitoring_level(records: Sequence, allow_lesion_images: bool) -> str:
    """``"image"`` when the monitoring split holds both classes (image-level Az defined), else
    ``"pixel"`` (the IDRiD fallback), which only ``allow_lesion_images`` permits: without it a
    one-class split raises :func:`monitor.check_monitoring_split`'s error.
    """
    y = monitor.image_labels(records)
    if len(y) and y.min() != y.max():
        return "image"
    if not allow_lesion_images:
        monitor.check_monitoring_split(records)  # raises: a monitoring split needs both classes
    return "pixel"


class PixelAz:
    """Pixel-level Az of a model on monitoring images: hemorrhage pixels against pixels at least
    20 px (the default margin of ``patches.hemorrhage_negatives``) from any hemorrhage; NaN with
    one class. The fallback monitor when every monitoring image has the same image label.
    """

    def __init__(self, records: Sequence, sigma: float):
        self.records, self.sigma = list(records), float(sigma)
        self.truth = [(patches.hemorrhage_positives(r), patches.hemorrhage_negatives(r, allow_lesion_images=True))
                      for r in self.records]
        self.y = np.concatenate([np.r_[np.ones(len(p[0])), np.zeros(len(n[0]))] for p, n in self.truth])

    def __call__(self, model) -> float:
        _, maps = monitor.image_scores(model, self.records, self.sigma, return_maps=True)
        s = np.concatenate([np.r_[mp[p], mp[n]] for mp, (p, n) in zip(maps, self.truth, strict=True)])
        return float(roc_auc_score(self.y, s)) if 0 < self.y.sum() < self.y.size else float("nan")


def make_evaluator(records: Sequence, *, sigma: float, stride: int, level: str, n_bootstrap: int, seed: int):
    """``train.fit``'s ``eval_fn``: the image-level Az with its stratified-bootstrap 95 % CI
    (``az``, ``az_lo``, ``az_hi``, ``monitor_seconds``), or the pixel-level Az when ``level`` is
    ``"pixel"``. One fresh :class:`monitor.Monitor` per call of this function (one per run).
    """
    if level == "pixel":
        pixel_az = PixelAz(records, sigma)
        return lambda m: {"az": pixel_az(m)}
    mon = monitor.Monitor(records, sigma=sigma, stride=stride)

    def evaluate(m):
        out = mon(m)
        _, out["az_lo"], out["az_hi"] = metrics.roc_auc_ci(mon.labels, mon.scores[-1], n_bootstrap, seed=seed)
        return out

    return evaluate


def run_fingerprint(params: dict, *, dataset: str, data_root: str, train_recs: Sequence) -> dict:
    """What a checkpoint must match to be resumed: every ``ses_*`` parameter (except
    ``ses_resume``; values of other types, such as this module in a notebook's ``globals()``, are not
    parameters), the dataset and the training image ids.
    """
    fp = {k: v for k, v in params.items()
          if k.startswith("ses_") and k != "ses_resume" and isinstance(v, (bool, int, float, str))}
    return fp | {"dataset": dataset, "data_root": data_root, "train_ids": [r.id for r in train_recs]}


# --------------------------------------------------------------------------------------------------
# curves and plateaus


def az_curves(results: dict, n_seeds: int) -> tuple[dict, dict]:
    """End-of-epoch evaluation frames per (method, seed index) and the (seeds, epochs) Az arrays per method."""
    curves = {key: h.evals_frame().query("epoch_end == 1") for key, (_, _, h) in results.items()}
    az = {m: np.array([curves[m, k]["az"].to_numpy() for k in range(n_seeds)]) for m in ("SeS", "NSeS")}
    return curves, az


def plateaus(az: dict, window: int, tol: float) -> tuple[dict, np.ndarray, dict]:
    """Plateau epoch per seed (``monitor.plateau_epoch``; None when not reached or the curve has
    NaN), the SeS/NSeS ratios of the seeds where both plateaued, and the final Az per seed.
    """
    plateau = {m: [monitor.plateau_epoch(a, window, tol) if np.isfinite(a).all() else None for a in az[m]]
               for m in az}
    ratios = np.array([s / n for s, n in zip(plateau["SeS"], plateau["NSeS"], strict=True)
                       if s is not None and n is not None], float)
    return plateau, ratios, {m: az[m][:, -1] for m in az}


def plot_az_curves(ax, az: dict, curves: dict, level: str):
    """Monitoring Az per epoch: mean over seeds (thick), each seed (thin), mean bootstrap CI (band)."""
    n_seeds, n_epochs = az["SeS"].shape
    epochs = np.arange(1, n_epochs + 1)
    for method, color in (("SeS", "C3"), ("NSeS", "C0")):
        ax.plot(epochs, az[method].mean(0), color=color, lw=2, label=f"{method} (mean of {n_seeds})")
        for row in az[method]:
            ax.plot(epochs, row, color=color, lw=0.6, alpha=0.5)
        if "az_lo" in curves[method, 0]:
            lo = np.mean([curves[method, k]["az_lo"].to_numpy() for k in range(n_seeds)], 0)
            hi = np.mean([curves[method, k]["az_hi"].to_numpy() for k in range(n_seeds)], 0)
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.15, label=f"{method} mean 95% CI")
    title = "Monitoring Az, SeS vs NSeS" if level == "image" else (
        "SeS vs NSeS\nFALLBACK: pixel-level Az (image-level Az undefined)")
    ax.set(xlabel="epoch (training passes)", ylabel=f"monitoring Az, {level} level (0-1)", ylim=(0, 1.02),
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    return ax.figure


def smooth(a: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with shrinking ends, as :func:`monitor.plateau_epoch` smooths."""
    n = len(a)
    lo = np.maximum(np.arange(n) - (window - 1) // 2, 0)
    hi = np.minimum(np.arange(n) + window // 2 + 1, n)
    c = np.r_[0.0, np.cumsum(a)]
    return (c[hi] - c[lo]) / (hi - lo)


def _first_reach(a: np.ndarray, window: int, level: float = 0.9) -> int | None:
    hit = np.flatnonzero(smooth(a, window) >= level)
    return int(hit[0]) + 1 if hit.size else None


def diagnostics(az: dict, curves: dict, labels: np.ndarray, *, window: int, patches_run: int) -> dict:
    """What decides whether the runs can show the paper's speed-up: the Az step of the monitoring
    set, per method the late Az, epoch-to-epoch jumps, CI width, share of epochs at Az >= 0.95, the
    early dip, the mis-ordered pairs left, epochs to smoothed Az 0.9, and the run's volume against
    one paper epoch. Keys are those of metrics.json's ``plateau_diagnostics``.
    """
    n_seeds, n_epochs = az["SeS"].shape
    late = max(1, n_epochs // 3)  # the last third of the run
    n_pos = int(labels.sum())
    pairs = n_pos * (len(labels) - n_pos)
    diag = {"az_step": 1 / max(1, pairs)}
    for m in ("SeS", "NSeS"):
        a = az[m]
        jumps = np.abs(np.diff(a[:, -max(late, 2):], axis=1)) if n_epochs > 1 else np.zeros((1, 1))
        ci_w = (np.mean([(curves[m, k]["az_hi"] - curves[m, k]["az_lo"]).to_numpy().mean() for k in range(n_seeds)])
                if "az_lo" in curves[m, 0] else float("nan"))
        early = a[:, : max(1, n_epochs // 3)].mean(0)
        diag[m] = {"late_mean_az": float(a[:, -late:].mean()), "late_jump_median": float(np.median(jumps)),
                   "ci_width_mean": float(ci_w), "share_epochs_ge_0p95": float((a >= 0.95).mean()),
                   "early_min_mean_az": float(early.min()), "early_min_epoch": int(np.argmin(early)) + 1,
                   "late_misordered_pairs": float((1 - a[:, -late:].mean()) * pairs),
                   "epoch_to_0p9": [_first_reach(row, window) for row in a]}
    both = [(s, n) for s, n in zip(diag["SeS"]["epoch_to_0p9"], diag["NSeS"]["epoch_to_0p9"], strict=True) if s and n]
    diag["ratio_to_0p9"] = float(np.mean([s / n for s, n in both])) if both else None
    diag["run_patches_over_one_paper_epoch"] = patches_run / PAPER["patches_per_epoch"]
    diag["late_epochs"], diag["n_pairs"] = late, pairs
    return diag


def plateau_reading(diag: dict, ratios: np.ndarray, plateau: dict, *, n_monitor: int, tol: float,
                    patches_run: int) -> list[str]:
    """The diagnostics in words; each sentence's wording follows the numbers."""
    r = float(ratios.mean()) if ratios.size else None
    s, n = diag["SeS"], diag["NSeS"]
    lines = []
    if r is None:
        lines.append("No seed reached a plateau under both methods within the run: no ratio can be given.")
    else:
        lines.append(f"Epochs to plateau SeS/NSeS: {r:.2f} (seeds {np.round(ratios, 2).tolist()}; goal <= 0.5, paper "
                     f"0.35): " + ("the paper's speed-up is reproduced." if r <= 0.5
                                   else "the paper's speed-up is NOT reproduced here."))
    jump_vs_tol = n["late_jump_median"] / tol if tol else float("inf")
    lines.append(f"Monitoring noise: {n_monitor} images give Az steps of {diag['az_step']:.3f}; the median jump "
                 f"between late epochs is {n['late_jump_median']:.3f} (NSeS), {jump_vs_tol:.1f}x the plateau tolerance "
                 f"{tol}, and one epoch's 95% CI is {n['ci_width_mean']:.2f} wide: "
                 + ("the plateau epoch is located only to within several epochs." if jump_vs_tol >= 1 or
                    not n["ci_width_mean"] < 2 * tol else "the curve is steady enough to place the plateau."))
    lines.append(f"Ceiling: in the last {diag['late_epochs']} epochs the monitoring Az is "
                 f"{s['late_mean_az']:.3f} (SeS) and {n['late_mean_az']:.3f} (NSeS): "
                 f"{s['late_misordered_pairs']:.1f} and "
                 f"{n['late_misordered_pairs']:.1f} of the {diag['n_pairs']} hemorrhage/healthy image pairs are "
                 "mis-ordered" + (", so both curves flatten when the few pairs left are fixed, and the set cannot "
                                  "show much more." if max(s["late_mean_az"], n["late_mean_az"]) >= 0.9
                                  else ", so the set still has room to separate the methods."))
    mean_pl = {m: np.mean([e for e in plateau[m] if e]) if any(plateau[m]) else float("nan") for m in plateau}
    lines.append(f"Shared early phase: the mean curves are lowest at epoch {s['early_min_epoch']} (SeS, Az "
                 f"{s['early_min_mean_az']:.2f}) and {n['early_min_epoch']} (NSeS, Az {n['early_min_mean_az']:.2f}), "
                 f"against mean plateau epochs {mean_pl['SeS']:.1f} and {mean_pl['NSeS']:.1f}: both samplers spend "
                 "the first epochs learning what a hemorrhage looks like, a phase SeS cannot shorten (its first "
                 "weights come from a network one short epoch old).")
    lines.append(f"Training volume: the whole run is {patches_run:,} patches per network, "
                 f"{diag['run_patches_over_one_paper_epoch']:.3g} of ONE paper epoch (4000 x 256); the paper's "
                 "plateaus came after 60 and 170 such epochs, long after the phase our runs cover.")
    if diag["ratio_to_0p9"] is not None:
        lines.append(f"The threshold reading (epochs to smoothed Az 0.9) gives SeS/NSeS {diag['ratio_to_0p9']:.2f}.")
    lines.append(f"Where SeS does differ: the late monitoring Az is {s['late_mean_az']:.3f} (SeS) vs "
                 f"{n['late_mean_az']:.3f} (NSeS); notebook 05 compares the final models on the larger test set.")
    return lines


# --------------------------------------------------------------------------------------------------
# figures


def checkpoint_map(checkpoint_dir, epoch: int, init: str, rec) -> np.ndarray:
    """The exact probability map of ``rec`` by the SeSNet saved after ``epoch`` epochs in ``checkpoint_dir``."""
    ckpt = train.load_checkpoint(train.checkpoint_path(checkpoint_dir, epoch))
    model = models.SeSNet(init=init)
    model.load_state_dict(ckpt["model"])
    return models.dense_probability_map(model.eval(), rec.image, rec.fov)


def plot_maps(rec, maps: dict, epochs: Sequence[int]):
    """Fig. 5 shape: the image with its hemorrhage outlines, then the SeS and NSeS maps per epoch."""
    # no constrained layout: it doubles the drawing time of this figure (measured, 2 CPU cores)
    fig, axes = plt.subplots(2, len(epochs) + 1, figsize=(2.7 * (len(epochs) + 1) + 1, 5.6), squeeze=False,
                             sharex=True, sharey=True)
    for i, m in enumerate(("SeS", "NSeS")):
        axes[i, 0].imshow(rec.image)
        axes[i, 0].contour(rec.hemorrhage_mask, colors="cyan", linewidths=0.6)
        axes[i, 0].set_title(f"{rec.id} (cyan: hemorrhages)", fontsize=8)
        for j, e in enumerate(epochs, start=1):
            im = axes[i, j].imshow(maps[m, e], vmin=0, vmax=1, cmap="viridis")
            axes[i, j].set_title(f"{m}, epoch {e}")
        axes[i, 0].set_ylabel("row (px)")
    for ax in axes[-1]:
        ax.set_xlabel("column (px)")
    fig.suptitle(f"Pixel probability maps over training ({rec.image.shape[0]}x{rec.image.shape[1]} px image)")
    fig.colorbar(im, ax=axes, fraction=0.02, label="p(hemorrhage) of the 41x41 patch centred on the pixel (0-1)")
    return fig


def plot_weight_map(sampler, image_index: int):
    """One negative image beside the SeS sampling probability of each of its candidate pixels."""
    rec = sampler.records[image_index]
    fig, ax = plt.subplots(1, 2, figsize=(9, 4.2))
    kind = "with hemorrhages: candidates >= 20 px away" if rec.has_hemorrhages else "no hemorrhage"
    ax[0].imshow(rec.image)
    ax[0].set_title(f"{rec.id} ({kind})", fontsize=9)
    im = ax[1].imshow(sampler.weight_map(image_index) / sampler.weights.sum(), cmap="magma")
    n = sampler.n_updates
    ax[1].set_title(f"SeS sampling probability\n(after {n} weight pass{'' if n == 1 else 'es'})", fontsize=9)
    for a in ax:
        a.set(xlabel="column (px)", ylabel="row (px)")
    fig.colorbar(im, ax=ax[1], fraction=0.046, label="probability of being drawn, per pixel (0-1)")
    return fig


def top_share(probabilities: np.ndarray, fraction: float = 0.01) -> float:
    """Share of the sampling mass held by the top ``fraction`` of candidates (uniform: ``fraction``)."""
    top = np.sort(np.asarray(probabilities, float))[::-1]
    return float(top[: max(1, int(top.size * fraction))].sum() / top.sum())


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective number of candidates of a weighted draw, ``(sum w)^2 / sum w^2`` (N when uniform)."""
    w = np.asarray(weights, float)
    return float(w.sum() ** 2 / np.square(w).sum())


# --------------------------------------------------------------------------------------------------
# records


def model_config(method: str, params: dict) -> dict:
    """The config saved with a SeSNet (``runs.save_model``); ``params`` holds the notebook's parameters."""
    p = params
    return {"method": method, "seed": p["seed"], "lr": p["ses_lr"], "momentum": p["ses_momentum"],
            "weight_decay": p["ses_weight_decay"], "batch_size": p["ses_batch_size"],
            "batches_per_epoch": p["ses_batches_per_epoch"], "refresh_every": p["ses_refresh_every"],
            "image_size": p["ses_image_size"], "patch_size": 41, "init": p["ses_init"],
            "positives": p["ses_positives"]}


def split_record(raw: Sequence, split: dict, train_recs: Sequence, monitor_recs: Sequence, *,
                 dataset_params: dict, image_size: int, contrast_enhance: bool, seed: int) -> dict:
    """``ses_split.json`` (``runs.save_split``): ids per split, the ids used, and how to rebuild the images."""
    return {**{name: [raw[i].id for i in idx] for name, idx in split.items()},
            "train_used": [r.id for r in train_recs], "monitor_used": [r.id for r in monitor_recs],
            "dataset_params": dataset_params, "image_size": image_size, "contrast_enhance": contrast_enhance,
            "seed": seed}


def _finite(v) -> float | None:
    return float(v) if np.isfinite(v) else None  # JSON has no NaN: null


def _mean_or_none(v: np.ndarray) -> float | None:
    return float(v.mean()) if v.size else None


def notebook_metrics(*, plateau: dict, ratios: np.ndarray, final_az: dict, level: str, diag: dict, results: dict,
                     params: dict, n_train: int, n_monitor: int, scale: dict, top1_share: float, ess: float,
                     seconds: float) -> dict:
    """The ``04_ses_hemorrhage`` section of metrics.json.

    ``results`` maps (method, seed index) to ``(model, sampler, history)``; ``params`` holds the
    notebook's parameters (``globals()``); the rest are this run's numbers as the notebook has them.
    """
    image = level == "image"
    p = params
    samplers = [r[1] for r in results.values()]
    az_rec = {m: {"mean": _finite(final_az[m].mean()), "per_seed": [_finite(v) for v in final_az[m]]} for m in final_az}
    updated = [s.last_update_seconds for s in samplers if s.n_updates]
    return {
        "plateau_epochs": {m: plateau[m] for m in plateau},
        "plateau_ratio_ses_over_nses": {
            "text": (f"{ratios.mean():.2f} [{ratios.min():.2f}, {ratios.max():.2f}] ({ratios.size} seeds)"
                     if ratios.size else "n/a (no seed reached both plateaus)"),
            "mean": _mean_or_none(ratios), "min": float(ratios.min()) if ratios.size else None,
            "max": float(ratios.max()) if ratios.size else None, "n_seeds_with_both": int(ratios.size),
            "paper": PAPER["epochs_to_plateau"]["SeS"] / PAPER["epochs_to_plateau"]["NSeS"], "goal": 0.5},
        "monitor_level": "image" if image else
            "pixel (fallback: every monitoring image has the same image label, so image-level Az is undefined)",
        "final_monitor_az": az_rec if image else
            {m: {"mean": None, "per_seed": [None] * len(final_az[m])} for m in final_az},
        "final_monitor_pixel_az": None if image else az_rec,
        "n_train_images": int(n_train), "n_monitor_images": int(n_monitor), "image_size": p["ses_image_size"],
        "epochs": p["ses_epochs"], "patches_per_epoch": p["ses_batches_per_epoch"] * p["ses_batch_size"],
        "n_seeds": p["ses_n_seeds"], "refresh_every": p["ses_refresh_every"],
        "ses_top1pct_candidates_share": float(top1_share), "ses_effective_candidates": float(ess),
        "sampler_draw_seconds_per_epoch": float(np.mean([s.last_draw_seconds for s in samplers])),
        "weight_pass_seconds": float(np.mean(updated)) if updated else None,
        "seconds": float(seconds), "seconds_per_epoch": monitor.epoch_seconds([h for _, _, h in results.values()]),
        "scale": {"image_size": p["ses_image_size"], "patch_size": 41, "lengths": scale},
        "init": p["ses_init"], "positives": p["ses_positives"], "monitor_stride": p["ses_monitor_stride"],
        "plateau_diagnostics": json.loads(json.dumps(diag, default=float).replace("NaN", "null")),
    }


def _secs(v: float | None) -> str:
    return "n/a (no weight pass ran)" if v is None else f"{v:.2f} s"


def _fmt_epochs(v: list) -> str:
    done = [e for e in v if e is not None]
    mean = f"{np.mean(done):.1f}" if done else "n/a"
    return f"{mean} (seeds: {', '.join('not reached' if e is None else str(e) for e in v)})"


def paper_table(record: dict, *, dataset: str, refresh_every: int) -> list[dict]:
    """Rows of the paper-vs-this-run table (``pandas.DataFrame(rows)``), from this run's record."""
    r, pe = record, PAPER["epochs_to_plateau"]
    az = r["final_monitor_az"] if r["final_monitor_az"]["SeS"]["mean"] is not None else r["final_monitor_pixel_az"]
    level = "image" if r["final_monitor_az"]["SeS"]["mean"] is not None else "pixel"
    vol = r["epochs"] * r["patches_per_epoch"] / PAPER["patches_per_epoch"]
    return [
        {"quantity": "data", "paper": f"Kaggle DR ({PAPER['n_images']:,} images) + Messidor (1,200)",
         "this run": f"{dataset}: {r['n_train_images']} train, {r['n_monitor_images']} monitoring images",
         "how ours differs": "a few images kept so that dense maps fit 2 CPU cores"},
        {"quantity": "image side (px)", "paper": PAPER["image_size"], "this run": r["image_size"],
         "how ours differs": "41x41 patches cover a larger share of the retina when the side is below 512"},
        {"quantity": "patches per epoch", "paper": f"{PAPER['patches_per_epoch']:,}",
         "this run": f"{r['patches_per_epoch']:,}",
         "how ours differs": f"the whole run is {vol:.3g} of one paper epoch"},
        {"quantity": "weight refresh", "paper": f"every {PAPER['refresh_every']} epochs",
         "this run": f"every {refresh_every} epochs", "how ours differs": "after epoch 1, then every k (scaled down)"},
        {"quantity": "epochs to plateau, SeS", "paper": pe["SeS"], "this run": _fmt_epochs(r["plateau_epochs"]["SeS"]),
         "how ours differs": f"our rule (monitor.plateau_epoch) over {r['epochs']} short epochs; the paper by eye"},
        {"quantity": "epochs to plateau, NSeS", "paper": pe["NSeS"],
         "this run": _fmt_epochs(r["plateau_epochs"]["NSeS"]), "how ours differs": "as above"},
        {"quantity": "SeS/NSeS epochs to plateau", "paper": f"{pe['SeS'] / pe['NSeS']:.2f}",
         "this run": r["plateau_ratio_ses_over_nses"]["text"],
         "how ours differs": "per seed, over the seeds with both plateaus"},
        {"quantity": "Az, SeS", "paper": "Kaggle test 0.894, Messidor 0.972",
         "this run": f"{az['SeS']['mean']:.3f} (final monitoring, {level} level)" if az["SeS"]["mean"] is not None
         else "n/a", "how ours differs": "the monitoring set, not a test set (notebook 05 scores the test split)"},
        {"quantity": "Az, NSeS", "paper": "below SeS (significant on Messidor only)",
         "this run": f"{az['NSeS']['mean']:.3f} (final monitoring, {level} level)" if az["NSeS"]["mean"] is not None
         else "n/a", "how ours differs": "as above"},
        {"quantity": "one weight pass", "paper": f"{PAPER['weight_pass_minutes']} min over "
         f"{PAPER['weight_pass_images']:,} images (GPU, sliding window)",
         "this run": f"{_secs(r['weight_pass_seconds'])} (CPU, whole-image dense maps)",
         "how ours differs": "far fewer and smaller images; one exact map per image"},
    ]


def _az_sentence(r: dict, az: dict) -> str:
    """Final monitoring Az of both samplers, seed by seed, against what the monitoring set can resolve."""
    s_az, n_az = az["SeS"]["mean"], az["NSeS"]["mean"]
    diff = s_az - n_az
    pairs = [(a, b) for a, b in zip(az["SeS"]["per_seed"], az["NSeS"]["per_seed"], strict=True)
             if a is not None and b is not None]
    wins = sum(a > b for a, b in pairs)
    d = r["plateau_diagnostics"]
    step = d["az_step"]
    ci = (d.get("NSeS") or {}).get("ci_width_mean")
    resolved = abs(diff) >= 3 * step and (ci is None or abs(diff) >= ci / 2)
    size = ("higher" if diff > 0.005 else "lower" if diff < -0.005 else "level with NSeS") + (
        f" by {abs(diff):.3f}" if abs(diff) > 0.005 else "")
    return (f"Final monitoring Az: SeS {s_az:.3f}, NSeS {n_az:.3f} (mean of {len(pairs)} seeds; SeS above NSeS on "
            f"{wins} of them): SeS is {size}, on {r['n_monitor_images']} monitoring images where one Az step is "
            f"{step:.3f}" + (f" and one epoch's 95% CI is {ci:.2f} wide" if ci is not None else "")
            + (": a gap this set can resolve." if resolved else
               ": a gap within a few Az steps or half a CI, not one this set can resolve; notebook 05's larger "
               "test set decides."))


def discussion(record: dict, *, n_candidates: int) -> str:
    """The closing discussion, written from this run's record (markdown bullets)."""
    r = record
    az = r["final_monitor_az"] if r["final_monitor_az"]["SeS"]["mean"] is not None else r["final_monitor_pixel_az"]
    s_az, n_az = az["SeS"]["mean"], az["NSeS"]["mean"]
    ratio = r["plateau_ratio_ses_over_nses"]["mean"]
    lines = []
    if ratio is None:
        lines.append("No seed reached the plateau under both samplers within the run, so this run cannot say "
                     "whether SeS converges faster; lengthen `ses_epochs` to find out.")
    else:
        verdict = ("fewer epochs than NSeS, as in the paper" if ratio < 0.9 else
                   "about as many epochs as NSeS, unlike the paper's 0.35" if ratio <= 1.1 else
                   "MORE epochs than NSeS, the opposite of the paper")
        lines.append(f"SeS reached its plateau in {verdict} (SeS/NSeS {r['plateau_ratio_ses_over_nses']['text']}).")
    if s_az is not None and n_az is not None:
        lines.append(_az_sentence(r, az))
    share = r["ses_top1pct_candidates_share"]
    lines.append(f"The SeS weights put {share:.1%} of the sampling mass on the top 1% of the {n_candidates:,} "
                 f"negative candidates (uniform: 1%), an effective pool of {r['ses_effective_candidates']:,.0f} "
                 "candidates: "
                 + ("the draws concentrate on the hard negatives." if share > 0.05 else
                    "mildly concentrated: the model's errors were still spread over the background." if share > 0.02
                    else "hardly concentrated at all: the model's p was still about the same on every pixel, so "
                    "SeS drew almost as NSeS does."))
    sec = r["seconds_per_epoch"]
    lines.append(f"Time per epoch: training {sec['training']:.2f} s, SeS weight pass {sec['weight_pass']:.2f} s "
                 f"(mean over all epochs), monitoring {sec['monitoring']:.2f} s; one weight pass took "
                 f"{_secs(r['weight_pass_seconds'])} against the paper's 54 min on a GPU.")
    vol = r["epochs"] * r["patches_per_epoch"]
    lines.append(f"Scale: each network saw {vol:,} patches, {vol / PAPER['patches_per_epoch']:.3g} of one paper epoch; "
                 "the paper's plateaus came after 60 and 170 such epochs, so this run shows the method's mechanics "
                 "and its first epochs, not the paper's long-run speed-up.")
    return "\n".join(f"- {x}" for x in lines)
