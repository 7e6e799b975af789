import autograd.numpy as anp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from autograd import grad
from scipy.integrate import solve_ivp

from statemix_sk import models
from statemix_sk.kalman import kalman_filter, kalman_smoother
from statemix_sk.models import (
    KuramotoModel,
    LinearGaussianModel,
    Lorenz96Model,
    simulate,
)
from statemix_sk.observations import (
    GaussianObservation,
    LinearGaussianObservation,
    phase_observation,
)


def _small_linear_gaussian(seed=0, n_states=2, n_outputs=3, full_noise=True):
    rng = np.random.default_rng(seed)
    A = 0.8 * np.linalg.qr(rng.standard_normal((n_states, n_states)))[0]
    H = rng.standard_normal((n_outputs, n_states))
    if full_noise:
        B = rng.standard_normal((n_outputs, n_outputs))
        observation = LinearGaussianObservation(
            H, noise_covariance=B @ B.T + 0.5 * np.eye(n_outputs)
        )
    else:
        observation = LinearGaussianObservation(H, noise_scale=[0.5, 0.7, 0.9])
    return LinearGaussianModel(
        A, [0.3, 0.6], observation, initial_mean=[0.5, -1.0], initial_scale=[1.0, 2.0]
    )


def _joint_gaussian(model, n_steps):
    """Mean and covariance of (x_1..x_T, y_1..y_T) stacked, by brute force."""
    A, Q = model.transition_matrix, model.process_covariance
    H, R = model.observation.observation_matrix, model.observation.noise_covariance
    dx = A.shape[0]
    mean, covariance = model.initial_mean, np.diag(model.initial_scale**2)
    state_means, state_cov = [], {}
    for t in range(n_steps):
        mean = A @ mean
        covariance = A @ covariance @ A.T + Q
        state_means.append(mean)
        state_cov[t, t] = covariance
    for s in range(n_steps):
        for t in range(s + 1, n_steps):
            state_cov[s, t] = state_cov[s, t - 1] @ A.T
            state_cov[t, s] = state_cov[s, t].T
    Sx = np.block([[state_cov[s, t] for t in range(n_steps)] for s in range(n_steps)])
    Hbig = np.kron(np.eye(n_steps), H)
    Sy = Hbig @ Sx @ Hbig.T + np.kron(np.eye(n_steps), R)
    mx = np.concatenate(state_means)
    return mx, Sx, Hbig @ mx, Sy, Sx @ Hbig.T, dx


@pytest.mark.parametrize("full_noise", [True, False])
@pytest.mark.parametrize("missing", [False, True])
def test_kalman_filter_matches_the_joint_gaussian(full_noise, missing):
    # The exact oracle: y_1:T is jointly Gaussian; its log-density and the
    # conditional mean of x_T given all observed entries are closed-form.
    model = _small_linear_gaussian(full_noise=full_noise)
    n_steps = 6
    Y, _ = model.simulate(n_steps, random_state=1)
    if missing:
        Y[2] = np.nan
        Y[4, 1] = np.nan
        Y[5, [0, 2]] = np.nan
    mx, Sx, my, Sy, Sxy, dx = _joint_gaussian(model, n_steps)
    observed = ~np.isnan(Y.ravel())
    y_obs = Y.ravel()[observed]
    Sy_obs = Sy[np.ix_(observed, observed)]
    expected_log_likelihood = scipy.stats.multivariate_normal(
        my[observed], Sy_obs
    ).logpdf(y_obs)
    gain = scipy.linalg.solve(Sy_obs, Sxy[:, observed].T).T
    expected_means = (mx + gain @ (y_obs - my[observed])).reshape(n_steps, dx)
    expected_cov = Sx - gain @ Sxy[:, observed].T

    result = kalman_filter(Y, model)
    np.testing.assert_allclose(result.log_likelihood, expected_log_likelihood, 1e-10)
    # The filtered mean of the last step is the smoothed mean given everything.
    np.testing.assert_allclose(result.filtered_means[-1], expected_means[-1], 1e-9)
    np.testing.assert_allclose(
        result.filtered_covariances[-1], expected_cov[-dx:, -dx:], 1e-9, 1e-12
    )
    assert result.log_likelihood_increments.shape == (n_steps,)
    if missing:
        assert result.log_likelihood_increments[2] == 0.0


