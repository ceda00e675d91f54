"""Tests of fundus_nb.preprocess (FOV, crop, standardize, contrast).

References are independent of the code under test: exact analytic discs, a smoothed-red-channel
threshold on the real photographs, brute-force loops, and scipy's gaussian_filter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _reference import assert_one_sentence, disc
from scipy import ndimage as ndi
from skimage import data as skdata
from skimage import io as skio
from skimage.measure import CircleModel, ransac

from fundus_nb import data
from fundus_nb import preprocess as pp


# ----------------------------------------------------------------------------- helpers
def iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / (a | b).sum()


def fake_fundus(seed, h=480, w=640, r=None, cy=None, cx=None, dark=False, notch=True):
    """A disc-shaped 'fundus' with vignetting (dark rim), texture noise, a notch tab and JPEG-like
    background noise; returns (image uint8, exact fov)."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.45, 0.6) * h if r is None else r  # often larger than h/2: clipped top/bottom
    cy = h / 2 + rng.uniform(-8, 8) if cy is None else cy
    cx = w / 2 + rng.uniform(-20, 20) if cx is None else cx
    yy, xx = np.mgrid[:h, :w].astype(float)
    d = np.hypot(yy - cy, xx - cx)
    truth = d <= r
    colour = np.array([200.0, 95.0, 45.0]) * (0.3 if dark else 1.0)
    fall = 1.0 - 0.7 * (d / r) ** 4
    img = colour * fall[..., None] + rng.normal(0, 5, (h, w, 3))
    img[~truth] = rng.uniform(0, 9, (int((~truth).sum()), 3))
    if notch:  # camera orientation tab just outside the circle
        a = rng.uniform(0, 2 * np.pi)
        ny, nx = cy + (r + 4) * np.sin(a), cx + (r + 4) * np.cos(a)
        tab = (np.abs(yy - ny) < 8) & (np.abs(xx - nx) < 8) & ~truth
        img[tab] = colour * 0.5
    return np.clip(img, 0, 255).astype(np.uint8), truth


def reference_fov(image, threshold):
    """Independent FOV reference at full resolution: threshold a heavily smoothed red channel
    (hand-tuned threshold, about half-way between background and the rim's level), keep the
    largest component, fill holes."""
    red = ndi.gaussian_filter(image[..., 0].astype(np.float32), 4)
    lab, _ = ndi.label(red > threshold)
    big = lab == 1 + np.bincount(lab.ravel())[1:].argmax()
    return ndi.binary_fill_holes(big)


# ----------------------------------------------------------------------------- FOV
@pytest.mark.parametrize("seed", range(6))
def test_fov_mask_iou_on_synthetic_discs(seed):
    image, truth = fake_fundus(seed, dark=seed % 3 == 2)
    mask = pp.fov_mask(image)
    assert mask.dtype == bool and mask.shape == truth.shape
    assert iou(mask, truth) >= 0.98
    assert iou(mask, truth) >= 0.99  # the bar with margin: radius within about one pixel


def test_fov_circle_parameters_recovered_on_clipped_disc():
    image, truth = fake_fundus(11, h=400, w=600, r=240.0, cy=205.0, cx=290.0)
    mask, circle = pp.fov_mask(image, return_circle=True)
    cy, cx, r = circle
    assert abs(cy - 205.0) < 1.5 and abs(cx - 290.0) < 1.5 and abs(r - 240.0) < 1.5
    # fov_circle on the exact mask is exact to a fraction of a pixel
    cy2, cx2, r2 = pp.fov_circle(truth)
    assert abs(cy2 - 205.0) < 0.5 and abs(cx2 - 290.0) < 0.5 and abs(r2 - 240.0) < 0.5


def test_fov_mask_on_large_image_is_downsampled_and_accurate():
    image, truth = fake_fundus(5, h=1500, w=2200, r=800.0, cy=748.0, cx=1103.0)
    assert iou(pp.fov_mask(image), truth) >= 0.995


def test_fov_mask_on_dataset_synthetic_records():
    records = data.load("synthetic", n_patients=2, size=256)
    assert all(r.fov is not None for r in records)
    for rec in records:
        assert iou(pp.fov_mask(rec.image), rec.fov) >= 0.98, rec.id


def test_fov_mask_on_skimage_retina():
    image = skdata.retina()
    mask, circle = pp.fov_mask(image, return_circle=True)
    ref = reference_fov(image, 80)  # about half the rim's red level (checked by eye on an overlay)
    assert iou(mask, ref) >= 0.98
    assert iou(mask, ref) >= 0.99
    cy, cx, r = circle
    assert abs(cy - 705) < 15 and abs(cx - 705) < 15 and 680 < r < 715


