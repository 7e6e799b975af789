import copy
import inspect
import pickle
import warnings

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.misc import flatten
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import statemix_sk.estimator as estimator_module
from statemix_sk import (
    FilterResult,
    GaussianObservation,
    LinearGaussianObservation,
    StateMixFilter,
    make_kuramoto,
    make_linear_gaussian,
)
from statemix_sk.objective import count_observed_steps, mean_log_likelihood

# A tiny estimator: every fit takes about a second. Two epochs cannot meet
# n_iter_no_change, so fitting it raises a ConvergenceWarning, which the tests
# expect.
TINY = dict(
    n_components=1,
    hidden_layer_sizes=(8,),
    n_particles=8,
    max_iter=2,
    window_length=10,
    batch_size=2,
    # The regression start costs about a second per fit: scikit-learn's checks
    # run it (the default, below), the other tests start linear unless they test
    # the start.
    init_dynamics="linear",
    random_state=0,
)

# In scikit-learn's machinery (estimator checks, grid searches, cross-validation)
# a tiny estimator always stops at max_iter: its ConvergenceWarning is expected
# there and says nothing about the behaviour under test.
ignore_convergence = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)

# Eight particles often collapse onto one or two at some step, so that ``filter``
# warns (DegeneracyWarning); the tests of shapes and determinism ignore it.
ignore_degeneracy = pytest.mark.filterwarnings("ignore::statemix_sk.DegeneracyWarning")


def tiny(**overrides):
    return StateMixFilter(**{**TINY, **overrides})


def fit(estimator, Y):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        return estimator.fit(Y)


def flat(params):
    return flatten(params)[0]


def _clipped_identity(x):
    """``h(x) = x`` for moderate states, NaN for far ones: forces divergence."""
    return anp.where(anp.abs(x) < 20.0, x, anp.nan)


class _NaNObservation(LinearGaussianObservation):
    """``y = x + v`` whose density is always NaN: no restart can be finite."""

    def log_density(self, x, y):
        return super().log_density(x, y) * anp.nan


@pytest.fixture(scope="module")
def data():
    """Four series of 20 steps with 2 features."""
    Y, _, _ = make_linear_gaussian(20, 4, n_states=2, random_state=0)
    return Y


@pytest.fixture(scope="module")
def fitted(data):
    return fit(tiny(), data)


@pytest.fixture(scope="module")
def ragged(data):
    """Three series of different lengths."""
    return [data[0], data[1][:12], data[2][:17]]


# ------------------------------------------------------------------------------------
# scikit-learn's estimator checks
# ------------------------------------------------------------------------------------


def _expected_failed_checks(estimator):
    return {
        "check_methods_sample_order_invariance": (
            "rows are time steps: shuffling them makes a different series, whose "
            "filtered means differ"
        ),
        "check_methods_subset_invariance": (
            "rows are time steps: a subset of rows (the check passes one at a "
            "time) is a different, shorter series, and a 1-step series is "
            "rejected"
        ),
    }


# With xfail_strict (scikit-learn >= 1.8) a listed check that starts to pass fails,
# so the list cannot go stale.
_STRICT = (
    {"xfail_strict": True}
    if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters
    else {}
)


