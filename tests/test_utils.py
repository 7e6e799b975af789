"""Tests for the log-space helpers, generator coercion and input checks."""

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from statemix_sk._utils import (
    as_generator,
    check_observations,
    check_positive_int,
    check_scale,
    ess_from_log_weights,
    normalise_log_weights,
)

EPS = np.finfo(float).eps


def _rounding_tolerance(log_weights):
    """Absolute rounding error bound for quantities built from logsumexp.

    ``logsumexp`` of values of magnitude ``M`` carries an absolute error of a few
    ``eps * M`` and summing ``n`` exponentials a relative error of ``n * eps``; a
    factor 16 covers the few operations on top.
    """
    finite = log_weights[np.isfinite(log_weights)]
    magnitude = float(np.max(np.abs(finite))) if finite.size else 0.0
    return 16 * EPS * (len(log_weights) + magnitude)


def log_weight_arrays(max_magnitude=1e6, max_size=50):
    return arrays(
        float,
        st.integers(1, max_size),
        elements=st.floats(-max_magnitude, max_magnitude),
    )


# normalise_log_weights ---------------------------------------------------------


@given(log_weights=log_weight_arrays())
def test_normalise_log_weights_exponentials_sum_to_one(log_weights):
    normalised = normalise_log_weights(log_weights)
    assert normalised.shape == log_weights.shape
    assert np.all(normalised <= _rounding_tolerance(log_weights))
    total = np.sum(np.exp(normalised))
    assert abs(total - 1.0) <= _rounding_tolerance(log_weights)


@given(
    log_weights=log_weight_arrays(max_magnitude=1e3),
    shift=st.floats(-1e3, 1e3),
)
def test_normalise_log_weights_is_invariant_to_a_constant(log_weights, shift):
    tolerance = _rounding_tolerance(log_weights) + 16 * EPS * abs(shift)
    np.testing.assert_allclose(
        normalise_log_weights(log_weights + shift),
        normalise_log_weights(log_weights),
        rtol=0,
        atol=tolerance,
    )


def test_normalise_log_weights_with_minus_infinity():
    normalised = normalise_log_weights(np.array([0.0, -np.inf, np.log(3.0)]))
    assert normalised[1] == -np.inf
    np.testing.assert_allclose(np.exp(normalised), [0.25, 0.0, 0.75], rtol=1e-14)


@pytest.mark.parametrize("offset", [1e6, -1e6])
def test_normalise_log_weights_with_huge_magnitudes(offset):
    log_weights = offset + np.array([0.0, np.log(3.0)])
    normalised = normalise_log_weights(log_weights)
    assert np.all(np.isfinite(normalised))
    # log(3) is lost to rounding at 1e6 only up to eps * 1e6 ~ 2e-10.
    np.testing.assert_allclose(np.exp(normalised), [0.25, 0.75], atol=1e-9)


# ess_from_log_weights ----------------------------------------------------------


@given(log_weights=log_weight_arrays(max_magnitude=1e3))
def test_ess_lies_between_one_and_n(log_weights):
    ess = ess_from_log_weights(log_weights)
    # The exponent 2 lse(l) - lse(2 l) is exact up to the rounding tolerance.
    slack = 2 * _rounding_tolerance(log_weights)
    assert 1.0 - slack <= ess <= len(log_weights) * (1.0 + slack)


@pytest.mark.parametrize("n_particles", [1, 2, 7, 1000])
@pytest.mark.parametrize("value", [0.0, -1e6, 1e6])
def test_ess_of_equal_weights_is_n(n_particles, value):
    ess = ess_from_log_weights(np.full(n_particles, value))
    # Relative error of the exponent: a few eps * (n + |value|), see the helper.
    rtol = 4 * _rounding_tolerance(np.full(n_particles, value))
    np.testing.assert_allclose(ess, n_particles, rtol=rtol)


@given(
    log_weights=log_weight_arrays(max_magnitude=1e3),
    shift=st.floats(-1e3, 1e3),
)
def test_ess_is_invariant_to_a_constant(log_weights, shift):
    rtol = 4 * (_rounding_tolerance(log_weights) + 16 * EPS * abs(shift))
    np.testing.assert_allclose(
        ess_from_log_weights(log_weights + shift),
        ess_from_log_weights(log_weights),
        rtol=rtol,
    )


