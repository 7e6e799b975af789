import itertools

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.misc import flatten

import statemix_sk.training as training
from statemix_sk.datasets import make_linear_gaussian
from statemix_sk.filtering import particle_filter
from statemix_sk.learned import StateMixSpec
from statemix_sk.network_start import fit_transition_to_states
from statemix_sk.networks import Standardizer, make_mixture_head
from statemix_sk.objective import (
    Validation,
    count_observed_steps,
    take_windows,
    window_log_likelihood,
)
from statemix_sk.observations import GaussianObservation, LinearGaussianObservation
from statemix_sk.training import (
    AdamState,
    TrainingSettings,
    adam_init,
    adam_update,
    clip_by_norm,
    fit_restarts,
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
        max_iter=3,
        tol=0.0,
        learning_rate=0.01,
        window_length=8,
        batch_size=2,
        n_iter_no_change=100,  # never met unless a test says so
    )
    values.update(overrides)
    return TrainingSettings(**values)


@pytest.fixture(scope="module")
def problem():
    # Three series of 20 steps, the last with its final 4 rows missing (a ragged
    # series padded with NaN): windows of 8 steps give 3, 3 and 2 windows.
    Y, _, _ = make_linear_gaussian(20, 3, n_states=N_STATES, random_state=0)
    Y[2, 16:] = np.nan
    spec = make_spec()
    params = spec.init_params(np.random.default_rng(0))
    return Y, spec, params


def flat(params):
    return flatten(params)[0]


