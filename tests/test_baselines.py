"""Linear-Gaussian baselines: random walk, method of moments, EM."""

import numpy as np
import pytest

from statemix_sk.datasets import make_linear_gaussian
from statemix_sk.kalman import (
    _available_case_product,
    kalman_filter,
    linear_dynamics_by_em,
    linear_dynamics_by_moments,
    random_walk_model,
)
from statemix_sk.models import LinearGaussianModel
from statemix_sk.observations import LinearGaussianObservation


def _log_likelihood_per_step(Y, observation, A, q, mean, initial_mean, scale):
    model = LinearGaussianModel(
        A,
        np.sqrt(q),
        observation,
        initial_mean=initial_mean - mean,
        initial_scale=scale,
    )
    offset = observation.observation_matrix @ mean
    total = sum(kalman_filter(y - offset, model).log_likelihood for y in Y)
    return total / np.sum(~np.all(np.isnan(Y), axis=-1))


@pytest.fixture(scope="module")
def small():
    """Two short series of a 2-state model, partly missing, and a moments start."""
    Y, _, model = make_linear_gaussian(
        60, 2, n_states=2, observation_noise=0.4, random_state=3
    )
    Y = Y.copy()
    Y[0, 5] = np.nan
    Y[1, 7, 0] = np.nan
    mean = np.nanmean(Y.reshape(-1, 2), axis=0)
    R = model.observation.noise_covariance
    A0, q0 = linear_dynamics_by_moments(list(Y), R, mean)
    return Y, model.observation, mean, A0, q0, np.zeros(2), np.ones(2)


def test_em_never_lowers_the_exact_log_likelihood(small):
    Y, observation, mean, A0, q0, m0, s0 = small
    A, q, trace = linear_dynamics_by_em(
        list(Y), observation, mean, A0, q0, m0, s0, max_iter=20, tol=0.0
    )
    assert len(trace) == 21
    # The first entry is the start's exact log-likelihood per observed step, the
    # last that of the returned parameters (the best seen).
    assert trace[0] == pytest.approx(
        _log_likelihood_per_step(Y, observation, A0, q0, mean, m0, s0), rel=1e-12
    )
    assert trace.max() == pytest.approx(
        _log_likelihood_per_step(Y, observation, A, q, mean, m0, s0), rel=1e-12
    )
    # EM's ascent property, up to rounding.
    assert np.all(np.diff(trace) > -1e-10)
    assert trace[-1] > trace[0]


def test_em_stops_at_a_stationary_point_of_the_exact_likelihood(small):
    # A fixed point of EM is a stationary point of the likelihood: the central
    # finite-difference gradient in (A, log q) there is small next to the
    # start's.
    Y, observation, mean, A0, q0, m0, s0 = small

    def gradient(A, q, h=1e-5):
        theta = np.concatenate([A.ravel(), np.log(q)])

        def value(theta):
            return _log_likelihood_per_step(
                Y, observation, theta[:4].reshape(2, 2), np.exp(theta[4:]), mean, m0, s0
            )

        return np.array(
            [
                (value(theta + h * e) - value(theta - h * e)) / (2 * h)
                for e in np.eye(theta.size)
            ]
        )

    A, q, trace = linear_dynamics_by_em(
        list(Y), observation, mean, A0, q0, m0, s0, max_iter=400, tol=1e-11
    )
    assert len(trace) < 401
    assert np.linalg.norm(gradient(A, q)) < 1e-3 * np.linalg.norm(gradient(A0, q0))


def test_em_recovers_the_dynamics_of_a_long_series():
    Y, _, model = make_linear_gaussian(1000, observation_noise=0.1, random_state=0)
    observation = model.observation
    mean = Y.mean(axis=0)
    A0, q0 = linear_dynamics_by_moments([Y], observation.noise_covariance, mean)
    A, q, trace = linear_dynamics_by_em(
        [Y], observation, mean, A0, q0, np.zeros(4), np.ones(4)
    )
    # With little observation noise this is nearly a regression of x_t on
    # x_{t-1}: each entry of A has a standard error of about
    # 0.3 / sqrt(1000 * 0.92) = 0.01 (process noise 0.3, stationary variance
    # 0.09 / (1 - 0.95**2) = 0.92), so 0.05 is five of them; the sum of the four
    # process variances has a relative standard error of about sqrt(2 / 4000) =
    # 0.022, so 0.1 is four and a half.
    assert np.abs(A - model.transition_matrix).max() < 0.05
    assert q.sum() == pytest.approx(4 * 0.3**2, rel=0.1)
    assert trace[-1] > trace[0]


def test_em_accepts_any_object_with_the_linear_observation_members(small):
    Y, observation, mean, A0, q0, m0, s0 = small

    class Duck:
        observation_matrix = observation.observation_matrix
        noise_covariance = observation.noise_covariance

    expected = linear_dynamics_by_em(list(Y), observation, mean, A0, q0, m0, s0)
    got = linear_dynamics_by_em(list(Y), Duck(), mean, A0, q0, m0, s0)
    for one, other in zip(expected, got, strict=True):
        np.testing.assert_array_equal(one, other)


