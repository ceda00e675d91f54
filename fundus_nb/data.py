"""Fundus datasets: the ``FundusImage`` record and ``load(name, root=None, **options)``.

Names: ``"synthetic"`` (procedural generator with exact lesion ground truth, the embedded default),
``"skimage-retina"`` (the CC0 photograph inside scikit-image), and loaders for a user's local copy
of ``"idrid"``, ``"eophtha-ex"``, ``"diaretdb1"``, ``"kaggle"``, ``"messidor"`` and a generic
``"folder"`` layout (see ``data/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class FundusImage:
    """One colour fundus photograph and whatever reference it comes with.

    ``image`` is HxWx3 uint8. Disk datasets load it lazily: pass ``loader`` (a callable returning
    the array) instead of ``image``; the first access reads the file and checks it. Masks are HxW
    bool of the image's size; ``hemorrhage_centers`` is (N, 2) float (row, col).
    ``fov`` is the exact field-of-view mask when the source knows it (synthetic data), else None.
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
    path: str | None = None
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
