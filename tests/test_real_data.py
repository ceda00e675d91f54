"""The series on real data: IDRiD end to end, and the pieces that make it possible.

* ``preprocess.standardize_record``'s on-disk cache: identical to the uncached result, keyed by the
  files' modification times, never used for records edited in memory.
* the IDRiD dataset overlay (``fundus_nb/presets/datasets/idrid.yaml``).
* the quick series on the 20 real IDRiD images in ``../shared/data/idrid`` through
  ``runs.run_series`` (skipped with a reason where that folder is absent).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fundus_nb import data, preprocess, runs

IDRID = "idrid"


# ----------------------------------------------------------------------------- overlay
def test_idrid_overlay_turns_on_the_lesion_image_options():
    overlay = runs.load_dataset_overlay(IDRID)
    assert overlay["ses_allow_lesion_images"] is True
    assert overlay["patches_allow_lesion_images"] is True
    params = runs.resolve_parameters(runs.list_notebooks(), "quick", {"dataset": IDRID, "data_root": "/x"})
    by_name = {nb.stem: p for nb, p in params.items()}
    assert by_name["04_ses_hemorrhage"]["ses_allow_lesion_images"] is True
    assert by_name["02_patch_datasets"]["patches_allow_lesion_images"] is True
    # -p still wins over the overlay
    off = {"dataset": IDRID, "ses_allow_lesion_images": "false"}
    params = runs.resolve_parameters(runs.list_notebooks(), "quick", off)
    assert {nb.stem: p for nb, p in params.items()}["04_ses_hemorrhage"]["ses_allow_lesion_images"] is False


# ----------------------------------------------------------------------------- standardize cache
def test_standardize_cache_equals_the_computation(idrid_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_NB_HOME", str(tmp_path))
    def pick():
        return next(r for r in data.load(IDRID, root=idrid_root) if r.id == "IDRiD_43")

    fresh = preprocess.standardize_record(pick(), 64, cache=False)
    assert not (tmp_path / "data" / "cache" / "standardized").exists()
    first = preprocess.standardize_record(pick(), 64)  # computes and writes
    files = list((tmp_path / "data" / "cache" / "standardized").glob("*.npz"))
    assert len(files) == 1
    second = preprocess.standardize_record(pick(), 64)  # reads
    for rec in (first, second):
        for name in ("image", "fov", "exudate_mask", "hemorrhage_mask", "hemorrhage_centers"):
            np.testing.assert_array_equal(getattr(rec, name), getattr(fresh, name))
            assert getattr(rec, name).dtype == getattr(fresh, name).dtype
        assert rec.has_hemorrhages is False and rec.loader is None and rec.id == "IDRiD_43"
    # a damaged cache file is rebuilt, never trusted
    files[0].write_bytes(b"not an npz")
    again = preprocess.standardize_record(pick(), 64)
    np.testing.assert_array_equal(again.image, fresh.image)


def test_standardize_cache_key_follows_files_and_edits(idrid_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_NB_HOME", str(tmp_path))
    rec = next(r for r in data.load(IDRID, root=idrid_root) if r.id == "IDRiD_43")
    key = preprocess._record_cache_path(rec, 64)
    assert key is not None and key != preprocess._record_cache_path(rec, 65)
    # a record whose pixels were read (and could have been edited) is never cached
    edited = next(r for r in data.load(IDRID, root=idrid_root) if r.id == "IDRiD_43")
    edited.image = np.zeros((10, 10, 3), np.uint8)
    assert preprocess._record_cache_path(edited, 64) is None
    # a newer file gives a new key: copy the image (and its masks) and touch it
    copy_root = tmp_path / "copy"
    for sub in ("A. Segmentation/1. Original Images/a. Training Set",
                "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/3. Hard Exudates"):
        (copy_root / sub).mkdir(parents=True)
    img = idrid_root / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_43.jpg"
    ex = (idrid_root / "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/3. Hard Exudates"
          / "IDRiD_43_EX.tif")
    dst = copy_root / "A. Segmentation/1. Original Images/a. Training Set/IDRiD_43.jpg"
    dst.write_bytes(img.read_bytes())
    (copy_root / "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/3. Hard Exudates"
     / "IDRiD_43_EX.tif").write_bytes(ex.read_bytes())
    k1 = preprocess._record_cache_path(data.load(IDRID, root=copy_root)[0], 64)
    st = dst.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    k2 = preprocess._record_cache_path(data.load(IDRID, root=copy_root)[0], 64)
    assert k1 is not None and k2 is not None and k1 != k2
    with pytest.raises(TypeError, match="cache must be True or False"):
        preprocess.standardize_record(rec, 64, cache="yes")


def test_small_hemorrhages_survive_downscaling():
    # a 3x3 hemorrhage in a 400x400 photograph covers far less than half of a 40x40 output pixel
    image = np.full((400, 400, 3), 90, np.uint8)
    fov = np.ones((400, 400), bool)
    mask = np.zeros((400, 400), bool)
    mask[200:203, 100:103] = True
    rec = data.FundusImage(id="tiny", patient_id="p", image_=image, hemorrhage_mask=mask,
                           hemorrhage_centers=np.array([[201.0, 101.0]]), fov=fov)
    out = preprocess.standardize_record(rec, 40)
    expected = np.round((np.array([201.0, 101.0]) + 0.5) * 40 / 400 - 0.5).astype(int)  # box = whole frame
    assert out.has_hemorrhages is True
    assert np.argwhere(out.hemorrhage_mask).tolist() == [expected.tolist()]


def test_idrid_lesion_images_stay_lesion_images_at_low_resolution(idrid_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_NB_HOME", str(tmp_path))
    rec = next(r for r in data.load(IDRID, root=idrid_root) if r.id == "IDRiD_29")
    assert rec.has_hemorrhages  # four small hemorrhages at full resolution
    out = preprocess.standardize_record(rec, 96)
    assert out.has_hemorrhages
    q = np.round(out.hemorrhage_centers).astype(int)
    assert out.hemorrhage_mask[q[:, 0], q[:, 1]].all()


# ----------------------------------------------------------------------------- the series
@pytest.mark.notebooks
def test_quick_series_runs_on_real_idrid_images(idrid_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    run_dir = tmp_path / "idrid_quick"
    # 01-05 carry the dataset-specific paths; 06 (run comparison) and 07 (labelling) add no IDRiD-only branch
    result = runs.run_series("quick", {"dataset": IDRID, "data_root": str(idrid_root)}, run_dir=run_dir,
                             only=["01", "02", "03", "04", "05"], progress=False, stop_on_error=False)
    failed = [(r.name, r.error, str(r.output)) for r in result.results if r.status != "ok"]
    assert not failed, f"notebooks failed on IDRiD: {failed}"
    assert [r.name for r in result.results][:5] == [
        "01_preprocessing", "02_patch_datasets", "03_lenet_egl", "04_ses_hemorrhage", "05_evaluation"]

    m = runs.load_metrics(run_dir)
    n_real = len(data.load(IDRID, root=idrid_root))
    assert m["01_preprocessing"]["n_images"] == n_real
    assert m["02_patch_datasets"]["n_images"] == n_real
    assert m["02_patch_datasets"]["patients_in_two_splits"] == 0
    assert m["02_patch_datasets"]["hemorrhage_pool"]["negative"] > 0
    egl = m["03_lenet_egl"]
    ref = egl["reference"]["test"]
    assert 0.0 <= ref["f_measure"] <= 1.0 and 0.0 <= ref["ap"] <= 1.0
    assert 0.0 < egl["pool"]["prevalence"] < 1.0 and egl["pool"]["n_grid"] > 0

    # 04: which monitoring signal was used follows from the split the notebook wrote
    split = json.loads((run_dir / "ses_split.json").read_text())
    assert split["dataset_params"]["dataset"] == IDRID
    labels = {r.id: r.has_hemorrhages for r in data.load(IDRID, root=idrid_root)}
    ses_m = m["04_ses_hemorrhage"]
    mon_labels = {labels[i] for i in split["monitor_used"]}
    if len(mon_labels) == 2:
        assert ses_m["monitor_level"] == "image"
        assert all(0.0 <= v <= 1.0 for v in ses_m["final_monitor_az"]["SeS"]["per_seed"])
    else:
        assert ses_m["monitor_level"].startswith("pixel")
        assert ses_m["final_monitor_az"]["SeS"]["mean"] is None  # undefined, recorded as null
        assert 0.0 <= ses_m["final_monitor_pixel_az"]["SeS"]["mean"] <= 1.0

    # 05: the FP rule and the image-level numbers follow from the test split's classes
    ev = m["05_evaluation"]
    test_labels = [labels[i] for i in split["test"]]
    assert 0 < ev["n_test_images"] <= len(test_labels)
    for k in ("ses", "nses"):
        froc = ev["froc"][k]
        assert 0.0 <= froc["sens_at_0p1"] <= froc["sens_at_1"] <= 1.0 and froc["n_lesions"] > 0
        if all(test_labels):
            assert froc["fp_rule"].startswith("fallback") and "fallback" in froc["text"]
            assert ev["image_level"][k]["az"] is None and ev["image_level"][k]["az_text"].startswith("n/a")
        else:
            assert froc["fp_rule"].startswith("paper")
    assert 0.0 <= ev["egl_patch_test"]["f_measure"] <= 1.0
    summary = (run_dir / "summary.md").read_text()
    assert "Test Az SeS" in summary and "FROC sensitivity SeS" in summary
    for name in ("05_froc", "05_image_roc", "04_az_curves", "03_egl_map", "02_positions"):
        assert (run_dir / "figures" / f"{name}.png").is_file(), name


@pytest.mark.notebooks
def test_idrid_without_the_lesion_image_option_fails_clearly(idrid_root, tmp_path, monkeypatch):
    """Turning the overlay's option off again (-p wins) gives the clear one-class error, not a silent null."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    off = {"dataset": IDRID, "data_root": str(idrid_root), "ses_allow_lesion_images": "false"}
    result = runs.run_series("quick", off, only=["04"], run_dir=tmp_path / "no_option", progress=False)
    (res,) = result.results
    assert res.status == "failed"
    assert "ValueError" in res.error and "hemorrhage" in res.error, res.error
