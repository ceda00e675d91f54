"""Fundus datasets: the ``FundusImage`` record and ``load(name, root=None, **options)``.

Names: ``"synthetic"`` (procedural generator with exact lesion ground truth, the embedded default),
``"skimage-retina"`` (the CC0 photograph inside scikit-image), and loaders for a user's local copy
of ``"idrid"``, ``"eophtha-ex"``, ``"diaretdb1"``, ``"kaggle"``, ``"messidor"`` and a generic
``"folder"`` layout (see ``data/README.md``).

Disk datasets are lazy: :func:`load` lists the files and checks each image's header (size and
colour mode) and each mask's size at once, but pixels and masks are read on first access of
``rec.image`` / ``rec.exudate_mask`` / ``rec.hemorrhage_mask`` / ``rec.hemorrhage_centers``.
Raw data is only ever read, never written.

Mask rule (every dataset): a pixel is lesion when any colour channel (or the palette index) is
greater than 0, except for grey-level agreement maps (DIARETDB1), where it is lesion when the grey
level is at least ``threshold * 255``. A missing mask *folder* means "not annotated" (None); a
missing mask *file* inside an existing folder means "annotated, no lesion of that kind"
(all-False), which is how IDRiD distributes images without haemorrhages (IDRiD_43).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from . import _io

#: Dataset names accepted by :func:`load`.
DATASETS = (
    "synthetic", "skimage-retina", "idrid", "eophtha-ex", "diaretdb1", "kaggle", "messidor", "folder",
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_IGNORED_FILES = {"thumbs.db", "desktop.ini"}


class _Lazy:
    """A deferred value: ``fn()`` is called once, on first access of the field holding it."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn


@dataclass
class FundusImage:
    """One colour fundus photograph and whatever reference it comes with.

    ``image`` is HxWx3 uint8. Disk datasets load it lazily: pass ``loader`` (a callable returning
    the array) instead of ``image``; the first access reads the file and checks it. Masks are HxW
    bool of the image's size; ``hemorrhage_centers`` is (N, 2) float (row, col).
    ``fov`` is the exact field-of-view mask when the source knows it (synthetic data), else None.
    ``confounder_map`` (synthetic data only, else None) is HxW uint8: per pixel the code of the
    unlabelled bright confounder drawn there (:data:`CONFOUNDER_KINDS`, 0 = none). It is for
    analysis only (false positives per kind); no label or patch rule reads it.
    ``path`` is the image file and ``mask_paths`` the mask files used ({"exudate": ...,
    "hemorrhage": ...}) for disk datasets.

    ``exudate_mask``, ``hemorrhage_mask`` and ``hemorrhage_centers`` may also be given as a
    deferred value (what the disk loaders do); reading the attribute then computes and keeps it,
    so a record always *reads* as an array or None.
    """

    id: str
    patient_id: str
    image_: np.ndarray | None = field(default=None, repr=False)
    exudate_mask: np.ndarray | None = field(default=None, repr=False)
    hemorrhage_mask: np.ndarray | None = field(default=None, repr=False)
    hemorrhage_centers: np.ndarray | None = field(default=None, repr=False)
    grade: int | None = None
    quality: str | None = None
    source: str = ""
    fov: np.ndarray | None = field(default=None, repr=False)
    confounder_map: np.ndarray | None = field(default=None, repr=False, compare=False)
    path: str | None = None
    mask_paths: dict[str, str] | None = field(default=None, repr=False, compare=False)
    loader: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def image(self) -> np.ndarray:
        if self.image_ is None:
            if self.loader is None:
                raise ValueError(f"image {self.id!r} has neither pixels nor a loader")
            self.image_ = self.loader()
        return self.image_

    @image.setter
    def image(self, value: np.ndarray) -> None:
        self.image_ = value

    @property
    def has_exudates(self) -> bool | None:
        return None if self.exudate_mask is None else bool(self.exudate_mask.any())

    @property
    def has_hemorrhages(self) -> bool | None:
        if self.hemorrhage_mask is not None:
            return bool(self.hemorrhage_mask.any())
        if self.hemorrhage_centers is not None:
            return len(self.hemorrhage_centers) > 0
        return None

    def load_all(self) -> "FundusImage":
        """Read the image and every deferred mask now (raises on bad files); returns ``self``."""
        _ = self.image, self.exudate_mask, self.hemorrhage_mask, self.hemorrhage_centers
        return self


def _deferred_property(name: str) -> property:
    private = "_" + name

    def get(self):
        value = self.__dict__.get(private)
        if isinstance(value, _Lazy):
            value = value.fn()
            self.__dict__[private] = value
        return value

    def set(self, value):
        self.__dict__[private] = None if isinstance(value, property) else value

    get.__doc__ = f"``{name}`` (computed on first access when the loader deferred it)."
    return property(get, set)


for _name in ("exudate_mask", "hemorrhage_mask", "hemorrhage_centers"):
    setattr(FundusImage, _name, _deferred_property(_name))
del _name


def centers_from_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """Centroids (row, col) of the 8-connected components of a lesion mask, as (N, 2) float.

    Returns None for None and an empty (0, 2) array for an all-False mask. Components are ordered
    by their label (scan order of their first pixel), as ``scipy.ndimage.label`` numbers them.
    """
    if mask is None:
        return None
    mask = np.asarray(mask, bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), float)
    return np.asarray(ndimage.center_of_mass(mask, labels, np.arange(1, n + 1)), float).reshape(n, 2)


def load(name: str, root: str | os.PathLike | None = None, **options: Any) -> list[FundusImage]:
    """Load a fundus dataset as a list of :class:`FundusImage` records.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: ``"synthetic"`` (default data, no files needed),
        ``"skimage-retina"`` (one real photograph shipped with scikit-image), or a local copy of
        ``"idrid"``, ``"eophtha-ex"``, ``"diaretdb1"``, ``"kaggle"``, ``"messidor"``, ``"folder"``.
    root : path, optional
        The dataset's folder (required for disk datasets; layouts in ``data/README.md``). Ignored
        by ``"synthetic"`` and ``"skimage-retina"``.
    **options
        Loader options. ``synthetic``: see :func:`load_synthetic`. Disk loaders: ``verify``
        (default True: read every image and mask header now) plus ``subset`` for ``idrid``/
        ``diaretdb1``, ``threshold`` for ``diaretdb1``, ``missing`` for ``kaggle``.

    Returns
    -------
    list of FundusImage

    Raises
    ------
    ValueError
        Unknown dataset name or option, an invalid option value, or a bad file.
    FileNotFoundError
        ``root`` missing or not laid out as the loader expects.
    """
    if not isinstance(name, str) or name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    fn, accepted, needs_root = _LOADERS[name]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; "
            f"accepted options: {', '.join(sorted(accepted)) or '(none)'}"
        )
    if not needs_root:
        return fn(**options)
    return fn(_check_root(name, root), **options)


def _check_root(name: str, root) -> Path:
    if root is None or str(root) == "":
        raise ValueError(
            f"dataset {name!r} is read from your local copy: pass root='/path/to/{name}' "
            f"(layout in data/README.md)"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"data root {str(path)!r} for dataset {name!r} {what}; pass the folder holding the "
            "dataset"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Synthetic fundus generator
# ---------------------------------------------------------------------------------------------

#: Bump whenever the generator's output changes: it is part of the cache key.
#: v3 added the bright hard negatives (extra drusen, optic-disc rim, specular vessel reflections,
#: cotton-wool spots) and the per-pixel ``confounder_map``.
GENERATOR_VERSION = 3

#: Key of the random streams (kept at 2 since v2): a v3 image is its v2 image plus the new bright
#: confounders, drawn from the confounder stream after every v2 draw, so lesions, anatomy and the
#: v2 confounders (and with them every hemorrhage) are pixel for pixel what v2 drew.
_RNG_KEY = 2

#: Codes of ``FundusImage.confounder_map`` (index = code; 0 = no confounder). Expected numbers per
#: image at ``confounder_density=1`` (Poisson unless said otherwise), lengths at 512 px:
#:
#: * ``drusen``: pale-yellow round spots, sigma 1.5-3.5 px: 3 faint v2 spots (60 % near the
#:   macula) plus 6 brighter, exudate-coloured ones (70 % within 0.05-0.4 r of the fovea, often in
#:   small groups), the closest look-alike of a small hard exudate;
#: * ``disc_rim``: a bright peripapillary crescent hugging the optic disc (width 3-7 px, 90-200
#:   degrees of arc) in an image with probability ``min(1, 0.7 * density)``;
#: * ``vessel_reflex``: white specular streaks along the axis of vessels wider than 3.5 px
#:   (length 8-24 px, 4 per image), beside the arteries' faint light reflex of v2;
#: * ``cotton_wool``: fluffy white patches, 8-20 px long, 1 per image, within 0.15-0.6 r of the disc;
#: * ``sheen``: the v2 soft bright streaks (2 per image, elongated, near the macula).
#:
#: A pixel is marked where that confounder moves the colour by at least 20 % of the way to its own
#: colour (later kinds overwrite earlier ones) and is never marked on a lesion pixel.
CONFOUNDER_KINDS = ("none", "drusen", "disc_rim", "vessel_reflex", "cotton_wool", "sheen")

#: Defaults of ``load("synthetic", ...)``; every option is documented in :func:`load_synthetic`.
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "n_patients": 30,
    "seed": 0,
    "size": 512,
    "confounder_density": 1.0,
    "lesion_size": 1.0,
    "lesion_contrast": 1.0,
    "poor_fraction": 0.15,
    "cache": True,
}

