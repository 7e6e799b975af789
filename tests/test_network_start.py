"""Where StateMixFilter's networks start, on data with missing entries."""

import numpy as np
import pytest

from statemix_sk.datasets import make_linear_gaussian
from statemix_sk.kalman import linear_dynamics_by_moments
from statemix_sk.network_start import (
    dynamics_start,
    least_squares_states,
    state_statistics,
)
from statemix_sk.observations import LinearGaussianObservation


def test_least_squares_states_miss_only_the_states_that_need_a_missing_entry():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(50, 3))
    Y[rng.random(Y.shape) < 0.3] = np.nan
    # H = I: state j is y_j, missing exactly where y_j is.
    states = least_squares_states(Y, np.eye(3))
    np.testing.assert_array_equal(np.isnan(states), np.isnan(Y))
    np.testing.assert_array_equal(states[~np.isnan(Y)], Y[~np.isnan(Y)])
    # A block-diagonal H: states 0-1 read outputs 0-1, state 2 output 2.
    H = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    inverse = np.linalg.pinv(H)
    states = least_squares_states(Y, inverse)
    missing = np.isnan(Y)
    np.testing.assert_array_equal(np.isnan(states[:, 0]), missing[:, :2].any(1))
    np.testing.assert_array_equal(np.isnan(states[:, 1]), missing[:, 1])
    np.testing.assert_array_equal(np.isnan(states[:, 2]), missing[:, 2])
    known = ~missing.any(axis=1)
    np.testing.assert_allclose(states[known], Y[known] @ inverse.T, rtol=1e-13)
    # A dense H mixes every output into every state.
    dense = rng.normal(size=(3, 3))
    states = least_squares_states(Y, np.linalg.pinv(dense))
    np.testing.assert_array_equal(np.isnan(states), np.repeat(~known[:, None], 3, 1))
    # Nothing missing: the plain product, to the bit.
    complete = rng.normal(size=(20, 3))
    assert np.array_equal(least_squares_states(complete, inverse), complete @ inverse.T)


@pytest.mark.slow
def test_a_linear_start_is_fitted_when_no_step_is_observed_in_full():
    # 30% of four entries missing at random: only 0.7**4 = 24% of the steps
    # are complete and 6% of the pairs of steps. The start still fits the
    # linear dynamics (moments on the pairs observing each entry pair, then
    # EM), as close to the truth as from complete data up to sampling noise.
    Y, _, model = make_linear_gaussian(
        400, 5, n_states=4, observation_noise=0.5, random_state=1
    )
    missing = Y.copy()
    missing[np.random.default_rng(1).random(Y.shape) < 0.3] = np.nan
    errors = []
    for data in (Y, missing):
        series = list(data)
        statistics = state_statistics(series, model.observation)
        drift, _, linear = dynamics_start(
            series, model.observation, *statistics, "linear"
        )
        assert drift is not None and linear is not None
        errors.append(np.max(np.abs(linear[0] - model.transition_matrix)))
    # 2,000 steps: each entry of A has a standard error of about
    # 1 / sqrt(2000 * 0.49) = 0.03 from the missing data; 0.15 is five of them.
    assert errors[1] < 0.15, errors


@pytest.mark.slow
def test_em_starts_from_a_random_walk_where_no_state_can_be_read_off_a_step():
    # An H that mixes every state into every output, with entries missing: a
    # least-squares state needs every output, so almost no pair of steps gives
    # moments. EM needs no such states and starts from the random walk.
    Y, X, model = make_linear_gaussian(
        400, 5, n_states=3, observation_noise=0.5, random_state=2
    )
    rng = np.random.default_rng(2)
    mixing = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    observation = LinearGaussianObservation(mixing, noise_scale=0.5)
    Y = X @ mixing.T + 0.5 * rng.standard_normal(X.shape)
    Y[rng.random(Y.shape) < 0.7] = np.nan
    series = list(Y)
    statistics = state_statistics(series, observation)
    states = [least_squares_states(one, np.linalg.pinv(mixing)) for one in series]
    assert (
        linear_dynamics_by_moments(states, 0.25 * np.eye(3), statistics[0].mean)[0]
        is None
    )
    drift, _, linear = dynamics_start(series, observation, *statistics, "linear")
    assert drift is not None and linear is not None
    # 2,000 steps with 30% of the outputs: each entry of A within a few
    # standard errors (about 1 / sqrt(600) = 0.04) of the truth.
    assert np.max(np.abs(linear[0] - model.transition_matrix)) < 0.2
