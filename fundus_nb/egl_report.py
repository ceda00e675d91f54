"""Notebook 03's bookkeeping: run plans, final scores, label efficiency with CIs, collapse counts,
what each strategy picked, false positives per confounder kind and the generated discussion.

Module order: after :mod:`fundus_nb.metrics` (it scores with it) and before :mod:`fundus_nb.runs`.
Everything here summarises :class:`fundus_nb.egl.SelectionResult` objects; nothing trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from . import data, egl, metrics, models, patches

__all__ = [
    "REMEDIES",
    "check_settings",
    "parse_settings",
    "run_plan",
    "evaluate",
    "final_scores",
    "curve_band",
    "label_efficiency",
    "count_collapses",
    "collapse_story",
    "picks_summary",
    "fp_table",
    "plot_picks_and_fp",
    "plot_interestingness",
    "interestingness_decay",
    "plot_egl_map",
    "score_on_dataset",
    "notebook_metrics",
    "paper_table",
    "discussion",
]

#: EGL variants against collapse: name -> extra keyword arguments of ``egl.select_images``.
REMEDIES = {"safeguard": {"safeguard": True}, "steps": {"steps_per_round": None}}


def check_settings(strategies: Sequence[str], remedies: Sequence[str], pool: str, counts: dict) -> None:
    """One clear error for a bad notebook-03 setting (``TypeError`` for a wrong type, else ``ValueError``)."""
    bad = [s for s in strategies if s not in egl.STRATEGIES]
    if bad or "egl" not in strategies or "random" not in strategies:
        raise ValueError(
            f"egl_strategies must list egl and random, got {list(strategies)}; "
            f"choose from {', '.join(egl.STRATEGIES)} (egl and random required)"
        )
    bad = [r for r in remedies if r not in REMEDIES]
    if bad:
        raise ValueError(f"egl_remedies has unknown entries {bad}; list only {', '.join(REMEDIES)} (or none)")
    if pool not in ("balanced", "grid"):
        raise ValueError(f"egl_pool must be 'balanced' or 'grid', got {pool!r}; pass one of the two")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}; pass a whole number")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}; pass a positive whole number")


def parse_settings(strategies: str, remedies: str, pool: str, counts: dict) -> tuple[list, list]:
    """The notebook's comma lists ``egl_strategies`` and ``egl_remedies`` as lists, checked by
    :func:`check_settings` (with ``pool`` and the positive whole ``counts``).
    """
    for name, value in (("egl_strategies", strategies), ("egl_remedies", remedies)):
        if not isinstance(value, str):
            raise TypeError(
                f"{name} must be a comma-separated string, got {type(value).__name__}; pass e.g. 'egl,random'"
            )
    lists = [[x.strip() for x in value.split(",") if x.strip()] for value in (strategies, remedies)]
    check_settings(lists[0], lists[1], pool, counts)
    return lists[0], lists[1]


def run_plan(strategies, remedies, n_seeds: int, n_seeds_other: int, steps_per_round: int = 40) -> list:
    """``(name, repetition, extra select_images kwargs)`` of every run: EGL and random for
    ``n_seeds``, the other strategies and the EGL remedies (``"egl+safeguard"``, ``"egl+steps"``)
    for ``min(n_seeds_other, n_seeds)``.
    """
    plan = []
    for rep in range(n_seeds):
        for s in strategies:
            if s in ("egl", "random") or rep < n_seeds_other:
                plan.append((s, rep, {"strategy": s}))
        for r in remedies:
            if rep < n_seeds_other:
                extra = dict(REMEDIES[r])
                if "steps_per_round" in extra:
                    extra["steps_per_round"] = int(steps_per_round)
                plan.append((f"egl+{r}", rep, {"strategy": "egl", **extra}))
    return plan


def evaluate(model, x_val, y_val, grid: egl.GridSet) -> dict:
    """One evaluation of a model during selection: balanced validation F / sensitivity /
    specificity (threshold 0.5), validation-grid AP and the collapse flags of
    ``egl.degeneracy`` (one forward pass over the balanced patches serves both).
    """
    a, logits = egl.penultimate(model, egl.as_input(x_val).to(models.device_of(model)))
    p = torch.softmax(logits.double(), 1)[:, 1].cpu().numpy()
    out = {k: float(v) for k, v in metrics.patch_metrics(y_val, (p >= 0.5).astype(int)).items()}
    out["ap"] = metrics.grid_scores(grid.y, models.predict_proba(model, grid.x), weights=grid.weights)["ap"]
    return {**out, **egl.degeneracy_from(a, logits)}


def final_scores(model, x_test, y_test, grid: egl.GridSet) -> dict:
    """Balanced test F / sensitivity / specificity (threshold 0.5) and natural-prevalence grid AP,
    prevalence and false-positive rate per confounder kind.
    """
    p = np.asarray(models.predict_proba(model, x_test))
    out = metrics.patch_metrics(y_test, (p >= 0.5).astype(int))
    g = metrics.grid_scores(
        grid.y, models.predict_proba(model, grid.x), grid.kinds, data.CONFOUNDER_KINDS, grid.weights
    )
    return {**{k: float(v) for k, v in out.items()}, "ap": g["ap"], "fp_rate": g["fp_rate"]}


def curve_band(results, x_key: str, metric: str, n: int = 60):
    """Mean and 95 % band of ``metric`` against ``x_key`` (labelled patches or SGD iterations)."""
    xs = [np.array([r[x_key] for r in res.records], float) for res in results]
    grid = np.linspace(max(x[0] for x in xs), min(x[-1] for x in xs), n)
    vals = np.array([np.interp(grid, x, [r[metric] for r in res.records]) for x, res in zip(xs, results, strict=True)])
    return (grid, *egl.mean_band(vals))


def _need(res, target: float) -> tuple[float, float, bool]:
    hit = egl.labels_to_reach(res, target, "ap")
    if np.isfinite(hit["n_patches"]):
        return hit["n_patches"], hit["n_images"], False
    last = res.records[-1]
    return float(last["n_patches"]), float(last["n_images"]), True


def label_efficiency(results: dict, target_ap: float, n_bootstrap: int = 10000, seed: int = 0) -> dict:
    """Per strategy the labelled patches / images needed to reach ``target_ap`` (censored runs
    count their final labelled set), the AULC of AP against labelled patches, and the EGL/random
    ratios with bootstrap CIs over the seeds both ran (``metrics.bootstrap_ratio``).
    """
    needed, censored, aulc = {}, {}, {}
    for name, rs in results.items():
        rows = [_need(r, target_ap) for r in rs]
        needed[name] = {"n_patches": [r[0] for r in rows], "n_images": [r[1] for r in rows]}
        censored[name] = int(sum(r[2] for r in rows))
        aulc[name] = [
            egl.area_under_curve([x["n_patches"] for x in r.records], [x["ap"] for x in r.records]) for r in rs
        ]
    m = min(len(results["egl"]), len(results["random"]))
    ratio = {
        key: metrics.bootstrap_ratio(needed["egl"][key][:m], needed["random"][key][:m], n_bootstrap, seed=seed)
        for key in ("n_patches", "n_images")
    }
    ratio["aulc"] = metrics.bootstrap_ratio(aulc["egl"][:m], aulc["random"][:m], n_bootstrap, seed=seed)
    return {"target_ap": float(target_ap), "needed": needed, "censored": censored, "aulc": aulc, "ratio": ratio}


def count_collapses(results) -> dict:
    """Collapsed runs (degenerate after the last round) and collapsed rounds (after round 0)."""
    final = [bool(r.records[-1].get("collapsed", 0)) for r in results]
    rounds = [int(sum(x.get("collapsed", 0) for x in r.records[1:])) for r in results]
    return {"runs": int(sum(final)), "of": len(results), "rounds": rounds}


def collapse_story(res, pool) -> str | None:
    """The first collapsed round of a run and the class mix of what it had labelled by then."""
    bad = [x for x in res.records[1:] if x.get("collapsed", 0)]
    if not bad:
        return None
    r = int(bad[0]["round"])
    lab = np.concatenate(res.selected[: r + 1])
    picks = np.concatenate(res.selected[1 : r + 1]) if r >= 1 else np.zeros(0, int)
    return (
        f"first collapsed after round {r} ({int(bad[0]['n_patches'])} labelled patches, positive rate "
        f"{bad[0]['positive_rate']:.2f}, dead units {bad[0]['dead_units']:.2f}); exudate share of its labelled set "
        f"{pool.labels[lab].mean():.2f}, of its picks {pool.labels[picks].mean() if len(picks) else float('nan'):.2f}"
    )


def picks_summary(pool, results, kind_at: np.ndarray, recs) -> dict:
    """Mean over runs: exudate share of the picks (after L0), share of the negative picks per
    confounder kind, and the largest share of a run's positive picks from one exudate cluster.
    """
    labels = [ndimage.label(r.exudate_mask, np.ones((3, 3)))[0] for r in recs]
    pos_share, kinds, cluster = [], [], []
    for res in results:
        picks = np.concatenate(res.selected[1:]) if len(res.selected) > 1 else np.zeros(0, int)
        if not len(picks):
            continue
        y = pool.labels[picks]
        pos_share.append(float(y.mean()))
        neg = picks[y == 0]
        kinds.append(np.bincount(kind_at[neg], minlength=len(data.CONFOUNDER_KINDS)) / max(len(neg), 1))
        pp = pool.positions[picks[y == 1]]
        comp = [(int(p["image"]), int(labels[p["image"]][p["row"], p["col"]])) for p in pp]
        cluster.append(max(np.unique(comp, axis=0, return_counts=True)[1]) / len(comp) if comp else 0.0)
    k = np.mean(kinds, 0) if kinds else np.zeros(len(data.CONFOUNDER_KINDS))
    return {
        "exudate_share": float(np.mean(pos_share)) if pos_share else None,
        "negatives_by_kind": {
            ("plain" if i == 0 else n): float(v) for i, (n, v) in enumerate(zip(data.CONFOUNDER_KINDS, k, strict=True))
        },
        "largest_cluster_share": float(np.mean(cluster)) if cluster else None,
    }


def fp_table(finals: dict, kind_names: Sequence[str]) -> dict:
    """Mean false-positive rate per confounder kind (and plain background) of each strategy's final models."""
    out = {}
    for name, fs in finals.items():
        out[name] = {}
        for key in fs[0]["fp_rate"]:
            v = [f["fp_rate"][key] for f in fs if f["fp_rate"][key] is not None]
            out[name][key] = float(np.mean(v)) if v else None
    return out


