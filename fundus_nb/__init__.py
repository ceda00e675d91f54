"""fundus_nb: helpers for a notebook series on label-efficient CNN training for retinal lesions.

Module order (each depends only on those before it):
``_io`` -> ``data`` -> ``preprocess`` -> ``patches`` -> ``models`` -> ``egl`` / ``ses`` -> ``train``
-> ``lesions`` -> ``monitor`` -> ``metrics`` -> ``egl_report`` / ``ses_report`` / ``eval_report``
-> ``labelling`` -> ``plots`` / ``widgets`` -> ``runs`` (docs/CONTRACTS.md; ``data``, ``patches``,
``egl`` and ``runs`` are subpackages).

(``egl`` and ``ses`` only *choose* samples; the shared fit loop lives in ``train``, which the
notebooks call with the sampler that ``egl``/``ses`` provide.)

Notebooks seed with ``fundus_nb.seed_everything(seed)`` and pick a device with
``fundus_nb.default_device()``.
"""

from ._io import default_device, seed_everything

__version__ = "0.1.0"
__all__ = ["__version__", "default_device", "seed_everything"]
