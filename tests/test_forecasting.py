"""Forecasts from a filter's final cloud: against the Kalman forecast, and shapes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.exceptions import NotFittedError

from statemix_sk import BootstrapFilter, ForecastResult
from statemix_sk.datasets import make_kuramoto, make_linear_gaussian
from statemix_sk.filtering import particle_filter
from statemix_sk.forecasting import _weighted_quantiles, forecast
from statemix_sk.kalman import kalman_filter
from statemix_sk.models import LinearGaussianModel

# The most a particle system's squared errors may exceed those of independent
# draws with the same ESS, on average over a test's estimates. On this model the
# filter's own inflation, measured against the Kalman filter over ten seeds
# (tests/test_smoothing.py), was 2.2 to 5.9; twice the largest allows for the
# sampling variability of an average of 40 correlated squared errors.
INFLATION = 12.0


def _kalman_forecast(Y, model, n_steps):
    """Means and standard deviations of the exact k-step forecasts, k = 1..n."""
    filtered = kalman_filter(Y, model)
    A, Q = model.transition_matrix, model.process_covariance
    H = model.observation.observation_matrix
    R = model.observation.noise_covariance
    mean, covariance = filtered.filtered_means[-1], filtered.filtered_covariances[-1]
    rows = []
    for _ in range(n_steps):
        mean = A @ mean
        covariance = A @ covariance @ A.T + Q
        rows.append(
            (
                mean,
                np.sqrt(np.diag(covariance)),
                H @ mean,
                np.sqrt(np.diag(H @ covariance @ H.T + R)),
            )
        )
    return [np.array(column) for column in zip(*rows, strict=True)]


def _inflation(estimate, exact, std, n_effective):
    """Mean of ``((estimate - exact) / std)**2 * n_effective``: 1 for iid draws."""
    return float(np.mean(((estimate - exact) / std) ** 2) * n_effective)


@pytest.mark.parametrize("gap", [False, True])
def test_forecast_matches_the_kalman_forecast(gap):
    # Each estimate is standardised by its Monte Carlo standard error for
    # independent draws with the final weights' ESS (conservative: after the
    # resampling the transition noise is averaged over all N trajectories):
    # std / sqrt(ESS) for a mean, sqrt(2 / ESS) relative for a variance,
    # sqrt(q (1 - q) / ESS) / phi(z_q) stds for a Gaussian quantile; the
    # average squared standardised error may exceed 1 by at most INFLATION.
    # Measured at these seeds: 0.37 and 1.42 (means, no gap and gap), 0.23 and
    # 1.24 (variances). With the last four rows missing, the filter carries its
    # cloud across them and the forecast starts after the gap.
    Y, _, model = make_linear_gaussian(30, random_state=0)
    if gap:
        Y = Y.copy()
        Y[-4:] = np.nan
    n_steps = 10
    state_mean, state_std, output_mean, output_std = _kalman_forecast(Y, model, n_steps)
    result = particle_filter(Y, model, n_particles=2000, random_state=1)
    levels = [0.1, 0.5, 0.9]
    ahead = forecast(result, model, n_steps, quantiles=levels, random_state=2)
    ess = 1.0 / np.sum(np.exp(2.0 * result.final_log_weights))
    assert _inflation(ahead.state_mean, state_mean, state_std, ess) < INFLATION
    assert _inflation(ahead.observation_mean, output_mean, output_std, ess) < INFLATION
    assert _inflation(ahead.state_std**2 / state_std**2, 1.0, 1.0, ess / 2) < INFLATION
    assert (
        _inflation(ahead.observation_std**2 / output_std**2, 1.0, 1.0, ess / 2)
        < INFLATION
    )
    for index, level in enumerate(levels):
        z = norm.ppf(level)
        quantile_error = np.sqrt(level * (1 - level)) / norm.pdf(z)
        for quantiles, mean, std in (
            (ahead.state_quantiles, state_mean, state_std),
            (ahead.observation_quantiles, output_mean, output_std),
        ):
            assert (
                _inflation(quantiles[index], mean + z * std, quantile_error * std, ess)
                < INFLATION
            )


@settings(deadline=None, max_examples=15)
@pytest.mark.filterwarnings("ignore:n_particles=1:UserWarning")
@given(
    n_series=st.one_of(st.none(), st.integers(1, 3)),
    n_particles=st.integers(1, 12),
    n_steps=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_forecast_shapes_and_determinism(n_series, n_particles, n_steps, seed):
    Y, _, model = make_kuramoto(5, n_series, n_oscillators=2, random_state=seed)
    result = particle_filter(Y, model, n_particles=n_particles, random_state=seed)
    ahead = forecast(result, model, n_steps, random_state=seed)
    lead = () if n_series is None else (n_series,)
    assert ahead.state_mean.shape == ahead.state_std.shape == (*lead, n_steps, 2)
    assert ahead.observation_mean.shape == (*lead, n_steps, 4)
    assert ahead.observation_std.shape == (*lead, n_steps, 4)
    assert ahead.state_quantiles is None
    # The observation noise alone has standard deviation 0.5.
    assert np.all(ahead.observation_std >= 0.5 - 1e-12)
    again = forecast(result, model, n_steps, random_state=seed)
    for field, repeat in zip(ahead, again, strict=True):
        np.testing.assert_array_equal(field, repeat)
    levels = [0.9, 0.1, 0.5]
    banded = forecast(result, model, n_steps, quantiles=levels, random_state=seed)
    # Quantiles draw their noise elsewhere: the states are the same.
    np.testing.assert_array_equal(banded.state_mean, ahead.state_mean)
    assert banded.state_quantiles.shape == (*lead, 3, n_steps, 2)
    assert banded.observation_quantiles.shape == (*lead, 3, n_steps, 4)
    order = np.argsort(levels)
    for quantiles in (banded.state_quantiles, banded.observation_quantiles):
        ordered = np.take(quantiles, order, axis=-3)
        assert np.all(np.diff(ordered, axis=-3) >= 0)


@pytest.mark.parametrize("n_steps", [0, -1, 1.5, True, "2", None])
def test_forecast_rejects_a_bad_number_of_steps(n_steps):
    Y, _, model = make_linear_gaussian(5, random_state=0)
    result = particle_filter(Y, model, n_particles=5, random_state=0)
    with pytest.raises(ValueError, match="n_steps must be"):
        forecast(result, model, n_steps)
    estimator = BootstrapFilter(model, n_particles=5, random_state=0).fit(Y)
    with pytest.raises(ValueError, match="n_steps must be"):
        estimator.forecast(Y, n_steps)


@pytest.mark.parametrize("quantiles", [[], [0.0, 0.5], [1.0], [[0.5]], ["a"], 0.5])
def test_forecast_rejects_bad_quantiles(quantiles):
    Y, _, model = make_linear_gaussian(5, random_state=0)
    result = particle_filter(Y, model, n_particles=5, random_state=0)
    with pytest.raises(ValueError, match="quantiles must be"):
        forecast(result, model, 2, quantiles=quantiles)


def test_weighted_quantiles_invert_the_weighted_cdf():
    # Values 2, 0, 1 with weights 0.3, 0.2, 0.5: the weighted CDF at 0, 1, 2 is
    # 0.2, 0.7, 1; a level takes the first value whose CDF reaches it.
    values = np.array([[[2.0], [0.0], [1.0]]])
    weights = np.array([[0.3, 0.2, 0.5]])
    levels = np.array([0.1, 0.2, 0.21, 0.7, 0.71, 0.99])
    quantiles = _weighted_quantiles(values, weights, levels)
    assert quantiles.shape == (6, 1, 1)
    np.testing.assert_array_equal(quantiles[:, 0, 0], [0, 0, 1, 1, 2, 2])


def test_forecast_resamples_a_cloud_whose_weight_sits_on_one_particle():
    # All the weight on one particle of a random walk with unit noise: one step
    # ahead the state is N(x, 1). Carried weights would follow that particle's
    # one trajectory (spread 0); resampled, all 4000 trajectories start there.
    # The spread of 4000 draws has a relative standard error of 1 / sqrt(8000),
    # about 0.011: 0.05 is more than four of them.
    _, _, model = make_linear_gaussian(1, n_states=1, random_state=0)
    model = LinearGaussianModel(np.eye(1), 1.0, model.observation)
    log_weights = np.full(4000, -np.inf)
    log_weights[7] = 0.0
    result = particle_filter(np.zeros((1, 1)), model, n_particles=4000)._replace(
        final_particles=np.arange(4000.0)[:, None], final_log_weights=log_weights
    )
    ahead = forecast(result, model, 1, random_state=0)
    assert abs(ahead.state_std[0, 0] - 1.0) < 0.05
    assert abs(ahead.state_mean[0, 0] - 7.0) < 4 * 1.0 / np.sqrt(4000)


# --------------------------------------------------------------------------------------
# The estimators' forecast
# --------------------------------------------------------------------------------------


def test_forecast_method_keeps_the_structure_of_y():
    Y, _, model = make_linear_gaussian(20, 2, n_states=2, random_state=0)
    estimator = BootstrapFilter(model, n_particles=50, random_state=0).fit(Y)
    ahead = estimator.forecast(Y, 3, quantiles=[0.5])
    assert isinstance(ahead, ForecastResult)
    assert ahead.state_mean.shape == (2, 3, 2)
    assert ahead.state_quantiles.shape == (2, 1, 3, 2)
    for field, repeat in zip(
        ahead, estimator.forecast(Y, 3, quantiles=[0.5]), strict=True
    ):
        np.testing.assert_array_equal(field, repeat)
    assert estimator.forecast(Y[0], 3).observation_std.shape == (3, 2)
    # Each series of a list is forecast from its own end: a shorter one alone
    # or in front of a longer one gives the same forecast.
    short = Y[1][:12]
    listed = estimator.forecast([short, Y[0]], 3)
    assert isinstance(listed.state_mean, list) and len(listed.state_mean) == 2
    np.testing.assert_array_equal(
        listed.state_mean[0], estimator.forecast(short, 3).state_mean
    )
    assert listed.state_quantiles is None


def test_forecast_method_on_a_learned_mixture_transition(fitted_state_mix):
    estimator, Y = fitted_state_mix
    ahead = estimator.forecast(Y, 4)
    assert ahead.state_mean.shape == (3, 4, 2)
    assert np.all(np.isfinite(ahead.observation_std))
    np.testing.assert_array_equal(estimator.forecast(Y, 4).state_mean, ahead.state_mean)


def test_forecast_method_needs_a_fit():
    Y, _, model = make_linear_gaussian(5, random_state=0)
    with pytest.raises(NotFittedError):
        BootstrapFilter(model).forecast(Y, 2)