def plot_picks_and_fp(axes, picks: dict, fp: dict) -> None:
    """Left: exudate share of the picks per strategy; right: FP rate per confounder kind (heat map)."""
    names = list(picks)
    axes[0].bar(
        names, [picks[n]["exudate_share"] or 0 for n in names], color="tab:orange", label="exudate share of picks"
    )
    axes[0].plot(
        names, [picks[n]["largest_cluster_share"] or 0 for n in names], "ko", label="largest one-cluster share"
    )
    axes[0].set(ylabel="share of picks", ylim=(0, 1), title="what each strategy picked")
    axes[0].legend(fontsize=7)
    axes[0].tick_params(axis="x", rotation=30)
    rows = list(fp)
    cols = list(fp[rows[0]])
    mat = np.array([[np.nan if fp[r][c] is None else fp[r][c] for c in cols] for r in rows])
    im = axes[1].imshow(
        mat, cmap="viridis", vmin=0, vmax=max(np.nanmax(mat), 1e-3) if np.isfinite(mat).any() else 1, aspect="auto"
    )
    axes[1].set(
        xticks=range(len(cols)),
        xticklabels=cols,
        yticks=range(len(rows)),
        yticklabels=rows,
        title="test-grid false-positive rate (score >= 0.5)",
    )
    axes[1].tick_params(axis="x", rotation=30)
    axes[0].figure.colorbar(im, ax=axes[1], label="false-positive rate")


