"""Independent references shared by several test files (brute-force loops, hand-built records).

Each helper is written the plain way (a Python loop, a slice) so that the fast code under test can
be compared against it. Import them with ``from _reference import ...`` (pytest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import numpy as np


def brute_patch(image: np.ndarray, r: int, c: int, s: int) -> np.ndarray:
    """The ``s`` x ``s`` patch centred at ``(r, c)`` under the border rule, pixel by pixel.

    Rows ``r - s//2 .. r - s//2 + s - 1`` (same for columns); pixels outside the image are 0.
    """
    h, w = image.shape[:2]
    out = np.zeros((s, s) + image.shape[2:], image.dtype)
    for i in range(s):
        for j in range(s):
            rr, cc = r - s // 2 + i, c - s // 2 + j
            if 0 <= rr < h and 0 <= cc < w:
                out[i, j] = image[rr, cc]
    return out


def sliced_patch(image: np.ndarray, r: int, c: int, s: int) -> np.ndarray:
    """Second reference for the border rule: zero-pad by ``s`` on every side, then plain slicing."""
    pad = np.zeros((image.shape[0] + 2 * s, image.shape[1] + 2 * s) + image.shape[2:], image.dtype)
    pad[s : s + image.shape[0], s : s + image.shape[1]] = image
    top, left = r - s // 2 + s, c - s // 2 + s
    return pad[top : top + s, left : left + s]