@ignore_convergence
@parametrize_with_checks(
    [tiny(max_iter=1, init_dynamics="regression")],
    expected_failed_checks=_expected_failed_checks,
    **_STRICT,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------


def test_allow_nan_is_declared():
    tags = StateMixFilter().__sklearn_tags__()
    assert tags.input_tags.allow_nan
    assert not tags.target_tags.required


def test_missing_values_work_in_fit_predict_and_score(data):
    Y = data[:2].copy()
    Y[0, 5] = np.nan  # a missing row
    Y[1, 7, 1] = np.nan  # a missing entry
    model = fit(tiny(), Y)
    assert np.all(np.isfinite(model.predict(Y)))
    assert np.isfinite(model.score(Y))
    assert model.spec_.missing_indicator
    increments = model.score_samples(Y)
    assert increments[0, 5] == 0.0
    assert np.all(np.isfinite(increments))
    assert np.isfinite(model.score(Y[0]))


def test_complete_data_give_the_proposal_no_missing_indicator(fitted):
    assert not fitted.spec_.missing_indicator


def test_partly_observed_steps_train_the_proposal_without_autograd_warnings(data):
    # 90% of the entries missing, no step of any series complete: before the
    # proposal used partly observed steps it was never called, its gradient was
    # zero and autograd's "Output seems independent of input" reached the user
    # (4 times in a fit with alternating updates). The suite turns any warning
    # into an error, and fit() here lets only the ConvergenceWarning through.
    Y = data.copy()
    Y[np.random.default_rng(1).random(Y.shape) < 0.9] = np.nan
    # Every series observes one entry at its first step, none all of them.
    Y[:, 0] = [0.1, np.nan]
    assert np.isnan(Y).any(axis=-1).all()
    model = fit(tiny(update="alternating", max_iter=2), Y)
    assert np.all(np.isfinite(model.predict(Y)))
    # Data with missing entries give the proposal network the missing-entry
    # indicator as inputs (after the state and the innovation).
    assert model.spec_.missing_indicator
    n_outputs = Y.shape[-1]
    n_inputs = model.params_["proposal"]["linear"].shape[0]
    assert n_inputs == model.params_["transition"]["linear"].shape[0] + 2 * n_outputs

    gradient = grad(
        lambda p: mean_log_likelihood(
            p, model.spec_, Y, count_observed_steps(Y), model._settings(), 0
        )
    )(model.params_)
    assert np.linalg.norm(flat(gradient["proposal"])) > 0
    # ... and training moves the indicator's weights.
    indicator_rows = slice(n_inputs - n_outputs, n_inputs)
    assert np.linalg.norm(gradient["proposal"]["linear"][indicator_rows]) > 0


@pytest.mark.parametrize("structure", ["2-D", "3-D", "list"])
def test_infinity_is_rejected(fitted, data, structure):
    Y = data.copy()
    Y[1, 3, 0] = np.inf
    Y = {"2-D": Y[1], "3-D": Y, "list": list(Y)}[structure]
    with pytest.raises(ValueError, match="infinity"):
        tiny().fit(Y)
    with pytest.raises(ValueError, match="infinity"):
        fitted.predict(Y)


def test_numeric_object_arrays_are_accepted(fitted, data):
    np.testing.assert_array_equal(
        fitted.predict(data.astype(object)), fitted.predict(data)
    )
    np.testing.assert_array_equal(
        fitted.predict(data[0].astype(object)), fitted.predict(data[0])
    )
    model = fit(tiny(), data[0].astype(object))
    assert model.predict(data[0]).shape == (20, 2)


def test_non_numeric_arrays_are_rejected(fitted):
    strings = np.array([["a", "b"]] * 5, dtype=object)
    with pytest.raises(ValueError):
        tiny().fit(strings)
    with pytest.raises(ValueError):
        fitted.predict(strings)
    with pytest.raises(ValueError):
        fitted.predict(np.stack([strings, strings]))


def test_a_one_step_series_is_rejected(fitted, data):
    with pytest.raises(ValueError, match="1 sample"):
        tiny().fit(data[0, :1])
    with pytest.raises(ValueError, match="1 sample"):
        tiny().fit(data[:, :1])
    with pytest.raises(ValueError, match="1 sample"):
        tiny().fit([data[0], data[1, :1]])
    with pytest.raises(ValueError, match="1 sample"):
        fitted.predict(data[0, :1])
    with pytest.raises(ValueError, match="1 sample"):
        fitted.score([data[0], data[1, :1]])


def test_every_series_must_have_the_same_features(fitted, data):
    with pytest.raises(ValueError, match="same number of features"):
        tiny().fit([data[0], data[1, :, :1]])
    with pytest.raises(ValueError, match="features"):
        fitted.predict(data[0, :, :1])
    with pytest.raises(ValueError, match="features"):
        fitted.predict(data[:, :, :1])
    with pytest.raises(ValueError, match="features"):
        fitted.score([data[0, :, :1], data[1, :, :1]])


def test_an_empty_list_is_rejected():
    with pytest.raises(ValueError):
        tiny().fit([])


@pytest.mark.parametrize(
    "method", ["predict", "transform", "score", "score_samples", "filter"]
)
def test_methods_need_a_fit(data, method):
    with pytest.raises(NotFittedError):
        getattr(tiny(), method)(data)


def test_sample_needs_a_fit():
    with pytest.raises(NotFittedError):
        tiny().sample(5)


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": -1},
        {"n_components": 0},
        {"covariance_type": "bogus"},
        {"ess_threshold": 2.0},
        {"n_particles": 0},
        {"max_iter": 0},
        {"learning_rate": 0.0},
        {"tol": -1.0},
        {"window_length": 1},
        {"batch_size": 0},
        {"update": "bogus"},
        {"alpha": -1.0},
        {"early_stopping": "yes"},
        {"validation_fraction": 0.0},
        {"validation_fraction": 1.0},
        {"n_iter_no_change": 0},
        {"init_dynamics": "bogus"},
        {"periodic_states": "bogus"},
        {"n_init": 0},
        {"resampling": "bogus"},
        {"observation": "bogus"},
        {"observation_noise": -1.0},
        {"initial_state_scale": 0.0},
        {"warm_start": "yes"},
    ],
)
def test_invalid_parameters_raise_invalid_parameter_error(data, params):
    with pytest.raises(InvalidParameterError):
        tiny(**params).fit(data)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": (8.5,)}, "hidden_layer_sizes"),
        (
            {"update": "alternating", "n_transition_steps": 0, "n_proposal_steps": 0},
            "cannot both be 0",
        ),
        ({"initial_state_mean": [0.0, 0.0, 0.0]}, "initial_state_mean"),
        ({"observation_noise": [0.5, 0.5, 0.5]}, "observation_noise"),
        ({"periodic_states": [2]}, "periodic_states"),
        ({"periodic_states": [-1]}, "periodic_states"),
        ({"periodic_states": [0, 0]}, "periodic_states"),
        ({"periodic_states": [0.5]}, "periodic_states"),
        ({"periodic_states": [[0]]}, "periodic_states"),
    ],
)
def test_invalid_settings_raise_value_error(data, params, match):
    with pytest.raises(ValueError, match=match):
        tiny(**params).fit(data)


