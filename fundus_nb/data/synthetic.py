"""Procedural synthetic fundus photographs with exact lesion ground truth (``load("synthetic")``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse
from tqdm.auto import tqdm

from .. import _io
from .record import FundusImage, centers_from_mask

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
    for r0, c0, s, a, e, t in zip(rows, cols, sigmas, amps, elong, angles, strict=True):
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
    def ok(p):
        return inside(p, 2 * k) & (np.hypot(p[:, 0] - fovea[0], p[:, 1] - fovea[1]) > 0.07 * r)

    vein_paths = _vessel_paths(rng, disc, fovea, r, side, k, 6.5 * k, ok)
    art_paths = _vessel_paths(rng, disc, fovea, r, side, k, 4.8 * k, ok)
    vein, _ = _vessel_profile((S, S), vein_paths, k)
    art, art_w = _vessel_profile((S, S), art_paths, k)
    img *= 1.0 - vein[..., None] * np.array([0.42, 0.62, 0.5], np.float32)
    img *= 1.0 - art[..., None] * np.array([0.22, 0.45, 0.35], np.float32)
    reflex = ((art > 0.85) & (art_w > 3.8 * k)).astype(np.float32) * 0.18
    img += reflex[..., None] * (np.array([255, 240, 225], np.float32) - img)

    # unlabelled confounders: microaneurysm-sized dark dots, drusen-like spots, bright reflections
    def inner(p, m=6 * k):
        return inside(p, m) & (np.hypot(p[:, 0] - disc[0], p[:, 1] - disc[1]) > 1.6 * rd)

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
            for (r0, c0), ra in zip(centres, radii, strict=True):
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
        rows.append(pts[j, 0])
        cols.append(pts[j, 1])
        angs.append(np.arctan2(d[0], d[1]))
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
    for key, value in (("n_patients", n_patients), ("seed", seed), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{key} must be an integer, got {type(value).__name__} {value!r}; pass a whole number")
    if n_patients < 1:
        raise ValueError(f"n_patients must be a positive integer, got {n_patients!r}; pass 1 or more")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}; pass 0 or more")
    if not 64 <= size <= 4096:
        raise ValueError(f"size must be from 64 to 4096 pixels, got {size!r}; pass a size in that range")
    for key, value, hi in (("confounder_density", confounder_density, 10.0), ("lesion_size", lesion_size, 3.0),
                           ("lesion_contrast", lesion_contrast, 2.0), ("poor_fraction", poor_fraction, 1.0)):
        zero_ok = key in ("confounder_density", "poor_fraction")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"{key} must be a number, got {type(value).__name__} {value!r}; pass a float")
        if not (value >= 0 if zero_ok else value > 0) or value > hi:
            lo = "[0" if zero_ok else "(0"
            raise ValueError(f"{key} must be in {lo}, {hi}], got {value!r}; pass a number in that range")


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
        raise ValueError(f"category must be one of {', '.join(CATEGORY_FRACTIONS)}, got {category!r}; pick one of them")
    if quality not in ("good", "poor"):
        raise ValueError(f"quality must be 'good' or 'poor', got {quality!r}; pass one of those")
    if eye not in ("R", "L"):
        raise ValueError(f"eye must be 'R' or 'L', got {eye!r}; pass one of those")
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
    eyes = ["R" if i % 2 == 0 else "L" for i in range(n)]
    return [(str(c), "poor" if p else "good", e) for c, p, e in zip(cats, poor, eyes, strict=True)]


def synthetic_cache_path(**options: Any) -> Path:
    """Cache file of the synthetic dataset with these options (defaults filled in)."""
    params = {k: v for k, v in {**SYNTHETIC_DEFAULTS, **options}.items() if k != "cache"}
    params = {k: (float(v) if isinstance(v, float) else v) for k, v in sorted(params.items())}
    return _io.hashed_cache_path(f"synthetic-v{GENERATOR_VERSION}", {"generator": GENERATOR_VERSION, **params})


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
        raise TypeError(f"cache must be True or False, got {cache!r}; pass a bool")
    opts = {"n_patients": int(n_patients), "seed": int(seed), "size": int(size),
            "confounder_density": float(confounder_density), "lesion_size": float(lesion_size),
            "lesion_contrast": float(lesion_contrast), "poor_fraction": float(poor_fraction)}
    path = synthetic_cache_path(**opts)
    if cache:
        records = _io.read_npz_cache(path, _read_synthetic_cache)
        if records is not None:
            return records
    knobs = {k: opts[k] for k in ("size", "confounder_density", "lesion_size", "lesion_contrast")}
    plan = _synthetic_plan(opts["n_patients"], opts["seed"], opts["poor_fraction"])
    records = [
        synthetic_fundus(opts["seed"], i, category=c, quality=q, eye=e, **knobs)
        for i, (c, q, e) in enumerate(tqdm(plan, desc="synthetic fundus", leave=False))
    ]
    if cache:
        _write_synthetic_cache(path, records, opts)
    return records


def _write_synthetic_cache(path: Path, records: list[FundusImage], opts: dict) -> None:
    centers = [r.hemorrhage_centers for r in records]
    meta = [{"id": r.id, "patient_id": r.patient_id, "grade": r.grade, "quality": r.quality} for r in records]
    _io.write_npz_cache(
        path,
        "synthetic-data cache",
        image=np.stack([r.image for r in records]),
        exudate_mask=np.packbits(np.stack([r.exudate_mask for r in records]), axis=-1),
        hemorrhage_mask=np.packbits(np.stack([r.hemorrhage_mask for r in records]), axis=-1),
        fov=np.packbits(np.stack([r.fov for r in records]), axis=-1),
        confounder_map=np.stack([r.confounder_map for r in records]),
        centers=np.concatenate(centers) if centers else np.zeros((0, 2)),
        n_centers=np.array([len(c) for c in centers], np.int64),
        meta=np.array(json.dumps({"records": meta, "options": opts, "generator": GENERATOR_VERSION})),
    )


def _read_synthetic_cache(z) -> list[FundusImage]:
    """The records from an open synthetic-data cache file (see :func:`_write_synthetic_cache`)."""
    images = z["image"]
    size = images.shape[2]

    def unpack(name):
        return np.unpackbits(z[name], axis=-1, count=size).astype(bool)

    ex, he, fov = unpack("exudate_mask"), unpack("hemorrhage_mask"), unpack("fov")
    kinds = z["confounder_map"]
    centers = np.split(z["centers"], np.cumsum(z["n_centers"])[:-1])
    meta = json.loads(str(z["meta"]))["records"]
    return [
        FundusImage(id=m["id"], patient_id=m["patient_id"], image_=images[i], exudate_mask=ex[i], hemorrhage_mask=he[i],
                    hemorrhage_centers=centers[i].reshape(-1, 2), grade=m["grade"], quality=m["quality"],
                    source="synthetic", fov=fov[i], confounder_map=kinds[i])
        for i, m in enumerate(meta)
    ]
