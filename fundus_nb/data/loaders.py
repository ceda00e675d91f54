"""Dataset layouts on disk and :func:`load`, the one entry point for every dataset."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from skimage import data as skdata

from .files import _TIFF, IMAGE_EXTENSIONS, _checked_mask, _mask_size, _size_error, image_size, read_image
from .record import FundusImage, _Lazy, centers_from_mask
from .synthetic import SYNTHETIC_DEFAULTS, load_synthetic

#: Dataset names accepted by :func:`load`.
DATASETS = (
    "synthetic", "skimage-retina", "idrid", "eophtha-ex", "diaretdb1", "kaggle", "messidor", "folder",
)
_IGNORED_FILES = {"thumbs.db", "desktop.ini"}


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
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}; pass one of: {', '.join(DATASETS)}")
    if name not in _LOADERS:
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
            f"dataset {name!r} is read from your local copy but no root was given; pass root='/path/to/{name}' "
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



def load_skimage_retina() -> list[FundusImage]:
    """``skimage.data.retina()``: one real, healthy colour fundus photograph (CC0), no masks."""
    image = np.ascontiguousarray(skdata.retina()[..., :3]).astype(np.uint8)
    return [FundusImage(id="skimage-retina", patient_id="skimage-retina", image_=image, grade=0, quality="good",
                        source="skimage-retina")]



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
        f"found {_found(parent)}; point root at the dataset's top folder (see data/README.md)"
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
        raise TypeError(f"verify must be True or False, got {verify!r}; pass a bool")
    return verify


def _check_subset(subset) -> str:
    if subset not in ("all", "train", "test"):
        raise ValueError(f"subset must be 'all', 'train' or 'test', got {subset!r}; pass one of those")
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
        raise FileNotFoundError(
            f"no images (.jpg, .png, .tif) found in {str(img_root)!r} ({sets}); copy the dataset's images there"
        )
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
                records.append(
                    _record(img, img.stem, patient.name, "eophtha-ex", exudate=False, grade=0, verify=verify)
                )
    if not records:
        raise FileNotFoundError(
            f"no images found under {str(base)!r}; put them in EX/<patient>/<image>.jpg or "
            "healthy/<patient>/<image>.jpg"
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
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}; pass a fraction such as 0.75")
    if not 0 < threshold <= 1:
        raise ValueError(
            f"threshold must be a fraction in (0, 1] of the 255 grey levels, got {threshold!r}; "
            "pass e.g. 0.75 (the usual value)"
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
        raise FileNotFoundError(
            f"no images found in {str(img_dir)!r} for subset {subset!r}; copy the dataset's images there or use "
            "another subset"
        )
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
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}; pass one of those")
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
            f"none of the images listed in {str(labels)!r} is in {str(train)!r}; download the images into that "
            "folder"
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
                f"{str(base)!r} (found {_found(base)}); export it from the dataset's download next to the images"
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
    """A generic layout for your own images (see ``data/README.md``).

    ::


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
        expected = "'images/<name>.png' plus optional 'masks/<name>_EX.png', '<name>_HE.png'"
        raise _layout_error("folder", root, "images", expected)
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
                    f"{row['col']!r}; fix that row"
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
                    f"{row['quality']!r}; fix that row"
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

