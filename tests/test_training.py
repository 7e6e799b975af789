import autograd.numpy as anp
import numpy as np
import pytest
from autograd.misc import flatten

import statemix_sk.training as training
from statemix_sk.datasets import make_linear_gaussian
from statemix_sk.learned import StateMixSpec
from statemix_sk.models import GaussianObservation, LinearGaussianObservation
from statemix_sk.networks import Standardizer, make_mixture_head
from statemix_sk.training import (
    AdamState,
    TrainingSettings,
    adam_init,
    adam_update,
    clip_by_norm,
    count_observed_steps,
    fit_restarts,
    resolve_window_schedule,
    train,
)

N_STATES = 2


def _clipped_identity(x):
    """``h(x) = x`` for moderate states, NaN for far ones: forces divergence."""
    return anp.where(anp.abs(x) < 20.0, x, anp.nan)


class _NaNObservation(LinearGaussianObservation):
    """``y = x + v`` whose density is always NaN: nothing can be finite."""

    def log_density(self, x, y):
        return super().log_density(x, y) * anp.nan


def make_spec(observation=None):
    observation = (
        LinearGaussianObservation(noise_scale=0.7, n_states=N_STATES)
        if observation is None
        else observation
    )
    spread = np.full(N_STATES, 0.5)
    head = make_mixture_head(1, N_STATES, location_scale=spread, initial_scale=spread)
    return StateMixSpec(
        head,
        head,
        Standardizer(np.zeros(N_STATES), np.ones(N_STATES)),
        observation,
        np.zeros(N_STATES),
        np.ones(N_STATES),
        (8,),
    )


def make_settings(**overrides):
    values = dict(
        n_particles=8,
        resampling="systematic",
        ess_threshold=1.0,
        max_iter=4,
        tol=0.0,  # never met: every run goes to max_iter unless a test says so
        learning_rate=0.01,
        n_transition_steps=1,
        n_proposal_steps=1,
        eval_every=1,
    )
    values.update(overrides)
    return TrainingSettings(**values)


@pytest.fixture(scope="module")
def problem():
    Y, _, _ = make_linear_gaussian(20, 2, n_states=N_STATES, random_state=0)
    spec = make_spec()
    params = spec.init_params(np.random.default_rng(0))
    return Y, spec, params


def flat(params):
    return flatten(params)[0]


def run(problem, schedule, settings, params=None, spec=None, seed=0):
    Y, default_spec, default_params = problem
    return train(
        default_params if params is None else params,
        default_spec if spec is None else spec,
        Y,
        schedule,
        settings,
        np.random.default_rng(seed),
        123,
    )


# ------------------------------------------------------------------------------------
# Adam and clipping
# ------------------------------------------------------------------------------------


def test_adam_update_matches_a_hand_computed_step():
    gradient_1 = np.array([0.5, -2.0, 0.0])
    gradient_2 = np.array([1.0, 1.0, -3.0])
    learning_rate, beta1, beta2, epsilon = 0.1, 0.9, 0.999, 1e-8

    step, state = adam_update(adam_init(3), gradient_1, learning_rate)
    # First step: both moments are bias-corrected to g and g**2, so the step is
    # lr * g / (|g| + eps): lr * sign(g) where g is not 0.
    np.testing.assert_allclose(step, [0.1, -0.1, 0.0], rtol=1e-7)
    np.testing.assert_allclose(state.first_moment, 0.1 * gradient_1)
    np.testing.assert_allclose(state.second_moment, 0.001 * gradient_1**2)
    assert state.n_updates == 1

    step, state = adam_update(state, gradient_2, learning_rate)
    first = beta1 * 0.1 * gradient_1 + 0.1 * gradient_2
    second = beta2 * 0.001 * gradient_1**2 + 0.001 * gradient_2**2
    expected = (
        learning_rate
        * (first / (1 - beta1**2))
        / (np.sqrt(second / (1 - beta2**2)) + epsilon)
    )
    np.testing.assert_allclose(step, expected, rtol=1e-12)
    np.testing.assert_allclose(state.first_moment, first, rtol=1e-12)
    np.testing.assert_allclose(state.second_moment, second, rtol=1e-12)
    assert state.n_updates == 2