def plot_interestingness(res, upto_round: int | None = None):
    """Fig. 3 shape: interestingness (sum of Phi over an image's grid patches) of every candidate
    image against the SGD iterations at which it was measured, up to round ``upto_round``.
    """
    its = np.array([r["iterations"] for r in res.records[:-1]])  # measured before each round
    n = len(its) if upto_round is None else int(upto_round)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(its[:n], res.interestingness[:n], marker=".", lw=1)
    ax.set(xlabel="SGD iterations", ylabel="interestingness (sum of Φ over the image)", yscale="log",
           title="EGL interestingness of candidate images")
    return fig


def interestingness_decay(res) -> dict:
    """Median interestingness over the candidate images at the first and the last round of ``res``
    (NaN entries, images already chosen, left out) and their ratio last / first.
    """
    rows = np.asarray(res.interestingness if res.interestingness is not None else np.zeros((0, 0)), float)
    meds = [float(np.nanmedian(r)) for r in rows if np.isfinite(r).any()]
    if not meds:
        return {"rounds": 0, "first_median": None, "last_median": None, "ratio": None}
    ratio = meds[-1] / meds[0] if meds[0] > 0 else None
    return {"rounds": len(meds), "first_median": meds[0], "last_median": meds[-1], "ratio": ratio}


