"""Tests for Gaussian-mixture log-densities and reparameterised sampling.

The density is checked against scipy.stats on random parameters, sampling by its
moments and component frequencies with fixed seeds, and gradients against finite
differences with ``autograd.test_util.check_grads``.
"""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import special, stats

from statemix_sk.mixtures import (
    GaussianMixture,
    draw_mixture_noise,
    mixture_log_density,
    sample_mixture,
    transform_mixture_noise,
)

FAMILY_ALPHA = 0.001
"""Probability that a statistical test here fails although the code is correct."""


@pytest.fixture
def seeded_global_rng():
    """Seed numpy's legacy global state for ``check_grads``, then restore it.

    ``check_grads`` draws its random directions from ``numpy.random`` directly;
    seeding makes those directions, and so the test, fixed.
    """
    # check_grads offers no rng argument: the legacy global state is its only input.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002
    yield
    np.random.set_state(state)  # noqa: NPY002


def floats_array(shape, low, high):
    return arrays(float, shape, elements=st.floats(low, high))


@st.composite
def mixtures_and_points(draw, covariance_type):
    """A batch of mixtures with well-conditioned scales, and one point per item."""
    n = draw(st.integers(1, 5))
    n_components = draw(st.integers(1, 4))
    n_dims = draw(st.integers(1, 4))
    logits = draw(floats_array((n, n_components), -5.0, 5.0))
    means = draw(floats_array((n, n_components, n_dims), -3.0, 3.0))
    x = draw(floats_array((n, n_dims), -5.0, 5.0))
    if covariance_type == "diag":
        scales = draw(floats_array((n, n_components, n_dims), 0.2, 3.0))
    else:
        diagonal = draw(floats_array((n, n_components, n_dims), 0.5, 2.0))
        full = draw(floats_array((n, n_components, n_dims, n_dims), -1.0, 1.0))
        scales = np.tril(full, k=-1) + diagonal[..., None] * np.eye(n_dims)
    return GaussianMixture(logits, means, scales), x


def reference_log_density(mixture, x):
    """logsumexp_k(log softmax(logits)_k + log N(x | mean_k, cov_k)) with scipy."""
    n, n_components = mixture.logits.shape
    log_weights = special.log_softmax(mixture.logits, axis=-1)
    component = np.empty((n, n_components))
    for i in range(n):
        for k in range(n_components):
            if mixture.scales.ndim == 3:
                covariance = np.diag(mixture.scales[i, k] ** 2)
            else:
                covariance = mixture.scales[i, k] @ mixture.scales[i, k].T
            component[i, k] = stats.multivariate_normal.logpdf(
                x[i], mean=mixture.means[i, k], cov=covariance
            )
    return special.logsumexp(log_weights + component, axis=-1)


# Log-density against scipy -----------------------------------------------------


@given(data=mixtures_and_points("diag"))
def test_log_density_matches_scipy_diag(data):
    mixture, x = data
    assert mixture.covariance_type == "diag"
    result = mixture_log_density(mixture, x)
    assert result.shape == (x.shape[0],)
    np.testing.assert_allclose(
        result, reference_log_density(mixture, x), rtol=1e-9, atol=1e-9
    )


@given(data=mixtures_and_points("full"))
def test_log_density_matches_scipy_full(data):
    mixture, x = data
    assert mixture.covariance_type == "full"
    result = mixture_log_density(mixture, x)
    assert result.shape == (x.shape[0],)
    np.testing.assert_allclose(
        result, reference_log_density(mixture, x), rtol=1e-9, atol=1e-9
    )


@given(data=mixtures_and_points("diag"))
def test_diag_and_equivalent_full_agree(data):
    mixture, x = data
    full = GaussianMixture(
        mixture.logits, mixture.means, mixture.scales[..., None] * np.eye(x.shape[1])
    )
    np.testing.assert_allclose(
        mixture_log_density(full, x),
        mixture_log_density(mixture, x),
        rtol=1e-12,
        atol=1e-12,
    )


def test_log_density_is_invariant_to_shifting_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2))
    means = rng.normal(size=(3, 2, 2))
    scales = rng.uniform(0.5, 2.0, size=(3, 2, 2))
    x = rng.normal(size=(3, 2))
    shifted = GaussianMixture(logits + 100.0, means, scales)
    np.testing.assert_allclose(
        mixture_log_density(shifted, x),
        mixture_log_density(GaussianMixture(logits, means, scales), x),
        rtol=1e-12,
    )


# Sampling: shapes, constants, component choice ---------------------------------