# ------------------------------------------------------------------------------------
# Input and output structures
# ------------------------------------------------------------------------------------


@ignore_degeneracy
def test_one_series_gives_2d_results(fitted, data):
    Y = data[0]
    assert fitted.predict(Y).shape == (20, 2)
    np.testing.assert_array_equal(fitted.transform(Y), fitted.predict(Y))
    assert fitted.score_samples(Y).shape == (20,)
    assert isinstance(fitted.score(Y), float)
    result = fitted.filter(Y)
    assert isinstance(result, FilterResult)
    assert result.filtered_means.shape == (20, 2)
    assert result.ess.shape == (20,)
    assert np.ndim(result.log_likelihood) == 0
    assert result.particles is None
    with_particles = fitted.filter(Y, return_particles=True)
    assert with_particles.particles.shape == (20, 8, 2)
    assert with_particles.log_weights.shape == (20, 8)


@ignore_degeneracy
def test_a_3d_array_gives_3d_results(fitted, data):
    assert fitted.n_features_in_ == 2
    assert fitted.predict(data).shape == (4, 20, 2)
    np.testing.assert_array_equal(fitted.transform(data), fitted.predict(data))
    assert fitted.score_samples(data).shape == (4, 20)
    assert np.isfinite(fitted.score(data))
    result = fitted.filter(data, return_particles=True)
    assert result.filtered_means.shape == (4, 20, 2)
    assert np.shape(result.log_likelihood) == (4,)
    assert result.particles.shape == (4, 20, 8, 2)


@ignore_degeneracy
def test_a_list_of_series_gives_a_list_of_results(fitted, ragged):
    lengths = [len(one) for one in ragged]
    states = fitted.predict(ragged)
    assert isinstance(states, list)
    assert [one.shape for one in states] == [(n, 2) for n in lengths]
    transformed = fitted.transform(ragged)
    assert [one.shape for one in transformed] == [(n, 2) for n in lengths]
    increments = fitted.score_samples(ragged)
    assert [one.shape for one in increments] == [(n,) for n in lengths]
    assert all(np.all(np.isfinite(one)) for one in increments)
    assert np.isfinite(fitted.score(ragged))
    results = fitted.filter(ragged)
    assert isinstance(results, list) and len(results) == 3
    for result, n in zip(results, lengths, strict=True):
        assert isinstance(result, FilterResult)
        assert result.filtered_means.shape == (n, 2)
        assert np.shape(result.log_likelihood_increments) == (n,)
        assert np.ndim(result.log_likelihood) == 0
        np.testing.assert_allclose(
            result.log_likelihood, np.sum(result.log_likelihood_increments)
        )


def test_fit_on_a_list_of_series_of_different_lengths(ragged):
    model = fit(tiny(), ragged)
    assert model.n_features_in_ == 2
    assert [one.shape for one in model.predict(ragged)] == [
        (20, 2),
        (12, 2),
        (17, 2),
    ]


def test_a_tuple_of_series_is_a_list(fitted, ragged):
    states = fitted.predict(tuple(ragged))
    assert [one.shape for one in states] == [(20, 2), (12, 2), (17, 2)]