#: Share of images per category in a synthetic dataset (largest-remainder rounding).
CATEGORY_FRACTIONS = {"healthy": 0.4, "exudates": 0.2, "hemorrhages": 0.2, "both": 0.2}


def _spot_field(shape, rows, cols, sigmas, amps, elong=None, angles=None):
    """Sum of (optionally elongated) Gaussian spots, each evaluated in its own bounding box only."""
    out = np.zeros(shape, np.float32)
    h, w = shape
    n = len(rows)
    elong = np.ones(n) if elong is None else elong
    angles = np.zeros(n) if angles is None else angles
    for r0, c0, s, a, e, t in zip(rows, cols, sigmas, amps, elong, angles):
        rad = int(np.ceil(3.5 * s * e)) + 1
        t0, t1 = max(int(r0) - rad, 0), min(int(r0) + rad + 1, h)
        l0, l1 = max(int(c0) - rad, 0), min(int(c0) + rad + 1, w)
        if t0 >= t1 or l0 >= l1:
            continue
        yy, xx = np.mgrid[t0:t1, l0:l1].astype(np.float32)
        dy, dx = yy - r0, xx - c0
        u = dy * np.sin(t) + dx * np.cos(t)
        v = -dy * np.cos(t) + dx * np.sin(t)
        out[t0:t1, l0:l1] += a * np.exp(-0.5 * ((u / (s * e)) ** 2 + (v / s) ** 2))
    return out


def _ellipse(r0, c0, ra, rb, angle, size):
    """Pixel indices (rows, cols) of a filled, rotated ellipse (``skimage.draw.ellipse``)."""
    from skimage.draw import ellipse

    return ellipse(r0, c0, max(ra, 0.6), max(rb, 0.6), shape=(size, size), rotation=angle)