def test_adam_update_does_not_modify_its_state():
    state = AdamState(np.ones(2), np.ones(2), 3)
    adam_update(state, np.array([1.0, -1.0]), 0.1)
    np.testing.assert_array_equal(state.first_moment, np.ones(2))
    np.testing.assert_array_equal(state.second_moment, np.ones(2))
    assert state.n_updates == 3


def test_adam_ascends_a_concave_quadratic_to_its_maximum():
    # f(x) = -|x - c|^2 / 2 has gradient c - x and its maximum at c.
    centre = np.array([1.5, -2.0, 0.25])
    x, state = np.zeros(3), adam_init(3)
    values = []
    for _ in range(2000):
        values.append(-0.5 * np.sum((x - centre) ** 2))
        step, state = adam_update(state, centre - x, 0.05)
        x = x + step
    np.testing.assert_allclose(x, centre, atol=1e-6)
    assert values[50] > values[0]  # ascent, not descent


def test_clip_by_norm_shortens_long_gradients_only():
    gradient = np.array([3.0, 4.0])  # norm 5
    clipped = clip_by_norm(gradient, 1.0)
    np.testing.assert_allclose(np.linalg.norm(clipped), 1.0)
    np.testing.assert_allclose(clipped, gradient / 5.0)
    np.testing.assert_array_equal(clip_by_norm(gradient, 5.0), gradient)
    np.testing.assert_array_equal(clip_by_norm(gradient, 10.0), gradient)
    np.testing.assert_array_equal(clip_by_norm(np.zeros(3), 1.0), np.zeros(3))


# ------------------------------------------------------------------------------------
# Window schedule and observed steps
# ------------------------------------------------------------------------------------


def test_resolve_window_schedule_with_fractions():
    schedule = resolve_window_schedule(
        ((0.1, 0.1), (0.25, 0.15), (0.5, 0.25)), n_steps=100, max_iter=60
    )
    assert schedule == [(10, 6), (25, 9), (50, 15), (100, 30)]


def test_resolve_window_schedule_with_integers():
    assert resolve_window_schedule(((5, 2), (10, 3)), 20, 10) == [
        (5, 2),
        (10, 3),
        (20, 5),
    ]


def test_resolve_window_schedule_fraction_windows_have_at_least_two_steps():
    assert resolve_window_schedule(((0.01, 1),), 20, 4) == [(2, 1), (20, 3)]


def test_resolve_window_schedule_clips_windows_and_iterations():
    # A window as long as the series (or longer) is the whole series.
    assert resolve_window_schedule(((30, 2),), 20, 10) == [(20, 10)]
    assert resolve_window_schedule(((1.0, 2),), 20, 10) == [(20, 10)]
    # Iterations are clipped to what max_iter leaves.
    assert resolve_window_schedule(((5, 8), (10, 8)), 20, 10) == [
        (5, 8),
        (10, 2),
        (20, 0),
    ]


def test_resolve_window_schedule_gives_the_remainder_to_the_whole_series():
    assert resolve_window_schedule((), 20, 7) == [(20, 7)]
    # Windows with no iterations are dropped.
    assert resolve_window_schedule(((5, 0), (10, 0.0)), 20, 7) == [(20, 7)]
    for max_iter in (1, 3, 60):
        schedule = resolve_window_schedule(
            ((0.1, 0.1), (0.25, 0.15), (0.5, 0.25)), 40, max_iter
        )
        assert sum(n for _, n in schedule) == max_iter
        assert schedule[-1][0] == 40
        lengths = [length for length, _ in schedule]
        assert lengths == sorted(lengths)


def test_resolve_window_schedule_rejects_decreasing_windows():
    with pytest.raises(ValueError, match="non-decreasing"):
        resolve_window_schedule(((10, 1), (5, 1)), 20, 10)
    with pytest.raises(ValueError, match="non-decreasing"):
        resolve_window_schedule(((0.5, 1), (0.25, 1)), 20, 10)


def test_count_observed_steps_ignores_rows_that_are_entirely_missing():
    Y = np.ones((2, 5, 3))
    Y[0, 1] = np.nan  # entirely missing: not counted
    Y[1, 2, 0] = np.nan  # partly observed: counted
    Y[1, 4, :2] = np.nan  # partly observed: counted
    assert count_observed_steps(Y) == 9
    assert count_observed_steps(Y[0]) == 4
    assert count_observed_steps(np.full((3, 2), np.nan)) == 0


# ------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------


