"""The shared scalar / choice checks (repgeo._validation) and the one copy of each choice constant."""

import numpy as np
import pytest

from repgeo import _validation as v


def test_check_int_accepts_python_and_numpy_integers_and_refuses_bools_and_floats():
    assert v.check_int("n", np.int64(5), 1) == 5 and type(v.check_int("n", np.int64(5), 1)) is int
    for bad in (True, 2.0, "3", None):
        with pytest.raises(TypeError, match="n must be an integer"):
            v.check_int("n", bad, 1)
    with pytest.raises(ValueError, match=r"n must be >= 2; got 1"):
        v.check_int("n", 1, 2)
    with pytest.raises(ValueError, match=r"n must be <= 3; got 4"):
        v.check_int("n", 4, maximum=3)


def test_check_float_bounds_are_strict_only_when_asked_and_non_finite_values_are_refused():
    assert v.check_float("tol", 0, low=0.0) == 0.0
    with pytest.raises(ValueError, match=r"tol must be > 0.0; got 0"):
        v.check_float("tol", 0, low=0.0, strict=True)
    with pytest.raises(ValueError, match="must be finite"):
        v.check_float("tol", float("nan"))
    with pytest.raises(TypeError, match="real number"):
        v.check_float("tol", False)
    with pytest.raises(ValueError, match=r"<= 1"):
        v.check_float("ci", 1.5, high=1)


def test_check_choice_names_the_argument_every_choice_and_the_value():
    assert v.check_choice("normalize", None, v.NORMALIZATIONS) is None
    with pytest.raises(ValueError) as info:
        v.check_choice("pooling", "max", v.POOLINGS)
    assert str(info.value) == "pooling must be one of 'cls', 'mean', 'last', 'tokens' or 'none'; got 'max'"
    with pytest.raises(ValueError, match="pooling must be one of"):
        v.check_choice("pooling", ["mean"], v.POOLINGS)  # unhashable: refused, not a TypeError from `in`
    with pytest.raises(TypeError, match="center must be True or False; got 1"):
        v.check_bool("center", 1)


def test_the_packages_use_the_one_copy_of_each_constant():
    from repgeo.distill import feature_loss
    from repgeo.metrics import _prep
    from repgeo.probe import POOLINGS, pooling

    assert POOLINGS is v.POOLINGS and pooling.POOLINGS is v.POOLINGS
    assert feature_loss.POOLINGS is v.FEATURE_POOLINGS and set(v.FEATURE_POOLINGS) == set(v.POOLINGS) - {"none"}
    assert set(v.SENTENCE_POOLINGS) < set(v.FEATURE_POOLINGS)
    with pytest.raises(ValueError, match="normalize must be one of 'frobenius', 'rows' or None"):
        _prep.check_options(True, "l2")
