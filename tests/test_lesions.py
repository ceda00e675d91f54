"""Tests of fundus_nb.lesions with hand-made probability maps."""

import numpy as np
import pytest
from scipy import ndimage

from fundus_nb import lesions

BLOBS = [(20, 22, 0.9, 3.0), (46, 60, 0.7, 4.0)]  # row, col, peak, width


def _two_blobs(shape=(70, 84)):
    r, c = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape)
    for br, bc, peak, w in BLOBS:
        m += peak * np.exp(-((r - br) ** 2 + (c - bc) ** 2) / (2 * w**2))
    return m


def test_two_blobs_give_two_candidates_at_the_right_places():
    m = _two_blobs()
    cands = lesions.candidates(m, sigma=2.0, min_distance=5, threshold=0.1, return_masks=True)
    assert len(cands) == 2
    np.testing.assert_array_equal(cands.row, [20, 46])
    np.testing.assert_array_equal(cands.col, [22, 60])
    for k in range(2):
        mask = cands.mask(k)
        assert mask[cands.row[k], cands.col[k]]
        assert cands.area[k] == mask.sum()
        assert cands.probability[k] == pytest.approx(m[mask].mean())  # mean of the raw map


def test_region_is_the_relative_contour_around_the_seed():
    """Far-apart blobs: each region = connected pixels with smoothed >= fraction * seed value."""
    m = _two_blobs()
    s = ndimage.gaussian_filter(m, 2.0)
    cands = lesions.candidates(m, sigma=2.0, min_distance=5, return_masks=True, region_fraction=0.5)
    for k in range(2):
        above = s >= 0.5 * s[cands.row[k], cands.col[k]]
        comp, _ = ndimage.label(above, structure=np.ones((3, 3)))
        expected = comp == comp[cands.row[k], cands.col[k]]
        np.testing.assert_array_equal(cands.mask(k), expected)
        assert cands.seed_value[k] == pytest.approx(s[cands.row[k], cands.col[k]])


def test_touching_blobs_are_split_and_regions_do_not_overlap():
    r, c = np.mgrid[:40, :60]
    m = 0.8 * np.exp(-((r - 20) ** 2 + (c - 22) ** 2) / 18)
    m += 0.8 * np.exp(-((r - 20) ** 2 + (c - 34) ** 2) / 18)
    cands = lesions.candidates(m, sigma=1.0, min_distance=4, return_masks=True, region_fraction=0.2)
    assert len(cands) == 2
    left, right = (cands.mask(k) for k in np.argsort(cands.col))
    assert not (left & right).any()
    assert left[:, 29:].sum() == 0 and right[:, :27].sum() == 0  # split at the valley (col 28)


def test_threshold_fov_and_empty_maps():
    m = _two_blobs()
    s = ndimage.gaussian_filter(m, 2.0)
    assert s[20, 22] > 0.6 > s[46, 60]  # smoothed peaks: about 0.62 and 0.56
    high = lesions.candidates(m, sigma=2.0, threshold=0.6)
    assert len(high) == 1 and (high.row[0], high.col[0]) == (20, 22)
    fov = np.zeros(m.shape, bool)
    fov[30:, 40:] = True
    inside = lesions.candidates(m, fov=fov, return_masks=True)
    assert len(inside) == 1 and (inside.row[0], inside.col[0]) == (46, 60)
    assert not inside.labels[~fov].any()
    none = lesions.candidates(np.zeros((20, 20)), return_masks=True)
    assert len(none) == 0 and none.labels.shape == (20, 20) and none.as_detections().shape == (0, 3)
    assert len(lesions.candidates(m, fov=np.zeros(m.shape, bool))) == 0


def test_outputs_feed_froc_and_frame():
    m = _two_blobs()
    cands = lesions.candidates(m)
    det = cands.as_detections()
    np.testing.assert_allclose(det, np.column_stack([cands.row, cands.col, cands.probability]))
    df = cands.to_frame()
    assert list(df.columns) == ["row", "col", "probability", "area", "seed_value"] and len(df) == 2
    with pytest.raises(ValueError, match="return_masks=True"):
        cands.mask(0)


def test_image_score_is_max_of_smoothed_map():
    m = _two_blobs()
    assert lesions.image_score(m, sigma=2.0) == pytest.approx(ndimage.gaussian_filter(m, 2.0).max())
    fov = np.zeros(m.shape, bool)
    fov[30:, 40:] = True
    expected = ndimage.gaussian_filter(m, 2.0)[fov].max()
    assert lesions.image_score(m, 2.0, fov) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prob_map=np.full((4, 4), np.nan)), "NaN"),
        (dict(prob_map=np.ones((2, 4, 4))), "2-D"),
        (dict(prob_map=np.full((4, 4), 3.0)), r"\[0, 1\]"),
        (dict(fov=np.ones((3, 3), bool)), "fov has shape"),
        (dict(sigma=-1.0), "sigma"),
        (dict(min_distance=0), "min_distance"),
        (dict(region_fraction=0.0), "region_fraction"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(prob_map=np.zeros((8, 8)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        lesions.candidates(**args)
