"""Expected gradient length (EGL) active learning for exudate patches (Otálora et al., 2017).

The subpackage, by concern (each module imports only those before it):

* :mod:`~fundus_nb.egl.phi` -- per-patch scores: :func:`expected_gradient_length` (exact, batched),
  :func:`predictive_entropy`, :func:`score`, :func:`egl_map`; model-input checks (:func:`as_input`).
* :mod:`~fundus_nb.egl.badge` -- BADGE gradient embeddings, k-means++ seeding, :func:`degeneracy`.
* :mod:`~fundus_nb.egl.selection` -- Algorithms 1 and 2 (:func:`select_patches`,
  :func:`select_images`), :class:`SelectionResult`, the selection step :func:`pick` and remedies.
* :mod:`~fundus_nb.egl.curves` -- label-efficiency summaries and :func:`fit_until_plateau`.
* :mod:`~fundus_nb.egl.grid` -- natural-prevalence scoring grids with confounder codes.

Everything is re-exported here, so ``from fundus_nb import egl`` and ``egl.<name>`` work as before.
"""

from .badge import degeneracy, degeneracy_from, gradient_embedding, kmeans_pp, penultimate
from .curves import area_under_curve, curves_on_grid, fit_until_plateau, labels_to_reach, mean_band
from .grid import GridSet, grid_kinds, grid_set, standardized_confounder_map
from .phi import PARAMS, as_input, egl_map, expected_gradient_length, predictive_entropy, score
from .selection import STRATEGIES, SelectionResult, pick, select_images, select_patches

__all__ = [
    "STRATEGIES",
    "PARAMS",
    "as_input",
    "expected_gradient_length",
    "predictive_entropy",
    "score",
    "egl_map",
    "pick",
    "select_patches",
    "select_images",
    "SelectionResult",
    "labels_to_reach",
    "curves_on_grid",
    "mean_band",
    "penultimate",
    "gradient_embedding",
    "kmeans_pp",
    "degeneracy",
    "degeneracy_from",
    "fit_until_plateau",
    "area_under_curve",
    "standardized_confounder_map",
    "grid_kinds",
    "grid_set",
    "GridSet",
]