def test_score_is_the_mean_increment_per_observed_step(fitted, data, ragged):
    np.testing.assert_allclose(
        fitted.score(data), np.mean(fitted.score_samples(data)), rtol=1e-12
    )
    increments = fitted.score_samples(ragged)
    np.testing.assert_allclose(
        fitted.score(ragged),
        np.sum(np.concatenate(increments)) / sum(len(one) for one in ragged),
        rtol=1e-12,
    )


# ------------------------------------------------------------------------------------
# Observation models
# ------------------------------------------------------------------------------------


def test_an_observation_model_and_observation_noise_are_exclusive(data):
    observation = LinearGaussianObservation(noise_scale=0.7, n_states=2)
    with pytest.raises(ValueError, match="observation_noise"):
        tiny(observation=observation, observation_noise=0.7).fit(data)


def test_an_observation_model_must_match_the_features(data):
    observation = LinearGaussianObservation(noise_scale=0.7, n_states=3)
    with pytest.raises(ValueError, match="outputs"):
        tiny(observation=observation).fit(data)


def test_a_linear_gaussian_observation_model(data):
    # Two observed outputs of a three-dimensional state.
    matrix = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])
    observation = LinearGaussianObservation(matrix, noise_scale=0.7)
    model = fit(tiny(observation=observation), data)
    assert model.n_states_ == 3
    assert model.predict(data).shape == (4, 20, 3)
    assert np.isfinite(model.score(data))
    Y, X = model.sample(10, 2, random_state=0)
    assert Y.shape == (2, 10, 2) and X.shape == (2, 10, 3)
    # The user's object is not modified or kept.
    assert model.observation_ is not observation
    np.testing.assert_array_equal(observation.observation_matrix, matrix)


def test_a_gaussian_observation_model_with_the_kuramoto_data():
    Y, _, truth = make_kuramoto(20, 2, n_oscillators=2, random_state=0)
    assert isinstance(truth.observation, GaussianObservation)
    model = fit(tiny(observation=truth.observation), Y)
    assert model.n_features_in_ == 4 and model.n_states_ == 2
    states = model.predict(Y)
    assert states.shape == (2, 20, 2) and np.all(np.isfinite(states))
    assert np.isfinite(model.score(Y))
    Y_sim, X_sim = model.sample(8, random_state=0)
    assert Y_sim.shape == (8, 4) and X_sim.shape == (8, 2)


# ------------------------------------------------------------------------------------
# Fitted attributes and determinism
# ------------------------------------------------------------------------------------


def test_fitted_attributes(fitted, data):
    assert set(fitted.params_) == {"transition", "proposal"}
    assert fitted.n_states_ == 2
    assert fitted.initial_state_mean_.shape == (2,)
    assert fitted.initial_state_scale_.shape == (2,)
    assert fitted.restart_scores_.shape == (1,)
    assert fitted.n_iter_ == 2
    assert fitted.converged_ is False
    # The start, then one evaluation per epoch; 4 series: one held out, 3 to
    # train on in 2 windows of 10 steps, minibatches of 2: 4 updates an epoch.
    assert [entry.epoch for entry in fitted.history_] == [0, 1, 2]
    assert [entry.n_updates for entry in fitted.history_] == [0, 4, 8]
    assert fitted.n_updates_ == 8
    assert fitted.validation_scores_ == [
        entry.validation_log_likelihood for entry in fitted.history_
    ]
    assert fitted.best_validation_score_ == max(fitted.validation_scores_)
    # The restart's score is its best validation score.
    assert fitted.restart_scores_[0] == fitted.best_validation_score_
    # The score of the training data is the fixed-seed score recorded in fit.
    assert fitted.score(data) == pytest.approx(fitted.log_likelihood_, rel=1e-10)


def test_fit_returns_self_and_warns_only_about_convergence(data):
    model = tiny()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert model.fit(data) is model
    assert [warning.category for warning in caught] == [ConvergenceWarning]


