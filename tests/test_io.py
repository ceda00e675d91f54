"""Atomic writes and strict JSON."""

import json
import math

import numpy as np
import pytest

from fundus_nb import _io


def test_atomic_write_json_is_strict_json_with_nan_as_null(tmp_path):
    path = _io.atomic_write_json(tmp_path / "m.json", {"a": math.nan, "b": [1.0, np.inf, np.float32(2.5)],
                                                       "c": np.array([np.nan, 3.0]), "d": np.int64(4)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None, 2.5], "c": [None, 3.0], "d": 4}


def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    _io.atomic_write_bytes(path, b"old")

    with pytest.raises(TypeError):
        _io.atomic_write_bytes(path, object())  # fails while writing
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