def plot_egl_map(image: np.ndarray, phi_map: np.ndarray, mask: np.ndarray, stride: int):
    """An image, its EGL map (magma, with a colour bar) and its exudate mask, side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    fig.subplots_adjust(wspace=0.45)  # room for the colour bars' labels (constrained layout draws twice)
    axes[0].imshow(image)
    im = axes[1].imshow(phi_map, cmap="magma")
    fig.colorbar(im, ax=axes[1], label="Φ (expected gradient length)")
    im = axes[2].imshow(np.asarray(mask, float), cmap="cividis", vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[2], ticks=[0, 1], label="exudate (1) or not (0)")
    titles = ["validation image", f"EGL map Φ (grid step {stride} px)", "ground-truth exudates"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="x (px, standardized image)", ylabel="y (px)")
    return fig


def score_on_dataset(
    models_: dict, records, *, stride: float = 16, per_class: int = 986, seed: int = 0, plain_cap: int | None = None
) -> dict:
    """Score models trained here on another dataset's standardized records: balanced exudate patches
    (without replacement, up to ``per_class``) and the natural-prevalence grid (AP; ``plain_cap``
    subsamples its plain background with inverse-probability weights, as :func:`egl.grid_set`).
    """
    recs = [r for r in records if r.exudate_mask is not None]
    if not recs:
        raise ValueError(
            "the test dataset has no exudate masks, so it cannot score an exudate detector; "
            "choose one with exudate annotations (idrid, eophtha-ex, diaretdb1)"
        )
    tp = patches.exudate_pool(recs, max_positives_per_image=None, max_negatives_per_image=None, seed=seed)
    idx = patches.balanced_sample(
        tp, min(per_class, *tp.class_counts().values()), np.random.default_rng(seed), replace=False
    )
    x, y = patches.to_tensor(tp.extract(idx)), tp.labels[idx].astype(int)
    grid = egl.grid_set(recs, [None] * len(recs), stride=stride, plain_cap=plain_cap, seed=seed)
    out = {"n_images": len(recs), "grid_prevalence": grid.prevalence, "n_grid": grid.n_grid, "n_balanced": int(len(y))}
    for name, m in models_.items():
        s = final_scores(m, x, y, grid)
        out[name] = {k: v for k, v in s.items() if k != "fp_rate"}
    return out


def notebook_metrics(
    *, test_grid, reference, plateau, full_scores, eff, collapses, finals, fp_table, picks, test_other, settings,
    interestingness=None, data_info=None,
) -> dict:
    """The ``03_lenet_egl`` section of metrics.json (keys documented in the issue; ``interestingness``
    is :func:`interestingness_decay` of the first EGL run, ``data_info`` the data sizes for
    :func:`paper_table`).
    """
    ref = {k: reference[k] for k in ("f_measure", "sensitivity", "specificity", "ap")}
    return {
        "interestingness": interestingness,
        "data": data_info,
        "pool": {"prevalence": test_grid.prevalence, "n_grid": test_grid.n_grid},
        "reference": {
            "test": ref,
            "validation": {k: full_scores[k] for k in ("f_measure", "ap")},
            "epochs": plateau["epochs"],
            "best_epoch": plateau["best_epoch"],
        },
        "ratio_egl_random": {
            k: {kk: eff["ratio"][k][kk] for kk in ("mean", "ci_low", "ci_high", "per_seed")}
            for k in ("n_patches", "n_images", "aulc")
        },
        "target_ap": eff["target_ap"],
        "needed": eff["needed"],
        "censored": eff["censored"],
        "summary": {k: _text(eff["ratio"][k], collapses) for k in ("n_patches", "aulc")},
        "collapses": {n: c["runs"] for n, c in collapses.items()},
        "collapse_detail": collapses,
        "confounders": fp_table,
        "picks": picks,
        "final_test": {n: [{k: v for k, v in f.items() if k != "fp_rate"} for f in fs] for n, fs in finals.items()},
        "test_dataset": test_other,
        "settings": settings,
    }


#: What Otálora et al. (2017) report or did, for :func:`paper_table` (from the paper's text).
PAPER = {
    "data": "e-ophtha EX: 47 images with exudates and healthy ones, 1440x960 to 2540x1690 px",
    "training pool": "8,760 patches per class (after D4 augmentation)",
    "test set": "986 balanced test patches (per class)",
    "initial model": "4 random images; 5 batches of 32 patches (5 SGD steps)",
    "repetitions": "one run per strategy, no confidence interval",
    "EGL / random, labels": "EGL converges earlier: 'as few as 15 batches' (480 patches) suffice",
    "final EGL vs random": "EGL reaches a better optimum (Fig. 2: F-measure, sensitivity, specificity)",
    "all-data reference": "EGL performs similarly to the model trained on all data",
    "collapsed runs": "not reported",
    "interestingness": "decays to 0 once the model converges (Fig. 3)",
}


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def paper_table(numbers: dict) -> pd.DataFrame:
    """Paper vs this run, one row per quantity of :data:`PAPER`, built from this run's metrics
    (``numbers``: :func:`notebook_metrics`' dict, with ``data`` and ``interestingness`` filled in).
    """
    n, st, d = numbers, numbers["settings"], numbers.get("data") or {}
    rp, ra = n["ratio_egl_random"]["n_patches"], n["ratio_egl_random"]["aulc"]
    ft = {k: (_mean([f["f_measure"] for f in v]), _mean([f["ap"] for f in v])) for k, v in n["final_test"].items()}
    ref, it = n["reference"]["test"], n.get("interestingness") or {}
    c = n["collapse_detail"]
    ours = {
        "data": f"{d.get('dataset', '?')}: "
        + " / ".join(f"{v} {k}" for k, v in (d.get("images") or {}).items())
        + f" images, standardized to {d.get('image_size', '?')} px",
        "training pool": f"{d.get('pool_per_class', '?')} positions per class, D4 copies drawn on the fly",
        "test set": f"{d.get('test_per_class', '?')} balanced patches per class; grid of {n['pool']['n_grid']} "
        f"patches at {n['pool']['prevalence']:.2%} exudate",
        "initial model": f"{st['mu']} random images; {d.get('initial_patches', '?')} patches, "
        f"{st.get('initial_steps', '?')} SGD steps",
        "repetitions": f"{st['n_seeds']} seeds of EGL and random, 95% percentile bootstrap CI over seeds",
        "EGL / random, labels": f"patches to reach AP {n['target_ap']:.3f}: {_fmt(rp)}; "
        f"AULC ratio {_fmt(ra)}",
        "final EGL vs random": f"test F EGL {ft['egl'][0]:.3f} vs random {ft['random'][0]:.3f}; "
        f"grid AP EGL {ft['egl'][1]:.3f} vs random {ft['random'][1]:.3f}",
        "all-data reference": f"test F {ref['f_measure']:.3f}, grid AP {ref['ap']:.3f} "
        f"(plateau rule: {n['reference']['epochs']} epochs)",
        "collapsed runs": ", ".join(f"{k} {v['runs']}/{v['of']}" for k, v in c.items()),
        "interestingness": "one round only: no decay measured" if it.get("rounds", 0) < 2 or it.get("ratio") is None
        else f"median over candidates x{it['ratio']:.2f} from round 1 to round {it['rounds']}",
    }
    differs = {
        "data": "synthetic images by default (or a local dataset), fewer and smaller",
        "training pool": "scaled down (egl_max_per_image)",
        "test set": "we add the natural-prevalence grid AP; the paper scores balanced patches only",
        "initial model": "same labels, more SGD steps (see the cold-start cell)",
        "repetitions": "seeds and CIs are ours",
        "EGL / random, labels": "we count labels to a target AP, not SGD batches to a converged F",
        "final EGL vs random": "mean over seeds; AP on the grid besides balanced F",
        "all-data reference": "stopped by the plateau rule, not after 30 epochs",
        "collapsed runs": "we count runs predicting one class (egl.degeneracy)",
        "interestingness": "median over the candidate images of the first EGL seed",
    }
    rows = [{"quantity": k, "paper": v, "this run": ours[k], "how ours differs": differs[k]} for k, v in PAPER.items()]
    return pd.DataFrame(rows).set_index("quantity")


def _text(r: dict, collapses: dict) -> str:
    """README cell: geometric mean [95% CI], collapsed EGL and random runs."""
    if r["mean"] is None:
        return "n/a"
    c = collapses
    return (
        f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] (collapsed: EGL {c['egl']['runs']}/{c['egl']['of']}, "
        f"random {c['random']['runs']}/{c['random']['of']})"
    )


def _fmt(r: dict) -> str:
    if r["mean"] is None:
        return "undefined (no seed gave a finite ratio)"
    return f"{r['mean']:.2f} (95% CI {r['ci_low']:.2f}-{r['ci_high']:.2f})"


def _direction(rp: dict) -> str:
    """'fewer' / 'more' / 'as many' labels (EGL vs random), from the geometric mean of the ratios."""
    return "fewer" if rp["mean"] < 1 else "more" if rp["mean"] > 1 else "as many"


def discussion(
    eff, collapses, full_scores, reference, grid, fp, plateau, picks=None, finals=None, interest=None
) -> str:
    """Discussion sentences written from this run's numbers (``picks``: :func:`picks_summary` per
    strategy; ``finals``: the final test scores per strategy, for the mean test AP; ``interest``:
    :func:`interestingness_decay` of the first EGL run).
    """
    rp, ra = eff["ratio"]["n_patches"], eff["ratio"]["aulc"]
    still = (
        " and was still improving at its last epoch (the epoch cap, not a plateau, stopped it)"
        if plateau.get("best_epoch") == plateau["epochs"]
        else ""
    )
    lines = [
        f"- The all-data reference stopped after {plateau['epochs']} epochs{still}; "
        f"test F {reference['f_measure']:.3f} on balanced patches but AP {reference['ap']:.3f} on the "
        f"natural-prevalence grid ({grid.prevalence:.2%} exudate)."
    ]
    lines.append(
        f"- EGL / random labelled patches to reach AP {eff['target_ap']:.3f}: {_fmt(rp)}; censored runs "
        f"(never reached): EGL {eff['censored']['egl']}, random {eff['censored']['random']}."
    )
    if rp["mean"] is None:
        lines.append("  No seed gave a finite ratio, so this run cannot say which strategy needed fewer labels.")
    elif rp["ci_high"] < 1:
        lines.append(f"  EGL needed {_direction(rp)} labels than random here, and the CI excludes 1: this agrees "
                     "with the paper's claim that EGL converges earlier.")
    elif rp["ci_low"] > 1:
        lines.append(f"  EGL needed {_direction(rp).upper()} labels than random here, and the CI excludes 1: EGL "
                     "did not beat random, against the paper's claim.")
    else:
        word = "as many labels as" if _direction(rp) == "as many" else f"{_direction(rp)} labels than"
        lines.append(f"  EGL needed {word} random here on average, but the CI includes 1: on these "
                     f"{len(rp['per_seed'])} seeds EGL is not shown to beat random, nor random EGL.")
    lines.append(f"- Ratio of areas under the AP curves (EGL / random, above 1 = EGL better): {_fmt(ra)}.")
    if ra["mean"] is not None and not (rp["mean"] is not None and rp["ci_high"] < 1) and not ra["ci_low"] > 1:
        lines.append("  Plainly: on these seeds EGL did not beat random selection.")
    if finals:
        lines.append(
            "- Mean final test-grid AP: "
            + ", ".join(f"{n} {np.mean([f['ap'] for f in fs]):.3f} ({len(fs)} seeds)" for n, fs in finals.items())
            + f"; the all-data reference {reference['ap']:.3f}."
        )
    if picks and "egl" in picks and "random" in picks:
        e, r = picks["egl"], picks["random"]
        if e["exudate_share"] is not None and r["exudate_share"] is not None:
            neg = lambda p: ", ".join(f"{k} {v:.2f}" for k, v in p["negatives_by_kind"].items() if v > 0)  # noqa: E731
            lines.append(
                f"- Why: EGL's picks were {e['exudate_share']:.0%} exudate against random's "
                f"{r['exudate_share']:.0%}; the largest share of a run's exudate picks from one lesion "
                f"cluster was {e['largest_cluster_share']:.0%} for EGL and {r['largest_cluster_share']:.0%} for "
                f"random; EGL's negative picks by kind: {neg(e)} (random: {neg(r)})."
            )
    lines.append("- Collapsed runs: " + ", ".join(f"{n} {c['runs']}/{c['of']}" for n, c in collapses.items()) + ".")
    e = collapses.get("egl")
    if e is not None and e["runs"]:
        lines.append(f"  EGL collapsed in {e['runs']} of {e['of']} runs (one class predicted at the end: see the "
                     "collapsed-run cell).")
    if interest and interest.get("rounds", 0) >= 2 and interest.get("ratio") is not None:
        trend = "fell" if interest["ratio"] < 1 else "rose"
        lines.append(
            f"- The median interestingness of the candidate images {trend} from {interest['first_median']:.3g} to "
            f"{interest['last_median']:.3g} over {interest['rounds']} rounds (x{interest['ratio']:.2f}); the paper's "
            "Fig. 3 shows it decaying to 0 as the model converges."
        )
    elif interest is not None:
        lines.append("- Interestingness was measured in one round only, so its decay (Fig. 3) is not measured here.")
    worst = {n: max((k for k in v if k != "plain" and v[k]), key=lambda k: v[k], default=None) for n, v in fp.items()}
    lines.append(
        "- Most confused confounder per model: "
        + ", ".join(
            f"{n} {k} ({fp[n][k]:.3f} vs plain {fp[n]['plain']:.3f})" for n, k in worst.items() if k is not None
        )
        + ("." if any(k is not None for k in worst.values()) else "none (no false positive on any confounder).")
    )
    return "\n".join(lines)