@given(
    logits=floats_array(st.tuples(st.integers(1, 20), st.integers(1, 5)), -1e3, 1e3),
    n_dims=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_draw_mixture_noise_shapes_and_range(logits, n_dims, seed):
    n, n_components = logits.shape
    mixture = GaussianMixture(
        logits, np.zeros((n, n_components, n_dims)), np.ones((n, n_components, n_dims))
    )
    components, noise = draw_mixture_noise(mixture, np.random.default_rng(seed))
    assert components.shape == (n,)
    assert np.issubdtype(components.dtype, np.integer)
    assert np.all((components >= 0) & (components < n_components))
    assert noise.shape == (n, n_dims)
    again, noise_again = draw_mixture_noise(mixture, np.random.default_rng(seed))
    np.testing.assert_array_equal(components, again)
    np.testing.assert_array_equal(noise, noise_again)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_component_with_negligible_weight_is_never_chosen(position):
    # Weight exp(-1000) / 2 is 0 in float64: not one of 100,000 draws may pick it.
    n = 100_000
    logits = np.zeros((n, 3))
    logits[:, position] = -1e3
    mixture = GaussianMixture(logits, np.zeros((n, 3, 1)), np.ones((n, 3, 1)))
    components, _ = draw_mixture_noise(mixture, np.random.default_rng(position))
    assert not np.any(components == position)
    # Both other components (weight 1/2 each) do get chosen.
    assert np.all(np.bincount(components, minlength=3)[np.arange(3) != position])


def test_component_frequencies_chi_square():
    """Counts of chosen components match the weights (Pearson chi-square).

    Draws are independent, so the counts are multinomial; the test rejects at
    FAMILY_ALPHA (one test, so no multiplicity correction).
    """
    n = 50_000
    weights = np.array([0.1, 0.45, 0.15, 0.3])
    logits = np.tile(np.log(weights) + 2.0, (n, 1))
    mixture = GaussianMixture(logits, np.zeros((n, 4, 1)), np.ones((n, 4, 1)))
    components, _ = draw_mixture_noise(mixture, np.random.default_rng(2024))
    counts = np.bincount(components, minlength=4)
    result = stats.chisquare(counts, n * weights)
    assert result.pvalue > FAMILY_ALPHA, (counts, n * weights)


def test_sample_mixture_equals_transform_of_drawn_constants():
    rng = np.random.default_rng(1)
    mixture = GaussianMixture(
        rng.normal(size=(6, 3)),
        rng.normal(size=(6, 3, 2)),
        rng.uniform(0.5, 2.0, size=(6, 3, 2)),
    )
    x = sample_mixture(mixture, np.random.default_rng(9))
    components, noise = draw_mixture_noise(mixture, np.random.default_rng(9))
    np.testing.assert_array_equal(
        x, transform_mixture_noise(mixture, components, noise)
    )


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_transform_mixture_noise_uses_the_chosen_component(covariance_type):
    rng = np.random.default_rng(5)
    n, n_components, n_dims = 7, 3, 3
    means = rng.normal(size=(n, n_components, n_dims))
    if covariance_type == "diag":
        scales = rng.uniform(0.5, 2.0, size=(n, n_components, n_dims))
    else:
        scales = np.tril(rng.normal(size=(n, n_components, n_dims, n_dims)), -1)
        scales += rng.uniform(0.5, 2.0, size=(n, n_components, n_dims))[
            ..., None
        ] * np.eye(n_dims)
    mixture = GaussianMixture(np.zeros((n, n_components)), means, scales)
    components = rng.integers(0, n_components, size=n)
    noise = rng.normal(size=(n, n_dims))
    x = transform_mixture_noise(mixture, components, noise)
    for i in range(n):
        k = components[i]
        if covariance_type == "diag":
            expected = means[i, k] + scales[i, k] * noise[i]
        else:
            expected = means[i, k] + scales[i, k] @ noise[i]
        np.testing.assert_allclose(x[i], expected, rtol=1e-14, atol=1e-14)


# Sampling: moments with a fixed seed -------------------------------------------


MOMENT_WEIGHTS = np.array([0.2, 0.5, 0.3])
MOMENT_MEANS = np.array([[-2.0, 0.0, 1.0], [1.0, 1.5, -1.0], [3.0, -2.0, 0.5]])
MOMENT_CHOLESKY = np.array(
    [
        [[0.5, 0.0, 0.0], [0.3, 1.0, 0.0], [-0.2, 0.4, 0.7]],
        [[1.2, 0.0, 0.0], [-0.5, 0.6, 0.0], [0.1, 0.2, 0.9]],
        [[0.8, 0.0, 0.0], [0.0, 0.5, 0.0], [0.6, -0.3, 1.1]],
    ]
)


def mixture_moments(weights, means, covariances):
    """Mean and covariance of a Gaussian mixture."""
    mean = weights @ means
    second = np.einsum("k,kij->ij", weights, covariances) + np.einsum(
        "k,ki,kj->ij", weights, means, means
    )
    return mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_sampled_moments_match_mixture_moments(covariance_type):
    """Sample mean and covariance of 200,000 draws match the mixture's.

    Each sample mean has standard error sqrt(Sigma_jj / n) from the true
    covariance. Each covariance entry is estimated by the mean of the products
    (x_j - mu_j)(x_l - mu_l) around the true mean (unbiased), with the standard
    error of that mean estimated from the products' sample standard deviation.
    With 3 means and 6 covariance entries per covariance type, 18 comparisons in
    all, each two-sided test uses FAMILY_ALPHA / 18 (Bonferroni).
    """
    n, n_dims = 200_000, 3
    if covariance_type == "diag":
        diag_scales = np.abs(np.diagonal(MOMENT_CHOLESKY, axis1=1, axis2=2))
        batch_scales = np.broadcast_to(diag_scales, (n, 3, n_dims))
        covariances = np.array([np.diag(s**2) for s in diag_scales])
    else:
        batch_scales = np.broadcast_to(MOMENT_CHOLESKY, (n, 3, n_dims, n_dims))
        covariances = MOMENT_CHOLESKY @ np.swapaxes(MOMENT_CHOLESKY, 1, 2)
    mixture = GaussianMixture(
        np.broadcast_to(np.log(MOMENT_WEIGHTS), (n, 3)),
        np.broadcast_to(MOMENT_MEANS, (n, 3, n_dims)),
        batch_scales,
    )
    x = sample_mixture(mixture, np.random.default_rng(11))
    true_mean, true_cov = mixture_moments(MOMENT_WEIGHTS, MOMENT_MEANS, covariances)
    z = stats.norm.isf(FAMILY_ALPHA / 18 / 2)

    mean_error = np.abs(x.mean(axis=0) - true_mean)
    mean_se = np.sqrt(np.diag(true_cov) / n)
    assert np.all(mean_error < z * mean_se), (mean_error / mean_se, z)

    centred = x - true_mean
    rows, cols = np.tril_indices(n_dims)
    products = centred[:, rows] * centred[:, cols]
    cov_error = np.abs(products.mean(axis=0) - true_cov[rows, cols])
    cov_se = products.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(cov_error < z * cov_se), (cov_error / cov_se, z)


# Gradients against finite differences ------------------------------------------


def gradient_problem(covariance_type, seed=0):
    rng = np.random.default_rng(seed)
    n, n_components, n_dims = 4, 3, 3
    logits = rng.normal(size=(n, n_components))
    means = rng.normal(size=(n, n_components, n_dims))
    if covariance_type == "diag":
        scales = rng.uniform(0.5, 2.0, size=(n, n_components, n_dims))
    else:
        scales = np.tril(0.5 * rng.normal(size=(n, n_components, n_dims, n_dims)), -1)
        scales += rng.uniform(0.5, 2.0, size=(n, n_components, n_dims))[
            ..., None
        ] * np.eye(n_dims)
    x = rng.normal(size=(n, n_dims))
    return GaussianMixture(logits, means, scales), x


@pytest.mark.usefixtures("seeded_global_rng")
@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_log_density_gradient_wrt_logits_and_means(covariance_type):
    mixture, x = gradient_problem(covariance_type)

    def of_logits(logits):
        return mixture_log_density(mixture._replace(logits=logits), x)

    def of_means(means):
        return mixture_log_density(mixture._replace(means=means), x)

    check_grads(of_logits, modes=["rev"], order=1)(mixture.logits)
    check_grads(of_means, modes=["rev"], order=1)(mixture.means)


@pytest.mark.usefixtures("seeded_global_rng")
def test_log_density_gradient_wrt_diag_scales():
    mixture, x = gradient_problem("diag")

    def of_scales(scales):
        return mixture_log_density(mixture._replace(scales=scales), x)

    check_grads(of_scales, modes=["rev"], order=1)(mixture.scales)


@pytest.mark.usefixtures("seeded_global_rng")
def test_log_density_gradient_wrt_cholesky_factors():
    mixture, x = gradient_problem("full")
    lower = np.tril(np.ones(mixture.scales.shape[-2:]))

    def of_cholesky(raw):
        # Perturb only the lower triangle: the domain of a Cholesky factor.
        return mixture_log_density(mixture._replace(scales=raw * lower), x)

    check_grads(of_cholesky, modes=["rev"], order=1)(mixture.scales)


@pytest.mark.usefixtures("seeded_global_rng")
@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_reparameterised_sample_gradient(covariance_type):
    mixture, _ = gradient_problem(covariance_type, seed=1)
    components, noise = draw_mixture_noise(mixture, np.random.default_rng(3))

    def of_means(means):
        return transform_mixture_noise(mixture._replace(means=means), components, noise)

    def of_scales(scales):
        sample = transform_mixture_noise(
            mixture._replace(scales=scales), components, noise
        )
        return anp.sin(sample)

    check_grads(of_means, modes=["rev"], order=1)(mixture.means)
    check_grads(of_scales, modes=["rev"], order=1)(mixture.scales)