def _vessel_paths(rng, disc, fovea, r, side, k, trunk_width, inside):
    """Centre lines (points, widths) of one branching vessel tree growing out of the optic disc.

    Four trunks (two temporal arcades that sweep around the macula, two straighter nasal
    vessels) plus two thin papillomacular vessels; each trunk branches twice recursively, widths
    taper along every branch and children are 0.55-0.75 times as wide as their parent.
    """
    theta_t = np.pi if side > 0 else 0.0  # direction from the disc towards the fovea
    step = 0.7
    paths = []

    def grow(p0, theta0, w0, length, curv, depth):
        n = max(int(length / step), 2)
        wiggle = np.cumsum(rng.normal(0, 0.035, n))
        wiggle = ndimage.uniform_filter1d(wiggle, 15, mode="nearest")
        theta = theta0 + curv * step * np.arange(n) + wiggle
        pts = np.asarray(p0, float) + np.cumsum(step * np.stack([np.sin(theta), np.cos(theta)], 1), 0)
        ok = inside(pts)
        stop = int(np.argmin(ok)) if not ok.all() else n
        if stop < 3:
            return
        pts, theta = pts[:stop], theta[:stop]
        widths = w0 * (1.0 - 0.55 * np.arange(stop) / n)
        paths.append((pts, widths))
        if depth == 0:
            return
        n_br = rng.poisson(stop * step / (70 * k)) + 1
        for j in rng.integers(stop // 6 + 1, max(stop - 5, stop // 6 + 2), size=n_br):
            j = min(int(j), stop - 1)
            cw = widths[j] * rng.uniform(0.55, 0.75)
            if cw < 0.9 * k:
                continue
            ang = theta[j] + rng.choice([-1, 1]) * rng.uniform(0.45, 1.1)
            grow(pts[j], ang, cw, rng.uniform(0.25, 0.55) * r * (cw / w0) ** 0.3, rng.normal(0, 1.0 / r), depth - 1)

    for sv in (1, -1):  # temporal arcades
        theta0 = theta_t + sv * (np.pi / 2 + rng.uniform(-0.35, 0.05))
        grow(disc, theta0, trunk_width * rng.uniform(0.9, 1.1), 1.6 * r, -sv * rng.uniform(1.0, 1.5) / r, 2)
    for sv in (1, -1):  # nasal vessels
        theta0 = theta_t + np.pi + sv * rng.uniform(0.5, 1.0)
        grow(disc, theta0, trunk_width * rng.uniform(0.7, 0.9), 0.9 * r, rng.normal(0, 0.4 / r), 2)
    for sv in (1, -1):  # thin papillomacular vessels
        theta0 = theta_t + sv * rng.uniform(0.15, 0.35)
        grow(disc, theta0, trunk_width * 0.35, 0.5 * r, 0.0, 0)
    return paths


def _vessel_profile(shape, paths, k):
    """Vessel opacity in [0, 1] and the local vessel width, from an exact distance transform.

    The centre lines are rasterised with their widths; every pixel takes the width of its nearest
    centre-line pixel and an opacity that falls from 1 on the axis to 0 at the wall (half a pixel
    of anti-aliasing), so crossings and tapering come out right without per-pixel loops.
    """
    width = np.zeros(shape, np.float32)
    if paths:
        pts = np.concatenate([p for p, _ in paths])
        ws = np.concatenate([w for _, w in paths]).astype(np.float32)
        ri, ci = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
        keep = (ri >= 0) & (ri < shape[0]) & (ci >= 0) & (ci < shape[1])
        np.maximum.at(width, (ri[keep], ci[keep]), ws[keep])
    if not width.any():
        return np.zeros(shape, np.float32), width
    dist, (ir, ic) = ndimage.distance_transform_edt(width == 0, return_indices=True)
    dist = dist.astype(np.float32)
    wn = width[ir, ic]
    half = wn / 2.0
    edge = np.clip(half + 0.5 - dist, 0.0, 1.0)
    core = np.sqrt(np.clip(1.0 - (dist / (half + 0.5)) ** 2, 0.0, 1.0))
    return (edge * (0.55 + 0.45 * core)).astype(np.float32), wn * (dist < half + 0.5)


def _render_fundus(rngs, size, eye, category, quality, confounder_density, lesion_size, lesion_contrast):
    """Draw one synthetic fundus; return (image, fov, exudate mask, hemorrhage mask, n_lesions, kinds).

    ``kinds`` is the uint8 confounder map (codes of :data:`CONFOUNDER_KINDS`).

    ``rngs`` holds four independent generators: anatomy, confounders, lesions, acquisition. So a
    knob changes only its own part: the same (seed, index) drawn as "healthy" and as "both"
    differs only where the lesions are (and within the blur's reach of them).
    """
    rng = rngs[0]
    S = int(size)
    k = S / 512.0
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)

    # field of view: a circle, in a third of the images cut flat at top and bottom by the frame
    cy, cx = S / 2 + rng.uniform(-0.015, 0.015) * S, S / 2 + rng.uniform(-0.015, 0.015) * S
    r = rng.uniform(0.44, 0.48) * S
    rad = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    band = r * (rng.uniform(0.82, 0.92) if rng.random() < 0.35 else 2.0)
    fov = (rad <= r) & (np.abs(yy - cy) <= band)

    def inside(pts, margin=0.0):
        d = np.hypot(pts[:, 0] - cy, pts[:, 1] - cx)
        return (d <= r - margin) & (np.abs(pts[:, 0] - cy) <= band - margin)

    # background: orange-red, radial illumination fall-off, a tilt, coarse and fine texture
    base = np.array([rng.uniform(195, 225), rng.uniform(85, 112), rng.uniform(35, 58)], np.float32)
    tilt = rng.uniform(0, 2 * np.pi)
    illum = 1.0 - rng.uniform(0.35, 0.5) * (rad / r) ** 2
    illum += rng.uniform(0.03, 0.09) * ((xx - cx) * np.cos(tilt) + (yy - cy) * np.sin(tilt)) / r
    g = max(S // 16, 4)
    coarse = ndimage.gaussian_filter(rng.standard_normal((g, g)).astype(np.float32), 1.0)
    coarse = ndimage.zoom(coarse, S / g, order=1)[:S, :S]
    fine = ndimage.gaussian_filter(rng.standard_normal((S, S)).astype(np.float32), 1.5 * k)
    illum = np.clip(illum, 0.05, None)
    tex = 1.0 + 0.06 * coarse + 0.12 * fine
    img = base[None, None, :] * (illum * tex)[..., None]

    # optic disc (bright, yellowish, with a paler cup) and the darker macula with the fovea
    side = 1.0 if eye == "R" else -1.0
    disc = (cy + rng.uniform(-0.06, 0.06) * r, cx + side * rng.uniform(0.40, 0.48) * r)
    rd = rng.uniform(0.12, 0.15) * r
    fovea = (disc[0] + rng.uniform(0.02, 0.08) * r, cx - side * rng.uniform(0.15, 0.25) * r)
    m0, m1 = max(int(fovea[0] - 0.64 * r), 0), min(int(fovea[0] + 0.64 * r) + 1, S)  # +-4 sigma box
    n0, n1 = max(int(fovea[1] - 0.64 * r), 0), min(int(fovea[1] + 0.64 * r) + 1, S)
    dfov2 = (yy[m0:m1, n0:n1] - fovea[0]) ** 2 + (xx[m0:m1, n0:n1] - fovea[1]) ** 2
    mac = np.exp(-0.5 * dfov2 / (0.16 * r) ** 2) * rng.uniform(0.25, 0.35)
    pit = np.exp(-0.5 * dfov2 / (0.035 * r) ** 2) * 0.15
    img[m0:m1, n0:n1] *= 1.0 - (mac + pit)[..., None] * np.array([0.7, 1.0, 0.9], np.float32)
    t0, l0 = max(int(disc[0] - rd) - 2, 0), max(int(disc[1] - rd) - 2, 0)  # the disc's box only
    t1, l1 = min(int(disc[0] + rd) + 3, S), min(int(disc[1] + rd) + 3, S)
    box = img[t0:t1, l0:l1]
    ddisc = np.sqrt((yy[t0:t1, l0:l1] - disc[0]) ** 2 + (xx[t0:t1, l0:l1] - disc[1]) ** 2)
    a_disc = np.clip((rd - ddisc) / (1.2 * k) + 0.5, 0, 1)[..., None] * 0.85
    box = box * (1 - a_disc) + a_disc * np.array([245, 195, 135], np.float32) * illum[t0:t1, l0:l1, None] ** 0.3
    cup = (np.exp(-0.5 * (ddisc / (0.4 * rd)) ** 2) * 0.6)[..., None]
    img[t0:t1, l0:l1] = box * (1 - cup) + cup * np.array([255, 238, 200], np.float32)

    # vessel trees: veins (wider, darker) and arteries (thinner, lighter, with a light reflex)
    ok = lambda p: inside(p, 2 * k) & (np.hypot(p[:, 0] - fovea[0], p[:, 1] - fovea[1]) > 0.07 * r)
    vein_paths = _vessel_paths(rng, disc, fovea, r, side, k, 6.5 * k, ok)
    art_paths = _vessel_paths(rng, disc, fovea, r, side, k, 4.8 * k, ok)
    vein, _ = _vessel_profile((S, S), vein_paths, k)
    art, art_w = _vessel_profile((S, S), art_paths, k)
    img *= 1.0 - vein[..., None] * np.array([0.42, 0.62, 0.5], np.float32)
    img *= 1.0 - art[..., None] * np.array([0.22, 0.45, 0.35], np.float32)
    reflex = ((art > 0.85) & (art_w > 3.8 * k)).astype(np.float32) * 0.18
    img += reflex[..., None] * (np.array([255, 240, 225], np.float32) - img)

    # unlabelled confounders: microaneurysm-sized dark dots, drusen-like spots, bright reflections
    inner = lambda p, m=6 * k: inside(p, m) & (np.hypot(p[:, 0] - disc[0], p[:, 1] - disc[1]) > 1.6 * rd)

    def sample_points(n, near=None, ring=(0.1, 0.4), p_near=0.0):
        pts = np.empty((0, 2))
        for _ in range(20):
            if len(pts) >= n:
                break
            m = 4 * n + 8
            cand = np.stack([rng.uniform(cy - r, cy + r, m), rng.uniform(cx - r, cx + r, m)], 1)
            if near is not None:
                sel = rng.random(m) < p_near
                rho = rng.uniform(*ring, m) * r
                phi = rng.uniform(0, 2 * np.pi, m)
                cand[sel] = np.asarray(near) + np.stack([rho * np.sin(phi), rho * np.cos(phi)], 1)[sel]
            pts = np.concatenate([pts, cand[inner(cand)]])
        return pts[:n]

    rng = rngs[1]
    cd = confounder_density
    n_ma, n_dr, n_rf = rng.poisson(4 * cd), rng.poisson(3 * cd), rng.poisson(2 * cd)
    p = sample_points(n_ma)
    # microaneurysm-like dots: flat-topped dark red discs of radius ~1.5-2.8 px, just below the
    # smallest hemorrhage (3 px) and coloured like one, so only their size tells them apart
    sig = rng.uniform(0.9, 1.6, len(p)) * k
    dark = _spot_field((S, S), p[:, 0], p[:, 1], sig, rng.uniform(1.5, 3.0, len(p)))
    img *= 1.0 - np.clip(dark, 0, rng.uniform(0.65, 0.9))[..., None] * np.array([0.5, 0.78, 0.72], np.float32)
    p = sample_points(n_dr, fovea, (0.05, 0.35), 0.6)
    pale = _spot_field((S, S), p[:, 0], p[:, 1], rng.uniform(1.5, 3.5, len(p)) * k, rng.uniform(0.3, 0.55, len(p)))
    p = sample_points(n_rf, fovea, (0.15, 0.45), 0.5)
    pale_rf = _spot_field((S, S), p[:, 0], p[:, 1], rng.uniform(2.0, 5.0, len(p)) * k, rng.uniform(0.25, 0.45, len(p)),
                          rng.uniform(1.5, 4.0, len(p)), rng.uniform(0, np.pi, len(p)))
    img += np.clip(pale, 0, 0.9)[..., None] * (np.array([235, 215, 150], np.float32) - img)
    img += np.clip(pale_rf, 0, 0.9)[..., None] * (np.array([250, 245, 235], np.float32) - img)
    kinds = np.zeros((S, S), np.uint8)
    kinds[np.clip(pale, 0, 0.9) >= 0.2] = 1
    kinds[np.clip(pale_rf, 0, 0.9) >= 0.2] = 5
    _bright_confounders(rng, img, kinds, cd, k, r, disc, rd, fovea, vein_paths + art_paths, sample_points)

    # lesions with exact masks, kept 4 px (at 512) inside the field of view
    rng = rngs[2]
    keep = fov & (rad <= r - 4 * k) & (np.abs(yy - cy) <= band - 4 * k)
    ex = np.zeros((S, S), bool)
    he = np.zeros((S, S), bool)
    n_lesions = 0
    ls, lc = lesion_size, lesion_contrast
    if category in ("exudates", "both"):
        n_cl = int(rng.integers(1, 5))
        n_lesions += n_cl
        for c in sample_points(n_cl, fovea, (0.12, 0.4), 0.7):
            nb = int(rng.integers(3, 13))
            centres = c + rng.normal(0, rng.uniform(0.03, 0.08) * r, (nb, 2))
            radii = np.exp(rng.uniform(np.log(1.5), np.log(6.5), nb)) * k * ls
            for (r0, c0), ra in zip(centres, radii):
                ex[_ellipse(r0, c0, ra, ra * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), S)] = True
                if rng.random() < 0.5:  # an attached lobe makes the outline irregular
                    off = rng.normal(0, ra * 0.7, 2)
                    ex[_ellipse(r0 + off[0], c0 + off[1], ra * 0.6, ra * 0.4, rng.uniform(0, np.pi), S)] = True
        ex &= keep
        amount = np.clip(lc * rng.uniform(0.6, 0.85) * (0.9 + 0.2 * fine[ex]), 0, 1)[:, None]
        img[ex] += amount * (np.array([250, 232, 115], np.float32) - img[ex])
    if category in ("hemorrhages", "both"):
        n_he = int(min(rng.geometric(0.25), 15))
        n_lesions += n_he
        strength = np.zeros((S, S), np.float32)
        for c in sample_points(n_he):
            kind = rng.choice(["dot", "blot", "flame"], p=[0.4, 0.35, 0.25])
            s_ = lc * rng.uniform(0.65, 1.0)
            if kind == "dot":
                ra = rng.uniform(3, 6) * k * ls
                strength[_ellipse(c[0], c[1], ra, ra * rng.uniform(0.85, 1.0), 0.0, S)] = s_
            elif kind == "blot":
                ra = rng.uniform(5, 16) * k * ls
                for _ in range(int(rng.integers(2, 5))):
                    off = rng.normal(0, ra * 0.35, 2)
                    px = _ellipse(c[0] + off[0], c[1] + off[1], ra * rng.uniform(0.5, 0.8),
                                  ra * rng.uniform(0.35, 0.7), rng.uniform(0, np.pi), S)
                    strength[px] = s_
            else:  # flame: elongated along the nerve fibres, i.e. radially from the disc
                L = rng.uniform(8, 20) * k * ls
                ang = np.arctan2(c[0] - disc[0], c[1] - disc[1])
                strength[_ellipse(c[0], c[1], L / rng.uniform(3, 5), L, -ang, S)] = s_
        he = (strength > 0) & keep
        interior = ndimage.distance_transform_edt(he)
        depth = np.where(he, strength * np.clip(0.7 + 0.1 * interior / k, 0, 1), 0)
        img *= 1.0 - np.clip(depth, 0, 0.95)[..., None] * np.array([0.5, 0.78, 0.72], np.float32)

    # acquisition: slight blur, poor quality (strong blur or low contrast), noise, black outside
    rng = rngs[3]
    if quality == "poor":
        if rng.random() < 0.5:
            img = ndimage.gaussian_filter(img, (rng.uniform(2.0, 3.5) * k,) * 2 + (0,))
        else:
            mean = img[fov].mean(0)
            img = (mean + (img - mean) * rng.uniform(0.4, 0.55)) * rng.uniform(0.7, 0.85)
    else:
        img = ndimage.gaussian_filter(img, (0.6 * k, 0.6 * k, 0))
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.where(fov[..., None], img + 2.0 * noise, 1.2 * np.abs(noise))
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    kinds[~fov | ex | he] = 0
    return out, fov, ex & fov, he & fov, n_lesions, kinds


