"""Rebuild the images a saved split names, prepared exactly as the notebook that saved it did.

Notebook 05 evaluates the models of notebooks 03 and 04 on their test images; the split files
(:func:`~fundus_nb.runs.artifacts.save_split`) say which images, from which dataset, at which size
and whether contrast-enhanced, so the records come back without repeating the earlier notebooks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import data, monitor, preprocess
from .artifacts import load_split, split_path

LESIONS = ("hemorrhages", "exudates")
_NEEDED_KEYS = ("dataset_params", "image_size", "contrast_enhance")


def balanced(records: Sequence, n: int, lesion: str = "hemorrhages") -> list:
    """At most ``n`` records, half with ``lesion`` and half without where there are enough.

    When one class has fewer than half, the other fills the rest; the records keep their order;
    ``n = 0`` keeps them all. A record without a reference for ``lesion`` counts as without.
    """
    if lesion not in LESIONS:
        raise ValueError(f"lesion must be one of {', '.join(LESIONS)}, got {lesion!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {type(n).__name__}; pass 0 to keep every record")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}; pass 0 to keep every record")
    records = list(records)
    if n == 0 or n >= len(records):
        return records
    has = [bool(getattr(r, f"has_{lesion}")) for r in records]
    return [records[i] for i in monitor.balanced_indices(has, n)]


def _split(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    split = load_split(run_dir, name)
    absent = [k for k in _NEEDED_KEYS if k not in split]
    if absent:
        raise ValueError(
            f"{split_path(run_dir, name)} lacks {', '.join(absent)}; rerun the notebook that wrote it with this "
            "version of fundus_nb"
        )
    return split


def _prepare(records: list, split: dict[str, Any]) -> list:
    """Standardize (and contrast-enhance) ``records`` as the split's notebook did."""
    out = [preprocess.standardize_record(r, size=int(split["image_size"])) for r in records]
    for r in out if split["contrast_enhance"] else []:
        r.image = preprocess.contrast_enhance(r.image, fov=r.fov)
    return out


def split_records(run_dir: str | os.PathLike, name: str, part: str = "test", *, max_images: int = 0,
                  lesion: str = "hemorrhages") -> list:
    """The records of one part of split ``name``, reloaded and prepared as its notebook did.

    Parameters
    ----------
    run_dir : path-like
        The run folder holding ``<name>_split.json``.
    name : str
        The split, e.g. ``"egl"`` (notebook 03) or ``"ses"`` (notebook 04).
    part : str
        Which list of image ids, default ``"test"``.
    max_images : int
        Cap on the number of images, balanced by ``lesion`` (see :func:`balanced`); 0 keeps all.
    lesion : str
        ``"hemorrhages"`` or ``"exudates"``: the label the cap balances.

    Returns
    -------
    list of FundusImage
        Standardized to the split's ``image_size`` and contrast-enhanced when the split was.
    """
    split = _split(run_dir, name)
    if not isinstance(split.get(part), list):
        parts = [k for k, v in split.items() if isinstance(v, list)]
        raise ValueError(f"split {name!r} has no part {part!r}; choose one of: {', '.join(parts)}")
    params = dict(split["dataset_params"])
    dataset, root = params.pop("dataset"), params.pop("data_root", None) or None
    by_id = {r.id: r for r in data.load(dataset, root=root, **params)}
    lost = [i for i in split[part] if i not in by_id]
    if lost:
        raise ValueError(
            f"{split_path(run_dir, name)}: images {lost[:3]} are not in dataset {dataset!r} any more; "
            "rerun the notebook that wrote the split"
        )
    return _prepare(balanced([by_id[i] for i in split[part]], max_images, lesion), split)


def independent_records(run_dir: str | os.PathLike, name: str, dataset: str, root: str | os.PathLike | None = None,
                        *, max_images: int = 0, lesion: str = "hemorrhages",
                        exclude: Sequence[str] = ("train", "monitor"), **options: Any) -> list:
    """Images of another dataset (``data.load(dataset, root, **options)``), prepared like split ``name``'s.

    Raises :class:`ValueError` when one of them was in the split's ``exclude`` parts (used for
    training or monitoring), so an "independent" test set never contains a training image.
    ``max_images`` and ``lesion`` cap the set as in :func:`split_records`.
    """
    split = _split(run_dir, name)
    records = data.load(dataset, root=root or None, **options)
    seen = {i for part in exclude for i in split.get(part, [])}
    leaked = [r.id for r in records if r.id in seen]
    if leaked:
        raise ValueError(
            f"test images {leaked[:3]} were in the {'/'.join(exclude)} part of split {name!r}; "
            "choose another test dataset or seed"
        )
    return _prepare(balanced(records, max_images, lesion), split)
