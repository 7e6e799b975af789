"""Tests for the dense networks, their initialisation and the mixture head."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from statemix_sk.networks import (
    Standardizer,
    apply_mixture_head,
    apply_mlp,
    init_mlp,
    input_width,
    make_mixture_head,
    standardize,
    standardize_vjp,
)


@pytest.fixture
def seeded_global_rng():
    """Seed numpy's legacy global state for ``check_grads``, then restore it.

    ``check_grads`` draws its random directions from ``numpy.random`` directly.
    """
    # check_grads offers no rng argument: the legacy global state is its only input.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002
    yield
    np.random.set_state(state)  # noqa: NPY002


# init_mlp and apply_mlp --------------------------------------------------------


def test_init_mlp_shapes_and_zero_biases():
    params = init_mlp([5, 32, 16, 7], np.random.default_rng(0))
    assert [(W.shape, b.shape) for W, b in params] == [
        ((5, 32), (32,)),
        ((32, 16), (16,)),
        ((16, 7), (7,)),
    ]
    for _, b in params:
        np.testing.assert_array_equal(b, 0.0)


def test_init_mlp_is_reproducible_with_a_seed():
    first = init_mlp([3, 8, 2], np.random.default_rng(42))
    second = init_mlp([3, 8, 2], np.random.default_rng(42))
    other = init_mlp([3, 8, 2], np.random.default_rng(43))
    for (W1, b1), (W2, b2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(first[0][0], other[0][0])


def test_init_mlp_output_scale_multiplies_only_the_last_layer():
    plain = init_mlp([4, 6, 6, 3], np.random.default_rng(1), output_scale=1.0)
    scaled = init_mlp([4, 6, 6, 3], np.random.default_rng(1), output_scale=0.01)
    for (W_plain, _), (W_scaled, _) in zip(plain[:-1], scaled[:-1], strict=True):
        np.testing.assert_array_equal(W_plain, W_scaled)
    np.testing.assert_allclose(scaled[-1][0], 0.01 * plain[-1][0], rtol=1e-15)


def test_fresh_network_outputs_are_near_zero():
    """A new 32-32 network's outputs stay below 0.1 on standard-normal inputs.

    Hidden units lie in (-1, 1), so |output_j| <= ||W_out[:, j]||_1 for any input.
    With W_out ~ 0.01 * N(0, 2 / (32 + 9)), sigma = 2.2e-3, that L1 norm has mean
    32 sigma sqrt(2/pi) = 0.056 and sd sqrt(32) sigma sqrt(1 - 2/pi) = 0.0075:
    0.1 is about 6 sd above the mean.
    """
    rng = np.random.default_rng(7)
    params = init_mlp([5, 32, 32, 9], rng)
    outputs = apply_mlp(params, rng.standard_normal((1000, 5)))
    assert outputs.shape == (1000, 9)
    assert np.max(np.abs(outputs)) < 0.1


def test_glorot_variance_on_a_big_layer():
    """Entries of a 400 x 600 layer have mean 0 and variance 2 / (400 + 600).

    With m = 240,000 entries the sample mean has sd sqrt(v / m) and the sample
    variance sd v sqrt(2 / (m - 1)); two checks at a family alpha of 1e-6
    (Bonferroni) allow z = isf(1e-6 / 4) standard errors.
    """
    W = init_mlp([400, 600, 1], np.random.default_rng(123))[0][0]
    m, variance = W.size, 2.0 / (400 + 600)
    z = stats.norm.isf(1e-6 / 4)
    assert abs(W.mean()) < z * np.sqrt(variance / m)
    assert abs(W.var(ddof=1) - variance) < z * variance * np.sqrt(2.0 / (m - 1))


def test_apply_mlp_matches_explicit_formula():
    rng = np.random.default_rng(3)
    params = init_mlp([3, 5, 4, 2], rng, output_scale=1.0)
    params = [(W, rng.normal(size=b.shape)) for W, b in params]
    x = rng.normal(size=(6, 3))
    (W1, b1), (W2, b2), (W3, b3) = params
    expected = np.tanh(np.tanh(x @ W1 + b1) @ W2 + b2) @ W3 + b3
    outputs = apply_mlp(params, x)
    assert outputs.shape == (6, 2)
    np.testing.assert_allclose(outputs, expected, rtol=1e-13, atol=1e-13)


def test_apply_mlp_single_layer_is_linear():
    rng = np.random.default_rng(4)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    x = rng.normal(size=(5, 3))
    np.testing.assert_allclose(apply_mlp([(W, b)], x), x @ W + b, rtol=1e-14)


@pytest.mark.usefixtures("seeded_global_rng")
def test_apply_mlp_gradient_wrt_params():
    rng = np.random.default_rng(5)
    params = init_mlp([3, 6, 6, 2], rng, output_scale=1.0)
    params = [(W, rng.normal(size=b.shape)) for W, b in params]
    x = rng.normal(size=(4, 3))
    check_grads(lambda p: apply_mlp(p, x), modes=["rev"], order=1)(params)
    check_grads(lambda inputs: apply_mlp(params, inputs), modes=["rev"], order=1)(x)


# make_mixture_head -------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["spherical", "tied", "DIAG", None])
def test_make_mixture_head_rejects_bad_covariance_type(covariance_type):
    with pytest.raises(ValueError, match="covariance_type"):
        make_mixture_head(2, 3, covariance_type=covariance_type)


@pytest.mark.parametrize(
    "scale_bounds",
    [(0.0, 10.0), (-0.1, 10.0), (0.5, 0.9), (1.0, 10.0), (1.5, 10.0), (0.1, 1.0)],
)
def test_make_mixture_head_rejects_bad_scale_bounds(scale_bounds):
    with pytest.raises(ValueError, match="scale_bounds"):
        make_mixture_head(2, 3, scale_bounds=scale_bounds)


@pytest.mark.parametrize(
    ("n_components", "n_dims", "diag", "full"),
    [(1, 1, 3, 3), (3, 4, 27, 45), (2, 2, 10, 12), (5, 3, 35, 50)],
)
def test_head_n_outputs(n_components, n_dims, diag, full):
    # Per component: 1 logit, n_dims increments, n_dims scales, and for "full"
    # n_dims (n_dims - 1) / 2 off-diagonal entries.
    assert make_mixture_head(n_components, n_dims).n_outputs == diag
    head = make_mixture_head(n_components, n_dims, covariance_type="full")
    assert head.n_outputs == full


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_zero_outputs_give_the_untrained_random_walk(covariance_type):
    initial_scale = np.array([0.3, 2.0, 15.0])
    head = make_mixture_head(
        4,
        3,
        location_scale=[1.0, 5.0, 0.1],
        initial_scale=initial_scale,
        covariance_type=covariance_type,
    )
    logits, increments, scales = apply_mixture_head(head, np.zeros((6, head.n_outputs)))
    assert logits.shape == (6, 4)
    np.testing.assert_array_equal(logits, 0.0)
    assert increments.shape == (6, 4, 3)
    np.testing.assert_array_equal(increments, 0.0)
    # logit then sigmoid (via tanh) round-trips the initial scale to a few ulps.
    if covariance_type == "diag":
        assert scales.shape == (6, 4, 3)
        np.testing.assert_allclose(scales, np.broadcast_to(initial_scale, (6, 4, 3)))
    else:
        assert scales.shape == (6, 4, 3, 3)
        expected = np.broadcast_to(np.diag(initial_scale), (6, 4, 3, 3))
        np.testing.assert_allclose(scales, expected, rtol=1e-12, atol=0)


def test_unit_outputs_move_means_by_location_scale():
    location_scale = np.array([0.5, 3.0])
    head = make_mixture_head(2, 2, location_scale=location_scale)
    outputs = np.zeros((1, head.n_outputs))
    outputs[0, 2:6] = 1.0  # the 2 x 2 increments follow the 2 logits
    _, increments, _ = apply_mixture_head(head, outputs)
    np.testing.assert_allclose(increments[0], [location_scale, location_scale])


def test_full_off_diagonal_entries_are_in_units_of_their_row():
    location_scale = np.array([1.0, 10.0, 100.0])
    head = make_mixture_head(
        2, 3, location_scale=location_scale, covariance_type="full"
    )
    outputs = np.zeros((1, head.n_outputs))
    outputs[0, 2 + 2 * 2 * 3 :] = 1.0  # every off-diagonal output
    _, _, cholesky = apply_mixture_head(head, outputs)
    rows, cols = np.tril_indices(3, k=-1)
    for k in range(2):
        np.testing.assert_allclose(cholesky[0, k][rows, cols], location_scale[rows])
        np.testing.assert_array_equal(cholesky[0, k][cols, rows], 0.0)


@st.composite
def heads_and_outputs(draw, covariance_type):
    n_components, n_dims = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    initial_scale = draw(arrays(float, n_dims, elements=st.floats(1e-2, 1e2)))
    bounds = (draw(st.floats(1e-3, 0.9)), draw(st.floats(1.1, 1e3)))
    head = make_mixture_head(
        n_components,
        n_dims,
        initial_scale=initial_scale,
        scale_bounds=bounds,
        covariance_type=covariance_type,
    )
    n = draw(st.integers(1, 4))
    outputs = draw(arrays(float, (n, head.n_outputs), elements=st.floats(-1e6, 1e6)))
    return head, outputs


# The link computes low + (high - low) * s with s in [0, 1]: the subtraction and
# the addition each round once, so a saturated s can land 2 ulps past a bound.
BOUND_RTOL = 4 * np.finfo(float).eps


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
@given(data=st.data())
def test_scales_stay_within_bounds_for_huge_outputs(covariance_type, data):
    head, outputs = data.draw(heads_and_outputs(covariance_type))
    logits, increments, scales = apply_mixture_head(head, outputs)
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(increments))
    assert np.all(np.isfinite(scales))
    if covariance_type == "diag":
        diagonal = scales
    else:
        diagonal = np.diagonal(scales, axis1=-2, axis2=-1)
    assert np.all(diagonal > 0)
    assert np.all(diagonal >= head.scale_low * (1 - BOUND_RTOL))
    assert np.all(diagonal <= head.scale_high * (1 + BOUND_RTOL))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_saturated_scales_hit_the_default_bounds(sign):
    head = make_mixture_head(2, 3, initial_scale=[0.5, 1.0, 4.0])
    _, _, scales = apply_mixture_head(head, np.full((2, head.n_outputs), sign * 1e6))
    bound = head.scale_high if sign > 0 else head.scale_low
    np.testing.assert_allclose(scales, np.broadcast_to(bound, (2, 2, 3)), rtol=1e-15)


@given(data=heads_and_outputs("full"))
def test_full_cholesky_factors_are_lower_triangular(data):
    head, outputs = data
    _, _, cholesky = apply_mixture_head(head, outputs)
    assert cholesky.shape == (outputs.shape[0], head.n_components) + (head.n_dims,) * 2
    np.testing.assert_array_equal(np.triu(cholesky, k=1), 0.0)
    assert np.all(np.diagonal(cholesky, axis1=-2, axis2=-1) > 0)


# standardize -------------------------------------------------------------------


def test_standardize():
    rng = np.random.default_rng(8)
    x = rng.normal(loc=[3.0, -1.0], scale=[10.0, 0.2], size=(50, 2))
    stats_ = Standardizer(mean=x.mean(axis=0), scale=x.std(axis=0))
    z = standardize(x, stats_)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(z * stats_.scale + stats_.mean, x, rtol=1e-12)


def test_periodic_coordinates_enter_as_sine_and_cosine():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 3)) * 4
    stats_ = Standardizer(np.array([1.0, 2.0, 3.0]), np.array([2.0, 0.5, 4.0]), [2, 0])
    z = standardize(x, stats_)
    assert z.shape == (20, input_width(stats_)) == (20, 5)
    np.testing.assert_array_equal(z[:, 0], np.sin(x[:, 0]))
    np.testing.assert_array_equal(z[:, 1], (x[:, 1] - 2.0) / 0.5)
    np.testing.assert_array_equal(z[:, 2], np.sin(x[:, 2]))
    np.testing.assert_array_equal(z[:, 3:], np.cos(x[:, [2, 0]]))
    # A shift by 2 pi of a periodic coordinate changes no input (to rounding).
    shifted = x + np.array([2 * np.pi, 0.0, -4 * np.pi])
    np.testing.assert_allclose(standardize(shifted, stats_), z, atol=1e-13)


@pytest.mark.parametrize("periodic", [None, [], [1], [0, 1, 2]])
def test_standardize_vjp_is_the_gradient_of_standardize(periodic):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3)) * 3
    stats_ = Standardizer(rng.normal(size=3), rng.uniform(0.5, 2, 3), periodic)
    upstream = rng.normal(size=(6, input_width(stats_)))
    expected = grad(lambda x: anp.sum(upstream * standardize(x, stats_)))(x)
    np.testing.assert_allclose(
        standardize_vjp(x, stats_, upstream), expected, rtol=1e-13, atol=1e-15
    )
