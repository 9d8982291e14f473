import numpy as np
import pytest

from imageloop.bench.kid import kid


def test_same_distribution_is_near_zero_and_a_shift_is_not() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    shifted = rng.normal(loc=0.5, size=(300, 16))
    same, apart = kid(a, b), kid(a, shifted)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert apart.mean > 10 * max(abs(same.mean), same.std)


def test_a_larger_shift_gives_a_larger_distance() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 8))
    near, far = rng.normal(loc=0.3, size=(200, 8)), rng.normal(loc=1.0, size=(200, 8))
    assert kid(a, far).mean > kid(a, near).mean > 0


def test_mismatched_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="one width"):
        kid(np.zeros((10, 4)), np.zeros((10, 5)))