@given(log_weights=log_weight_arrays(max_magnitude=50.0))
def test_ess_matches_inverse_sum_of_squared_weights(log_weights):
    weights = np.exp(log_weights - np.max(log_weights))
    weights /= weights.sum()
    direct = 1.0 / np.sum(weights**2)
    rtol = 4 * _rounding_tolerance(log_weights)
    np.testing.assert_allclose(ess_from_log_weights(log_weights), direct, rtol=rtol)


def test_ess_with_minus_infinity_entries():
    ess = ess_from_log_weights(np.array([0.0, -np.inf, 0.0, -np.inf]))
    np.testing.assert_allclose(ess, 2.0, rtol=1e-14)
    assert ess_from_log_weights(np.array([5.0, -np.inf, -np.inf])) == 1.0


# as_generator ------------------------------------------------------------------


def test_as_generator_none_gives_a_fresh_generator():
    assert isinstance(as_generator(None), np.random.Generator)


@pytest.mark.parametrize("seed", [0, 42, np.int64(7)])
def test_as_generator_int_seeds_reproducibly(seed):
    first, second = as_generator(seed), as_generator(seed)
    assert isinstance(first, np.random.Generator)
    np.testing.assert_array_equal(first.random(5), second.random(5))
    np.testing.assert_array_equal(
        as_generator(seed).random(5), np.random.default_rng(seed).random(5)
    )


def test_as_generator_seed_sequence():
    sequence = np.random.SeedSequence(1234)
    rng = as_generator(sequence)
    assert isinstance(rng, np.random.Generator)
    np.testing.assert_array_equal(
        rng.random(5), np.random.default_rng(np.random.SeedSequence(1234)).random(5)
    )


def test_as_generator_returns_a_generator_unchanged():
    rng = np.random.default_rng(3)
    assert as_generator(rng) is rng


def test_as_generator_random_state_is_reproducible_and_consumed():
    legacy_a, legacy_b = np.random.RandomState(5), np.random.RandomState(5)
    rng_a, rng_b = as_generator(legacy_a), as_generator(legacy_b)
    assert isinstance(rng_a, np.random.Generator)
    np.testing.assert_array_equal(rng_a.random(5), rng_b.random(5))
    # One draw was taken from the legacy state.
    fresh = np.random.RandomState(5)
    fresh.randint(2**31 - 1)
    assert legacy_a.randint(2**31 - 1) == fresh.randint(2**31 - 1)


@pytest.mark.parametrize("bad", [-1, np.int64(-5), "seed", 1.5, [1, 2]])
def test_as_generator_rejects_invalid_input(bad):
    with pytest.raises(ValueError, match="random_state"):
        as_generator(bad)


# check_positive_int ------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 5, np.int64(3), np.int32(10)])
def test_check_positive_int_accepts_and_returns_int(value):
    result = check_positive_int(value, "n_particles")
    assert type(result) is int
    assert result == value


def test_check_positive_int_minimum():
    assert check_positive_int(0, "n_steps", minimum=0) == 0
    with pytest.raises(ValueError, match="n_steps"):
        check_positive_int(2, "n_steps", minimum=3)


@pytest.mark.parametrize("bad", [0, -3, 1.0, 2.5, "3", None, True, np.bool_(True)])
def test_check_positive_int_rejects_with_name(bad):
    with pytest.raises(ValueError, match="n_particles"):
        check_positive_int(bad, "n_particles")


# check_scale -------------------------------------------------------------------


def test_check_scale_scalar_and_vector():
    np.testing.assert_array_equal(check_scale(0.5, "noise"), [0.5])
    np.testing.assert_array_equal(check_scale(0.5, "noise", size=3), [0.5] * 3)
    np.testing.assert_array_equal(check_scale([1.0, 2.0], "noise", size=2), [1, 2])
    np.testing.assert_array_equal(check_scale([1.0, 2.0], "noise"), [1, 2])