def test_moments_need_enough_pairs_and_keep_the_dynamics_stable():
    rng = np.random.default_rng(0)
    A, q = linear_dynamics_by_moments([rng.normal(size=(4, 3))], np.eye(3), np.zeros(3))
    assert A is None and q is None
    # A random walk (unit root) observed without noise: the estimate is pulled
    # inside the unit circle, with positive process variances.
    walk = np.cumsum(rng.normal(size=(500, 2)), axis=0)
    A, q = linear_dynamics_by_moments([walk], np.zeros((2, 2)), walk.mean(0))
    assert np.abs(np.linalg.eigvals(A)).max() <= 0.999 + 1e-12
    assert np.all(q > 0)


def _moments_by_definition(states, mean):
    """Lag-0 and lag-1 moments entry by entry, each over the rows observing it."""
    previous = np.concatenate([one[:-1] for one in states]) - mean
    current = np.concatenate([one[1:] for one in states]) - mean
    both = np.concatenate([previous, current])
    n_states = mean.size
    lag0, lag1 = np.empty((n_states, n_states)), np.empty((n_states, n_states))
    for i in range(n_states):
        for j in range(n_states):
            seen = ~np.isnan(both[:, i]) & ~np.isnan(both[:, j])
            lag0[i, j] = np.mean(both[seen, i] * both[seen, j])
            seen = ~np.isnan(current[:, i]) & ~np.isnan(previous[:, j])
            lag1[i, j] = np.mean(current[seen, i] * previous[seen, j])
    return lag0, lag1


def test_moments_use_every_pair_that_observes_an_entry_pair():
    # 30% of 3 entries missing at random: 0.7**6 = 12% of the pairs are
    # complete, but every moment is estimated from the ~49% of the pairs that
    # observe its two entries.
    Y, _, model = make_linear_gaussian(
        5000, n_states=3, observation_noise=0.7, random_state=4
    )
    Y = Y.copy()
    Y[np.random.default_rng(4).random(Y.shape) < 0.3] = np.nan
    mean = np.nanmean(Y, axis=0)
    R = model.observation.noise_covariance
    lag0, lag1 = _moments_by_definition([Y], mean)
    # The estimator's A from moments computed entry by entry (H = I: the
    # states are the observations).
    values, vectors = np.linalg.eigh(lag0 - R)
    expected = lag1 @ np.linalg.inv((vectors * values) @ vectors.T)
    A, q = linear_dynamics_by_moments([Y], R, mean)
    np.testing.assert_allclose(A, expected, rtol=1e-10, atol=1e-12)
    # Each entry of A averages ~2,400 pairs: its standard error is about
    # 1 / sqrt(2400) times a few (noise 0.7 against a unit-scale state),
    # under 0.05; 0.15 is three of those.
    assert np.max(np.abs(A - model.transition_matrix)) < 0.15
    assert np.all(q > 0)
    # Only the complete pairs: too few once the rows are long, so the
    # available-case moments are what make a start possible at all.
    wide = np.where(np.random.default_rng(5).random((300, 10)) < 0.3, np.nan, 1.0)
    complete_pairs = np.sum(~np.isnan(wide[1:] + wide[:-1]).any(axis=1))
    assert complete_pairs < 2 * 10 + 2
    walk = np.cumsum(np.random.default_rng(6).normal(size=(300, 10)), 0) * wide
    A, _ = linear_dynamics_by_moments([walk], np.eye(10), np.nanmean(walk, 0))
    assert A is not None and np.all(np.isfinite(A))


def test_moments_of_complete_rows_are_the_complete_case_products():
    Y, _, _ = make_linear_gaussian(200, 2, n_states=3, random_state=5)
    mean = Y.reshape(-1, 3).mean(0)
    lag0, lag1 = _moments_by_definition(list(Y), mean)
    previous = np.concatenate([one[:-1] for one in Y]) - mean
    current = np.concatenate([one[1:] for one in Y]) - mean
    both = np.concatenate([previous, current])
    # The plain products (what the estimator computed before it handled
    # missing entries), and with nothing missing, their bits.
    np.testing.assert_allclose(lag0, both.T @ both / len(both), rtol=1e-13)
    np.testing.assert_allclose(lag1, current.T @ previous / len(previous), rtol=1e-13)
    assert np.array_equal(
        _available_case_product(both, both), both.T @ both / len(both)
    )
    assert np.array_equal(
        _available_case_product(current, previous),
        current.T @ previous / len(previous),
    )


def test_random_walk_model_reads_the_increment_variance_off_the_data():
    rng = np.random.default_rng(1)
    n_steps, increment, noise = 5000, np.array([0.2, 0.5]), 0.3
    states = np.cumsum(increment * rng.normal(size=(n_steps, 2)), axis=0)
    Y = states + noise * rng.normal(size=(n_steps, 2))
    observation = LinearGaussianObservation(noise_scale=noise, n_states=2)
    walk = random_walk_model(Y, observation, np.zeros(2), np.ones(2))
    np.testing.assert_array_equal(walk.transition_matrix, np.eye(2))
    # Var(y_t - y_{t-1}) = q + 2 r estimated from 5000 differences: a relative
    # standard error of about sqrt(2 / 5000) on it, larger on q alone.
    np.testing.assert_allclose(
        np.sqrt(np.diag(walk.process_covariance)), increment, rtol=0.1
    )
    with pytest.raises(ValueError, match="LinearGaussianObservation"):
        random_walk_model(Y, object(), np.zeros(2), np.ones(2))
