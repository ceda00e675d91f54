"""Notebook 05's bookkeeping: the hemorrhage test set, each model's image scores and lesion
candidates, Tables III and IV, the FROC curves with their false-positive rule, the error gallery,
the EGL patch test and exudate map, the ``05_evaluation`` block of metrics.json, the paper-vs-this-run
table and the generated discussion.

Module order: after :mod:`fundus_nb.metrics` (it scores with it) and before :mod:`fundus_nb.runs`;
nothing here trains or reads a run folder (the notebook loads models and records through ``runs``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import lesions, metrics, models, monitor, patches, train

__all__ = [
    "FP_RATES",
    "KEYS",
    "PAPER",
    "HemorrhageTestSet",
    "FROCResult",
    "independent_source",
    "hemorrhage_test_set",
    "score_models",
    "plateau_scores",
    "draw_dashed_rocs",
    "draw_image_scores",
    "report_table",
    "quality_tables",
    "froc_curves",
    "threshold_at_fp",
    "gallery",
    "egl_patch_test",
    "exudate_map",
    "notebook_metrics",
    "paper_table",
    "discussion",
]

#: The FP-per-image rates the FROC sensitivity is read at (the paper's 0.1 and 1).
FP_RATES = (0.1, 1.0)
#: Model label -> key in metrics.json.
KEYS = {"SeS": "ses", "NSeS": "nses"}
NAMES = {v: k for k, v in KEYS.items()}
#: What van Grinsven et al. (2016) report (Sec. V, Figs. 7-8): Az on Kaggle / Messidor, FROC at 0.1 / 1 FP/image.
PAPER = {
    "SeS": {"az": (0.894, 0.972), "froc": (0.511, 0.786)},
    "NSeS": {"az": None, "froc": (0.316, 0.753)},
    "test_set": "Kaggle (20 % of 6,679 images, by patient) and Messidor (1,200 images)",
    "image_size": 512,
    "n_bootstrap": 10000,
    "tolerance_px": 8.0,
    "training": "SeS 60 / NSeS 170 epochs of 4,000 mini-batches of 256 patches, 60 % of 6,679 images",
}
#: The Az CI width the discussion measures each model against.
AZ_CI_GOAL = 0.15


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _ci(v: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# ----------------------------------------------------------------------------- the test set
@dataclass
class HemorrhageTestSet:
    """The hemorrhage test images with their image labels (1: has hemorrhages) and lesion count."""

    records: list
    name: str
    y: np.ndarray
    n_lesions: int

    @property
    def two_classes(self) -> bool:
        """Whether both classes occur (image-level ROC, Az and kappa need both)."""
        return len(np.unique(self.y)) == 2

    @property
    def na_reason(self) -> str | None:
        """Why the image-level numbers are undefined ("n/a: ..."), None when they exist."""
        if self.two_classes:
            return None
        return f"n/a: all {len(self.y)} test images {'have' if self.y.any() else 'lack'} hemorrhages (one class)"

    @property
    def size_text(self) -> str:
        return f"{len(self.records)} / {int(self.y.sum())} / {self.n_lesions} ({self.name})"

    def __str__(self) -> str:
        line = (f"hemorrhage test images ({self.name}): {len(self.records)} ({int(self.y.sum())} with hemorrhages, "
                f"{self.n_lesions} lesions)")
        return line + ("" if self.two_classes else f"; image-level ROC, Az, kappa {self.na_reason}")


def independent_source(test_dataset: str, dataset: str, n_patients: int, seed: int) -> tuple[bool, str, str, dict]:
    """Where notebook 05's hemorrhage test images come from.

    Returns ``(independent, name, dataset_name, options)``: ``independent`` is True for a named
    ``test_dataset`` or, on synthetic data, ``n_patients > 0`` new patients of generator ``seed``;
    ``name`` describes the set for tables; ``dataset_name`` and ``options`` are what
    ``runs.independent_records`` / ``data.load`` take.
    """
    independent = bool(test_dataset) or (dataset == "synthetic" and n_patients > 0)
    if not independent:
        return False, "notebook 04 test split", "", {}
    name = test_dataset or f"synthetic, {n_patients} new patients (seed {seed})"
    source = test_dataset or "synthetic"
    opts = {"n_patients": n_patients, "seed": seed} if source == "synthetic" else {}
    return True, name, source, opts


def hemorrhage_test_set(records: Sequence, name: str) -> HemorrhageTestSet:
    """Labels and lesion count of the test ``records``; ``ValueError`` when none has hemorrhages."""
    records = list(records)
    y = monitor.image_labels(records).astype(int)
    if not y.any():
        raise ValueError(
            f"the hemorrhage test set ({len(records)} images) holds no image with hemorrhages, so neither Az "
            "nor FROC sensitivity exists; use a test set with hemorrhages (e.g. more test_n_patients)"
        )
    n_lesions = int(sum(len(r.hemorrhage_centers) for r in records if r.hemorrhage_centers is not None))
    return HemorrhageTestSet(records, str(name), y, n_lesions)


# ----------------------------------------------------------------------------- scores and candidates
def score_models(models_by_label: Mapping[str, torch.nn.Module], records: Sequence, sigma_px: float,
                 min_distance_px: float, threshold: float):
    """Exact probability maps, image scores and lesion candidates of every model on ``records``.

    Returns ``(maps, scores, cands)``, dicts keyed by model label: the list of (H, W) maps, the (n,)
    image scores (:func:`lesions.image_score`: the smoothed map's maximum in the FOV) and the
    :class:`lesions.Candidates` of each image (masks kept, seeds at least ``min_distance_px`` apart,
    rounded to whole pixels, smoothed value ``>= threshold``).
    """
    maps, scores, cands = {}, {}, {}
    min_dist = max(1, int(round(min_distance_px)))
    for label, model in models_by_label.items():
        maps[label] = models.dense_probability_maps(model, records)  # exact maps (client= spreads them)
        pairs = list(zip(maps[label], records, strict=True))
        scores[label] = np.array([lesions.image_score(m, sigma_px, r.fov) for m, r in pairs])
        cands[label] = [lesions.candidates(m, sigma_px, min_dist, threshold, fov=r.fov, return_masks=True)
                        for m, r in pairs]
    return maps, scores, cands


def plateau_scores(checkpoint_root: str | os.PathLike, plateau: Mapping, seed: int, records: Sequence,
                   sigma_px: float, final: Mapping[str, torch.nn.Module]) -> dict:
    """Image scores of notebook 04's checkpoints at each model's plateau epoch (its first seed,
    the saved models' seed), and of the ``final`` models scored the same way; {} without checkpoints.

    Both are scored at the network's natural output stride (the image score needs only the map's
    maximum: 16x cheaper than the exact maps), so that the dashed curves compare like with like.
    """
    out = {}
    for label in final:
        ep = (plateau.get(label) or [None])[0]
        path = train.checkpoint_path(os.path.join(checkpoint_root, f"sesnet_{label.lower()}_seed{seed}"), ep or 0)
        if ep and path.is_file():
            m = models.SeSNet()
            m.load_state_dict(train.load_checkpoint(path)["model"])
            stride = models.output_stride(m)
            out[f"{label} at its plateau (epoch {ep}, stride {stride})"] = monitor.image_scores(
                m.eval(), records, sigma_px, stride=stride)
    if out:
        for label, model in final.items():
            stride = models.output_stride(model)
            key = f"{label} final (epoch of the saved model, stride {stride})"
            out[key] = monitor.image_scores(model, records, sigma_px, stride=stride)
    return out


def draw_dashed_rocs(ax, y, plateau: Mapping[str, np.ndarray]) -> None:
    """Dashed ROC curves of the first two :func:`plateau_scores` entries (the plateau checkpoints)."""
    for (label, s), color in zip(plateau.items(), ("C0", "C1"), strict=False):
        band = metrics.roc_curve_ci(y, s, n_bootstrap=10)
        ax.step(band.fpr, band.tpr, where="post", color=color, ls="--",
                label=f"{label}: Az {metrics.roc_auc_ci(y, s, 10)[0]:.3f}")


def draw_image_scores(ax, scores: Mapping[str, np.ndarray], na_reason: str) -> None:
    """For a one-class test set (no ROC exists): each model's image scores, and the reason in the title."""
    for j, (label, s) in enumerate(scores.items()):
        ax.scatter(np.full(len(s), j), s, label=label)
    ax.set(xticks=range(len(scores)), xticklabels=list(scores), ylabel="image score (max of smoothed p), 0-1",
           ylim=(0, 1.02), title=f"image-level ROC {na_reason[:4]}\n{na_reason[5:]}")


# ----------------------------------------------------------------------------- Tables III and IV
def report_table(y, scores: Mapping[str, np.ndarray], n_bootstrap: int, seed: int, keep=None):
    """Table III shape: ``(rows, table)``; ``rows[label]`` is :func:`metrics.image_level_report` of
    the images in ``keep`` (all by default), ``table`` the DataFrame of sensitivity, specificity,
    kappa and Az as "value [lo, hi]" and the counts tp, fn, fp, tn.
    """
    y = np.asarray(y)
    keep = np.ones(len(y), bool) if keep is None else np.asarray(keep, bool)
    rows = {k: metrics.image_level_report(y[keep], np.asarray(s)[keep], n_bootstrap, seed=seed)
            for k, s in scores.items()}
    table = pd.DataFrame({
        k: {m: _ci(r[m], r[f"{m}_lo"], r[f"{m}_hi"]) for m in ("sensitivity", "specificity", "kappa", "az")}
        | {c: r[c] for c in ("tp", "fn", "fp", "tn")}
        for k, r in rows.items()
    }).T
    return rows, table


def quality_tables(test: HemorrhageTestSet, scores: Mapping[str, np.ndarray], n_bootstrap: int, seed: int):
    """Table IV: Table III without the images graded poor quality.

    Returns ``(n_removed, rows, table)``; ``rows`` and ``table`` are None when the dataset grades no
    quality, no image is poor, the test set has one class, or one class is left after the removal
    (``n_removed`` is then 0 when nothing could be removed).
    """
    qualities = [r.quality for r in test.records]
    if None in qualities or not test.two_classes:
        return 0, None, None
    good = metrics.quality_mask(qualities)
    n_removed = int((~good).sum())
    if not n_removed or len(np.unique(test.y[good])) < 2:
        return n_removed, None, None
    rows, table = report_table(test.y, scores, n_bootstrap, seed, keep=good)
    return n_removed, rows, table


# ----------------------------------------------------------------------------- FROC
@dataclass
class FROCResult:
    """Each model's FROC curve, its sensitivity at :data:`FP_RATES` and (paper rule only) bootstrap CIs."""

    curves: dict
    at: dict
    ci: dict
    negative_ids: list

    @property
    def paper_rule(self) -> bool:
        """True when false positives are counted on lesion-free images (the paper's rule)."""
        return bool(self.negative_ids)

    @property
    def fp_rule(self) -> str:
        if self.paper_rule:
            return "paper: false positives on hemorrhage-free images only"
        return ("fallback (no hemorrhage-free test image): detections > tolerance from every reference centre, "
                "all test images")

    @property
    def x_label(self) -> str:
        if self.paper_rule:
            return "false positives per hemorrhage-free image"
        return "false positives per test image (FALLBACK: detections away from every lesion)"

    @property
    def title(self) -> str:
        return "FROC" if self.paper_rule else "FROC, fallback FP rule (no lesion-free test image)"


def froc_curves(test: HemorrhageTestSet, cands: Mapping[str, Sequence], tolerance_px: float, n_bootstrap: int,
                seed: int) -> FROCResult:
    """FROC of every model's candidates on ``test`` (:func:`metrics.froc`, false positives on
    hemorrhage-free images), with :func:`metrics.froc_sensitivity_ci` at :data:`FP_RATES`; without a
    hemorrhage-free image, the labelled fallback :func:`metrics.froc_all_images` (no CI).
    """
    recs = test.records
    neg_ids = [r.id for r, y in zip(recs, test.y, strict=True) if y == 0]
    ref = {r.id: r.hemorrhage_centers for r, y in zip(recs, test.y, strict=True) if y == 1}
    shapes = {r.id: r.image.shape[:2] for r in recs}
    curves, at, ci = {}, {}, {}
    for label, cs in cands.items():
        det = {r.id: c.as_detections() for r, c in zip(recs, cs, strict=True)}
        if neg_ids:
            curves[label] = metrics.froc(det, ref, neg_ids, tolerance_px, image_shapes=shapes)
            ci[label] = metrics.froc_sensitivity_ci(det, ref, neg_ids, list(FP_RATES), tolerance_px, n_bootstrap,
                                                    seed=seed)
        else:
            all_ref = {r.id: r.hemorrhage_centers if r.hemorrhage_centers is not None else np.zeros((0, 2))
                       for r in recs}
            curves[label] = metrics.froc_all_images(det, all_ref, tolerance_px, image_shapes=shapes)
        at[label] = metrics.sensitivity_at(curves[label], list(FP_RATES))
    return FROCResult(curves, at, ci, neg_ids)


def threshold_at_fp(curve: metrics.FROCCurve, rate: float = 1.0) -> float:
    """The lowest candidate probability threshold whose FP/image stays ``<= rate`` (the curve's
    first threshold when even that one exceeds it; 1.0 for an empty curve).
    """
    if not len(curve):
        return 1.0
    return float(curve.thresholds[max(np.searchsorted(curve.fp_per_image, rate, "right") - 1, 0)])


def gallery(y, scores, n: int):
    """Image indices for Fig. 6 and Fig. 9 shapes: ``(positives, worst)``.

    ``positives``: the first ``n`` images with hemorrhages. ``worst``: the ``n // 2`` lowest-scoring
    of those (likeliest misses), then the highest-scoring lesion-free images (likeliest false alarms)
    up to ``n`` in all.
    """
    y, s = np.asarray(y), np.asarray(scores)
    pos = np.flatnonzero(y == 1)[:n]
    worst = list(pos[np.argsort(s[pos])][: n // 2])
    neg = np.flatnonzero(y == 0)
    worst += list(neg[np.argsort(-s[neg])][: n - len(worst)])
    return pos, worst


# ----------------------------------------------------------------------------- EGL LeNet
def _pick(pairs, per_class: int, rng: np.random.Generator):
    """At most ``per_class`` (image index, (row, col)) positions drawn without replacement."""
    idx = np.concatenate([np.full(len(rr), i) for i, (rr, _) in enumerate(pairs)])
    rc = np.concatenate([np.column_stack(p) for p in pairs])
    take = rng.choice(len(idx), min(per_class, len(idx)), replace=False)
    return idx[take], rc[take]


def egl_patch_test(model: torch.nn.Module, records: Sequence, per_class: int, rng: np.random.Generator,
                   size: int = 48):
    """Patch-level test of the EGL LeNet: exudate and healthy ``size`` patches of ``records`` (at most
    ``per_class`` each, drawn with ``rng``), classified at p >= 0.5.

    Returns ``(scores, n_exudate, n_healthy)``, ``scores`` from :func:`metrics.patch_metrics`.
    """
    (ip, rp), (ineg, rn) = (_pick([f(r) for r in records], per_class, rng)
                            for f in (patches.exudate_positives, patches.exudate_negatives))
    imgs = [r.image for r in records]
    x = np.concatenate([patches.extract(imgs, ip, rp[:, 0], rp[:, 1], size),
                        patches.extract(imgs, ineg, rn[:, 0], rn[:, 1], size)])
    y = np.r_[np.ones(len(ip), int), np.zeros(len(ineg), int)]
    return metrics.patch_metrics(y, (models.predict_proba(model, x) >= 0.5).astype(int)), len(ip), len(ineg)


def exudate_map(model: torch.nn.Module, record, stride: int, size: int = 48) -> np.ndarray:
    """p(exudate) over ``record``'s FOV: exact (:func:`models.dense_probability_map`) with
    ``stride=1``; else the model on a grid of patch centres every ``stride`` px, each value spread
    over its grid cell (nearest centre), 0 outside the FOV.
    """
    fov = record.fov
    if stride == 1:
        return models.dense_probability_map(model, record.image, fov)
    half = size // 2
    rr, cc = patches.patchify(fov, size, stride)
    coarse = np.zeros([(side - size) // stride + 1 for side in fov.shape])
    coarse[(rr - half) // stride, (cc - half) // stride] = models.predict_proba(
        model, patches.extract([record.image], np.zeros(len(rr), int), rr, cc, size))

    def near(n, m):
        return np.clip((np.arange(n) - half + stride // 2) // stride, 0, m - 1)

    return coarse[near(fov.shape[0], coarse.shape[0])][:, near(fov.shape[1], coarse.shape[1])] * fov


# ----------------------------------------------------------------------------- metrics.json
def _test_block(test: HemorrhageTestSet, table3_rows, paired, froc: FROCResult) -> dict:
    """metrics.json's 05_evaluation.test: test-set size and each model's Az and FROC with CIs."""
    delta, p_value = paired
    out = {"n_images": len(test.records), "n_positive_images": int(test.y.sum()), "n_lesions": test.n_lesions,
           "paired_p_value": p_value, "ses_minus_nses_az": delta}
    for k in froc.at:
        r = table3_rows[k] if table3_rows else {}
        ci = froc.ci.get(k)
        block = {"az": r.get("az"), "ci_low": r.get("az_lo"), "ci_high": r.get("az_hi"),
                 "ci_width": r["az_hi"] - r["az_lo"] if r else None,
                 "froc_at_0p1": [float(v[0]) for v in ci] if ci else None,  # value, low, high
                 "froc_at_1": [float(v[1]) for v in ci] if ci else None}
        block["text"] = f"{_ci(r['az'], r['az_lo'], r['az_hi'])} (width {r['az_hi'] - r['az_lo']:.3f})" if r \
            else test.na_reason
        if ci:
            v, lo, hi = ci
            block["froc_text"] = " / ".join(_ci(v[i], lo[i], hi[i], 2) for i in (0, 1))
        else:
            block["froc_text"] = f"{froc.at[k][0]:.2f} / {froc.at[k][1]:.2f} (fallback FP rule, no CI)"
        out[KEYS[k]] = block
    out["size_text"] = test.size_text
    out["paired_text"] = f"{delta:+.3f}, p = {p_value:.2g}" if test.two_classes else test.na_reason
    return out


def notebook_metrics(*, test: HemorrhageTestSet, table3_rows, table4_rows, paired, plateau: Mapping,
                     froc: FROCResult, patch_scores: dict, n_patches: int, egl_independent, settings: dict,
                     n_poor_removed: int = 0) -> dict:
    """The ``05_evaluation`` section of metrics.json.

    ``table3_rows`` / ``table4_rows``: :func:`report_table` / :func:`quality_tables` rows (None when
    undefined); ``paired``: ``(delta, p_value)`` of :func:`metrics.paired_auc_test` (Nones for a
    one-class test set); ``plateau``: :func:`plateau_scores`; ``settings``: the notebook's settings.
    """
    two = test.two_classes
    na = test.na_reason
    delta, p_value = paired
    return {
        "n_test_images": len(test.records), "n_positive_images": int(test.y.sum()),
        "image_level": {KEYS[k]: {**r, "az_text": _ci(r["az"], r["az_lo"], r["az_hi"])}
                        for k, r in table3_rows.items()} if two else
                       {KEYS[k]: {"az": None, "az_text": na, "reason": na} for k in froc.at},
        "image_level_good_quality": {KEYS[k]: r for k, r in (table4_rows or {}).items()},
        "n_poor_quality_removed": n_poor_removed,
        "paired_test": {"ses_minus_nses_az": delta, "p_value": p_value, **({} if two else {"reason": na})},
        "plateau_az": {k: metrics.roc_auc_ci(test.y, s, 10)[0] if two else None for k, s in plateau.items()},
        "froc": {KEYS[k]: {"sens_at_0p1": float(v[0]), "sens_at_1": float(v[1]),
                           "text": f"{v[0]:.3f} / {v[1]:.3f}" + ("" if froc.paper_rule else " (fallback FP rule)"),
                           "fp_rule": froc.fp_rule, "n_lesions": froc.curves[k].n_lesions}
                 for k, v in froc.at.items()},
        "test": _test_block(test, table3_rows if two else None, paired, froc),
        "egl_patch_test": {**patch_scores, "n_patches": int(n_patches)},
        "egl_independent_test": egl_independent,
        "settings": settings,
    }


# ----------------------------------------------------------------------------- paper vs this run
def _training_text(ses_block: Mapping | None) -> str:
    keys = ("epochs", "patches_per_epoch", "n_train_images")
    if not ses_block or any(ses_block.get(k) is None for k in keys):
        return "see notebook 04"
    return (f"{ses_block['epochs']} epochs of {ses_block['patches_per_epoch']:,} patches, "
            f"{ses_block['n_train_images']} training images")


def paper_table(results: dict, ses_block: Mapping | None = None) -> pd.DataFrame:
    """Paper (van Grinsven et al. 2016) beside this run, from the :func:`notebook_metrics` block
    (and notebook 04's metrics.json block ``ses_block`` for the training row, when given).
    """
    t, s = results["test"], results["settings"]
    paper_rule = all(f["fp_rule"].startswith("paper") for f in results["froc"].values())
    rows = [
        ("test set: images / with hemorrhages / lesions", PAPER["test_set"], t["size_text"],
         "far fewer images; synthetic unless test_dataset names a real one"),
        ("image size (px)", str(PAPER["image_size"]), str(s["image_size"]),
         "lengths converted by preprocess.scale_length" if s["image_size"] != PAPER["image_size"] else "same"),
        ("FROC hit tolerance (px)", f"{PAPER['tolerance_px']:g} at 512", f"{s['tolerance_px_at_run']:g} at "
         f"{s['image_size']}", "the same distance on the retina"),
        ("bootstrap replicates", f"{PAPER['n_bootstrap']:,}", f"{s['n_bootstrap']:,}",
         "same" if s["n_bootstrap"] == PAPER["n_bootstrap"] else "fewer: CI bounds less stable"),
        ("training (both networks)", PAPER["training"], _training_text(ses_block),
         "far fewer images and patches per epoch"),
        ("SeS Az [95 % CI]", "0.894 (Kaggle) / 0.972 (Messidor)", t["ses"]["text"], "our test set and scale"),
        ("NSeS Az [95 % CI]", "not given as a number (Fig. 8)", t["nses"]["text"], "our test set and scale"),
        ("Az SeS - NSeS, paired bootstrap p", "n.s. on Kaggle; SeS significantly higher on Messidor",
         t["paired_text"], "one test set, far fewer images"),
        ("SeS FROC sensitivity @0.1 / @1 FP/image", "0.511 / 0.786", t["ses"]["froc_text"],
         "same FP rule" if paper_rule else "FALLBACK FP rule: not comparable"),
        ("NSeS FROC sensitivity @0.1 / @1 FP/image", "0.316 / 0.753", t["nses"]["froc_text"],
         "same FP rule" if paper_rule else "FALLBACK FP rule: not comparable"),
    ]
    return pd.DataFrame(rows, columns=["quantity", "paper", "this run", "how ours differs"]).set_index("quantity")


def _overlap(a: Mapping, b: Mapping) -> bool:
    return a["az_lo"] <= b["az_hi"] and b["az_lo"] <= a["az_hi"]


def _image_level_sentences(results: dict) -> list[str]:
    il, p = results["image_level"], results["paired_test"]
    if il["ses"].get("az") is None:
        return [f"Image level: ROC, Az, the operating point and kappa are {il['ses']['az_text']}; only the FROC "
                "below says how the models did."]
    ses, nses, n, n_pos = il["ses"], il["nses"], results["n_test_images"], results["n_positive_images"]
    out = [f"On {n} test images ({n_pos} with hemorrhages) SeS reached Az {ses['az_text']} and NSeS "
           f"{nses['az_text']}: the 95 % CIs {'overlap' if _overlap(ses, nses) else 'do not overlap'}."]
    can = p["p_value"] < 0.05
    out.append(f"The paired bootstrap test (the same resampled images for both models) gives "
               f"Az(SeS) - Az(NSeS) = {p['ses_minus_nses_az']:+.3f}, {_p(p['p_value'])}: it "
               f"{'can' if can else 'cannot'} tell SeS from NSeS at the 5 % level"
               + (" even though the CIs overlap, since pairing removes the image-to-image variation both "
                  "models share." if can and _overlap(ses, nses) else "."))
    for k, r in (("SeS", ses), ("NSeS", nses)):
        out.append(f"{k} at its operating point (threshold {r['threshold']:.3f}): sensitivity "
                   f"{_ci(r['sensitivity'], r['sensitivity_lo'], r['sensitivity_hi'])}, specificity "
                   f"{_ci(r['specificity'], r['specificity_lo'], r['specificity_hi'])}, kappa "
                   f"{_ci(r['kappa'], r['kappa_lo'], r['kappa_hi'])} (tp {r['tp']}, fn {r['fn']}, fp {r['fp']}, "
                   f"tn {r['tn']}).")
    widths = {k: il[k]["az_hi"] - il[k]["az_lo"] for k in ("ses", "nses")}
    over = [k for k, w in widths.items() if w > AZ_CI_GOAL]
    out.append(f"The Az CIs are {widths['ses']:.3f} (SeS) and {widths['nses']:.3f} (NSeS) wide; the goal of "
               f"<= {AZ_CI_GOAL} is " + ("met by both models." if not over else
                                         f"missed by {', '.join(NAMES[k] for k in over)}: a CI narrows about "
                                         "as 1/sqrt(number of test images), so a larger test set "
                                         "(eval_test_n_patients) narrows it."))
    return out


def _froc_sentences(results: dict) -> list[str]:
    f, t = results["froc"], results["test"]
    if not f["ses"]["fp_rule"].startswith("paper"):
        return [f"FROC sensitivity at 0.1 / 1 FP per image: SeS {f['ses']['text']}, NSeS {f['nses']['text']}; with "
                "no lesion-free test image the fallback FP rule counts detections away from every lesion on all "
                "images, so these numbers are not comparable with the paper's Fig. 7."]
    d01 = f["ses"]["sens_at_0p1"] - f["nses"]["sens_at_0p1"]
    d1 = f["ses"]["sens_at_1"] - f["nses"]["sens_at_1"]
    if d01 > 0 and d1 > 0:
        verdict = "the same direction, SeS ahead at both rates."
    elif d01 == 0 and d1 == 0:
        verdict = "no difference at either rate here, unlike the paper."
    else:
        verdict = "not the paper's direction at both rates."
    out = [f"FROC sensitivity at 0.1 / 1 FP per lesion-free image, with 95 % CIs over images: SeS "
           f"{t['ses']['froc_text']}, NSeS {t['nses']['froc_text']} ({f['ses']['n_lesions']} reference lesions).",
           f"SeS - NSeS: {d01:+.3f} at 0.1 and {d1:+.3f} at 1 FP/image here, {0.511 - 0.316:+.3f} and "
           f"{0.786 - 0.753:+.3f} in the paper: " + verdict]
    a, b = t["ses"]["froc_at_1"], t["nses"]["froc_at_1"]
    if a and b:
        out.append("At 1 FP/image the two FROC CIs " + ("overlap" if a[1] <= b[2] and b[1] <= a[2] else
                                                         "do not overlap") + ".")
    return out


def _quality_sentence(results: dict) -> str:
    good, n_rm = results["image_level_good_quality"], results.get("n_poor_quality_removed")
    if not good:
        return ("Table IV was skipped: " + (f"{n_rm} poor-quality images removed, but one class was left."
                                           if n_rm else "no quality grades, no poor image, or a one-class test set."))
    il = results["image_level"]
    removed = "the" if n_rm is None else f"the {n_rm}"
    return (f"Without {removed} poor-quality images Az is {good['ses']['az']:.3f} (SeS) and "
            f"{good['nses']['az']:.3f} (NSeS), against {il['ses']['az']:.3f} and {il['nses']['az']:.3f} on all images.")


def _egl_sentences(results: dict) -> list[str]:
    e = results["egl_patch_test"]
    out = [f"EGL LeNet on {e['n_patches']} balanced test patches of notebook 03's test images: F-measure "
           f"{e['f_measure']:.3f}, sensitivity {e['sensitivity']:.3f}, specificity {e['specificity']:.3f}."]
    ind = results.get("egl_independent_test")
    if ind:
        g = ind["egl"]
        out.append(f"On {ind['name']}: balanced F {g['f_measure']:.3f}, grid AP {g['ap']:.3f} (exudate prevalence "
                   f"{ind['grid_prevalence']:.2%} of {ind['n_grid']} grid patches; AP falls with prevalence, Az "
                   "does not).")
    return out


def discussion(results: dict) -> str:
    """The notebook's closing discussion (Markdown bullets) generated from the :func:`notebook_metrics`
    block: every sentence's wording follows the numbers (CIs overlap or not, the paired test can or
    cannot tell the models apart, the FROC direction against the paper's, the CI-width goal).
    """
    parts = _image_level_sentences(results) + [_quality_sentence(results)] + _froc_sentences(results)
    plateau = {k: v for k, v in results["plateau_az"].items() if v is not None}
    if plateau:
        parts.append("Checkpoints at the natural stride: " + ", ".join(f"{k} Az {v:.3f}" for k, v in plateau.items())
                     + ".")
    parts += _egl_sentences(results)
    return "\n".join(f"- {p}" for p in parts)