@pytest.mark.parametrize("name", ["IDRiD_01.jpg", "IDRiD_04.jpg", "IDRiD_10.jpg"])
def test_fov_mask_on_real_idrid(idrid_root, name):
    image = skio.imread(idrid_root / "A. Segmentation/1. Original Images/a. Training Set" / name)
    mask = pp.fov_mask(image)
    ref = reference_fov(image, 45)  # about half the darkest rim's red level (checked by eye)
    assert ref[0].any() and ref[-1].any()  # the reference sees the circle clipped top and bottom
    assert iou(mask, ref) >= 0.98
    assert iou(mask, ref) >= 0.99
    assert mask[0].any() and mask[-1].any()


def test_fov_mask_follows_a_flat_cut_inside_the_frame():
    image, truth = fake_fundus(7, h=520, w=560, r=240.0, cy=260.0, cx=280.0)
    cut = np.abs(np.arange(520) - 260.0)[:, None] > 0.85 * 240  # FOV cut flat top and bottom
    image[np.broadcast_to(cut, truth.shape)] = 3
    truth &= ~cut
    mask, circle = pp.fov_mask(image, return_circle=True)
    assert iou(mask, truth) >= 0.995
    assert abs(circle[2] - 240.0) < 1.5  # the circle itself is still found


def test_fov_mask_fixed_threshold():
    image, truth = fake_fundus(8)
    assert iou(pp.fov_mask(image, threshold=25), truth) >= 0.99
    for bad in (-1, 300, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            pp.fov_mask(image, threshold=bad)


def test_fov_mask_fallback_for_non_circular_fov():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 8, (300, 400, 3)).astype(np.uint8)
    image[40:260, 60:340] = (180, 90, 50)
    truth = np.zeros((300, 400), bool)
    truth[40:260, 60:340] = True
    assert iou(pp.fov_mask(image), truth) >= 0.98


def test_fov_mask_float_input_matches_uint8():
    image, _ = fake_fundus(3)
    np.testing.assert_array_equal(pp.fov_mask(image.astype(np.float64) / 255.0), pp.fov_mask(image))


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((200, 200, 3), np.uint8), ValueError, "No field of view"),
        (np.full((200, 200, 3), 200, np.uint8), ValueError, "No field of view"),
        (np.zeros((200, 200), np.uint8), ValueError, "grayscale"),
        (np.zeros((200, 200, 4), np.uint8), ValueError, "RGBA"),
        (np.zeros((200, 200, 3), np.int16), TypeError, "dtype"),
        (np.full((200, 200, 3), 2.0), ValueError, r"outside \[0, 1\]"),
        (np.zeros((8, 8, 3), np.uint8), ValueError, "16x16"),
    ],
)
def test_fov_mask_bad_input(image, error, match):
    with pytest.raises(error, match=match):
        pp.fov_mask(image)


def test_fov_mask_tiny_bright_spot_is_not_a_fov():
    image = np.zeros((300, 300, 3), np.uint8)
    image[10:20, 10:20] = 200
    with pytest.raises(ValueError, match="No field of view"):
        pp.fov_mask(image)