def test_train_history_follows_the_schedule_every_iteration(problem):
    schedule = [(5, 1), (10, 1), (20, 2)]
    result = run(problem, schedule, make_settings(max_iter=4))
    assert result.n_iter == 4
    assert not result.converged and not result.diverged
    # The start first, evaluated on the whole series; then both phases of every
    # iteration on its window.
    assert [entry.iteration for entry in result.history] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [entry.window for entry in result.history] == [20] + [5, 5, 10, 10] + [
        20
    ] * 4
    assert [entry.phase for entry in result.history] == ["start"] + [
        "transition",
        "proposal",
    ] * 4
    seconds = [entry.seconds for entry in result.history]
    assert seconds == sorted(seconds)
    assert all(np.isfinite(entry.log_likelihood) for entry in result.history)


def test_train_evaluates_every_eval_every_iterations_and_at_the_end(problem):
    schedule = resolve_window_schedule(((5, 1), (10, 1)), 20, 5)
    assert schedule == [(5, 1), (10, 1), (20, 3)]
    result = run(problem, schedule, make_settings(max_iter=5, eval_every=2))
    # The start, iterations 2 and 4, and the last one on the whole series.
    history = result.history[1:]
    assert result.history[0].phase == "start"
    assert [entry.iteration for entry in history] == [2, 2, 4, 4, 5, 5]
    assert [entry.window for entry in history] == [10, 10, 20, 20, 20, 20]
    windows = [entry.window for entry in history]
    assert windows == sorted(windows)
    assert [entry.phase for entry in history] == ["transition", "proposal"] * 3


def test_train_does_not_modify_the_initial_parameters(problem):
    _, _, params = problem
    before = flat(params).copy()
    run(problem, [(20, 2)], make_settings(max_iter=2))
    np.testing.assert_array_equal(flat(params), before)


def test_a_transition_phase_changes_only_the_transition(problem):
    _, _, params = problem
    result = run(problem, [(20, 2)], make_settings(max_iter=2, n_proposal_steps=0))
    trained = result.final_params
    np.testing.assert_array_equal(flat(trained["proposal"]), flat(params["proposal"]))
    assert not np.array_equal(flat(trained["transition"]), flat(params["transition"]))


def test_a_proposal_phase_changes_only_the_proposal(problem):
    _, _, params = problem
    result = run(problem, [(20, 2)], make_settings(max_iter=2, n_transition_steps=0))
    trained = result.final_params
    np.testing.assert_array_equal(
        flat(trained["transition"]), flat(params["transition"])
    )
    assert not np.array_equal(flat(trained["proposal"]), flat(params["proposal"]))


def test_train_keeps_the_best_evaluation_on_the_whole_series_the_start_included(
    problem,
):
    Y, spec, params = problem
    settings = make_settings(max_iter=3)
    result = run(problem, [(10, 1), (20, 2)], settings)
    on_whole = [e for e in result.history if e.window == Y.shape[1]]
    assert on_whole[0].phase == "start" and on_whole[0].iteration == 0
    best = max(on_whole, key=lambda e: e.log_likelihood)
    kept = training.mean_log_likelihood(
        result.params, spec, Y, training.count_observed_steps(Y), settings, 123
    )
    assert kept == best.log_likelihood
    # A learning rate that throws the networks far (every evaluation after the
    # start is worse by orders of magnitude) keeps the start.
    with np.errstate(all="ignore"):
        result = run(problem, [(20, 2)], make_settings(max_iter=2, learning_rate=1.0))
    scores = [e.log_likelihood for e in result.history]
    assert result.history[0].phase == "start"
    assert max(scores[1:]) < scores[0] - 10
    np.testing.assert_array_equal(flat(result.params), flat(params))
    assert not np.array_equal(flat(result.final_params), flat(params))


def test_phases_alternate_with_their_own_adam_states(problem, monkeypatch):
    _, _, params = problem
    sizes = {flat(params[phase]).size: phase for phase in ("transition", "proposal")}
    assert len(sizes) == 2  # the two networks have different input sizes
    calls = []

    def recording_update(state, gradient, learning_rate):
        calls.append((sizes[gradient.size], state.n_updates))
        return adam_update(state, gradient, learning_rate)

    monkeypatch.setattr(training, "adam_update", recording_update)
    run(
        problem,
        [(20, 2)],
        make_settings(max_iter=2, n_transition_steps=2, n_proposal_steps=1),
    )
    assert calls == [
        ("transition", 0),
        ("transition", 1),
        ("proposal", 0),
        ("transition", 2),
        ("transition", 3),
        ("proposal", 1),
    ]