def _bright_confounders(rng, img, kinds, cd, k, r, disc, rd, fovea, vessel_paths, sample_points):
    """Draw the v3 hard negatives into ``img`` and ``kinds`` in place (see :data:`CONFOUNDER_KINDS`)."""
    S = img.shape[0]

    def paint(alpha, colour, code):
        alpha = np.clip(alpha, 0, 0.95)
        img[...] += alpha[..., None] * (np.asarray(colour, np.float32) - img)
        kinds[alpha >= 0.2] = code

    # drusen: exudate-coloured round spots near the macula, often two or three together
    n = rng.poisson(6 * cd)
    p = sample_points(n, fovea, (0.05, 0.4), 0.7)
    if len(p):
        p = p + (rng.random(len(p)) < 0.5)[:, None] * rng.normal(0, 6 * k, (len(p), 2))
    paint(_spot_field((S, S), p[:, 0], p[:, 1], rng.uniform(1.5, 3.0, len(p)) * k, rng.uniform(0.6, 1.1, len(p))),
          [240, 222, 135], 1)
    # optic-disc rim: a bright crescent just outside the disc edge
    if rng.random() < min(1.0, 0.7 * cd):
        t0, l0 = max(int(disc[0] - 1.6 * rd), 0), max(int(disc[1] - 1.6 * rd), 0)
        t1, l1 = min(int(disc[0] + 1.6 * rd) + 1, S), min(int(disc[1] + 1.6 * rd) + 1, S)
        yy, xx = np.mgrid[t0:t1, l0:l1].astype(np.float32)
        d = np.hypot(yy - disc[0], xx - disc[1])
        width = rng.uniform(3, 7) * k
        phi0, arc = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(90, 200))
        dphi = np.angle(np.exp(1j * (np.arctan2(yy - disc[0], xx - disc[1]) - phi0)))
        ring = np.exp(-0.5 * ((d - rd - width / 2) / (width / 2.5)) ** 2)
        alpha = np.zeros((S, S), np.float32)
        alpha[t0:t1, l0:l1] = ring * np.clip(1.5 - 3 * np.abs(dphi) / arc, 0, 1) * rng.uniform(0.55, 0.8)
        paint(alpha, [250, 238, 195], 2)
    # specular reflections along the axis of wide vessels
    wide = [(pts, w) for pts, w in vessel_paths if len(pts) > 10 and w.max() > 3.5 * k]
    n = rng.poisson(4 * cd) if wide else 0
    rows, cols, angs = [], [], []
    for _ in range(n):
        pts, w = wide[int(rng.integers(len(wide)))]
        j = int(rng.integers(3, len(pts) - 3))
        d = pts[j + 2] - pts[j - 2]
        rows.append(pts[j, 0]); cols.append(pts[j, 1]); angs.append(np.arctan2(d[0], d[1]))
    ln = rng.uniform(8, 24, n) * k / 2.5
    paint(_spot_field((S, S), np.array(rows), np.array(cols), np.full(n, 1.1 * k), rng.uniform(0.7, 1.0, n),
                      ln / (1.1 * k), np.array(angs)), [255, 252, 245], 3)
    # cotton-wool spots: fluffy white patches, a few lobes, near the disc
    n = rng.poisson(1 * cd)
    p = sample_points(n, disc, (0.15, 0.6), 1.0)
    alpha = np.zeros((S, S), np.float32)
    for c in p:
        m = int(rng.integers(3, 6))
        L = rng.uniform(8, 20) * k
        off = rng.normal(0, L / 4, (m, 2))
        alpha += _spot_field((S, S), c[0] + off[:, 0], c[1] + off[:, 1], rng.uniform(0.12, 0.22, m) * L,
                             rng.uniform(0.35, 0.6, m), rng.uniform(1.0, 2.0, m), rng.uniform(0, np.pi, m))
    paint(alpha, [245, 242, 228], 4)