# ------------------------------------------------------------------ library calls inside the FOV search
def test_block_mean_matches_a_brute_force_loop_and_drops_partial_blocks():
    rng = np.random.default_rng(4)
    channel = rng.integers(0, 256, (23, 31)).astype(np.uint8)
    for factor in (1, 2, 3, 5):
        got = pp._block_mean(channel, factor)
        want = np.array([[channel[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].mean()
                          for j in range(31 // factor)] for i in range(23 // factor)])
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6)


def _kasa_fit(rows, cols):
    """Independent reference: the algebraic (Kasa) least-squares circle, x^2 + y^2 = 2 a x + 2 b y + c."""
    a = np.column_stack([2 * rows, 2 * cols, np.ones_like(rows)])
    (cy, cx, c), *_ = np.linalg.lstsq(a, rows**2 + cols**2, rcond=None)
    return cy, cx, math.sqrt(c + cy * cy + cx * cx)


def test_fit_circle_without_outliers_is_the_kasa_least_squares_circle():
    rng = np.random.default_rng(5)
    theta = rng.uniform(0.3, 5.8, 400)  # an arc, not the whole circle
    rows = 1400.3 + 1371.6 * np.sin(theta) + rng.normal(0, 0.3, 400)
    cols = 2150.8 + 1371.6 * np.cos(theta) + rng.normal(0, 0.3, 400)
    np.testing.assert_allclose(pp._fit_circle(rows, cols, n_iter=1), _kasa_fit(rows, cols), rtol=0, atol=1e-6)


def test_fit_circle_agrees_with_a_seeded_ransac_on_a_notched_clipped_fov():
    # the robust trimming is kept instead of skimage.measure.ransac (no threshold, no seed): same circle
    h, w, cy, cx, r = 300, 420, 151.0, 205.0, 170.0
    mask = disc(h, w, cy, cx, r)
    mask[20:60, 300:380] = True  # a tab outside the circle
    mask &= ~disc(h, w, cy - 160.0, cx + 20.0, 25.0)  # a notch cut into the rim
    pr, pc = pp._boundary_points(mask)
    ours = pp._fit_circle(pr, pc)
    model, inliers = ransac(np.column_stack([pr, pc]), CircleModel, min_samples=3, residual_threshold=1.0,
                            max_trials=200, rng=0)
    assert 0.7 < inliers.mean() < 0.95  # the tab and the notch are outliers
    np.testing.assert_allclose(ours, (*model.center, model.radius), atol=0.01)
    np.testing.assert_allclose(ours, (cy, cx, r - 0.5), atol=0.5)  # boundary pixel centres: half a pixel inside


def test_disc_is_the_brute_force_disc_with_its_boundary():
    rng = np.random.default_rng(6)
    for _ in range(20):
        shape = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
        cy, cx, r = rng.uniform(-5, 60), rng.uniform(-5, 60), rng.uniform(0.5, 40)
        np.testing.assert_array_equal(pp._disc(shape, cy, cx, r), disc(*shape, cy, cx, r))
    assert pp._disc((11, 11), 5, 5, 3)[5, 8]  # a pixel centre exactly on the circle is inside


# ----------------------------------------------------------------------------- crop
def test_crop_to_fov_is_square_centred_and_padded():
    h, w, cy, cx, r = 300, 500, 148.0, 260.0, 180.0  # clipped at top and bottom
    truth = disc(h, w, cy, cx, r)
    image = np.zeros((h, w, 3), np.uint8)
    image[truth] = (200, 100, 50)
    crop = pp.crop_to_fov(image, truth)
    side = crop.shape[0]
    assert crop.shape == (side, side, 3) and abs(side - 2 * r) <= 1
    top, left, side2 = pp.crop_box(truth)
    assert side2 == side
    # the circle's centre is the box's centre (to the half pixel that integer boxes allow)
    assert abs(cy - top - (side - 1) / 2) <= 0.5 and abs(cx - left - (side - 1) / 2) <= 0.5
    cmask = pp.crop_to_fov(truth, truth)
    rows, cols = np.arange(side)[:, None] + top, np.arange(side)[None, :] + left
    in_frame = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    np.testing.assert_array_equal(cmask, disc(side, side, cy - top, cx - left, r) & in_frame)
    ccy, ccx, cr = pp.fov_circle(cmask)  # the padded, clipped crop still gives the same circle
    assert abs(ccy - (cy - top)) < 0.5 and abs(ccx - (cx - left)) < 0.5 and abs(cr - r) < 0.5
    # rows above the frame are black padding; the FOV pixels are all kept
    assert top < 0 and not crop[: -top].any()
    assert cmask.sum() == truth.sum()
    np.testing.assert_array_equal(crop[cmask], image[truth])


def test_crop_rejects_mask_of_wrong_size():
    with pytest.raises(ValueError, match="shape"):
        pp.crop_to_fov(np.zeros((50, 60, 3), np.uint8), np.ones((50, 61), bool))
    with pytest.raises(ValueError, match="empty"):
        pp.fov_circle(np.zeros((50, 60), bool))


# ----------------------------------------------------------------------------- resize
def test_resize_area_matches_brute_force_block_and_fractional_means():
    rng = np.random.default_rng(0)
    x = rng.random((12, 12, 2))
    out = pp.resize_area(x, 4)  # integer factor 3: block means
    np.testing.assert_allclose(out, x.reshape(4, 3, 4, 3, 2).mean(axis=(1, 3)), atol=1e-6)  # float32
    x = rng.random((10, 10))
    out = pp.resize_area(x, 4)  # factor 2.5: brute-force area overlaps
    ref = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            tot = 0.0
            for a in range(10):
                for b in range(10):
                    oy = max(0.0, min(a + 1, (i + 1) * 2.5) - max(a, i * 2.5))
                    ox = max(0.0, min(b + 1, (j + 1) * 2.5) - max(b, j * 2.5))
                    tot += oy * ox * x[a, b]
            ref[i, j] = tot / 6.25
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert out.dtype == np.float32
    up = pp.resize_area(np.arange(16.0).reshape(4, 4), 8)  # up-scaling: bilinear, pixel areas aligned
    assert up.shape == (8, 8) and abs(up.mean() - 7.5) < 1e-5 and up[0, 0] == 0.0 and up[-1, -1] == 15.0


# ----------------------------------------------------------------------------- standardize
def test_standardize_shapes_dtypes_and_fov():
    image, truth = fake_fundus(4, h=420, w=560)
    out, fov = pp.standardize(image, size=128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert fov.shape == (128, 128) and fov.dtype == bool
    # the standardized FOV is the centred circle of radius ~64, clipped like the original
    cy, cx, r = pp.fov_circle(fov)
    assert abs(cy - 63.5) < 1 and abs(cx - 63.5) < 1 and abs(r - 64) < 1.5
    assert out[~fov].mean() < 20 and out[fov].mean() > 60
    with pytest.raises(ValueError, match="size"):
        pp.standardize(image, size=0)
    with pytest.raises(TypeError, match="size must be an integer"):
        pp.standardize(image, size=64.0)


def _record(image, **kw):
    return data.FundusImage(id="t", patient_id="p", image_=image, source="test", **kw)


def test_standardize_record_keeps_lesions_aligned():
    h, w, cy, cx, r = 400, 520, 200.0, 250.0, 190.0
    fov = disc(h, w, cy, cx, r)
    image = np.zeros((h, w, 3), np.uint8)
    image[fov] = (190, 90, 40)
    lesion_c = np.array([150.0, 300.0])
    lesion = disc(h, w, *lesion_c, 12)
    centers = np.array([lesion_c, [260.0, 180.0]])
    rec = _record(image, exudate_mask=lesion, hemorrhage_centers=centers, fov=fov, grade=2)
    size = 190
    out = pp.standardize_record(rec, size=size)
    assert out is not rec and out.grade == 2 and out.id == "t"
    assert out.image.shape == (size, size, 3) and out.exudate_mask.shape == (size, size)
    assert out.hemorrhage_mask is None
    # independent expected mapping: box of side 2r around the circle, scale size / side
    # the disc spans pixel centres cy-190..cy+190: its square bounding box is 381 pixels wide
    side, top, left = 381, cy - r, cx - r
    assert pp.crop_box(fov) == (top, left, side)
    s = size / side
    expect = (lesion_c - [top, left] + 0.5) * s - 0.5
    got = np.array(ndi.center_of_mass(out.exudate_mask))
    np.testing.assert_allclose(got, expect, atol=0.5)
    np.testing.assert_allclose(out.hemorrhage_centers, (centers - [top, left] + 0.5) * s - 0.5, atol=1e-9)
    assert abs(out.exudate_mask.sum() - lesion.sum() * s * s) <= 0.15 * lesion.sum() * s * s
    assert iou(out.fov, disc(size, size, (size - 1) / 2, (size - 1) / 2, size / 2)) > 0.98
    # the original record is unchanged
    assert rec.image.shape == (h, w, 3) and rec.exudate_mask.shape == (h, w)


def test_standardize_record_rejects_mask_of_wrong_size():
    image, truth = fake_fundus(1, h=200, w=260)
    rec = _record(image, hemorrhage_mask=np.zeros((200, 250), bool))
    with pytest.raises(ValueError, match="hemorrhage_mask .* shape"):
        pp.standardize_record(rec, size=64)


# ----------------------------------------------------------------------------- contrast
def test_contrast_enhance_matches_direct_scipy():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3)).astype(np.uint8)
    out = pp.contrast_enhance(image, alpha=4, beta=-4, sigma=3.0, gamma=128)
    f = image.astype(np.float64)
    blur = np.stack([ndi.gaussian_filter(f[..., c], 3.0) for c in range(3)], axis=-1)
    ref = np.clip(np.round(4 * f - 4 * blur + 128), 0, 255)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.abs(out.astype(int) - ref).max() <= 1  # float32 vs float64 rounding only
    # default sigma = width / 30
    blur = np.stack([ndi.gaussian_filter(f[..., c], 120 / 30) for c in range(3)], axis=-1)
    ref = np.clip(np.round(2 * f - 1.5 * blur + 100), 0, 255)
    got = pp.contrast_enhance(image, alpha=2, beta=-1.5, gamma=100)
    assert np.abs(got.astype(int) - ref).max() <= 1


def test_contrast_enhance_large_sigma_path_close_to_direct():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :300]
    base = 120 + 60 * np.sin(yy / 40.0) * np.cos(xx / 55.0)
    image = np.clip(base[..., None] + rng.normal(0, 20, (256, 300, 3)), 0, 255).astype(np.uint8)
    out = pp.contrast_enhance(image, sigma=40.0)
    f = image.astype(np.float64)
    blur = np.stack([ndi.gaussian_filter(f[..., c], 40.0) for c in range(3)], axis=-1)
    ref = np.clip(np.round(4 * f - 4 * blur + 128), 0, 255)
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 1 and diff.mean() < 0.2  # the blur differs by < 0.1 grey level


def test_contrast_enhance_fov_and_errors():
    image, truth = fake_fundus(2, h=128, w=128, r=60.0, cy=64.0, cx=64.0)
    out = pp.contrast_enhance(image, fov=truth, gamma=100)
    assert np.all(out[~truth] == 100)
    assert np.any(out[truth] != 100)
    with pytest.raises(ValueError, match="shape"):
        pp.contrast_enhance(image, fov=truth[:-1])
    with pytest.raises(ValueError, match="sigma"):
        pp.contrast_enhance(image, sigma=0)
    with pytest.raises(ValueError, match="grayscale"):
        pp.contrast_enhance(image[..., 0])
    with pytest.raises(TypeError, match="sigma must be a number"):
        pp.contrast_enhance(image, sigma="3")


# --------------------------------------------------------------------------- the scale rule
def test_scale_length_is_linear_in_size_and_rejects_non_positive_lengths():
    from fundus_nb.preprocess import PAPER_SIZE, scale_length

    for size in (64, 128, 256, 512, 1024):
        for length in (0.5, 2.0, 8, 41):
            assert scale_length(length, size) == pytest.approx(length * size / 512)
    assert scale_length(8, PAPER_SIZE) == 8.0
    for bad in (0, -3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number of pixels"):
            scale_length(bad, 256, name="froc_tolerance")
    with pytest.raises(TypeError, match="froc_tolerance must be a number"):
        scale_length("8", 256, name="froc_tolerance")


def test_scale_table_converts_each_length_by_size_over_512():
    t = pp.scale_table({"froc_tolerance": 8.0, "cand_sigma": 2, "margin": 20.0}, 384)
    assert t == {"froc_tolerance": {"at_512": 8.0, "at_run": 6.0}, "cand_sigma": {"at_512": 2.0, "at_run": 1.5},
                 "margin": {"at_512": 20.0, "at_run": 15.0}}
    with pytest.raises(ValueError, match="cand_min_distance must be a positive number"):
        pp.scale_table({"cand_min_distance": -1}, 256)
    with pytest.raises(TypeError, match="lengths must be a dict"):
        pp.scale_table([8.0], 256)


def test_standardize_record_maps_the_confounder_map_by_nearest_pixel():
    rec = data.load("synthetic", n_patients=1, seed=3, size=160)[0]
    assert rec.confounder_map is not None and rec.confounder_map.any()
    out = pp.standardize_record(rec, size=64)
    top, left, side = pp.crop_box(rec.fov)
    want = np.zeros((64, 64), np.uint8)
    for i in range(64):  # brute force: the source pixel under each output pixel's centre
        for j in range(64):
            r, c = int(np.floor(top + (i + 0.5) * side / 64)), int(np.floor(left + (j + 0.5) * side / 64))
            if 0 <= r < rec.fov.shape[0] and 0 <= c < rec.fov.shape[1] and out.fov[i, j]:
                want[i, j] = rec.confounder_map[r, c]
    assert out.confounder_map.shape == (64, 64)
    np.testing.assert_array_equal(out.confounder_map, want)
    assert set(np.unique(out.confounder_map)) <= set(np.unique(rec.confounder_map))


# --------------------------------------------------------------------------- the FOV halo
def test_rim_profile_matches_a_brute_force_distance_loop():
    rng = np.random.default_rng(5)
    fov = disc(36, 40, 17.3, 20.6, 14.2)
    fov[:2] = False  # a flat cut too
    image = rng.integers(0, 256, (36, 40, 3)).astype(np.uint8)
    outside = np.argwhere(~fov)
    sums, counts = {}, {}
    for r, c in np.argwhere(fov):  # distance of each FOV pixel to the nearest outside pixel
        d = int(np.rint(np.sqrt(((outside - [r, c]) ** 2).sum(axis=1)).min()))
        sums[d] = sums.get(d, 0.0) + image[r, c].astype(float).mean()
        counts[d] = counts.get(d, 0) + 1
    dist, level = pp.rim_profile(image, fov)
    assert dist.tolist() == sorted(counts)
    np.testing.assert_allclose(level, [sums[d] / counts[d] for d in sorted(counts)], rtol=1e-12)
    # a FOV that reaches the frame is measured from its outline only, not from the frame
    full = np.zeros((30, 30), bool)
    full[:, 10:] = True
    dist, _ = pp.rim_profile(np.full((30, 30, 3), 90, np.uint8), full)
    assert dist.tolist() == list(range(1, 21))


def test_fov_halo_width_follows_sigma_on_a_uniform_disc_and_vanishes_with_a_fov_aware_blur():
    fov = disc(240, 240, 119.5, 119.5, 110.0)
    image = np.where(fov[..., None], np.uint8(150), np.uint8(0)).astype(np.uint8).repeat(3, axis=2)
    widths = []
    for sigma in (3.0, 6.0, 12.0):
        halo = pp.fov_halo(pp.contrast_enhance(image, sigma=sigma, fov=fov), fov, sigma)
        # a straight edge blurred: 128 + 600 * (1 - Phi(d / sigma)) clipped at 255, half its excess at 1.25 sigma
        assert halo["interior_level"] == pytest.approx(128.0, abs=1.0)
        assert halo["excess"] > 100
        # whole pixels; the pixel at distance 1 lies 0.5 px from the edge
        assert 1.25 * sigma - 0.5 <= halo["width"] <= 1.25 * sigma + 1.5
        widths.append(halo["width"])
    assert widths == sorted(widths)
    m = fov.astype(float)  # normalized convolution: the black surround does not leak into the background
    blur = ndi.gaussian_filter(150.0 * m, 6.0) / np.maximum(ndi.gaussian_filter(m, 6.0), 1e-9)
    flat = np.clip(np.round(4 * 150.0 - 4 * blur + 128), 0, 255).astype(np.uint8)
    assert abs(pp.fov_halo(np.repeat(flat[..., None], 3, axis=2), fov, 6.0)["excess"]) < 1.0


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: pp.fov_mask(np.zeros((200, 200, 3), np.uint8)), ValueError),
        (lambda: pp.fov_mask(np.zeros((200, 200), np.uint8)), ValueError),
        (lambda: pp.fov_mask(np.zeros((200, 200, 3), np.int16)), TypeError),
        (lambda: pp.fov_mask(fake_fundus(0)[0], threshold="25"), TypeError),
        (lambda: pp.fov_mask(fake_fundus(0)[0], threshold=300), ValueError),
        (lambda: pp.fov_circle(np.zeros((50, 60), bool)), ValueError),
        (lambda: pp.crop_to_fov(np.zeros((50, 60, 3), np.uint8), np.ones((50, 61), bool)), ValueError),
        (lambda: pp.standardize(fake_fundus(0)[0], size=4), ValueError),
        (lambda: pp.standardize(fake_fundus(0)[0], size="64"), TypeError),
        (lambda: pp.contrast_enhance(fake_fundus(0)[0], sigma=-1.0), ValueError),
        (lambda: pp.contrast_enhance(fake_fundus(0)[0], alpha=None), TypeError),
        (lambda: pp.scale_length(-1, 256), ValueError),
        (lambda: pp.scale_table([8.0], 256), TypeError),
        (lambda: pp.rim_profile(fake_fundus(0)[0], np.ones((480, 640), bool)), ValueError),
        (lambda: pp.fov_halo(fake_fundus(0)[0], fake_fundus(0)[1], sigma=0), ValueError),
        (lambda: pp.fov_halo(fake_fundus(0)[0], fake_fundus(0)[1], sigma="3"), TypeError),
        (lambda: pp.fov_halo(*fake_fundus(0, h=64, w=64, r=30.0), sigma=20.0), ValueError),
        (lambda: pp.standardize_record(data.synthetic_fundus(0, 0, size=64), 32, cache=1), TypeError),
    ],
)
def test_errors_are_one_sentence_with_the_fix(call, error):
    with pytest.raises(error) as info:
        call()
    assert_one_sentence(info.value)