def test_check_scale_returns_a_writable_copy():
    value = np.array([1.0, 2.0])
    scale = check_scale(value, "noise", size=2)
    scale[0] = 10.0
    assert value[0] == 1.0
    broadcast = check_scale(0.3, "noise", size=2)
    broadcast[0] = 1.0
    np.testing.assert_array_equal(broadcast, [1.0, 0.3])


@pytest.mark.parametrize(
    ("bad", "size"),
    [
        (-1.0, None),
        (0.0, None),
        (np.inf, None),
        (np.nan, None),
        ([1.0, -0.5], None),
        ([1.0, np.nan], 2),
        (np.ones((2, 2)), None),
        (np.ones((1, 3)), 3),
        ([1.0, 2.0], 3),
        ("abc", None),
    ],
    ids=[
        "negative",
        "zero",
        "inf",
        "nan",
        "negative-entry",
        "nan-entry",
        "2d",
        "2d-row",
        "wrong-length",
        "string",
    ],
)
def test_check_scale_rejects_with_name(bad, size):
    with pytest.raises(ValueError, match="process_noise"):
        check_scale(bad, "process_noise", size=size)


# check_observations ------------------------------------------------------------


def test_check_observations_returns_float_2d_and_allows_nan():
    Y = check_observations([[1, 2], [np.nan, 4]])
    assert Y.dtype == np.float64
    assert Y.shape == (2, 2)
    assert np.isnan(Y[1, 0])
    check_observations(np.ones((3, 2)), n_features=2)


BAD_OBSERVATIONS = {
    "inf": np.array([[1.0, np.inf]]),
    "minus-inf": np.array([[-np.inf, 1.0]]),
    "1d": np.ones(3),
    "3d": np.ones((2, 2, 2)),
    "no-rows": np.ones((0, 3)),
    "no-columns": np.ones((3, 0)),
}


@pytest.mark.parametrize("key", BAD_OBSERVATIONS)
def test_check_observations_rejects(key):
    with pytest.raises(ValueError):
        check_observations(BAD_OBSERVATIONS[key], "Y_test")


@pytest.mark.parametrize("key", BAD_OBSERVATIONS)
def test_check_observations_error_names_the_argument(key):
    # The docstring: ``name`` is "the argument's name, used in error messages".
    with pytest.raises(ValueError, match="Y_test"):
        check_observations(BAD_OBSERVATIONS[key], "Y_test")


def test_check_observations_wrong_n_features_names_the_argument():
    with pytest.raises(ValueError, match="Y_test"):
        check_observations(np.ones((4, 3)), "Y_test", n_features=2)


# ------------------------------------------------------------------------------------
# Names moved between modules (issue 16): the old documented paths still work
# ------------------------------------------------------------------------------------

MOVED = [
    *(("models", name, "kalman") for name in ("kalman_filter", "kalman_smoother")),
    *(("models", name, "kalman") for name in ("KalmanResult", "KalmanSmootherResult")),
    *(
        ("baselines", name, "kalman")
        for name in (
            "linear_dynamics_by_em",
            "linear_dynamics_by_moments",
            "random_walk_model",
            "smoothed_states",
        )
    ),
    *(
        ("estimator", name, "known_model_filters")
        for name in (
            "AuxiliaryFilter",
            "BootstrapFilter",
            "ImprovedAuxiliaryFilter",
            "LocallyOptimalFilter",
        )
    ),
    ("estimator", "InconsistentVersionWarning", "estimator_base"),
    ("training", "WindowBatch", "objective"),
    ("training", "held_out_log_likelihood", "objective"),
    ("training", "fit_transition_to_states", "network_start"),
    ("experiments", "format_tables", "reporting"),
    ("experiments", "plot_results", "reporting"),
    ("experiments", "plural", "reporting"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_a_moved_name_imports_from_its_old_module_with_a_future_warning(old, name, new):
    old_module = importlib.import_module(f"statemix_sk.{old}")
    new_module = importlib.import_module(f"statemix_sk.{new}")
    with pytest.warns(FutureWarning, match=rf"statemix_sk\.{new}\.{name}"):
        moved = getattr(old_module, name)
    assert moved is getattr(new_module, name)
    with pytest.warns(FutureWarning):
        exec(f"from statemix_sk.{old} import {name}", {})
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        old_module.no_such_name  # noqa: B018