def _joint_states_and_observations(model, n_steps):
    """Mean and covariance of (x_0..x_T) and of y_1..y_T with it, by brute force."""
    A, Q = model.transition_matrix, model.process_covariance
    H, R = model.observation.observation_matrix, model.observation.noise_covariance
    dx, dy = A.shape[0], H.shape[0]
    means = [model.initial_mean]
    cov = {(0, 0): np.diag(model.initial_scale**2)}
    for t in range(1, n_steps + 1):
        means.append(A @ means[-1])
        cov[t, t] = A @ cov[t - 1, t - 1] @ A.T + Q
    for s in range(n_steps + 1):
        for t in range(s + 1, n_steps + 1):
            # Cov(x_t, x_s) = A Cov(x_{t-1}, x_s) for t > s.
            cov[t, s] = A @ cov[t - 1, s]
            cov[s, t] = cov[t, s].T
    blocks = range(n_steps + 1)
    Sx = np.block([[cov[s, t] for t in blocks] for s in blocks])
    # y_t observes x_t for t >= 1; x_0 is never observed.
    Hbig = np.hstack([np.zeros((n_steps * dy, dx)), np.kron(np.eye(n_steps), H)])
    Sy = Hbig @ Sx @ Hbig.T + np.kron(np.eye(n_steps), R)
    mx = np.concatenate(means)
    return mx, Sx, Hbig @ mx, Sy, Sx @ Hbig.T, dx


@pytest.mark.parametrize("full_noise", [True, False])
@pytest.mark.parametrize("missing", [False, True])
def test_kalman_smoother_matches_the_joint_gaussian(full_noise, missing):
    # The smoothed moments of every x_t, and the cross-covariances of the pairs
    # (x_{t-1}, x_t), are those of the Gaussian conditional given all observed
    # entries.
    model = _small_linear_gaussian(full_noise=full_noise)
    n_steps = 6
    Y, _ = model.simulate(n_steps, random_state=2)
    if missing:
        Y[0] = np.nan
        Y[3, 1] = np.nan
        Y[5, [0, 2]] = np.nan
    mx, Sx, my, Sy, Sxy, dx = _joint_states_and_observations(model, n_steps)
    observed = ~np.isnan(Y.ravel())
    gain = scipy.linalg.solve(
        Sy[np.ix_(observed, observed)], Sxy[:, observed].T, assume_a="pos"
    ).T
    means = (mx + gain @ (Y.ravel()[observed] - my[observed])).reshape(-1, dx)
    cov = (Sx - gain @ Sxy[:, observed].T).reshape(n_steps + 1, dx, n_steps + 1, dx)

    result = kalman_smoother(Y, model)
    np.testing.assert_allclose(result.smoothed_means, means, 1e-9, 1e-12)
    for t in range(n_steps + 1):
        np.testing.assert_allclose(
            result.smoothed_covariances[t], cov[t, :, t], 1e-9, 1e-12
        )
    for t in range(1, n_steps + 1):
        np.testing.assert_allclose(
            result.lag_one_covariances[t - 1], cov[t, :, t - 1], 1e-9, 1e-12
        )
    assert result.log_likelihood == kalman_filter(Y, model).log_likelihood


@pytest.mark.parametrize("full_noise", [True, False])
def test_observation_log_density_matches_scipy_with_missing_entries(full_noise):
    model = _small_linear_gaussian(full_noise=full_noise)
    obs = model.observation
    x = np.random.default_rng(0).standard_normal((4, 2))
    y = np.array([0.3, np.nan, -1.2])
    kept = [0, 2]
    R = obs.noise_covariance[np.ix_(kept, kept)]
    expected = [
        scipy.stats.multivariate_normal((obs.observation_matrix @ xi)[kept], R).logpdf(
            y[kept]
        )
        for xi in x
    ]
    np.testing.assert_allclose(obs.log_density(x, y), expected, 1e-10)
    full = np.array([0.3, 0.1, -1.2])
    expected_full = [
        scipy.stats.multivariate_normal(
            obs.observation_matrix @ xi, obs.noise_covariance
        ).logpdf(full)
        for xi in x
    ]
    np.testing.assert_allclose(obs.log_density(x, full), expected_full, 1e-10)
    np.testing.assert_array_equal(obs.log_density(x, np.full(3, np.nan)), 0.0)


