import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError

from statemix_sk import BootstrapFilter, LocallyOptimalFilter
from statemix_sk import estimator_base as estimator_module
from statemix_sk.datasets import make_kuramoto, make_linear_gaussian, make_lorenz96
from statemix_sk.filtering import particle_filter
from statemix_sk.kalman import kalman_filter, kalman_smoother
from statemix_sk.learned import MixtureTransitionModel, init_mixture_network
from statemix_sk.networks import Standardizer, make_mixture_head
from statemix_sk.observations import LinearGaussianObservation
from statemix_sk.smoothing import (
    ffbs_smoothed_moments,
    genealogy_smoothed_means,
    pairwise_transition_log_density,
)


@settings(deadline=None, max_examples=25)
@pytest.mark.filterwarnings("ignore:n_particles=1:UserWarning")
@given(
    n_steps=st.integers(1, 8),
    n_particles=st.integers(1, 20),
    n_series=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_genealogy_shapes_and_last_step_is_the_filtered_mean(
    n_steps, n_particles, n_series, seed
):
    Y, _, model = make_linear_gaussian(
        n_steps, n_states=2, n_sequences=n_series, random_state=seed
    )
    result = particle_filter(
        Y, model, n_particles=n_particles, random_state=seed, return_particles=True
    )
    means = genealogy_smoothed_means(result)
    assert means.shape == (n_series, n_steps, 2)
    assert np.all(np.isfinite(means))
    # Every path ends at a particle of the last step: its weighted mean is the
    # filter's (with one step, the smoother is the filter).
    np.testing.assert_allclose(means[:, -1], result.filtered_means[:, -1], atol=1e-12)
    one = particle_filter(
        Y[0], model, n_particles=n_particles, random_state=seed, return_particles=True
    )
    assert genealogy_smoothed_means(one).shape == (n_steps, 2)


@given(seed=st.integers(0, 2**16))
@settings(deadline=None, max_examples=10)
def test_genealogy_without_resampling_weights_every_step_by_the_final_weights(seed):
    # With ess_threshold = 0 nothing is resampled, so every particle is its own
    # ancestor and the paths are the particles' own trajectories.
    Y, _, model = make_linear_gaussian(6, n_states=2, random_state=seed)
    result = particle_filter(
        Y,
        model,
        n_particles=7,
        ess_threshold=0.0,
        random_state=seed,
        return_particles=True,
    )
    weights = np.exp(result.log_weights[-1])
    expected = np.einsum("n,tnd->td", weights, result.particles)
    np.testing.assert_allclose(genealogy_smoothed_means(result), expected, atol=1e-12)


def test_genealogy_approaches_the_kalman_smoother():
    # A single path drawn from the exact smoothing distribution would be off the
    # Kalman smoother's means by the smoothed variance on average; K independent
    # ones by 1/K of it. At N = 1000 the genealogy must do at least as well as 4
    # such paths, and be closer to the smoothed means than the filtered means are
    # (later observations must count). Measured over 10 seeds: 0.009 on average,
    # at most 0.014, against 0.028 (a quarter of the variance, 0.11) and 0.046.
    Y, _, model = make_linear_gaussian(30, random_state=0)
    exact = kalman_smoother(Y, model)
    smoothed = exact.smoothed_means[1:]
    variance = np.mean(np.diagonal(exact.smoothed_covariances[1:], axis1=1, axis2=2))
    result = particle_filter(
        Y, model, n_particles=1000, random_state=1, return_particles=True
    )
    error = np.mean((genealogy_smoothed_means(result) - smoothed) ** 2)
    filtered_error = np.mean((result.filtered_means - smoothed) ** 2)
    assert error < variance / 4
    assert error < filtered_error / 2


def test_genealogy_needs_the_particles():
    Y, _, model = make_linear_gaussian(5, random_state=0)
    result = particle_filter(Y, model, n_particles=10, random_state=0)
    with pytest.raises(ValueError, match="return_particles=True"):
        genealogy_smoothed_means(result)


# --------------------------------------------------------------------------------------
# Pairwise transition densities
# --------------------------------------------------------------------------------------


class _ProtocolOnlyModel:
    """A model of the protocol with neither process_noise nor transition_mixture."""

    def __init__(self, model):
        self.model = model
        self.n_states = model.n_states

    def transition_log_density(self, x, x_prev):
        return self.model.transition_log_density(x, x_prev)


def _mixture_model(covariance_type, n_states=3):
    """A learned-form mixture transition with random (untrained) networks."""
    rng = np.random.default_rng(1)
    head = make_mixture_head(3, n_states, covariance_type=covariance_type)
    params = init_mixture_network(head, n_states, (8,), rng)
    # Larger output weights than the near-zero start, so that the components'
    # weights, means and scales differ from row to row.
    params["layers"][-1] = tuple(5.0 * array for array in params["layers"][-1])
    return MixtureTransitionModel(
        params,
        head,
        Standardizer(np.zeros(n_states), np.full(n_states, 2.0)),
        LinearGaussianObservation(noise_scale=0.5, n_states=n_states),
        np.zeros(n_states),
        np.ones(n_states),
    )


def _known_models():
    _, _, linear = make_linear_gaussian(5, n_states=3, random_state=0)
    _, _, lorenz = make_lorenz96(5, n_states=6, random_state=0)
    _, _, kuramoto = make_kuramoto(5, n_oscillators=3, random_state=0)
    return {"linear": linear, "lorenz96": lorenz, "kuramoto": kuramoto}


@pytest.mark.parametrize(
    "kind",
    ["linear", "lorenz96", "kuramoto", "protocol", "mixture-diag", "mixture-full"],
)
def test_pairwise_density_equals_the_density_pair_by_pair(kind):
    if kind.startswith("mixture"):
        model = _mixture_model(kind.split("-")[1])
    elif kind == "protocol":
        model = _ProtocolOnlyModel(_known_models()["lorenz96"])
    else:
        model = _known_models()[kind]
    rng = np.random.default_rng(0)
    x_prev = 3.0 * rng.standard_normal((7, model.n_states)) + 2.0
    # Half near the transition's means (where rounding matters most), half far.
    x = np.concatenate(
        [
            np.asarray(model.model.transition_mean(x_prev[:4]))
            if kind == "protocol"
            else np.asarray(model.transition_mean(x_prev[:4])),
            5.0 * rng.standard_normal((5, model.n_states)),
        ]
    )
    # A tiny block size exercises the blocks.
    pairs = pairwise_transition_log_density(model, x, x_prev, max_bytes=1)
    expected = np.array(
        [
            [
                model.transition_log_density(x[j : j + 1], x_prev[i : i + 1])[0]
                for i in range(7)
            ]
            for j in range(len(x))
        ]
    )
    assert pairs.shape == (len(x), 7)
    # The matrix products of the Gaussian path round differently: a few ulps of
    # the whitened squared distances, which are below 1e4 here.
    np.testing.assert_allclose(pairs, expected, rtol=1e-10, atol=1e-9)


# --------------------------------------------------------------------------------------
# Forward filtering, backward smoothing
# --------------------------------------------------------------------------------------


def _standardised_error(estimate, exact, std, n_effective):
    """Mean of ``((estimate - exact) / std)**2 * n_effective`` over steps and states.

    1 for the means of ``n_effective`` independent draws; a particle system's
    errors are larger by the inflation of its asymptotic variance.
    """
    return float(np.mean(((estimate - exact) / std) ** 2 * n_effective[:, None]))


def _kalman_parts(Y, model):
    exact = kalman_smoother(Y, model)
    filtered = kalman_filter(Y, model)
    return (
        exact.smoothed_means[1:],
        np.sqrt(np.diagonal(exact.smoothed_covariances[1:], axis1=1, axis2=2)),
        filtered.filtered_means,
        np.sqrt(np.diagonal(filtered.filtered_covariances, axis1=1, axis2=2)),
    )


@pytest.mark.parametrize("gap", [False, True])
def test_ffbs_is_within_monte_carlo_error_of_the_kalman_smoother(gap):
    # Tolerance: each estimate is standardised by the exact smoothed standard
    # deviation over the square root of the ESS of its smoothing weights, so
    # that independent draws would give squared errors averaging 1. A particle
    # system's estimates have a larger variance (resampled clouds hold
    # duplicates, which the ESS of the weights does not see); that inflation is
    # measured on the same run by the filtered means against the Kalman filter,
    # and the smoother is held to twice it (the factor 2 covers the sampling
    # variability of both averages of 120 correlated squared errors). Over
    # filter seeds 0-9 the ratio was 0.71-1.23 (no gap) and 0.62-1.43 (gap),
    # the smoother's inflation 1.8-5.4 and 2.4-4.9. The spreads are held to
    # the same standard (the relative error of a standard deviation estimated
    # from n independent draws has variance 1 / (2 n)): ratios 0.46-0.98.
    Y, _, model = make_linear_gaussian(30, random_state=0)
    if gap:
        Y = Y.copy()
        Y[10:16] = np.nan
        Y[20, :2] = np.nan
    smoothed, smoothed_std, filtered, filtered_std = _kalman_parts(Y, model)
    result = particle_filter(
        Y, model, n_particles=1000, random_state=1, return_particles=True
    )
    moments = ffbs_smoothed_moments(result, model)
    ess = 1.0 / np.sum(np.exp(2.0 * moments.log_weights), axis=1)
    smoother_inflation = _standardised_error(
        moments.smoothed_means, smoothed, smoothed_std, ess
    )
    filter_inflation = _standardised_error(
        result.filtered_means, filtered, filtered_std, result.ess
    )
    assert smoother_inflation < 2.0 * filter_inflation
    smoother_spread = _standardised_error(
        moments.smoothed_scales / smoothed_std, 1.0, 1.0, 2.0 * ess
    )
    filter_spread = _standardised_error(
        result.filtered_scales / filtered_std, 1.0, 1.0, 2.0 * result.ess
    )
    assert smoother_spread < 2.0 * filter_spread
    # And later observations count: closer to the smoothed means than the
    # filter's are, and than the genealogy's (which uses no density).
    error = np.mean((moments.smoothed_means - smoothed) ** 2)
    assert error < np.mean((result.filtered_means - smoothed) ** 2) / 2
    assert error < np.mean((genealogy_smoothed_means(result) - smoothed) ** 2)


@settings(deadline=None, max_examples=15)
@pytest.mark.filterwarnings("ignore:n_particles=1:UserWarning")
@given(
    n_steps=st.integers(1, 6),
    n_particles=st.integers(1, 15),
    n_series=st.integers(1, 3),
    ess_threshold=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_ffbs_shapes_determinism_and_last_step(
    n_steps, n_particles, n_series, ess_threshold, seed
):
    Y, _, model = make_linear_gaussian(
        n_steps, n_states=2, n_sequences=n_series, random_state=seed
    )
    Y = Y.copy()
    Y[:, n_steps // 2] = np.nan
    result = particle_filter(
        Y,
        model,
        n_particles=n_particles,
        ess_threshold=ess_threshold,
        random_state=seed,
        return_particles=True,
    )
    moments = ffbs_smoothed_moments(result, model)
    assert moments.smoothed_means.shape == (n_series, n_steps, 2)
    assert moments.smoothed_scales.shape == (n_series, n_steps, 2)
    assert moments.log_weights.shape == (n_series, n_steps, n_particles)
    assert np.all(np.isfinite(moments.smoothed_means))
    assert np.all(moments.smoothed_scales >= 0)
    np.testing.assert_allclose(
        np.exp(moments.log_weights).sum(axis=-1), 1.0, rtol=1e-12
    )
    again = ffbs_smoothed_moments(result, model, max_bytes=1)
    # Deterministic, and the blocks change only the order of additions.
    np.testing.assert_array_equal(
        ffbs_smoothed_moments(result, model).smoothed_means, moments.smoothed_means
    )
    np.testing.assert_allclose(again.smoothed_means, moments.smoothed_means, atol=1e-10)
    # The last step (all of them when n_steps = 1) is the filter's.
    np.testing.assert_allclose(
        moments.smoothed_means[:, -1], result.filtered_means[:, -1], atol=1e-12
    )
    np.testing.assert_allclose(
        moments.smoothed_scales[:, -1], result.filtered_scales[:, -1], atol=1e-12
    )
    one = particle_filter(
        Y[0], model, n_particles=n_particles, random_state=seed, return_particles=True
    )
    assert ffbs_smoothed_moments(one, model).smoothed_means.shape == (n_steps, 2)


def test_ffbs_lengths_smooth_each_series_over_its_own_steps():
    Y, _, model = make_linear_gaussian(12, 2, n_states=2, random_state=0)
    Y = Y.copy()
    Y[1, 7:] = np.nan
    result = particle_filter(
        Y, model, n_particles=30, random_state=0, return_particles=True
    )
    moments = ffbs_smoothed_moments(result, model, lengths=[12, 7])
    # The short series' backward pass starts at its own last step...
    np.testing.assert_allclose(
        moments.smoothed_means[1, 6], result.filtered_means[1, 6], atol=1e-12
    )
    # ... and the padding keeps the filter's predictions.
    np.testing.assert_array_equal(moments.log_weights[1, 7:], result.log_weights[1, 7:])
    whole = ffbs_smoothed_moments(result, model)
    np.testing.assert_array_equal(moments.smoothed_means[0], whole.smoothed_means[0])
    with pytest.raises(ValueError, match="lengths must hold 2 integers"):
        ffbs_smoothed_moments(result, model, lengths=[12, 13])


def test_ffbs_needs_the_particles():
    Y, _, model = make_linear_gaussian(5, random_state=0)
    result = particle_filter(Y, model, n_particles=10, random_state=0)
    with pytest.raises(ValueError, match="return_particles=True"):
        ffbs_smoothed_moments(result, model)


def test_ffbs_on_lorenz96_beats_the_filter():
    # The locally optimal filter keeps a cloud that covers the smoothing
    # distribution (at N = 200 its ESS stays high); over seeds 0-2 the
    # smoothed MSE was 0.136-0.167 against the filtered 0.168-0.197, a gap of
    # 5 to 10 standard errors of the MSE over 1000 (step, state) pairs.
    Y, X, model = make_lorenz96(100, random_state=0)
    estimator = LocallyOptimalFilter(model, n_particles=200, random_state=0).fit(Y)
    filtered = estimator.predict(Y)
    smoothed, std = estimator.smooth(Y, return_std=True)
    assert np.mean((smoothed - X) ** 2) < 0.9 * np.mean((filtered - X) ** 2)
    assert std.shape == smoothed.shape == X.shape


# --------------------------------------------------------------------------------------
# The estimators' smooth
# --------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=10)
@given(
    n_series=st.integers(1, 3),
    n_steps=st.integers(3, 6),
    seed=st.integers(0, 2**16),
)
def test_smooth_method_shapes_determinism_and_structure(n_series, n_steps, seed):
    Y, _, model = make_linear_gaussian(n_steps, n_series, n_states=2, random_state=seed)
    estimator = BootstrapFilter(model, n_particles=15, random_state=seed).fit(Y)
    smoothed, std = estimator.smooth(Y, return_std=True)
    assert smoothed.shape == std.shape == (n_series, n_steps, 2)
    np.testing.assert_array_equal(estimator.smooth(Y), smoothed)
    # One pass over all the series: the last step is predict's.
    np.testing.assert_allclose(smoothed[:, -1], estimator.predict(Y)[:, -1], atol=1e-12)
    assert estimator.smooth(Y[0]).shape == (n_steps, 2)
    pieces = estimator.smooth(
        [one[: n_steps - index % 2] for index, one in enumerate(Y)]
    )
    assert [len(piece) for piece in pieces] == [
        n_steps - index % 2 for index in range(n_series)
    ]


def test_smooth_method_on_a_learned_mixture_transition(fitted_state_mix):
    estimator, Y = fitted_state_mix
    smoothed, std = estimator.smooth(Y, return_std=True)
    assert smoothed.shape == std.shape == (3, 20, 2)
    assert np.all(np.isfinite(smoothed))
    np.testing.assert_array_equal(estimator.smooth(Y), smoothed)
    np.testing.assert_allclose(smoothed[:, -1], estimator.predict(Y)[:, -1], atol=1e-12)


def test_smooth_method_chunks_many_series(monkeypatch):
    # With room for one series per pass, each series gets its own pass (and
    # seed); the results keep the input's order and shapes.
    monkeypatch.setattr(estimator_module, "_SMOOTHER_FLOATS", 1)
    Y, _, model = make_linear_gaussian(8, 3, n_states=2, random_state=0)
    estimator = BootstrapFilter(model, n_particles=10, random_state=0).fit(Y)
    smoothed = estimator.smooth(Y)
    assert smoothed.shape == (3, 8, 2)
    first = estimator.smooth(Y[:1])
    np.testing.assert_array_equal(smoothed[0], first[0])


def test_smooth_method_needs_a_fit():
    Y, _, model = make_linear_gaussian(5, random_state=0)
    with pytest.raises(NotFittedError):
        BootstrapFilter(model).smooth(Y)
