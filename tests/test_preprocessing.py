import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    Normalizer,
    StandardScaler,
)
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from statemix_sk import PerStepTransformer, StateMixFilter, make_linear_gaussian

# A tiny estimator, as in test_estimator.py: every fit takes well under a second.
TINY = dict(
    n_components=1,
    hidden_layer_sizes=(8,),
    n_particles=8,
    max_iter=2,
    window_length=10,
    batch_size=2,
    init_dynamics="linear",
    random_state=0,
)

# Two epochs never converge, and eight particles often collapse at some step:
# both warnings say nothing about the preprocessing under test.
ignore_convergence = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)
ignore_degeneracy = pytest.mark.filterwarnings("ignore::statemix_sk.DegeneracyWarning")


def tiny_pipeline(transformer=None):
    return make_pipeline(
        PerStepTransformer(StandardScaler() if transformer is None else transformer),
        StateMixFilter(**TINY),
    )


@pytest.fixture(scope="module")
def series():
    """Four series of 20 steps, far from unit scale, with missing entries."""
    Y, _, _ = make_linear_gaussian(20, n_sequences=4, n_states=2, random_state=0)
    Y = Y * np.array([1.0, 100.0]) + np.array([5.0, -300.0])
    Y[0, 5] = np.nan  # a missing row
    Y[1, 7, 1] = np.nan  # a missing entry
    Y[3, 0, 0] = np.nan
    return Y


@pytest.fixture(scope="module")
def ragged(series):
    """The same series cut to different lengths, as a list."""
    return [series[0], series[1][:12], series[2][:17], series[3][:15]]


def assert_same_missing(transformed, original):
    for one, before in zip(transformed, original, strict=True):
        np.testing.assert_array_equal(np.isnan(one), np.isnan(before))


# ------------------------------------------------------------------------------------
# scikit-learn's estimator checks (a 2-D input is one series)
# ------------------------------------------------------------------------------------