def test_converged_is_set_only_when_tol_is_met(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning when it converges
        model = tiny(max_iter=5, tol=1e9, n_iter_no_change=2).fit(data)
    assert model.converged_ is True
    assert model.n_iter_ == 2


@ignore_degeneracy
def test_methods_are_deterministic_after_fit(fitted, data, ragged):
    np.testing.assert_array_equal(fitted.predict(data), fitted.predict(data))
    assert fitted.score(data) == fitted.score(data)
    np.testing.assert_array_equal(
        fitted.score_samples(data), fitted.score_samples(data)
    )
    first, second = fitted.filter(data), fitted.filter(data)
    for one, other in zip(first, second, strict=True):
        if one is not None:
            np.testing.assert_array_equal(one, other)
    for one, other in zip(fitted.predict(ragged), fitted.predict(ragged), strict=True):
        np.testing.assert_array_equal(one, other)


def test_clone_and_params(fitted):
    params = fitted.get_params()
    assert params == {**StateMixFilter().get_params(), **TINY}
    fresh = clone(fitted)
    assert fresh.get_params() == params
    assert not hasattr(fresh, "params_")
    assert fresh.set_params(n_components=2, n_particles=5) is fresh
    assert fresh.n_components == 2 and fresh.n_particles == 5
    assert fitted.n_components == 1  # the original is untouched


def test_pickling_round_trip_predicts_identically(fitted, data, ragged):
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict(data), fitted.predict(data))
    assert restored.score(ragged) == fitted.score(ragged)
    np.testing.assert_array_equal(flat(restored.params_), flat(fitted.params_))


def test_the_same_random_state_gives_the_same_fit(fitted, data):
    again = fit(tiny(), data)
    np.testing.assert_array_equal(flat(again.params_), flat(fitted.params_))
    np.testing.assert_array_equal(again.predict(data), fitted.predict(data))
    assert again.log_likelihood_ == fitted.log_likelihood_
    other = fit(tiny(random_state=1), data)
    assert not np.array_equal(flat(other.params_), flat(fitted.params_))


def test_fit_does_not_change_the_constructor_parameters(data):
    hidden_layer_sizes = [8]
    model = tiny(hidden_layer_sizes=hidden_layer_sizes)
    before = copy.deepcopy(model.get_params())
    fit(model, data)
    assert model.get_params() == before
    assert model.hidden_layer_sizes is hidden_layer_sizes


def test_n_init_records_every_restart_and_keeps_the_best(data):
    model = fit(tiny(n_init=2), data)
    assert model.restart_scores_.shape == (2,)
    assert np.all(np.isfinite(model.restart_scores_))
    assert model.best_validation_score_ == np.max(model.restart_scores_)


def test_warm_start_continues_from_the_previous_fit(data):
    # Without early stopping the last parameters are kept: the second fit's
    # changes are seen whether or not they improve a held-out score.
    model = fit(tiny(warm_start=True, n_init=2, early_stopping=False), data)
    previous = model.params_
    # Training only the proposal from the previous fit leaves its transition.
    model.set_params(update="alternating", n_transition_steps=0)
    fit(model, data)
    np.testing.assert_array_equal(
        flat(model.params_["transition"]), flat(previous["transition"])
    )
    assert not np.array_equal(
        flat(model.params_["proposal"]), flat(previous["proposal"])
    )
    assert model.restart_scores_.shape == (1,)  # a single run: n_init is ignored


def test_warm_start_carries_on_when_the_data_gain_or_lose_missing_entries(data):
    # Complete data, then data with missing entries: the proposal gains the
    # missing-entry indicator's inputs (at zero weight), and the fit still
    # starts from the previous one (its transition is kept, as it is not
    # trained here); then complete data again: the indicator stays.
    model = fit(tiny(warm_start=True, early_stopping=False), data)
    assert not model.spec_.missing_indicator
    previous = model.params_
    gappy = data.copy()
    gappy[np.random.default_rng(3).random(gappy.shape) < 0.3] = np.nan
    model.set_params(update="alternating", n_transition_steps=0)
    for Y in (gappy, data):
        fit(model, Y)
        assert model.spec_.missing_indicator
        np.testing.assert_array_equal(
            flat(model.params_["transition"]), flat(previous["transition"])
        )
    n_outputs = data.shape[-1]
    assert (
        model.params_["proposal"]["linear"].shape[0]
        == previous["proposal"]["linear"].shape[0] + n_outputs
    )


@pytest.mark.slow
def test_n_jobs_does_not_change_the_fit(data):
    serial = fit(tiny(n_init=4, n_jobs=1), data)
    parallel = fit(tiny(n_init=4, n_jobs=2), data)
    np.testing.assert_array_equal(flat(parallel.params_), flat(serial.params_))
    np.testing.assert_array_equal(parallel.restart_scores_, serial.restart_scores_)
    np.testing.assert_array_equal(parallel.predict(data), serial.predict(data))
    assert parallel.n_iter_ == serial.n_iter_


# ------------------------------------------------------------------------------------
# scikit-learn tools
# ------------------------------------------------------------------------------------