def test_train_is_reproducible_for_a_seed(problem):
    settings = make_settings(max_iter=2)
    first = run(problem, [(10, 1), (20, 1)], settings, seed=3)
    second = run(problem, [(10, 1), (20, 1)], settings, seed=3)
    np.testing.assert_array_equal(flat(first.params), flat(second.params))
    assert [e.log_likelihood for e in first.history] == [
        e.log_likelihood for e in second.history
    ]


def test_train_converges_only_on_the_whole_series(problem):
    # A huge tol is met by any two evaluations, but only those on the whole
    # series count: one evaluation there is not enough to converge.
    settings = make_settings(max_iter=4, tol=1e9)
    result = run(problem, [(5, 3), (20, 1)], settings)
    assert not result.converged and result.n_iter == 4
    result = run(problem, [(20, 4)], settings)
    assert result.converged and result.n_iter == 2


def test_train_stops_on_a_non_finite_value_and_keeps_finite_parameters(problem):
    Y, _, _ = problem
    spec = make_spec(GaussianObservation(_clipped_identity, N_STATES, 0.7))
    params = spec.init_params(np.random.default_rng(0))
    result = run(
        problem,
        [(20, 4)],
        make_settings(max_iter=4, learning_rate=1e6),
        params=params,
        spec=spec,
    )
    assert result.diverged and not result.converged
    assert result.n_iter < 4
    assert np.all(np.isfinite(flat(result.params)))
    assert all(np.isfinite(entry.log_likelihood) for entry in result.history)
    # The kept parameters are those of the best finite evaluation (on the whole
    # series, the only window here).
    settings = make_settings(learning_rate=1e6)
    score = training.mean_log_likelihood(
        result.params, spec, Y, training.count_observed_steps(Y), settings, 123
    )
    if result.history:
        assert score == max(entry.log_likelihood for entry in result.history)
    else:
        np.testing.assert_array_equal(flat(result.params), flat(params))


def test_train_with_a_spec_that_is_never_finite_keeps_the_initial_parameters(
    problem,
):
    spec = make_spec(_NaNObservation(noise_scale=0.7, n_states=N_STATES))
    params = spec.init_params(np.random.default_rng(0))
    result = run(
        problem, [(20, 3)], make_settings(max_iter=3), params=params, spec=spec
    )
    assert result.diverged and result.n_iter == 1
    assert result.history == []
    np.testing.assert_array_equal(flat(result.params), flat(params))


# ------------------------------------------------------------------------------------
# fit_restarts
# ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_restarts_does_not_depend_on_n_jobs(problem):
    Y, spec, _ = problem
    settings = make_settings(max_iter=2)
    schedule = [(10, 1), (20, 1)]

    def restarts(n_jobs):
        seeds = np.random.SeedSequence(7).spawn(2)
        return fit_restarts(spec, Y, schedule, settings, seeds, 11, n_jobs=n_jobs)

    serial, parallel = restarts(1), restarts(2)
    assert len(serial) == len(parallel) == 2
    for one, other in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(flat(one.params), flat(other.params))
        assert one.score == other.score
        assert [e.log_likelihood for e in one.history] == [
            e.log_likelihood for e in other.history
        ]
        assert (one.n_iter, one.converged, one.diverged) == (
            other.n_iter,
            other.converged,
            other.diverged,
        )
    # Different seeds give different restarts.
    assert not np.array_equal(flat(serial[0].params), flat(serial[1].params))
    assert serial[0].score != serial[1].score


def test_fit_restarts_scores_each_restart_on_all_the_data(problem):
    Y, spec, params = problem
    settings = make_settings(max_iter=1, n_proposal_steps=0)
    seeds = np.random.SeedSequence(1).spawn(1)
    (result,) = fit_restarts(spec, Y, [(20, 1)], settings, seeds, 5, init_params=params)
    # Started from init_params: the proposal (not trained) is unchanged.
    np.testing.assert_array_equal(
        flat(result.params["proposal"]), flat(params["proposal"])
    )
    expected = training.mean_log_likelihood(
        result.params, spec, Y, count_observed_steps(Y), settings, 5
    )
    assert result.score == pytest.approx(float(expected), rel=1e-12)
    assert np.isfinite(result.score)