# Every check applies and passes: none is expected to fail.
@parametrize_with_checks(
    [PerStepTransformer(StandardScaler()), PerStepTransformer(Normalizer())]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_tags_follow_the_wrapped_transformer():
    tags = PerStepTransformer(StandardScaler()).__sklearn_tags__()
    assert tags.input_tags.allow_nan and tags.input_tags.three_d_array
    assert not PerStepTransformer(Normalizer()).__sklearn_tags__().input_tags.allow_nan


# ------------------------------------------------------------------------------------
# In a pipeline, with several series
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transformer", [StandardScaler(), MinMaxScaler()])
def test_the_stacked_fit_equals_a_fit_on_all_rows(series, ragged, transformer):
    for Y in (series, ragged):
        fitted = PerStepTransformer(transformer).fit(Y).transformer_
        expected = clone(transformer).fit(np.concatenate(list(Y)))
        for name in ("scale_", "min_", "mean_", "var_", "n_samples_seen_"):
            if hasattr(expected, name):
                np.testing.assert_array_equal(
                    getattr(fitted, name), getattr(expected, name)
                )


def test_a_plain_scaler_fails_on_several_series(series):
    with pytest.raises(ValueError, match="dim 3"):
        make_pipeline(StandardScaler(), StateMixFilter(**TINY)).fit(series)


@ignore_convergence
@ignore_degeneracy
def test_a_pipeline_on_a_3d_array_with_missing_entries(series):
    pipeline = tiny_pipeline().fit(series)
    states = pipeline.predict(series)
    assert states.shape == series.shape
    assert np.all(np.isfinite(states))
    # The estimator sees the scaled series, missing entries kept.
    scaled = pipeline[0].transform(series)
    assert_same_missing(scaled, series)
    np.testing.assert_array_equal(states, pipeline[-1].predict(scaled))
    assert np.isfinite(pipeline.score(series))
    # One series goes through the same fitted pipeline.
    assert pipeline.predict(series[0]).shape == series[0].shape


@ignore_convergence
@ignore_degeneracy
def test_a_pipeline_on_a_ragged_list_with_missing_entries(ragged):
    pipeline = tiny_pipeline().fit(ragged)
    states = pipeline.predict(ragged)
    assert isinstance(states, list)
    assert [one.shape for one in states] == [one.shape for one in ragged]
    assert all(np.all(np.isfinite(one)) for one in states)
    assert np.isfinite(pipeline.score(ragged))
    # Predicted states go back to the data's units (the observation is the
    # identity): state * scale + mean.
    scaler = pipeline[0].transformer_
    back = pipeline[0].inverse_transform(states)
    for one, state in zip(back, states, strict=True):
        np.testing.assert_allclose(one, state * scaler.scale_ + scaler.mean_)


@ignore_convergence
@ignore_degeneracy
@pytest.mark.parametrize("form", ["array", "list"])
def test_grid_search_and_cross_val_score(series, ragged, form):
    Y = series if form == "array" else ragged
    search = GridSearchCV(
        tiny_pipeline(),
        {
            "statemixfilter__n_components": [1, 2],
            "persteptransformer__transformer__with_mean": [True],
        },
        cv=KFold(n_splits=2),
    ).fit(Y)
    assert search.best_params_["statemixfilter__n_components"] in (1, 2)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert len(search.predict(Y)) == 4
    scores = cross_val_score(tiny_pipeline(), Y, cv=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


# ------------------------------------------------------------------------------------
# Forms, missing entries and the inverse
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["2-D", "3-D", "list", "tuple"])
def test_transform_keeps_the_form_and_the_inverse_undoes_it(series, ragged, form):
    Y = {
        "2-D": series[0],
        "3-D": series,
        "list": ragged,
        "tuple": tuple(ragged),
    }[form]
    scaler = PerStepTransformer(StandardScaler()).fit(Y)
    scaled = scaler.transform(Y)
    if form in ("2-D", "3-D"):
        assert isinstance(scaled, np.ndarray) and scaled.shape == Y.shape
    else:
        assert isinstance(scaled, list)
        assert [one.shape for one in scaled] == [one.shape for one in Y]
    original = [Y] if form == "2-D" else Y
    assert_same_missing([scaled] if form == "2-D" else scaled, original)
    # Every feature is standardised over all observed steps of all series.
    stacked = np.concatenate([scaled] if form == "2-D" else list(scaled))
    np.testing.assert_allclose(np.nanmean(stacked, axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(stacked, axis=0), 1.0)

    back = scaler.inverse_transform(scaled)
    assert type(back) is type(scaled)
    for one, before in zip([back] if form == "2-D" else back, original, strict=True):
        np.testing.assert_allclose(one, before, equal_nan=True)


def test_inverse_transform_exists_only_where_the_transformer_has_one(series):
    assert hasattr(PerStepTransformer(StandardScaler()), "inverse_transform")
    assert not hasattr(Normalizer(), "inverse_transform")
    without = PerStepTransformer(Normalizer())
    assert not hasattr(without, "inverse_transform")
    complete = series[2:3]  # Normalizer refuses NaN
    assert not hasattr(without.fit(complete), "inverse_transform")
    with pytest.raises(AttributeError, match="inverse_transform"):
        without.inverse_transform(complete)


def test_a_transformer_that_lets_nan_through_is_not_refused(series):
    # FunctionTransformer's tags say no NaN; the call decides, not the tag.
    Y = series - np.nanmin(series)
    logged = PerStepTransformer(
        FunctionTransformer(np.log1p, np.expm1, check_inverse=False)
    ).fit(Y)
    out = logged.transform(Y)
    assert_same_missing(out, Y)
    np.testing.assert_allclose(logged.inverse_transform(out), Y, equal_nan=True)


# ------------------------------------------------------------------------------------
# The meta-estimator contract
# ------------------------------------------------------------------------------------


def test_params_are_nested_and_the_given_transformer_is_left_alone(series):
    transformer = StandardScaler()
    wrapper = PerStepTransformer(transformer)
    params = wrapper.get_params(deep=True)
    assert params["transformer"] is transformer
    assert params["transformer__with_mean"] is True
    wrapper.set_params(transformer__with_mean=False).fit(series)
    assert wrapper.transformer_ is not transformer
    assert not hasattr(transformer, "mean_")  # fit works on a clone
    # Scaled, not centred.
    np.testing.assert_allclose(
        wrapper.transform(series) * wrapper.transformer_.scale_, series, equal_nan=True
    )


def test_clone_and_pickle(series):
    wrapper = PerStepTransformer(StandardScaler(with_mean=False))
    copy = clone(wrapper)
    assert copy.get_params()["transformer__with_mean"] is False
    assert copy.transformer is not wrapper.transformer
    wrapper.fit(series)
    restored = pickle.loads(pickle.dumps(wrapper))
    np.testing.assert_array_equal(restored.transform(series), wrapper.transform(series))


# ------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------


class _DropsFirstStep(TransformerMixin, BaseEstimator):
    """A transformer that does not map each row to one row."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X[1:]


def test_bad_input_raises_clear_errors(series):
    wrapper = PerStepTransformer(StandardScaler())
    with pytest.raises(ValueError, match="at least one series, got none"):
        wrapper.fit([])
    with pytest.raises(ValueError, match=r"Y\[0\] has 2, Y\[1\] has 3"):
        wrapper.fit([np.zeros((4, 2)), np.zeros((4, 3))])
    with pytest.raises(ValueError, match="Got 4-D input"):
        wrapper.fit(series[None])
    with pytest.raises(ValueError, match=r"Y\[1\].*infinity"):
        wrapper.fit([series[0], np.full((3, 2), np.inf)])
    with pytest.raises(NotFittedError):
        wrapper.transform(series)
    wrapper.fit(series)
    with pytest.raises(ValueError, match="expecting 2 features"):
        wrapper.transform([np.zeros((4, 3))])


def test_a_bad_transformer_raises_clear_errors(series):
    with pytest.raises(InvalidParameterError, match="transformer"):
        PerStepTransformer("scaler").fit(series)
    with pytest.raises(ValueError, match=r"Y\[0\], which has 20 steps.*one row"):
        PerStepTransformer(_DropsFirstStep()).fit(series).transform(series)
    with pytest.raises(
        ValueError, match=r"fit refused Y, which has NaN entries.*lets NaN through"
    ):
        PerStepTransformer(Normalizer()).fit(series)
    normalizer = PerStepTransformer(Normalizer()).fit(series[2:3])
    with pytest.raises(ValueError, match=r"transform refused Y\[1\], which has NaN"):
        normalizer.transform([series[2], series[1]])