@ignore_convergence
@pytest.mark.parametrize("structure", ["3-D", "list"])
def test_grid_search_over_several_series(data, structure):
    Y = data if structure == "3-D" else [data[0], data[1][:15], data[2], data[3][:18]]
    search = GridSearchCV(tiny(max_iter=1), {"n_components": [1, 2]}, cv=2).fit(Y)
    assert search.best_params_["n_components"] in (1, 2)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_.n_features_in_ == 2
    assert np.isfinite(search.score(Y))


@ignore_convergence
def test_grid_search_with_time_series_split_on_one_long_series():
    Y, _, _ = make_linear_gaussian(40, n_states=2, random_state=1)
    search = GridSearchCV(
        tiny(max_iter=1), {"n_components": [1, 2]}, cv=TimeSeriesSplit(n_splits=2)
    ).fit(Y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.predict(Y).shape == (40, 2)


@ignore_convergence
def test_cross_val_score(data):
    scores = cross_val_score(tiny(max_iter=1), data, cv=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


@ignore_convergence
def test_a_pipeline_with_a_scaler(data):
    Y = data[0]
    pipeline = make_pipeline(StandardScaler(), tiny()).fit(Y)
    states = pipeline.transform(Y)
    assert states.shape == (20, 2)
    scaled = StandardScaler().fit_transform(Y)
    np.testing.assert_array_equal(states, pipeline[-1].predict(scaled))
    assert np.isfinite(pipeline.score(Y))


# ------------------------------------------------------------------------------------
# Verbosity, interruptions, divergence
# ------------------------------------------------------------------------------------


def test_verbose_prints_one_line_per_evaluation(data, capsys):
    model = fit(tiny(verbose=1), data)
    lines = capsys.readouterr().out.splitlines()
    # One line per epoch, the start included: epoch, updates, training and
    # validation log-likelihood per step, seconds.
    assert len(lines) == len(model.history_) == 1 + model.n_iter_
    for line, entry in zip(lines, model.history_, strict=True):
        assert line.startswith(f"epoch {entry.epoch:4d}  updates {entry.n_updates:6d}")
        assert f"training {entry.train_log_likelihood:9.4f}" in line
        assert f"validation {entry.validation_log_likelihood:9.4f}" in line
        assert line.endswith(f"({entry.seconds:.1f} s)")


def test_verbose_zero_prints_nothing(data, capsys):
    fit(tiny(verbose=0), data)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("features", [2, 1], ids=["same-data", "other-features"])
def test_an_interrupted_fit_leaves_a_fitted_model_as_it_was(
    fitted, data, monkeypatch, features
):
    model = copy.deepcopy(fitted)
    before = dict(vars(model))
    states = model.predict(data)
    monkeypatch.setattr(estimator_module, "fit_restarts", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.fit(data[:, :, :features])
    assert vars(model).keys() == before.keys()
    for name, value in before.items():
        assert vars(model)[name] is value, name
    np.testing.assert_array_equal(model.predict(data), states)


def test_an_interrupted_fit_leaves_an_unfitted_model_unfitted(data, monkeypatch):
    model = tiny()
    before = dict(vars(model))
    monkeypatch.setattr(estimator_module, "fit_restarts", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.fit(data)
    assert vars(model) == before
    with pytest.raises(NotFittedError):
        model.predict(data)


def test_a_diverging_restart_warns_and_keeps_finite_parameters(data):
    observation = GaussianObservation(_clipped_identity, 2, noise_scale=0.7)
    model = tiny(observation=observation, learning_rate=1e6, max_iter=3)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        model.fit(data)
    assert np.all(np.isfinite(flat(model.params_)))
    assert np.isfinite(model.log_likelihood_)
    assert model.n_iter_ < 3 and not model.converged_
    assert np.all(np.isfinite(model.predict(data)))
    assert np.isfinite(model.score(data))


def test_fit_raises_when_no_restart_is_finite(data):
    observation = _NaNObservation(noise_scale=0.7, n_states=2)
    model = tiny(observation=observation, n_init=2)
    with (
        pytest.warns(RuntimeWarning, match="non-finite"),
        pytest.raises(ValueError, match="diverged"),
    ):
        model.fit(data)


# ------------------------------------------------------------------------------------
# Simulation
# ------------------------------------------------------------------------------------


def test_sample_shapes_and_determinism(fitted):
    Y, X = fitted.sample(15, 3)
    assert Y.shape == (3, 15, 2) and X.shape == (3, 15, 2)
    assert np.all(np.isfinite(Y)) and np.all(np.isfinite(X))
    Y_one, X_one = fitted.sample(15)
    assert Y_one.shape == (15, 2) and X_one.shape == (15, 2)
    # The estimator's random_state (0) is used when none is given.
    np.testing.assert_array_equal(fitted.sample(15, 3)[0], Y)
    np.testing.assert_array_equal(fitted.sample(15, 3, random_state=0)[0], Y)
    first = fitted.sample(10, 2, random_state=5)
    second = fitted.sample(10, 2, random_state=5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    other = fitted.sample(10, 2, random_state=6)
    assert not np.array_equal(first[0], other[0])


# ------------------------------------------------------------------------------------
# Validation, early stopping, the start and the proposal choice
# ------------------------------------------------------------------------------------


def _recording_train(monkeypatch):
    """Record the training and held-out data that each restart trains on."""
    import statemix_sk.training as training

    calls = []
    original = training.train

    def recording(params, spec, Y, settings, rng, eval_seed, validation=None):
        calls.append((Y.copy(), validation))
        return original(params, spec, Y, settings, rng, eval_seed, validation)

    monkeypatch.setattr(training, "train", recording)
    return calls


@ignore_convergence
def test_early_stopping_holds_out_whole_series(data, monkeypatch):
    calls = _recording_train(monkeypatch)
    model = tiny(validation_fraction=0.5).fit(data)
    ((Y_train, validation),) = calls
    # Half of 4 series held out, 2 trained on; together they are the data.
    assert Y_train.shape[0] == 2 and validation.Y.shape[0] == 2
    assert validation.first_step == 0
    rows = {tuple(one[0]) for one in np.concatenate([Y_train, validation.Y])}
    assert rows == {tuple(one[0]) for one in data}
    assert model.best_validation_score_ is not None
    # The score of all the data given to fit.
    assert model.score(data) == pytest.approx(model.log_likelihood_, rel=1e-10)


@ignore_convergence
def test_one_series_holds_out_its_last_windows(data, monkeypatch):
    calls = _recording_train(monkeypatch)
    series = np.concatenate([data[0], data[1]])  # 40 steps: 4 windows of 10
    tiny(validation_fraction=0.3).fit(series)
    ((Y_train, validation),) = calls
    # ceil(0.3 * 4) = 2 windows held out: trained on the first 20 steps, scored
    # on the last 20 of the whole series, which is filtered from its start.
    np.testing.assert_array_equal(Y_train[0], series[:20])
    np.testing.assert_array_equal(validation.Y[0], series)
    assert validation.first_step == 20


@ignore_convergence
@pytest.mark.parametrize("early_stopping", [False, "auto"])
def test_without_data_to_hold_out_training_uses_everything(
    data, monkeypatch, early_stopping
):
    calls = _recording_train(monkeypatch)
    # One series of 10 steps is one window: nothing can be held out ("auto"), or
    # nothing is to be held out (False).
    Y = data[0, :10] if early_stopping == "auto" else data
    model = tiny(early_stopping=early_stopping).fit(Y)
    ((Y_train, validation),) = calls
    assert validation is None
    assert Y_train.shape[0] == (1 if Y.ndim == 2 else len(Y))
    assert model.best_validation_score_ is None and model.validation_scores_ is None
    assert all(np.isnan(entry.validation_log_likelihood) for entry in model.history_)


def test_early_stopping_true_without_data_to_hold_out_is_an_error(data):
    with pytest.raises(ValueError, match="early_stopping=True"):
        tiny(early_stopping=True).fit(data[0, :10])


@ignore_convergence
def test_the_regression_start_is_kept_only_if_it_beats_the_linear_one(
    data, monkeypatch
):
    # Scores in the order linear, regression; a tie keeps the linear start.
    for scores, expected in [
        ((0.0, 1.0), "regression"),
        ((1.0, 0.0), "linear"),
        ((1.0, 1.0), "linear"),
    ]:
        scripted = iter(scores)
        monkeypatch.setattr(
            StateMixFilter, "_start_score", lambda *a, scripted=scripted: next(scripted)
        )
        model = tiny(init_dynamics="regression").fit(data)
        assert model.start_ == expected
        assert (model.spec_.transition_params is not None) is (expected == "regression")
    monkeypatch.undo()
    assert tiny(init_dynamics="linear").fit(data).start_ == "linear"
    assert tiny(init_dynamics="random_walk").fit(data).start_ == "random_walk"


@ignore_convergence
def test_a_non_linear_observation_gets_a_regression_start_from_a_particle_smoother(
    monkeypatch,
):
    Y, _, model = make_kuramoto(30, 4, n_oscillators=3, random_state=0)
    smoothed = []
    original = StateMixFilter._particle_smoother

    def recording(spec, seed):
        smooth = original(spec, seed)

        def recorded(sequences):
            states = smooth(sequences)
            smoothed.append(states)
            return states

        return recorded

    monkeypatch.setattr(StateMixFilter, "_particle_smoother", staticmethod(recording))
    for scores, expected in [((0.0, 1.0), "regression"), ((1.0, 0.0), "random_walk")]:
        scripted = iter(scores)
        monkeypatch.setattr(
            StateMixFilter, "_start_score", lambda *a, scripted=scripted: next(scripted)
        )
        fitted = tiny(observation=model.observation, init_dynamics="regression").fit(Y)
        assert fitted.start_ == expected
    # The training and held-out series, one state estimate per step.
    assert [len(states) for states in smoothed] == [3, 1, 3, 1]
    assert all(one.shape == (30, 3) for states in smoothed for one in states)
    assert all(np.all(np.isfinite(one)) for states in smoothed for one in states)


@ignore_convergence
def test_use_proposal_chooses_the_better_filter_on_held_out_data(data, monkeypatch):
    from statemix_sk.filtering import BootstrapProposal
    from statemix_sk.learned import MixtureProposal

    assert isinstance(tiny(use_proposal=False).fit(data).proposal_, BootstrapProposal)
    model = tiny(use_proposal=True).fit(data)
    assert isinstance(model.proposal_, MixtureProposal) and model.uses_proposal_
    # "auto": the learned proposal's held-out score first, the transition's next.
    for scores, expected in [((0.0, 1.0), False), ((1.0, 0.0), True)]:
        scripted = iter(scores)
        monkeypatch.setattr(
            estimator_module,
            "held_out_log_likelihood",
            lambda *a, scripted=scripted: next(scripted),
        )
        model = tiny().fit(data)
        assert model.uses_proposal_ is expected
        assert isinstance(model.proposal_, MixtureProposal) is expected
        # score() filters with the chosen proposal, as fit's log_likelihood_ did.
        assert model.score(data) == pytest.approx(model.log_likelihood_, rel=1e-10)


@ignore_convergence
def test_a_series_with_no_observation_trains_and_is_never_the_only_held_out_one(
    data, monkeypatch
):
    calls = _recording_train(monkeypatch)
    Y = data.copy()
    Y[1:] = np.nan  # one observed series; three entirely missing
    model = tiny(early_stopping="auto").fit(Y)
    ((Y_train, validation),) = calls
    # No split leaves observations on both sides: no validation, all the data
    # trained on, and a finite fit.
    assert validation is None and Y_train.shape[0] == 4
    assert np.isfinite(model.log_likelihood_)
    with pytest.raises(ValueError, match="early_stopping=True"):
        tiny(early_stopping=True).fit(Y)


@ignore_convergence
def test_periodic_states_make_the_networks_see_phases(data):
    Y, _, model = make_kuramoto(20, n_sequences=3, n_oscillators=3, random_state=0)
    options = {"observation": model.observation, "init_dynamics": "random_walk"}
    n_outputs = model.observation.n_outputs

    def input_sizes(fitted):
        return [
            fitted.params_[network]["layers"][0][0].shape[0]
            for network in ("transition", "proposal")
        ]

    # "auto": [sin, cos] sees every phase modulo 2 pi.
    phases = tiny(**options).fit(Y)
    assert phases.periodic_states_.tolist() == [0, 1, 2]
    assert input_sizes(phases) == [6, 6 + n_outputs]
    assert np.isfinite(phases.score(Y))
    raw = tiny(periodic_states=None, **options).fit(Y)
    assert raw.periodic_states_.tolist() == []
    assert input_sizes(raw) == [3, 3 + n_outputs]
    some = tiny(periodic_states=[2, 0], **options).fit(Y)
    assert some.periodic_states_.tolist() == [0, 2]
    assert input_sizes(some) == [5, 5 + n_outputs]
    # A linear observation has no phase: "auto" is exactly None there.
    linear = tiny().fit(data)
    assert linear.periodic_states_.tolist() == []
    np.testing.assert_array_equal(
        flat(linear.params_), flat(tiny(periodic_states=None).fit(data).params_)
    )
    # A phase given for a linear observation: the linear start leaves it alone.
    given = tiny(periodic_states=[1]).fit(data)
    assert input_sizes(given) == [3, 3 + 2]
    assert np.isfinite(given.score(data))