def test_gaussian_observation_uses_the_function_and_observed_outputs():
    obs = GaussianObservation(phase_observation, n_states=2, noise_scale=[0.5, 1, 2, 3])
    x = np.array([[0.1, 0.2], [1.0, -2.0]])
    y = np.array([0.0, np.nan, 1.0, np.nan])
    mean = phase_observation(x)
    expected = scipy.stats.norm(mean[:, [0, 2]], [0.5, 2.0]).logpdf(y[[0, 2]]).sum(1)
    np.testing.assert_allclose(obs.log_density(x, y), expected, 1e-12)
    assert obs.sample(x, np.random.default_rng(0)).shape == (2, 4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"function": lambda x: x[:, 0], "n_states": 2}, "function"),
        ({"function": lambda x: x / 0.0, "n_states": 2}, "non-finite"),
        ({"function": "sin", "n_states": 2}, "function"),
        ({"function": phase_observation, "n_states": 0}, "n_states"),
        ({"function": phase_observation, "n_states": 2, "noise_scale": -1}, "noise"),
        (
            {"function": phase_observation, "n_states": 2, "noise_scale": [1, 2]},
            "noise",
        ),
    ],
)
def test_gaussian_observation_rejects_bad_input(kwargs, name):
    with np.errstate(divide="ignore", invalid="ignore"):
        with pytest.raises(ValueError, match=name):
            GaussianObservation(**kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((np.ones(3),), {}, "observation_matrix"),
        ((np.ones((2, 2)) * np.inf,), {}, "observation_matrix"),
        ((np.eye(2),), {"noise_scale": -0.5}, "noise_scale"),
        ((np.eye(2),), {"noise_scale": 0.0}, "noise_scale"),
        ((np.eye(2),), {"noise_covariance": np.ones((2, 2))}, "noise_covariance"),
        ((np.eye(2),), {"noise_covariance": [[1.0, 0.5], [0.1, 1.0]]}, "symmetric"),
        ((np.eye(2),), {"noise_covariance": np.eye(3)}, "noise_covariance"),
        ((np.eye(2),), {"noise_scale": 1.0, "noise_covariance": np.eye(2)}, "not both"),
        ((), {}, "dimension"),
        ((np.eye(2),), {"n_states": 3}, "n_states"),
    ],
)
def test_linear_observation_rejects_bad_input(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        LinearGaussianObservation(*args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"transition_matrix": np.ones((2, 3))}, "transition_matrix"),
        ({"process_noise": -0.1}, "process_noise"),
        ({"process_noise": [0.1, 0.2, 0.3]}, "process_noise"),
        ({"initial_scale": 0.0}, "initial_scale"),
        ({"initial_mean": [1.0, np.nan]}, "initial_mean"),
        ({"initial_mean": [1.0, 2.0, 3.0]}, "initial_mean"),
        ({"observation": LinearGaussianObservation(n_states=3)}, "observation"),
    ],
)
def test_linear_gaussian_model_rejects_bad_input(kwargs, name):
    arguments = {
        "transition_matrix": np.eye(2),
        "process_noise": 0.3,
        "observation": LinearGaussianObservation(n_states=2),
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        LinearGaussianModel(**arguments)


def test_gaussian_transition_density_and_sampling():
    model = _small_linear_gaussian()
    rng = np.random.default_rng(3)
    x_prev = rng.standard_normal((5, 2))
    x = rng.standard_normal((5, 2))
    expected = [
        scipy.stats.multivariate_normal(
            model.transition_matrix @ xp, model.process_covariance
        ).logpdf(xi)
        for xi, xp in zip(x, x_prev, strict=True)
    ]
    np.testing.assert_allclose(model.transition_log_density(x, x_prev), expected, 1e-10)
    # 20000 draws from one point: each mean within 4 standard errors (8
    # comparisons, so a two-sided family error below 5e-4).
    n = 20000
    draws = model.sample_transition(np.tile([1.0, -1.0], (n, 1)), rng)
    mean = model.transition_matrix @ [1.0, -1.0]
    standard_error = model.process_noise / np.sqrt(n)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * standard_error)
    # Sample std: its standard error is about sigma / sqrt(2 n).
    assert np.all(
        np.abs(draws.std(0) - model.process_noise)
        < 4 * model.process_noise / np.sqrt(2 * n)
    )


def test_lorenz96_step_is_fourth_order_rk4_of_the_ode():
    x0 = np.random.default_rng(0).normal(2.2, 3.9, size=10)
    exact = solve_ivp(
        lambda _, x: Lorenz96Model()._drift(x), (0, 0.05), x0, rtol=1e-13, atol=1e-13
    ).y[:, -1]
    errors = [
        np.abs(Lorenz96Model(n_substeps=k).transition_mean(x0[None])[0] - exact).max()
        for k in (5, 10)
    ]
    # RK4's global error scales as h^4: halving h divides it by about 16.
    assert 12 < errors[0] / errors[1] < 20
    assert errors[0] < 1e-4
    model = Lorenz96Model()
    assert (model.dt, model.n_substeps) == (0.05, 5)
    # x = forcing everywhere is a fixed point of the ODE.
    fixed = np.full((1, 10), 8.0)
    np.testing.assert_allclose(model.transition_mean(fixed), fixed, atol=1e-12)


def test_kuramoto_drift_equals_the_pairwise_sum_and_the_ode_solver():
    omega = np.array([0.1, -0.3, 0.5, 0.2])
    model = KuramotoModel(omega)
    theta = np.random.default_rng(1).standard_normal((2, 4))
    pairwise = omega + (1.5 / 4) * np.sin(theta[:, None, :] - theta[:, :, None]).sum(-1)
    np.testing.assert_allclose(model._drift(theta), pairwise, 1e-12)
    solution = solve_ivp(
        lambda _, x: model._drift(x), (0, model.dt), theta[0], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        model.transition_mean(theta)[0], solution.y[:, -1], atol=1e-8
    )


