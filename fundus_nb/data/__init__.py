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

from .files import IMAGE_EXTENSIONS, image_size, read_image, read_mask
from .loaders import (
    DATASETS,
    load,
    load_diaretdb1,
    load_eophtha_ex,
    load_folder,
    load_idrid,
    load_kaggle,
    load_messidor,
    load_skimage_retina,
)
from .record import LAZY_FIELDS, FundusImage, centers_from_mask
from .synthetic import (
    CATEGORY_FRACTIONS,
    CONFOUNDER_KINDS,
    GENERATOR_VERSION,
    SYNTHETIC_DEFAULTS,
    load_synthetic,
    synthetic_cache_path,
    synthetic_fundus,
)

__all__ = [
    "CATEGORY_FRACTIONS",
    "CONFOUNDER_KINDS",
    "DATASETS",
    "GENERATOR_VERSION",
    "IMAGE_EXTENSIONS",
    "LAZY_FIELDS",
    "SYNTHETIC_DEFAULTS",
    "FundusImage",
    "centers_from_mask",
    "image_size",
    "load",
    "load_diaretdb1",
    "load_eophtha_ex",
    "load_folder",
    "load_idrid",
    "load_kaggle",
    "load_messidor",
    "load_skimage_retina",
    "load_synthetic",
    "read_image",
    "read_mask",
    "synthetic_cache_path",
    "synthetic_fundus",
]
