import numpy as np
import pytest

from statemix_sk.datasets import make_kuramoto, make_linear_gaussian, make_lorenz96
from statemix_sk.models import KuramotoModel, LinearGaussianModel, Lorenz96Model
from statemix_sk.observations import GaussianObservation


@pytest.mark.parametrize(
    ("make", "n_states", "n_outputs"),
    [(make_linear_gaussian, 4, 4), (make_lorenz96, 10, 10), (make_kuramoto, 6, 12)],
)
def test_shapes_reproducibility_and_the_model_that_comes_back(
    make, n_states, n_outputs
):
    Y, X, model = make(30, random_state=0)
    assert Y.shape == (30, n_outputs) and X.shape == (30, n_states)
    assert model.n_states == n_states and model.observation.n_outputs == n_outputs
    Y_again, X_again, _ = make(30, random_state=0)
    np.testing.assert_array_equal(Y, Y_again)
    np.testing.assert_array_equal(X, X_again)
    Y_other, _, _ = make(30, random_state=1)
    assert not np.allclose(Y, Y_other)
    Y3, X3, _ = make(30, n_sequences=3, random_state=0)
    assert Y3.shape == (3, 30, n_outputs) and X3.shape == (3, 30, n_states)
    assert np.all(np.isfinite(Y3)) and np.all(np.isfinite(X3))
    # More series from the same model.
    Y_more, _ = model.simulate(10, n_sequences=2, random_state=5)
    assert Y_more.shape == (2, 10, n_outputs)


def test_linear_gaussian_follows_the_definition():
    Y, X, model = make_linear_gaussian(2000, random_state=3)
    assert isinstance(model, LinearGaussianModel)
    A = model.transition_matrix
    np.testing.assert_allclose(A.T @ A, 0.95**2 * np.eye(4), atol=1e-12)
    np.testing.assert_allclose(model.process_noise, 0.3)
    np.testing.assert_allclose(model.observation.noise_scale, 0.7)
    np.testing.assert_array_equal(model.observation.observation_matrix, np.eye(4))
    np.testing.assert_array_equal(model.initial_mean, 0.0)
    np.testing.assert_array_equal(model.initial_scale, 1.0)
    # Residuals of the simulation have the stated standard deviations: with 2000
    # steps and 4 components the sample std has a relative standard error of
    # about 1 / sqrt(2 * 8000) < 1%; 5% is over 6 standard errors.
    np.testing.assert_allclose((Y - X).std(), 0.7, rtol=0.05)
    np.testing.assert_allclose((X[1:] - X[:-1] @ A.T).std(), 0.3, rtol=0.05)


def test_lorenz96_follows_the_definition_and_observes_a_subset():
    Y, X, model = make_lorenz96(50, random_state=0)
    assert isinstance(model, Lorenz96Model)
    assert (model.forcing, model.dt, model.n_substeps, model.burn_in) == (
        8.0,
        0.05,
        5,
        200,
    )
    np.testing.assert_allclose(model.process_noise, 0.5)
    np.testing.assert_allclose(model.initial_mean, 2.2)
    np.testing.assert_allclose(model.initial_scale, 3.9)
    np.testing.assert_allclose(model.observation.noise_scale, 0.5)
    Y, X, model = make_lorenz96(20, observed=[0, 2, 4], random_state=0)
    assert Y.shape == (20, 3) and X.shape == (20, 10)
    np.testing.assert_array_equal(
        model.observation.observation_matrix, np.eye(10)[[0, 2, 4]]
    )


@pytest.mark.parametrize("observed", [[], [0, 0], [10], [-1], [0.5]])
def test_lorenz96_rejects_bad_observed_indices(observed):
    with pytest.raises(ValueError, match="observed"):
        make_lorenz96(5, observed=observed)


def test_kuramoto_shares_its_frequencies_across_series_and_observes_phases():
    Y, X, model = make_kuramoto(40, n_sequences=2, random_state=0)
    assert isinstance(model, KuramotoModel)
    assert isinstance(model.observation, GaussianObservation)
    omega = model.natural_frequencies
    _, _, same_seed = make_kuramoto(5, random_state=0)
    np.testing.assert_array_equal(same_seed.natural_frequencies, omega)
    assert (model.coupling, model.dt, model.n_substeps) == (1.5, 0.1, 4)
    np.testing.assert_allclose(model.process_noise, 0.05)
    np.testing.assert_allclose(model.observation.noise_scale, 0.5)
    # Observations are sin and cos of the phases plus noise of std 0.5.
    residual = Y - np.concatenate([np.sin(X), np.cos(X)], axis=-1)
    np.testing.assert_allclose(residual.std(), 0.5, rtol=0.1)


@pytest.mark.parametrize(
    ("make", "kwargs", "name"),
    [
        (make_linear_gaussian, {"n_states": 0}, "n_states"),
        (make_linear_gaussian, {"observation_noise": -1.0}, "noise_scale"),
        (make_linear_gaussian, {"process_noise": 0.0}, "process_noise"),
        (make_lorenz96, {"n_states": 3}, "n_states"),
        (make_kuramoto, {"n_oscillators": 1}, "n_oscillators"),
        (make_kuramoto, {"n_steps": 0}, "n_steps"),
        (make_kuramoto, {"n_sequences": 0}, "n_sequences"),
    ],
)
def test_bad_arguments_raise_naming_them(make, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make(**{"n_steps": 5, **kwargs})
