"""The shared dense linear algebra against scipy and closed forms."""

import math

import numpy as np
import pytest
import scipy.linalg

from tpccma_lib.linalg import (
    SingularMatrixError,
    bures_distance_sq,
    gaussian_ot_map,
    percent_change,
    sym_power,
)


def _spd(rng, d=6, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


@pytest.mark.parametrize("power", [0.5, -0.5, 2.0, -1.0])
def test_sym_power_matches_scipy(rng, power):
    s = _spd(rng)
    expected = np.real(scipy.linalg.fractional_matrix_power(s, power))
    np.testing.assert_allclose(sym_power(s, power), expected, rtol=1e-8, atol=1e-10)


def test_sym_power_shrinkage_and_singular(rng):
    s = _spd(rng, d=5, rank=2)  # rank 2: singular
    with pytest.raises(SingularMatrixError, match="singular"):
        sym_power(s, -0.5)
    ridge = sym_power(s, -0.5, shrinkage=0.1)
    np.testing.assert_allclose(
        ridge, np.real(scipy.linalg.fractional_matrix_power(s + 0.1 * np.eye(5), -0.5)), atol=1e-9
    )
    root = sym_power(s, 0.5)  # positive powers of a PSD matrix are fine
    np.testing.assert_allclose(root @ root, s, atol=1e-10)


def test_bures_matches_the_scipy_formula(rng):
    x, y = _spd(rng), _spd(rng)
    rx = np.real(scipy.linalg.sqrtm(x))
    cross = np.trace(np.real(scipy.linalg.sqrtm(rx @ y @ rx)))
    expected = np.trace(x) + np.trace(y) - 2 * cross
    assert bures_distance_sq(x, y) == pytest.approx(expected, rel=1e-9)
    assert bures_distance_sq(x, y, root_x=rx) == pytest.approx(expected, rel=1e-9)
    assert bures_distance_sq(x, x) == pytest.approx(0.0, abs=1e-12)
    # commuting case: B^2 = sum (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    assert bures_distance_sq(a, b) == pytest.approx(1.0 + 0.0 + 4.0)


def test_gaussian_ot_map_transports_and_is_symmetric(rng):
    c_from, c_to = _spd(rng), _spd(rng)
    t = gaussian_ot_map(c_from, c_to)
    np.testing.assert_allclose(t, t.T, atol=1e-10)
    np.testing.assert_allclose(t @ c_from @ t, c_to, atol=1e-9)
    assert np.linalg.eigvalsh(0.5 * (t + t.T)).min() > 0
    # the transport cost E|Tz - z|^2 is the squared Bures distance
    cost = np.trace(c_from) - 2 * np.trace(t @ c_from) + np.trace(c_to)
    assert cost == pytest.approx(bures_distance_sq(c_from, c_to), rel=1e-8)


def test_percent_change():
    assert percent_change(0.5, 2.0) == pytest.approx(-75.0)
    assert percent_change(3.0, 2.0) == pytest.approx(50.0)
    assert math.isnan(percent_change(1.0, 0.0))