def _check_synthetic_options(n_patients, seed, size, confounder_density, lesion_size, lesion_contrast, poor_fraction):
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(n_patients) or n_patients < 1:
        raise ValueError(f"n_patients must be a positive integer, got {n_patients!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not is_int(size) or not 64 <= size <= 4096:
        raise ValueError(f"size must be an integer from 64 to 4096 pixels, got {size!r}")
    for key, value, hi in (("confounder_density", confounder_density, 10.0), ("lesion_size", lesion_size, 3.0),
                           ("lesion_contrast", lesion_contrast, 2.0), ("poor_fraction", poor_fraction, 1.0)):
        lo_ok = value >= 0 if key in ("confounder_density", "poor_fraction") else value > 0
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not lo_ok or value > hi:
            lo = "[0" if key in ("confounder_density", "poor_fraction") else "(0"
            raise ValueError(f"{key} must be a number in {lo}, {hi}], got {value!r}")


def _grade(n_lesions: int) -> int:
    """Synthetic grade from the lesion load (exudate clusters + hemorrhages; confounders ignored)."""
    if n_lesions == 0:
        return 0
    return 1 if n_lesions <= 3 else 2 if n_lesions <= 7 else 3


def _apportion(n: int, fractions: dict[str, float]) -> list[str]:
    """``n`` labels in the given proportions (largest-remainder rounding), in a fixed order."""
    counts = _io.largest_remainder(n, list(fractions.values()))
    return [k for k, c in zip(fractions, counts, strict=True) for _ in range(c)]


def synthetic_fundus(
    seed: int = 0,
    index: int = 0,
    *,
    size: int = 512,
    category: str = "both",
    quality: str = "good",
    eye: str = "R",
    confounder_density: float = 1.0,
    lesion_size: float = 1.0,
    lesion_contrast: float = 1.0,
) -> FundusImage:
    """One synthetic fundus photograph with exact ground truth.

    Parameters
    ----------
    seed, index : int
        The image is a pure function of ``(seed, index)`` and the other arguments.
    size : int
        Width = height in pixels (all geometry scales with ``size / 512``).
    category : {"healthy", "exudates", "hemorrhages", "both"}
        Which lesions to draw.
    quality : {"good", "poor"}
        ``"poor"`` images are strongly blurred or low in contrast.
    eye : {"R", "L"}
        Right eyes have the optic disc right of the fovea, left eyes left of it.
    confounder_density, lesion_size, lesion_contrast : float
        Difficulty knobs (see :func:`load_synthetic`).

    Returns
    -------
    FundusImage
        With ``image``, exact ``fov``, ``exudate_mask``, ``hemorrhage_mask`` (all-False when
        absent), ``hemorrhage_centers`` (centroids of the mask's 8-connected components) and
        ``grade``.
    """
    _check_synthetic_options(1, seed, size, confounder_density, lesion_size, lesion_contrast, 0.0)
    if category not in CATEGORY_FRACTIONS:
        raise ValueError(
            f"category must be one of {', '.join(CATEGORY_FRACTIONS)}, got {category!r}"
        )
    if quality not in ("good", "poor"):
        raise ValueError(f"quality must be 'good' or 'poor', got {quality!r}")
    if eye not in ("R", "L"):
        raise ValueError(f"eye must be 'R' or 'L', got {eye!r}")
    seq = np.random.SeedSequence([_RNG_KEY, int(seed), int(index)])
    rngs = [np.random.default_rng(s) for s in seq.spawn(4)]
    img, fov, ex, he, n, kinds = _render_fundus(rngs, size, eye, category, quality, float(confounder_density),
                                         float(lesion_size), float(lesion_contrast))
    return FundusImage(
        id=f"syn{seed}-{index:04d}", patient_id=f"syn{seed}-p{index // 2:03d}", image_=img, exudate_mask=ex,
        hemorrhage_mask=he, hemorrhage_centers=centers_from_mask(he), grade=_grade(n), quality=quality,
        source="synthetic", fov=fov, confounder_map=kinds,
    )


def _synthetic_plan(n_patients: int, seed: int, poor_fraction: float) -> list[tuple[str, str, str]]:
    """(category, quality, eye) for each of the ``2 * n_patients`` images, shuffled by ``seed``."""
    n = 2 * n_patients
    rng = np.random.default_rng([_RNG_KEY, seed, 999_983])
    cats = rng.permutation(np.array(_apportion(n, CATEGORY_FRACTIONS)))
    n_poor = int(round(poor_fraction * n))
    poor = np.zeros(n, bool)
    poor[rng.permutation(n)[:n_poor]] = True
    return [(str(c), "poor" if p else "good", "R" if i % 2 == 0 else "L") for i, (c, p) in enumerate(zip(cats, poor))]


def synthetic_cache_path(**options: Any) -> Path:
    """Cache file of the synthetic dataset with these options (defaults filled in)."""
    params = {k: v for k, v in {**SYNTHETIC_DEFAULTS, **options}.items() if k != "cache"}
    params = {k: (float(v) if isinstance(v, float) else v) for k, v in sorted(params.items())}
    key = json.dumps({"generator": GENERATOR_VERSION, **params}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _io.cache_dir() / f"synthetic-v{GENERATOR_VERSION}-{digest}.npz"


def load_synthetic(
    n_patients: int = 30,
    seed: int = 0,
    size: int = 512,
    confounder_density: float = 1.0,
    lesion_size: float = 1.0,
    lesion_contrast: float = 1.0,
    poor_fraction: float = 0.15,
    cache: bool = True,
) -> list[FundusImage]:
    """The synthetic dataset: ``2 * n_patients`` images (two eyes per patient), exact ground truth.

    Composition: 40 % healthy, 20 % exudates only, 20 % hemorrhages only, 20 % both (rounded by
    largest remainder, shuffled by ``seed``); ``poor_fraction`` of the images are "poor" quality.
    Every image, healthy ones included, carries the unlabelled confounders: vessels and their
    crossings, the dark fovea, the bright optic disc, microaneurysm-sized dark dots, drusen-like
    pale spots and bright reflections (soft streaks and the arteries' light reflex).

    Parameters
    ----------
    n_patients : int, default 30
        60 images.
    seed : int, default 0
        Same seed, same pixels.
    size : int, default 512
        Image side in pixels; every length below is quoted at 512 and scales with ``size/512``.
    confounder_density : float, default 1.0
        Multiplies the expected number of every unlabelled confounder: microaneurysm-like dots
        (4 per image), faint drusen-like spots (3), soft bright streaks (2) and the bright hard
        negatives of :data:`CONFOUNDER_KINDS` (6 exudate-coloured drusen, the optic-disc rim
        crescent with probability 0.7, 4 specular vessel reflections, 1 cotton-wool spot). 0
        removes them all. They stay rare (about 0.5 % of the field of view), so a network trained
        on uniformly drawn negatives sees the background quickly but seldom a confounder; each
        drawn pixel's kind is kept in ``confounder_map`` for analysis only.
    lesion_size : float, default 1.0
        Multiplies lesion radii: exudate blobs 1.5-6.5 px, hemorrhages 3-6 px (dots), 5-16 px
        (blots, made of 2-4 ellipses), 8-20 px long (flames).
    lesion_contrast : float, default 1.0
        Multiplies how far lesions move from the background colour (towards yellow for exudates,
        towards dark red for hemorrhages); 0.5 makes them faint.
    poor_fraction : float, default 0.15
        Share of images with quality "poor" (strong blur or low contrast).
    cache : bool, default True
        Keep the generated dataset in ``_io.cache_dir()`` keyed by a hash of all the options
        above and :data:`GENERATOR_VERSION`; a second call reads it back.

    Returns
    -------
    list of FundusImage
        Ids ``syn<seed>-NNNN``; patient ids ``syn<seed>-pNNN`` (images ``2p`` and ``2p+1``, eyes R
        and L); masks all-False on lesion-free images; ``grade`` 0 healthy, 1-3 by lesion count
        (exudate clusters + hemorrhages: <=3, <=7, more).
    """
    _check_synthetic_options(n_patients, seed, size, confounder_density, lesion_size, lesion_contrast, poor_fraction)
    if not isinstance(cache, bool):
        raise ValueError(f"cache must be True or False, got {cache!r}")
    opts = dict(n_patients=int(n_patients), seed=int(seed), size=int(size), confounder_density=float(confounder_density),
                lesion_size=float(lesion_size), lesion_contrast=float(lesion_contrast), poor_fraction=float(poor_fraction))
    path = synthetic_cache_path(**opts)
    if cache and path.is_file():
        try:
            return _read_synthetic_cache(path)
        except Exception:  # a damaged cache is regenerated, never trusted
            pass
    knobs = {k: opts[k] for k in ("size", "confounder_density", "lesion_size", "lesion_contrast")}
    plan = _synthetic_plan(opts["n_patients"], opts["seed"], opts["poor_fraction"])
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda it, **kw: it  # noqa: E731
    records = [
        synthetic_fundus(opts["seed"], i, category=c, quality=q, eye=e, **knobs)
        for i, (c, q, e) in enumerate(tqdm(plan, desc="synthetic fundus", leave=False))
    ]
    if cache:
        try:
            _write_synthetic_cache(path, records, opts)
        except OSError as err:  # a read-only checkout still gets its data, only slower next time
            import warnings

            warnings.warn(f"could not write the synthetic-data cache {str(path)!r} ({err}); continuing without it")
    return records


def _write_synthetic_cache(path: Path, records: list[FundusImage], opts: dict) -> None:
    centers = [r.hemorrhage_centers for r in records]
    meta = [{"id": r.id, "patient_id": r.patient_id, "grade": r.grade, "quality": r.quality} for r in records]
    _io.atomic_save_npz(
        path,
        image=np.stack([r.image for r in records]),
        exudate_mask=np.packbits(np.stack([r.exudate_mask for r in records]), axis=-1),
        hemorrhage_mask=np.packbits(np.stack([r.hemorrhage_mask for r in records]), axis=-1),
        fov=np.packbits(np.stack([r.fov for r in records]), axis=-1),
        confounder_map=np.stack([r.confounder_map for r in records]),
        centers=np.concatenate(centers) if centers else np.zeros((0, 2)),
        n_centers=np.array([len(c) for c in centers], np.int64),
        meta=np.array(json.dumps({"records": meta, "options": opts, "generator": GENERATOR_VERSION})),
    )


def _read_synthetic_cache(path: Path) -> list[FundusImage]:
    with np.load(path, allow_pickle=False) as z:
        images = z["image"]
        size = images.shape[2]
        unpack = lambda a: np.unpackbits(a, axis=-1, count=size).astype(bool)  # noqa: E731
        ex, he, fov = unpack(z["exudate_mask"]), unpack(z["hemorrhage_mask"]), unpack(z["fov"])
        kinds = z["confounder_map"]
        centers = np.split(z["centers"], np.cumsum(z["n_centers"])[:-1])
        meta = json.loads(str(z["meta"]))["records"]
    return [
        FundusImage(id=m["id"], patient_id=m["patient_id"], image_=images[i], exudate_mask=ex[i], hemorrhage_mask=he[i],
                    hemorrhage_centers=centers[i].reshape(-1, 2), grade=m["grade"], quality=m["quality"],
                    source="synthetic", fov=fov[i], confounder_map=kinds[i])
        for i, m in enumerate(meta)
    ]


def load_skimage_retina() -> list[FundusImage]:
    """``skimage.data.retina()``: one real, healthy colour fundus photograph (CC0), no masks."""
    from skimage import data as skdata

    image = np.ascontiguousarray(skdata.retina()[..., :3]).astype(np.uint8)
    return [FundusImage(id="skimage-retina", patient_id="skimage-retina", image_=image, grade=0, quality="good",
                        source="skimage-retina")]


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_TIFF = (".tif", ".tiff")


def _unreadable(path: Path, err: Exception) -> ValueError:
    return ValueError(
        f"cannot read image file {str(path)!r}: it is unreadable or truncated ({err}); "
        f"replace it with an intact copy from the dataset's publisher"
    )


def _grey_error(path: Path) -> ValueError:
    return ValueError(
        f"image {str(path)!r} is grayscale (one channel); a colour fundus photograph (RGB) is "
        f"required: use the original colour image, not a green-channel or converted copy"
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header only; grayscale images are refused."""
    path = Path(path)
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
    except Exception as err:  # PIL cannot parse every TIFF flavour: ask tifffile
        if path.suffix.lower() not in _TIFF:
            raise _unreadable(path, err) from err
        try:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                shape = tf.pages[0].shape
        except Exception as err2:
            raise _unreadable(path, err2) from err2
        if len(shape) == 2:
            raise _grey_error(path)
        return int(shape[0]), int(shape[1])
    if mode in _GREY_MODES:
        raise _grey_error(path)
    return int(h), int(w)


def _to_rgb_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 2)):
        raise _grey_error(path)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(
            f"image {str(path)!r} has shape {arr.shape}; expected height x width x 3 (RGB) colour "
            "pixels"
        )
    if arr.dtype == np.uint16:  # 16-bit colour: scale to 8 bits
        arr = np.round(arr / 257.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(
            f"image {str(path)!r} has {arr.dtype} pixels; save it as an 8-bit RGB image"
        )
    if arr.shape[2] == 4:
        if not (arr[..., 3] == 255).all():
            raise ValueError(
                f"image {str(path)!r} is RGBA with transparent pixels; save it as an RGB image "
                f"(an all-opaque alpha channel is dropped automatically)"
            )
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour fundus photograph as HxWx3 uint8.

    Palette, CMYK and YCbCr images are converted to RGB; an RGBA image whose alpha is fully opaque
    loses its alpha channel; 16-bit colour is scaled to 8 bits (``round(v / 257)``).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unreadable or truncated file, grayscale image, RGBA with transparent pixels.
    """
    path = Path(path)
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            if im.mode in _GREY_MODES:
                raise _grey_error(path)
            arr = np.asarray(im)
    except ValueError:
        raise
    except Exception as err:
        if path.suffix.lower() not in _TIFF:
            raise _unreadable(path, err) from err
        try:
            import tifffile

            arr = tifffile.imread(path)
        except Exception as err2:
            raise _unreadable(path, err2) from err2
    return _to_rgb_uint8(arr, path)


def read_mask(path: str | os.PathLike, threshold: float | None = None) -> np.ndarray:
    """Read a lesion mask as HxW bool, whatever its encoding.

    Palette images (1-bit palette TIFF: index 1 = lesion) are read as their palette *index*;
    grey, RGB and RGBA masks as their colour values (the alpha channel only counts when every
    colour channel is 0 everywhere). A pixel is lesion when the largest value is > 0, or, for
    grey-level agreement maps (``threshold`` given, a fraction of full scale), when it is
    ``>= threshold * 255 - 0.5`` (``* 65535`` for 16-bit maps), so 191 counts as 0.75.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
    arr = None
    if path.suffix.lower() in _TIFF:
        try:
            import tifffile

            arr = tifffile.imread(path)
        except Exception:
            arr = None
    if arr is None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
        except Exception as err:
            raise ValueError(
                f"cannot read mask file {str(path)!r}: it is unreadable or truncated ({err}); "
                f"replace it with an intact copy from the dataset's publisher"
            ) from err
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (2, 3, 4) and arr.shape[-1] not in (2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF
    if arr.ndim == 3:
        c = arr.shape[2]
        colour = arr[..., : c - 1] if c in (2, 4) else arr
        values = colour.max(-1) if colour.any() or c not in (2, 4) else arr[..., -1]
    elif arr.ndim == 2:
        values = arr
    else:
        raise ValueError(
            f"mask file {str(path)!r} has shape {arr.shape}; expected a 2-D mask or an RGB(A) "
            "image"
        )
    if threshold is None or values.dtype == bool:
        return values > 0
    full = 65535.0 if values.dtype == np.uint16 else 1.0 if values.dtype.kind == "f" else 255.0
    return values >= threshold * full - 0.5  # within half a grey level: 191 counts as 0.75 of 255


def _checked_mask(path: Path, image_path: Path, shape: tuple[int, int] | None, threshold: float | None) -> np.ndarray:
    mask = read_mask(path, threshold)
    shape = shape or image_size(image_path)
    if mask.shape != tuple(shape):
        raise _size_error(path, mask.shape, image_path, shape)
    return mask


def _size_error(mask_path: Path, mshape, image_path: Path, ishape) -> ValueError:
    return ValueError(
        f"mask {str(mask_path)!r} is {mshape[1]}x{mshape[0]} pixels but its image {str(image_path)!r} is "
        f"{ishape[1]}x{ishape[0]}; a mask must have its image's size: check that it belongs to that image"
    )


def _mask_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except Exception:
        return read_mask(path).shape


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower() not in _IGNORED_FILES


def _list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` (any case of extension), hidden files and Thumbs.db ignored."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _file_index(folder: Path | None) -> dict[str, Path]:
    """Lower-case file name -> path for the files of ``folder`` ({} when it does not exist)."""
    if folder is None or not folder.is_dir():
        return {}
    return {p.name.lower(): p for p in folder.iterdir() if p.is_file() and _visible(p)}


_MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")


def _find(index: dict[str, Path], stem: str, exts=_MASK_EXTENSIONS) -> Path | None:
    """The file ``stem + ext`` for the first ext that exists (any case), else None."""
    for ext in exts:
        hit = index.get((stem + ext).lower())
        if hit is not None:
            return hit
    return None


def _found(folder: Path) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if _visible(p))
    except OSError:
        return "(unreadable)"
    if not names:
        return "nothing (empty folder)"
    return ", ".join(repr(n) for n in names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _layout_error(dataset: str, parent: Path, missing: str, expected: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{dataset} layout not found: folder {missing!r} is missing in {str(parent)!r} (expected {expected}); "
        f"found {_found(parent)}. Point root at the dataset's top folder (see data/README.md)"
    )


def _record(
    image_path: Path, rec_id: str, patient_id: str, source: str, *, exudate=None, hemorrhage=None,
    centers=None, grade=None, quality=None, threshold=None, verify=True,
) -> FundusImage:
    """A lazy record. ``exudate``/``hemorrhage``: a mask Path, False (annotated, no lesion) or None."""
    shape = image_size(image_path) if verify else None
    if verify:
        for m in (exudate, hemorrhage):
            if isinstance(m, Path):
                ms = _mask_size(m)
                if ms != shape:
                    raise _size_error(m, ms, image_path, shape)

    def mask_value(spec):
        if spec is None:
            return None
        if spec is False:
            return _Lazy(lambda: np.zeros(shape or image_size(image_path), bool))
        return _Lazy(lambda: _checked_mask(spec, image_path, shape, threshold))

    rec = FundusImage(
        id=rec_id, patient_id=patient_id, exudate_mask=mask_value(exudate), hemorrhage_mask=mask_value(hemorrhage),
        grade=grade, quality=quality, source=source, path=str(image_path), loader=lambda: read_image(image_path),
        mask_paths={k: str(v) for k, v in (("exudate", exudate), ("hemorrhage", hemorrhage)) if isinstance(v, Path)},
    )
    if centers is not None:
        rec.hemorrhage_centers = np.asarray(centers, float).reshape(-1, 2)
    elif hemorrhage is not None:
        rec.hemorrhage_centers = _Lazy(lambda: centers_from_mask(rec.hemorrhage_mask))
    return rec


def _check_verify(verify) -> bool:
    if not isinstance(verify, bool):
        raise ValueError(f"verify must be True or False, got {verify!r}")
    return verify


def _check_subset(subset) -> str:
    if subset not in ("all", "train", "test"):
        raise ValueError(f"subset must be 'all', 'train' or 'test', got {subset!r}")
    return subset


# ---------------------------------------------------------------------------------------------
# Dataset loaders
# ---------------------------------------------------------------------------------------------

_IDRID_SETS = {"train": "a. Training Set", "test": "b. Testing Set"}


def load_idrid(root: Path, subset: str = "all", verify: bool = True) -> list[FundusImage]:
    """IDRiD, segmentation part (``A. Segmentation``): hard exudates and haemorrhages.

    ``root`` is the folder holding ``A. Segmentation`` (or that folder itself). ``subset``:
    "train", "test" or "all" (every set present). ``EX`` masks give ``exudate_mask``, ``HE``
    masks ``hemorrhage_mask`` and ``hemorrhage_centers`` (component centroids). A missing lesion
    folder gives None; a missing file in an existing folder gives an all-False mask (IDRiD ships
    no mask for an image without that lesion, e.g. IDRiD_43 has no HE mask). IDRiD publishes no
    patient ids: each image is its own patient. Ids are the file stems (``IDRiD_01``).
    """
    subset, verify = _check_subset(subset), _check_verify(verify)
    seg = root / "A. Segmentation" if (root / "A. Segmentation").is_dir() else root
    expected = "'A. Segmentation/1. Original Images/a. Training Set/IDRiD_NN.jpg'"
    img_root = seg / "1. Original Images"
    if not img_root.is_dir():
        raise _layout_error("IDRiD", seg, "1. Original Images" if seg is not root else "A. Segmentation", expected)
    wanted = list(_IDRID_SETS) if subset == "all" else [subset]
    present = [s for s in wanted if (img_root / _IDRID_SETS[s]).is_dir()]
    if not present:
        raise _layout_error("IDRiD", img_root, " or ".join(_IDRID_SETS[s] for s in wanted), expected)
    records = []
    for s in present:
        gt = seg / "2. All Segmentation Groundtruths" / _IDRID_SETS[s]
        ex_dir, he_dir = gt / "3. Hard Exudates", gt / "2. Haemorrhages"
        ex_idx, he_idx = _file_index(ex_dir), _file_index(he_dir)
        for img in _list_images(img_root / _IDRID_SETS[s]):
            ex = (_find(ex_idx, img.stem + "_EX", _TIFF) or False) if ex_dir.is_dir() else None
            he = (_find(he_idx, img.stem + "_HE", _TIFF) or False) if he_dir.is_dir() else None
            records.append(_record(img, img.stem, img.stem, "idrid", exudate=ex, hemorrhage=he, verify=verify))
    if not records:
        sets = ", ".join(_IDRID_SETS[s] for s in present)
        raise FileNotFoundError(f"no images (.jpg, .png, .tif) found in {str(img_root)!r} ({sets})")
    return records


def load_eophtha_ex(root: Path, verify: bool = True) -> list[FundusImage]:
    """e-ophtha EX: exudate images with 0/255 masks, plus healthy images (all-False masks).

    ``root`` is the folder holding ``e_optha_EX`` (or that folder itself). Patient ids are the
    patient folder names. An exudate image without its ``<image>_EX.png`` annotation gets
    ``exudate_mask=None`` (unknown), not an empty mask. No haemorrhage reference (None).
    """
    verify = _check_verify(verify)
    base = root / "e_optha_EX" if (root / "e_optha_EX").is_dir() else root
    ex_dir, ann_dir, healthy_dir = base / "EX", base / "Annotation_EX", base / "healthy"
    if not ex_dir.is_dir() and not healthy_dir.is_dir():
        expected = "'e_optha_EX/EX/<patient>/<image>.jpg' and/or 'e_optha_EX/healthy/<patient>/'"
        raise _layout_error("e-ophtha EX", base, "EX", expected)
    records = []
    if ex_dir.is_dir():
        for patient in _subdirs(ex_dir):
            idx = _file_index(ann_dir / patient.name)
            for img in _list_images(patient):
                mask = _find(idx, img.stem + "_EX")
                records.append(_record(img, img.stem, patient.name, "eophtha-ex", exudate=mask, verify=verify))
    if healthy_dir.is_dir():
        for patient in _subdirs(healthy_dir):
            for img in _list_images(patient):
                records.append(_record(img, img.stem, patient.name, "eophtha-ex", exudate=False, grade=0, verify=verify))
    if not records:
        raise FileNotFoundError(
            f"no images found under {str(base)!r} (expected EX/<patient>/<image>.jpg or "
            "healthy/<patient>/<image>.jpg)"
        )
    ids = [r.id for r in records]
    if len(set(ids)) < len(ids):  # the same file name under two patients: qualify every id
        for r in records:
            r.id = f"{r.patient_id}/{r.id}"
    return records


def load_diaretdb1(root: Path, subset: str = "all", threshold: float = 0.75, verify: bool = True) -> list[FundusImage]:
    """DIARETDB1 v1.1: grey-level agreement maps thresholded at ``threshold`` (fraction of 255).

    ``root`` holds ``resources/`` (or is it). ``subset`` "train"/"test" reads the official split
    lists (``resources/traindatasets/trainset.txt``, ``resources/testdatasets/testset.txt``).
    ``hardexudates`` maps give ``exudate_mask``, ``hemorrhages`` maps ``hemorrhage_mask``.
    """
    subset, verify = _check_subset(subset), _check_verify(verify)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(
            "threshold must be a fraction in (0, 1] of the 255 grey levels (0.75 is usual), got "
            f"{threshold!r}"
        )
    res = root / "resources" if (root / "resources").is_dir() else root
    img_dir = res / "images" / "ddb1_fundusimages"
    expected = "'resources/images/ddb1_fundusimages/imageNNN.png'"
    if not (res / "images").is_dir():
        raise _layout_error("DIARETDB1", res, "images" if res is not root else "resources", expected)
    if not img_dir.is_dir():
        raise _layout_error("DIARETDB1", res / "images", "ddb1_fundusimages", expected)
    images = _list_images(img_dir)
    if subset != "all":
        split = res / ("traindatasets/trainset.txt" if subset == "train" else "testdatasets/testset.txt")
        if not split.is_file():
            raise FileNotFoundError(
                f"DIARETDB1 split list {str(split)!r} is missing; use subset='all' or restore the "
                "file"
            )
        stems = {Path(line.strip().replace("\\", "/")).stem for line in split.read_text().splitlines() if line.strip()}
        images = [p for p in images if p.stem in stems]
    gt = res / "images" / "ddb1_groundtruth"
    ex_dir, he_dir = gt / "hardexudates", gt / "hemorrhages"
    ex_idx, he_idx = _file_index(ex_dir), _file_index(he_dir)
    records = []
    for img in images:
        ex = (_find(ex_idx, img.stem) or False) if ex_dir.is_dir() else None
        he = (_find(he_idx, img.stem) or False) if he_dir.is_dir() else None
        records.append(_record(img, img.stem, img.stem, "diaretdb1", exudate=ex, hemorrhage=he,
                               threshold=float(threshold), verify=verify))
    if not records:
        raise FileNotFoundError(f"no images found in {str(img_dir)!r} for subset {subset!r}")
    return records


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts with stripped column names; checks the required columns."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(fh, dialect=dialect)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in required if c not in fields]
        if missing:
            raise ValueError(
                f"{what} {str(path)!r} lacks column(s) {', '.join(map(repr, missing))}; "
                f"found columns {fields}; it needs {', '.join(map(repr, required))}"
            )
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _int_value(value: str, path: Path, column: str, row: int) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(
            f"{str(path)!r} row {row}: column {column!r} holds {value!r}, not a number; fix that "
            "row"
        ) from None


def load_kaggle(root: Path, missing: str = "error", verify: bool = True) -> list[FundusImage]:
    """Kaggle Diabetic Retinopathy Detection (training part): grades only, no masks.

    Reads ``trainLabels.csv`` (``image,level``) and ``train/<id>_{left,right}.jpeg``; the patient
    id is the part before ``_left``/``_right``. Images missing from ``train/`` raise, unless
    ``missing="skip"`` (for a partial download); images not in the CSV are ignored.
    ``verify=True`` reads every header (about a minute for the full 35,126 images).
    """
    verify = _check_verify(verify)
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    labels, train = root / "trainLabels.csv", root / "train"
    if not labels.is_file():
        raise FileNotFoundError(
            f"Kaggle layout not found: 'trainLabels.csv' is missing in {str(root)!r} (expected "
            f"trainLabels.csv and train/<id>_left.jpeg); found {_found(root)}"
        )
    if not train.is_dir():
        raise _layout_error("Kaggle", root, "train", "'train/<id>_left.jpeg'")
    idx = {p.stem: p for p in _list_images(train)}
    records, absent = [], []
    for i, row in enumerate(_read_csv(labels, ("image", "level"), "Kaggle label file"), start=2):
        img = idx.get(row["image"])
        if img is None:
            absent.append(row["image"])
            continue
        stem = row["image"]
        patient = stem.rsplit("_", 1)[0] if stem.lower().endswith(("_left", "_right")) else stem
        grade = _int_value(row["level"], labels, "level", i)
        records.append(_record(img, stem, patient, "kaggle", grade=grade, verify=verify))
    if absent and missing == "error":
        raise FileNotFoundError(
            f"{len(absent)} image(s) listed in {str(labels)!r} are not in {str(train)!r} (first: {absent[:3]}); "
            f"complete the download or pass missing='skip'"
        )
    if not records:
        raise FileNotFoundError(
            f"none of the images listed in {str(labels)!r} is in {str(train)!r}"
        )
    return records


def load_messidor(root: Path, verify: bool = True) -> list[FundusImage]:
    """Messidor: ``Base11`` ... ``Base34`` folders of ``.tif`` images with retinopathy grades.

    Each base's annotation ``Annotation_BaseXY`` is read from a CSV export (``.csv``, same
    columns: ``Image name``, ``Retinopathy grade``, ...) in the base folder or in ``root``.
    The original ``.xls`` needs the ``xlrd`` package, which is not installed: a base with only
    the ``.xls`` raises and says how to export it. No masks; each image is its own patient.
    """
    verify = _check_verify(verify)
    bases = [d for d in _subdirs(root) if d.name.lower().startswith("base")]
    if not bases:
        raise FileNotFoundError(
            f"Messidor layout not found: no 'Base11' ... 'Base34' folder in {str(root)!r}; found "
            f"{_found(root)}"
        )
    records = []
    root_idx = _file_index(root)
    for base in bases:
        idx = _file_index(base)
        stem = f"annotation_{base.name}"
        ann = _find(idx, stem, (".csv",)) or _find(root_idx, stem, (".csv",))
        if ann is None:
            xls = _find(idx, stem, (".xls", ".xlsx")) or _find(root_idx, stem, (".xls", ".xlsx"))
            if xls is not None:
                raise ValueError(
                    f"cannot read {str(xls)!r}: Excel files need the xlrd package, which fundus_nb does not install; "
                    f"open it in a spreadsheet program and save it as '{xls.with_suffix('.csv').name}' "
                    "(CSV, same columns) next to it"
                )
            raise FileNotFoundError(
                f"Messidor annotation 'Annotation_{base.name}.csv' (or .xls) is missing in "
                f"{str(base)!r}; found {_found(base)}"
            )
        for i, row in enumerate(_read_csv(ann, ("Image name", "Retinopathy grade"), "Messidor annotation"), start=2):
            name = row["Image name"]
            img = idx.get(name.lower()) or _find(idx, Path(name).stem, (".tif", ".tiff", ".jpg", ".png"))
            if img is None:
                raise FileNotFoundError(
                    f"image {name!r} listed in {str(ann)!r} is not in {str(base)!r}; restore it "
                    "or remove its row"
                )
            grade = _int_value(row["Retinopathy grade"], ann, "Retinopathy grade", i)
            records.append(_record(img, img.stem, img.stem, "messidor", grade=grade, verify=verify))
    return records


def load_folder(root: Path, verify: bool = True) -> list[FundusImage]:
    """A generic layout for your own images (see ``data/README.md``)::

        root/images/<stem>.<png|jpg|tif|...>
        root/masks/<stem>_EX.png, <stem>_HE.png            (optional)
        root/hemorrhage_centers.csv  image,row,col          (optional)
        root/labels.csv              image[,patient_id][,grade][,quality]   (optional)

    Masks: when ``masks/`` holds at least one ``*_EX`` file, exudates count as annotated and an
    image without one gets an all-False mask; with no ``*_EX`` file at all, ``exudate_mask`` is
    None. The same for ``*_HE``. Hemorrhage centres come from the CSV when it exists (an image
    without rows has none), else from the HE mask's components. ``image`` columns may hold the
    file name or its stem.
    """
    verify = _check_verify(verify)
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise _layout_error("folder", root, "images", "'images/<name>.png' plus optional 'masks/<name>_EX.png', '<name>_HE.png'")
    images = _list_images(img_dir)
    if not images:
        raise FileNotFoundError(
            f"no images (.png, .jpg, .jpeg, .tif, .tiff, .bmp) in {str(img_dir)!r}; found "
            f"{_found(img_dir)}"
        )
    by_stem = {p.stem: p for p in images}
    names = {p.name for p in images}

    def key(s: str) -> str:  # a CSV may name an image by file name or by stem
        return Path(s).stem if s in names or Path(s).suffix.lower() in IMAGE_EXTENSIONS else s

    midx = _file_index(root / "masks")
    has_ex = any(Path(n).stem.endswith("_ex") for n in midx)
    has_he = any(Path(n).stem.endswith("_he") for n in midx)
    centers = None
    cpath = root / "hemorrhage_centers.csv"
    if cpath.is_file():
        centers = {s: [] for s in by_stem}
        for i, row in enumerate(_read_csv(cpath, ("image", "row", "col"), "hemorrhage centre file"), start=2):
            s = key(row["image"])
            if s not in centers:
                raise ValueError(
                    f"{str(cpath)!r} row {i} names image {row['image']!r}, which is not in "
                    f"{str(img_dir)!r}; fix or remove that row"
                )
            try:
                centers[s].append((float(row["row"]), float(row["col"])))
            except ValueError:
                raise ValueError(
                    f"{str(cpath)!r} row {i}: row/col must be numbers, got {row['row']!r}, "
                    f"{row['col']!r}"
                ) from None
    labels = {}
    lpath = root / "labels.csv"
    if lpath.is_file():
        for i, row in enumerate(_read_csv(lpath, ("image",), "label file"), start=2):
            s = key(row["image"])
            if s not in by_stem:
                raise ValueError(
                    f"{str(lpath)!r} row {i} names image {row['image']!r}, which is not in "
                    f"{str(img_dir)!r}; fix or remove that row"
                )
            if row.get("grade"):
                row["grade"] = _int_value(row["grade"], lpath, "grade", i)
            if row.get("quality") and row["quality"] not in ("good", "poor"):
                raise ValueError(
                    f"{str(lpath)!r} row {i}: quality must be 'good' or 'poor', got "
                    f"{row['quality']!r}"
                )
            labels[s] = row
    records = []
    for s, img in by_stem.items():
        lab = labels.get(s, {})
        ex = (_find(midx, s + "_EX") or False) if has_ex else None
        he = (_find(midx, s + "_HE") or False) if has_he else None
        records.append(_record(
            img, s, lab.get("patient_id") or s, "folder", exudate=ex, hemorrhage=he,
            centers=None if centers is None else centers[s],
            grade=lab["grade"] if isinstance(lab.get("grade"), int) else None,
            quality=lab.get("quality") or None, verify=verify,
        ))
    return records


_LOADERS: dict[str, tuple[Callable[..., list[FundusImage]], set[str], bool]] = {
    "synthetic": (load_synthetic, set(SYNTHETIC_DEFAULTS), False),
    "skimage-retina": (load_skimage_retina, set(), False),
    "idrid": (load_idrid, {"subset", "verify"}, True),
    "eophtha-ex": (load_eophtha_ex, {"verify"}, True),
    "diaretdb1": (load_diaretdb1, {"subset", "threshold", "verify"}, True),
    "kaggle": (load_kaggle, {"missing", "verify"}, True),
    "messidor": (load_messidor, {"verify"}, True),
    "folder": (load_folder, {"verify"}, True),
}