def run(problem, settings, params=None, spec=None, seed=0, validation=None):
    Y, default_spec, default_params = problem
    return train(
        default_params if params is None else params,
        default_spec if spec is None else spec,
        Y,
        settings,
        np.random.default_rng(seed),
        123,
        validation,
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


def test_count_observed_steps_ignores_rows_that_are_entirely_missing():
    Y = np.ones((2, 5, 3))
    Y[0, 1] = np.nan  # entirely missing: not counted
    Y[1, 2, 0] = np.nan  # partly observed: counted
    Y[1, 4, :2] = np.nan  # partly observed: counted
    assert count_observed_steps(Y) == 9
    assert count_observed_steps(Y[0]) == 4
    assert count_observed_steps(np.full((3, 2), np.nan)) == 0


# ------------------------------------------------------------------------------------
# Windows, carried clouds and the minibatch objective
# ------------------------------------------------------------------------------------


def test_series_lengths_end_at_the_last_observed_row(problem):
    Y, _, _ = problem
    np.testing.assert_array_equal(training.series_lengths(Y), [20, 20, 16])


def test_take_windows_cuts_and_pads(problem):
    Y, _, _ = problem
    lengths = training.series_lengths(Y)
    batch = take_windows(Y, np.array([2, 0]), np.array([1, 2]), 6, lengths)
    # Series 2, steps 6 to 12; series 0, steps 12 to 18 (both 6 long).
    np.testing.assert_array_equal(batch.Y[0], Y[2, 6:12])
    np.testing.assert_array_equal(batch.Y[1], Y[0, 12:18])
    # Series 2's last window (steps 12 to 16) is padded to series 0's (18 to 20)
    # ... and to the longest in the batch.
    batch = take_windows(Y, np.array([2, 0]), np.array([2, 3]), 6, lengths)
    assert batch.Y.shape == (2, 4, N_STATES)
    np.testing.assert_array_equal(batch.Y[0], Y[2, 12:16])
    np.testing.assert_array_equal(batch.Y[1, :2], Y[0, 18:20])
    assert np.all(np.isnan(batch.Y[1, 2:]))


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_the_minibatch_objective_on_whole_series_is_the_full_objective(problem, alpha):
    Y, spec, params = problem
    settings = make_settings()
    n_series, n_steps = Y.shape[:2]
    batch = take_windows(
        Y,
        np.arange(n_series),
        np.zeros(n_series, dtype=int),
        n_steps,
        training.series_lengths(Y),
    )
    n_observed = count_observed_steps(Y)

    def full(params):
        return training.mean_log_likelihood(params, spec, Y, n_observed, settings, 9)

    def windowed(params):
        value, _, _ = window_log_likelihood(
            params, spec, batch, {}, settings, np.random.default_rng(9), alpha
        )
        return value

    value = windowed(params)
    np.testing.assert_array_equal(batch.Y, Y)
    if alpha == 0.0:
        # The same draws in the same order: equal to the last bit, value and
        # gradient.
        assert value == full(params)
        gradient, reference = grad(windowed)(params), grad(full)(params)
        np.testing.assert_array_equal(flat(gradient), flat(reference))
    else:
        squares = sum(
            np.sum(W**2) for phase in params.values() for W, _ in phase["layers"]
        )
        assert value == pytest.approx(
            full(params) - 0.5 * alpha * squares / n_observed, rel=1e-12
        )
        difference = flat(grad(windowed)(params)) - flat(grad(full)(params))
        penalty = grad(
            lambda p: (
                -0.5
                * alpha
                * sum(anp.sum(W**2) for phase in p.values() for W, _ in phase["layers"])
                / n_observed
            )
        )(params)
        np.testing.assert_allclose(difference, flat(penalty), rtol=1e-9, atol=1e-12)
        assert squares > 0


def test_a_window_carried_on_continues_the_filter_exactly(problem):
    # Filtering steps 0-8 and then, from the cloud they left and with the same
    # generator, steps 8-20, is the filter over the whole series: same
    # increments, means and final cloud, to the last bit.
    Y, spec, params = problem
    model, proposal = spec.build(params)
    whole = particle_filter(Y[0], model, proposal, n_particles=8, random_state=4)
    rng = np.random.default_rng(4)
    first = particle_filter(Y[0, :8], model, proposal, n_particles=8, random_state=rng)
    second = particle_filter(
        Y[0, 8:],
        model,
        proposal,
        n_particles=8,
        random_state=rng,
        initial_particles=first.final_particles,
        initial_log_weights=first.final_log_weights,
    )
    np.testing.assert_array_equal(
        np.concatenate(
            [first.log_likelihood_increments, second.log_likelihood_increments]
        ),
        whole.log_likelihood_increments,
    )
    np.testing.assert_array_equal(
        np.concatenate([first.filtered_means, second.filtered_means]),
        whole.filtered_means,
    )
    np.testing.assert_array_equal(second.final_particles, whole.final_particles)
    np.testing.assert_array_equal(second.final_log_weights, whole.final_log_weights)


def test_no_gradient_flows_into_a_carried_cloud(problem):
    Y, spec, params = problem
    model, proposal = spec.build(params)
    first = particle_filter(Y[0, :8], model, proposal, n_particles=8, random_state=1)
    assert not isinstance(first.final_particles, anp.numpy_boxes.ArrayBox)

    def objective(params):
        model, proposal = spec.build(params)
        result = particle_filter(
            Y[0, :8], model, proposal, n_particles=8, random_state=1
        )
        return anp.sum(result.log_likelihood) + anp.sum(result.final_particles * 0.0)

    # final_particles is a value: the function differentiates without error.
    assert np.all(np.isfinite(flat(grad(objective)(params))))


def test_each_update_starts_from_the_cloud_the_series_last_left(problem, monkeypatch):
    Y, _spec, _params = problem
    calls = []
    original = training.window_log_likelihood

    def recording(params, spec, batch, clouds, settings, rng, alpha=0.0):
        result = original(params, spec, batch, clouds, settings, rng, alpha)
        started = {
            int(s): (None if k == 0 else clouds[s])
            for s, k in zip(batch.series, batch.windows, strict=True)
        }
        calls.append((batch.series.copy(), batch.windows.copy(), started, result[2]))
        return result

    monkeypatch.setattr(training, "window_log_likelihood", recording)
    result = run(problem, make_settings(max_iter=2))
    lengths = training.series_lengths(Y)
    n_windows = -(-lengths // 8)
    # Updates: ceil(3 / 2) minibatches in each of 3 rounds (series 2 has 2
    # windows, so round 3 has 2 series: one minibatch), for 2 epochs.
    assert result.n_updates == 2 * (2 + 2 + 1)
    updates = calls[-result.n_updates :]  # after the initial, no-gradient pass
    last = {}  # series -> (window, cloud it left)
    seen = {s: [] for s in range(3)}
    for series, windows, started, (particles, log_weights) in updates:
        assert len(series) <= 2 and len(set(series)) == len(series)
        for row, (s, k) in enumerate(zip(series, windows, strict=True)):
            s, k = int(s), int(k)
            seen[s].append(k)
            if k == 0:
                assert started[s] is None  # from the initial distribution
            elif s in last:
                previous_window, cloud = last[s]
                assert previous_window == k - 1
                np.testing.assert_array_equal(started[s][0], cloud[0])
                np.testing.assert_array_equal(started[s][1], cloud[1])
            last[s] = (k, (particles[row], log_weights[row]))
    for s in range(3):
        # Every window of every series once per epoch, in cyclic order.
        assert sorted(seen[s]) == sorted(list(range(n_windows[s])) * 2)
        assert all((b - a) % n_windows[s] == 1 for a, b in itertools.pairwise(seen[s]))


def test_the_cost_of_an_update_does_not_depend_on_the_data_size(monkeypatch):
    # batch_size windows of window_length steps per update, however many and long
    # the series.
    spec = make_spec()
    params = spec.init_params(np.random.default_rng(0))
    shapes = []
    original = training.window_log_likelihood

    def recording(params, spec, batch, *args, **kwargs):
        shapes.append(batch.Y.shape)
        return original(params, spec, batch, *args, **kwargs)

    monkeypatch.setattr(training, "window_log_likelihood", recording)
    for n_series, n_steps in [(3, 20), (7, 60)]:
        Y, _, _ = make_linear_gaussian(n_steps, n_series, n_states=N_STATES)
        shapes.clear()
        result = train(
            params,
            spec,
            Y,
            make_settings(max_iter=1),
            np.random.default_rng(0),
            1,
        )
        updates = shapes[-result.n_updates :]
        assert max(shape[0] for shape in updates) <= 2
        assert max(shape[1] for shape in updates) <= 8
        assert result.n_updates == -(-n_steps // 8) * -(-n_series // 2)


# ------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------


def test_train_history_has_the_start_and_every_epoch(problem):
    result = run(problem, make_settings(max_iter=3))
    assert result.n_iter == 3 and result.n_updates == 3 * 5
    assert not result.converged and not result.diverged
    assert [entry.epoch for entry in result.history] == [0, 1, 2, 3]
    assert [entry.n_updates for entry in result.history] == [0, 5, 10, 15]
    seconds = [entry.seconds for entry in result.history]
    assert seconds == sorted(seconds)
    assert all(np.isfinite(entry.train_log_likelihood) for entry in result.history)
    # Without validation there is no validation score, and the last parameters
    # are kept.
    assert all(np.isnan(entry.validation_log_likelihood) for entry in result.history)
    assert np.isnan(result.validation_score)
    np.testing.assert_array_equal(flat(result.params), flat(result.final_params))


def test_verbose_prints_one_line_per_evaluation(problem, capsys):
    Y, _, _ = problem
    result = run(
        problem, make_settings(max_iter=2, verbose=1), validation=Validation(Y[:1])
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(result.history) == 3
    for line, entry in zip(lines, result.history, strict=True):
        assert line.startswith(f"epoch {entry.epoch:4d}  updates {entry.n_updates:6d}")
        assert f"training {entry.train_log_likelihood:9.4f}" in line
        assert f"validation {entry.validation_log_likelihood:9.4f}" in line


def test_train_does_not_modify_the_initial_parameters(problem):
    _, _, params = problem
    before = flat(params).copy()
    run(problem, make_settings(max_iter=2))
    np.testing.assert_array_equal(flat(params), before)


def test_joint_updates_step_both_networks_with_one_adam_state_each(
    problem, monkeypatch
):
    _, _, params = problem
    sizes = {flat(params[phase]).size: phase for phase in ("transition", "proposal")}
    calls = []

    def recording_update(state, gradient, learning_rate):
        calls.append((sizes[gradient.size], state.n_updates))
        return adam_update(state, gradient, learning_rate)

    monkeypatch.setattr(training, "adam_update", recording_update)
    result = run(problem, make_settings(max_iter=1))
    assert calls == [
        (phase, n) for n in range(result.n_updates) for phase in training.PHASES
    ]


def test_alternating_updates_follow_the_cycle_with_their_own_adam_states(
    problem, monkeypatch
):
    _, _, params = problem
    sizes = {flat(params[phase]).size: phase for phase in ("transition", "proposal")}
    assert len(sizes) == 2  # the two networks have different input sizes
    calls = []

    def recording_update(state, gradient, learning_rate):
        calls.append((sizes[gradient.size], state.n_updates))
        return adam_update(state, gradient, learning_rate)

    monkeypatch.setattr(training, "adam_update", recording_update)
    settings = make_settings(
        max_iter=1, update="alternating", n_transition_steps=2, n_proposal_steps=1
    )
    run(problem, settings)
    assert calls == [
        ("transition", 0),
        ("transition", 1),
        ("proposal", 0),
        ("transition", 2),
        ("transition", 3),
    ]


@pytest.mark.parametrize(
    ("steps", "trained", "fixed"),
    [((1, 0), "transition", "proposal"), ((0, 1), "proposal", "transition")],
)
def test_an_alternating_phase_changes_only_its_network(problem, steps, trained, fixed):
    _, _, params = problem
    settings = make_settings(
        max_iter=1,
        update="alternating",
        n_transition_steps=steps[0],
        n_proposal_steps=steps[1],
    )
    result = run(problem, settings)
    np.testing.assert_array_equal(flat(result.final_params[fixed]), flat(params[fixed]))
    assert not np.array_equal(flat(result.final_params[trained]), flat(params[trained]))


def test_train_is_reproducible_for_a_seed(problem):
    Y, _, _ = problem
    settings = make_settings(max_iter=2)
    first = run(problem, settings, seed=3, validation=Validation(Y[:1]))
    second = run(problem, settings, seed=3, validation=Validation(Y[:1]))
    np.testing.assert_array_equal(flat(first.params), flat(second.params))
    assert [e[:4] for e in first.history] == [e[:4] for e in second.history]


def test_validation_scores_each_epoch_with_the_fixed_seed(problem):
    Y, spec, _ = problem
    validation = Validation(Y[1:2], first_step=5)
    settings = make_settings(max_iter=2)
    result = run(problem, settings, validation=validation)
    # The kept parameters' score is the best in the history; the held-out score
    # counts the increments from first_step on only.
    scores = [entry.validation_log_likelihood for entry in result.history]
    assert result.validation_score == max(scores)
    model, proposal = spec.build(result.params)
    filtered = particle_filter(Y[1:2], model, proposal, n_particles=8, random_state=123)
    expected = np.sum(filtered.log_likelihood_increments[:, 5:]) / 15
    assert result.validation_score == pytest.approx(expected, rel=1e-12)


def test_early_stopping_keeps_the_best_validation_parameters(problem, monkeypatch):
    Y, _, _params = problem
    # Validation scores made to rise until epoch 2 and fall after: the
    # parameters of epoch 2 are kept, and training stops n_iter_no_change = 3
    # epochs later.
    script = iter([0.0, 1.0, 3.0, 2.0, 2.5, 1.0, 0.0, -1.0])
    scored = []

    def scripted(params, spec, validation, settings, seed):
        scored.append(params)
        return next(script)

    monkeypatch.setattr(training, "validation_log_likelihood", scripted)
    settings = make_settings(max_iter=10, n_iter_no_change=3, tol=0.0)
    result = run(problem, settings, validation=Validation(Y[:1]))
    assert result.converged and not result.diverged
    assert result.n_iter == 5
    assert [e.validation_log_likelihood for e in result.history] == [
        0.0,
        1.0,
        3.0,
        2.0,
        2.5,
        1.0,
    ]
    assert result.validation_score == 3.0
    np.testing.assert_array_equal(flat(result.params), flat(scored[2]))
    assert not np.array_equal(flat(result.params), flat(result.final_params))
    np.testing.assert_array_equal(flat(result.final_params), flat(scored[-1]))


def test_tol_counts_small_improvements_as_none(problem, monkeypatch):
    Y, _, _ = problem
    script = iter([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    monkeypatch.setattr(
        training, "validation_log_likelihood", lambda *args: next(script)
    )
    settings = make_settings(max_iter=5, n_iter_no_change=2, tol=0.1)
    result = run(problem, settings, validation=Validation(Y[:1]))
    # 0.05 and 0.1 do not beat 0 by more than 0.1: stopped after epoch 2, with the
    # best score's parameters (epoch 2) kept all the same.
    assert result.converged and result.n_iter == 2
    assert result.validation_score == 0.1


def test_early_stopping_with_much_worse_steps_keeps_the_start(problem):
    Y, _, params = problem
    # A learning rate that throws the networks far: every epoch is worse on the
    # held-out series than the start, which is kept.
    with np.errstate(all="ignore"):
        result = run(
            problem,
            make_settings(max_iter=2, learning_rate=1.0),
            validation=Validation(Y[:1]),
        )
    scores = [e.validation_log_likelihood for e in result.history]
    assert max(scores[1:]) < scores[0]
    np.testing.assert_array_equal(flat(result.params), flat(params))
    assert not np.array_equal(flat(result.final_params), flat(params))


def test_without_validation_the_training_score_stops_training(problem, monkeypatch):
    settings = make_settings(max_iter=20, n_iter_no_change=2, tol=1e9)
    result = run(problem, settings)
    # Nothing improves by 1e9: stopped after n_iter_no_change epochs.
    assert result.converged and result.n_iter == 2


def test_train_stops_on_a_non_finite_value_and_keeps_finite_parameters(problem):
    Y, _, _ = problem
    spec = make_spec(GaussianObservation(_clipped_identity, N_STATES, 0.7))
    params = spec.init_params(np.random.default_rng(0))
    with np.errstate(all="ignore"):
        result = run(
            problem,
            make_settings(max_iter=4, learning_rate=1e6),
            params=params,
            spec=spec,
            validation=Validation(Y[:1]),
        )
    assert result.diverged and not result.converged
    assert result.n_iter < 4
    assert np.all(np.isfinite(flat(result.params)))
    assert np.isfinite(result.validation_score)
    assert result.validation_score == max(
        e.validation_log_likelihood for e in result.history
    )


def test_train_with_a_spec_that_is_never_finite_keeps_the_initial_parameters(
    problem,
):
    spec = make_spec(_NaNObservation(noise_scale=0.7, n_states=N_STATES))
    params = spec.init_params(np.random.default_rng(0))
    with np.errstate(all="ignore"):
        result = run(problem, make_settings(max_iter=3), params=params, spec=spec)
    assert result.diverged and result.n_iter == 0 and result.n_updates == 0
    np.testing.assert_array_equal(flat(result.params), flat(params))


# ------------------------------------------------------------------------------------
# fit_transition_to_states
# ------------------------------------------------------------------------------------


def test_fit_transition_to_states_recovers_a_linear_drift():
    # States of x_t = 0.5 x_{t-1} + N(0, 0.3^2): the fitted transition's mean
    # is 0.5 x and its scale 0.3, within what 2000 pairs allow (derived: the
    # standard error of a regression slope is 0.3 / (sqrt(2000) * std(x)),
    # std(x) = 0.3 / sqrt(0.75), so about 0.02; of the scale, 0.3 / sqrt(4000),
    # about 0.005 per state).
    rng = np.random.default_rng(0)
    states = []
    for _ in range(20):
        x = np.zeros((101, N_STATES))
        for t in range(1, 101):
            x[t] = 0.5 * x[t - 1] + 0.3 * rng.standard_normal(N_STATES)
        states.append(x)
    spec = make_spec()
    params = spec.init_params(np.random.default_rng(1))
    fitted, scale = fit_transition_to_states(
        params, spec, states[:16], states[16:], rng=np.random.default_rng(2)
    )
    np.testing.assert_array_equal(flat(fitted["proposal"]), flat(params["proposal"]))
    model, _ = spec.build(fitted)
    grid = np.linspace(-0.5, 0.5, 5)[:, None] * np.ones(N_STATES)
    np.testing.assert_allclose(model.transition_mean(grid), 0.5 * grid, atol=0.06)
    np.testing.assert_allclose(scale, 0.3, atol=0.03)


# ------------------------------------------------------------------------------------
# fit_restarts
# ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_restarts_does_not_depend_on_n_jobs(problem):
    Y, spec, _ = problem
    settings = make_settings(max_iter=2)
    validation = Validation(Y[:1])

    def restarts(n_jobs):
        seeds = np.random.SeedSequence(7).spawn(2)
        return fit_restarts(
            spec, Y[1:], settings, seeds, 11, validation=validation, n_jobs=n_jobs
        )

    serial, parallel = restarts(1), restarts(2)
    assert len(serial) == len(parallel) == 2
    for one, other in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(flat(one.params), flat(other.params))
        assert one.score == other.score
        assert one.validation_score == other.validation_score
        assert [e[:4] for e in one.history] == [e[:4] for e in other.history]
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
    settings = make_settings(
        max_iter=1, update="alternating", n_transition_steps=1, n_proposal_steps=0
    )
    seeds = np.random.SeedSequence(1).spawn(1)
    (result,) = fit_restarts(spec, Y, settings, seeds, 5, init_params=params)
    # Started from init_params: the proposal (not trained) is unchanged.
    np.testing.assert_array_equal(
        flat(result.params["proposal"]), flat(params["proposal"])
    )
    expected = training.mean_log_likelihood(
        result.params, spec, Y, count_observed_steps(Y), settings, 5
    )
    assert result.score == pytest.approx(float(expected), rel=1e-12)
    assert np.isfinite(result.score)
