"""Atomic writes and strict JSON."""

import hashlib
import itertools
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


def _brute_force_apportion(n, fractions):
    """All non-negative count vectors summing to n; the closest (squared distance) to n * fractions,
    ties to the one giving more to earlier positions (lexicographically largest)."""
    quota = np.asarray(fractions) * n
    best = None
    for counts in itertools.product(range(n + 1), repeat=len(fractions)):
        if sum(counts) != n:
            continue
        key = (round(float(np.sum((np.array(counts) - quota) ** 2)), 9), tuple(-c for c in counts))
        if best is None or key < best[0]:
            best = (key, counts)
    return list(best[1])


@pytest.mark.parametrize("fractions", [(0.4, 0.2, 0.2, 0.2), (0.6, 0.2, 0.2), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3),
                                       (0.8, 0.1, 0.1), (0.05, 0.7, 0.25), (1.0,), (0.0, 0.3, 0.7)])
def test_largest_remainder_matches_brute_force(fractions):
    for n in range(0, 13):
        counts = _io.largest_remainder(n, fractions)
        assert counts.dtype == np.int64 and counts.sum() == n
        assert counts.tolist() == _brute_force_apportion(n, fractions), (n, fractions)


def test_largest_remainder_random_fractions_match_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(40):
        f = rng.dirichlet(np.ones(rng.integers(1, 5)))
        n = int(rng.integers(0, 10))
        assert _io.largest_remainder(n, f).tolist() == _brute_force_apportion(n, f)


def test_largest_remainder_errors():
    with pytest.raises(TypeError, match="n must be an integer"):
        _io.largest_remainder(2.5, (0.5, 0.5))
    with pytest.raises(TypeError, match="n must be an integer"):
        _io.largest_remainder(True, (0.5, 0.5))
    with pytest.raises(ValueError, match="n must be >= 0"):
        _io.largest_remainder(-1, (0.5, 0.5))
    for bad in [(0.5, 0.4), (), (1.2, -0.2), (np.nan, 1.0), [[0.5, 0.5]]]:
        with pytest.raises(ValueError, match="fractions must be"):
            _io.largest_remainder(3, bad)


def test_hashed_cache_path_is_keyed_by_a_sha256_of_the_sorted_json_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_NB_HOME", str(tmp_path))
    key = {"b": [1, 2.5], "a": "x"}
    path = _io.hashed_cache_path("thing-v1", key, folder="sub")
    digest = hashlib.sha256(json.dumps({"a": "x", "b": [1, 2.5]}, sort_keys=True).encode()).hexdigest()[:16]
    assert path == tmp_path / "data" / "cache" / "sub" / f"thing-v1-{digest}.npz"
    assert _io.hashed_cache_path("thing-v1", {"a": "x", "b": [1, 2.5]}, folder="sub") == path  # key order
    assert _io.hashed_cache_path("thing-v1", {"a": "x", "b": [1, 2.6]}, folder="sub") != path
    assert _io.hashed_cache_path("thing-v1", key).parent == tmp_path / "data" / "cache"


def test_npz_cache_round_trip_and_damaged_files(tmp_path):
    path = tmp_path / "c" / "x.npz"
    assert _io.read_npz_cache(path, lambda z: z["a"]) is None  # missing
    assert _io.write_npz_cache(path, "test cache", a=np.arange(5), b=np.eye(2, dtype=bool))
    got = _io.read_npz_cache(path, lambda z: (z["a"], z["b"]))
    np.testing.assert_array_equal(got[0], np.arange(5))
    np.testing.assert_array_equal(got[1], np.eye(2, dtype=bool))
    assert _io.read_npz_cache(path, lambda z: z["missing"]) is None  # another layout: recompute
    path.write_bytes(b"garbage")
    assert _io.read_npz_cache(path, lambda z: z["a"]) is None  # damaged: never trusted


def test_write_npz_cache_warns_and_returns_false_when_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write the test cache"):
        assert _io.write_npz_cache(blocker / "x.npz", "test cache", a=np.zeros(2)) is False