def test_lorenz96_simulation_starts_on_the_attractor():
    model = Lorenz96Model()
    start = model.sample_simulation_start(200, np.random.default_rng(0))
    # After the burn-in the states have the attractor's climatology (about 2.2
    # and 3.6); draws of the prior N(2.2, 3.9^2) would look the same in these two
    # moments, so check what the prior lacks: the ODE's energy balance, by
    # which nearly no state exceeds 13 in absolute value on the attractor.
    assert 1.0 < start.mean() < 3.5
    assert 2.5 < start.std() < 4.5
    assert np.mean(np.abs(start) > 13) < 0.01


def test_simulate_shapes_reproducibility_and_a_user_model():
    model = _small_linear_gaussian()
    Y, X = model.simulate(7, random_state=0)
    assert Y.shape == (7, 3) and X.shape == (7, 2)
    Y3, X3 = model.simulate(7, n_sequences=4, random_state=0)
    assert Y3.shape == (4, 7, 3) and X3.shape == (4, 7, 2)
    Y_again, _ = model.simulate(7, random_state=0)
    np.testing.assert_array_equal(Y, Y_again)

    class RandomWalk:
        """A model written against the protocol, inheriting nothing."""

        n_states = 1
        observation = LinearGaussianObservation(n_states=1, noise_scale=0.1)
        initial_mean = np.zeros(1)
        initial_scale = np.ones(1)

        def sample_initial(self, n, rng):
            return rng.standard_normal((n, 1))

        def sample_transition(self, x_prev, rng):
            return x_prev + rng.standard_normal(x_prev.shape)

        def transition_log_density(self, x, x_prev):
            return -0.5 * anp.sum((x - x_prev) ** 2, 1) - 0.5 * np.log(2 * np.pi)

        def transition_mean(self, x_prev):
            return x_prev

    Y, X = simulate(RandomWalk(), 5, n_sequences=2, random_state=0)
    assert Y.shape == (2, 5, 1)
    with pytest.raises(ValueError, match="n_steps"):
        simulate(RandomWalk(), 0)


def test_lorenz96_integrates_blocks_of_rows_to_the_same_bits(monkeypatch):
    # Many rows are integrated in blocks that stay in the cache; each row's
    # arithmetic is the same (additions and products), so the bits are too.
    # Blocks of 7 rows over 50: six full blocks and a short one.
    model = Lorenz96Model()
    x_prev = np.random.default_rng(0).normal(2.2, 3.9, (50, 10))
    whole = models._rk4(model._drift, x_prev, model.dt, model.n_substeps)
    monkeypatch.setattr(models, "_BLOCK_ROWS", 7)
    np.testing.assert_array_equal(model.transition_mean(x_prev), whole)
    # A single state, and a traced one, are not split.
    np.testing.assert_array_equal(model.transition_mean(x_prev[0]), whole[0])
    gradient = grad(lambda x: anp.sum(model.transition_mean(x)))(x_prev)
    assert gradient.shape == x_prev.shape


@pytest.mark.parametrize("shape", [(10,), (50, 10), (3, 4, 6), (20, 40)])
@pytest.mark.parametrize("n_substeps", [1, 5])
def test_lorenz96_values_path_has_the_bits_of_the_composed_formula(shape, n_substeps):
    # On values the drift gathers its neighbours by index and RK4 works in
    # place; traced, both are the composition of np.roll and array arithmetic.
    # Additions and products give the same bits either way.
    model = Lorenz96Model(shape[-1], n_substeps=n_substeps)
    x_prev = np.random.default_rng(1).normal(2.2, 3.9, shape)

    def drift(x):
        return (
            (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1)) * np.roll(x, 1, axis=-1)
            - x
            + model.forcing
        )

    expected = x_prev
    h = model.dt / n_substeps
    for _ in range(n_substeps):
        k1 = drift(expected)
        k2 = drift(expected + 0.5 * h * k1)
        k3 = drift(expected + 0.5 * h * k2)
        k4 = drift(expected + h * k3)
        expected = expected + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    np.testing.assert_array_equal(model.transition_mean(x_prev), expected)
    np.testing.assert_array_equal(model._drift(x_prev), drift(x_prev))
    # The traced path gives the same values, and a gradient.
    traced = []
    gradient = grad(
        lambda x: anp.sum(traced.append(model.transition_mean(x)) or traced[-1])
    )(x_prev)
    np.testing.assert_array_equal(traced[-1]._value, expected)
    assert gradient.shape == x_prev.shape and np.all(np.isfinite(gradient))
