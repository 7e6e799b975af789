"""Reliability: bad input gets a clear error, the numerics never fail silently, and
results reproduce (issue 7).

Bad input is drawn by hypothesis (derandomised, see conftest.py) and thrown at the
public API: StateMixFilter (tiny) and the four filters with a known linear-Gaussian
model. Every call must raise a ValueError (scikit-learn's InvalidParameterError is
one) whose message names the argument and says what is wrong; a numpy LinAlgError
(also a ValueError) does not count. Each distinct bad input is recorded in
``TRIED`` and the last test asserts their number.

What is already tested elsewhere is not repeated: the unbiasedness of the bootstrap
likelihood against the Kalman filter with fully and partly missing rows
(tests/test_filtering.py), a diverging restart and an interrupted StateMixFilter fit
(tests/test_estimator.py).
"""

import hashlib
import pickle
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import autograd.numpy as anp
import numpy as np
import pytest
import scipy.sparse
from autograd.misc import flatten
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import ConvergenceWarning

import statemix_sk
import statemix_sk.objective as training_module
from statemix_sk import (
    AuxiliaryFilter,
    BootstrapFilter,
    DegeneracyWarning,
    GaussianObservation,
    ImprovedAuxiliaryFilter,
    InconsistentVersionWarning,
    LinearGaussianModel,
    LinearGaussianObservation,
    LocallyOptimalFilter,
    StateMixFilter,
    make_linear_gaussian,
)
from statemix_sk.models import GaussianTransitionModel
from statemix_sk.networks import apply_mixture_head

TINY = dict(
    n_components=1,
    hidden_layer_sizes=(4,),
    max_iter=1,
    n_particles=8,
    # The regression start (a network fitted to smoothed states, about a second)
    # is checked in test_estimator.py and test_training.py; here the inputs are.
    init_dynamics="linear",
    random_state=0,
)
KNOWN_MODEL_FILTERS = [
    BootstrapFilter,
    AuxiliaryFilter,
    ImprovedAuxiliaryFilter,
    LocallyOptimalFilter,
]
METHODS = ["predict", "transform", "score", "score_samples", "filter"]
# The data: 2 series of 10 steps of a 2-D linear-Gaussian model (noise 0.7).
N_STEPS, N_FEATURES = 10, 2


def tiny(**overrides):
    return StateMixFilter(**{**TINY, **overrides})


def fit_quietly(estimator, Y):
    """Fit, ignoring the ConvergenceWarning of a one-epoch fit (and only it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(Y)


def flat(params):
    return flatten(params)[0]


# ------------------------------------------------------------------------------------
# The record of distinct bad inputs
# ------------------------------------------------------------------------------------

TRIED = {}
"""kind of bad input -> set of digests of the distinct inputs tried."""
CONTRIBUTORS = set()
"""The tests that recorded bad inputs (the count is checked only if all ran)."""


def _digest(value):
    try:
        payload = pickle.dumps(value, protocol=4)
    except (pickle.PicklingError, AttributeError, TypeError):
        payload = repr(value).encode()
    return hashlib.sha1(payload).hexdigest()


def record(kind, *value):
    """Record a bad input of ``kind`` (the calling test is noted as a contributor)."""
    CONTRIBUTORS.add(sys._getframe(1).f_code.co_name)
    TRIED.setdefault(kind, set()).add(_digest(value))


def raises_naming(call, argument, phrase=""):
    """Assert that ``call()`` raises a ValueError naming ``argument`` and ``phrase``."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert not isinstance(info.value, np.linalg.LinAlgError), message
    assert re.search(rf"\b{re.escape(argument)}\b", message), message
    assert re.search(phrase, message), message
    return message


# ------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    Y, _, model = make_linear_gaussian(N_STEPS, 2, n_states=N_FEATURES, random_state=0)
    return Y, model


@pytest.fixture(scope="module")
def fitted(data):
    """Every estimator, fitted on the data."""
    Y, model = data
    estimators = {"StateMixFilter": fit_quietly(tiny(), Y)}
    for estimator_class in KNOWN_MODEL_FILTERS:
        estimators[estimator_class.__name__] = estimator_class(
            model, n_particles=8, random_state=0
        ).fit(Y)
    return estimators


def fresh_estimators(model):
    return [tiny()] + [
        estimator_class(model, n_particles=8, random_state=0)
        for estimator_class in KNOWN_MODEL_FILTERS
    ]


# ------------------------------------------------------------------------------------
# 1. Bad observations
# ------------------------------------------------------------------------------------

_values = st.floats(-5.0, 5.0, allow_nan=False)


@st.composite
def _series(draw, n_features=N_FEATURES, min_steps=2, max_steps=6):
    n_steps = draw(st.integers(min_steps, max_steps))
    return draw(hnp.arrays(np.float64, (n_steps, n_features), elements=_values))


def _with_entry(Y, draw, value):
    Y = np.array(Y, dtype=np.result_type(Y, np.asarray(value)))
    index = draw(
        st.tuples(st.integers(0, Y.shape[0] - 1), st.integers(0, Y.shape[1] - 1))
    )
    Y[index] = value
    return Y


@st.composite
def _in_a_structure(draw, bad):
    """The bad series alone (2-D), in a 3-D batch, or second in a list."""
    structure = draw(st.sampled_from(["2-D", "3-D", "list"]))
    clean = np.zeros((len(bad), N_FEATURES))
    if structure == "2-D":
        return bad
    if structure == "3-D":
        return np.stack([clean.astype(bad.dtype), bad])
    return [clean, bad]


@st.composite
def infinite(draw):
    Y = _with_entry(draw(_series()), draw, draw(st.sampled_from([np.inf, -np.inf])))
    return "inf", draw(_in_a_structure(Y)), "infinity"


@st.composite
def too_large(draw):
    magnitude = draw(st.floats(1.0000001e150, 1e308))
    value = draw(st.sampled_from([1.0, -1.0])) * magnitude
    Y = _with_entry(draw(_series()), draw, value)
    return "too large to square", draw(_in_a_structure(Y)), "cannot be squared"


@st.composite
def wrong_dimensions(draw):
    ndim = draw(st.sampled_from([0, 1, 4]))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1))
    Y = draw(hnp.arrays(np.float64, shape, elements=_values))
    if ndim == 0 and draw(st.booleans()):
        Y = float(Y)  # a plain number
    return f"{ndim}-D", Y, "2-D"


@st.composite
def too_few_steps(draw):
    n_steps = draw(st.integers(0, 1))
    short = np.zeros((n_steps, N_FEATURES))
    structure = draw(st.sampled_from(["2-D", "3-D", "list"]))
    if structure == "2-D":
        Y = short
    elif structure == "3-D":
        Y = np.zeros((draw(st.integers(1, 3)), n_steps, N_FEATURES))
    else:
        Y = [np.zeros((5, N_FEATURES)), short]
    return f"{n_steps} steps", Y, "at least 2 steps"


@st.composite
def no_series(draw):
    Y = [] if draw(st.booleans()) else np.zeros((0, 5, N_FEATURES))
    return "no series", Y, "at least one series"


@st.composite
def mixed_feature_counts(draw):
    counts = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    counts[0] = N_FEATURES
    if len(set(counts)) == 1:
        counts[-1] = N_FEATURES + 1
    Y = [draw(_series(n_features=count)) for count in counts]
    return "mixed feature counts", Y, "same number of features"


@st.composite
def ragged_rows(draw):
    rows = [list(row) for row in draw(_series(min_steps=3))]
    index = draw(st.integers(0, len(rows) - 1))
    rows[index] = [1.0] * draw(st.sampled_from([0, 1, N_FEATURES + 1]))
    return "ragged rows", rows, "rows of equal length"


@st.composite
def strings(draw):
    Y = draw(_series())
    form = draw(st.sampled_from(["numeric str", "text", "bytes", "object text"]))
    if form == "numeric str":
        Y = Y.astype(str)
    elif form == "text":
        Y = _with_entry(Y.astype(object), draw, draw(st.text(max_size=5))).astype(str)
    elif form == "bytes":
        Y = Y.astype("S8")
    else:
        Y = _with_entry(Y.astype(object), draw, draw(st.text(max_size=5)))
    return "strings", draw(_in_a_structure(Y)), "strings or bytes"


@st.composite
def non_numbers(draw):
    # None is not among them: numpy reads it as NaN, a missing entry.
    item = draw(st.sampled_from([{}, {"a": 1}, [1.0], (1.0, 2.0), set(), object]))
    Y = _with_entry(draw(_series()).astype(object), draw, item)
    return "non-numeric objects", draw(_in_a_structure(Y)), "number|numeric"


@st.composite
def complex_numbers(draw):
    imaginary = draw(st.floats(-5.0, 5.0))
    Y = draw(_series()) + 1j * imaginary
    if draw(st.booleans()):
        Y = Y.astype(object)
    return "complex", draw(_in_a_structure(Y)), "complex"


@st.composite
def dates(draw):
    days = draw(hnp.arrays(np.int64, (4, N_FEATURES), elements=st.integers(0, 10**5)))
    unit = draw(st.sampled_from(["datetime64[D]", "timedelta64[s]"]))
    return "dates", days.astype(unit), "dates or durations"


@st.composite
def sparse(draw):
    return "sparse", scipy.sparse.csr_matrix(draw(_series())), "sparse"


BAD_OBSERVATIONS = {
    "inf": infinite(),
    "too large": too_large(),
    "dimensions": wrong_dimensions(),
    "steps": too_few_steps(),
    "no series": no_series(),
    "features": mixed_feature_counts(),
    "ragged rows": ragged_rows(),
    "strings": strings(),
    "objects": non_numbers(),
    "complex": complex_numbers(),
    "dates": dates(),
    "sparse": sparse(),
}


@pytest.mark.parametrize("form", BAD_OBSERVATIONS)
@settings(max_examples=25)
@given(example=st.data())
def test_bad_observations_raise_a_value_error_naming_y(form, example, data, fitted):
    kind, Y, phrase = example.draw(BAD_OBSERVATIONS[form])
    record(kind, Y)
    for estimator in fresh_estimators(data[1]):
        raises_naming(lambda: estimator.fit(Y), "Y", phrase)  # noqa: B023
        assert not hasattr(estimator, "n_features_in_")
    for estimator in fitted.values():
        for method in METHODS:
            raises_naming(lambda: getattr(estimator, method)(Y), "Y", phrase)  # noqa: B023


@given(
    n_features=st.integers(1, 5).filter(lambda n: n != N_FEATURES),
    structure=st.sampled_from(["2-D", "3-D", "list"]),
)
def test_another_feature_count_than_in_fit_is_an_error(
    n_features, structure, data, fitted
):
    Y = np.zeros((3, 4, n_features))
    Y = {"2-D": Y[0], "3-D": Y, "list": list(Y)}[structure]
    record("another feature count", Y)
    for estimator in fitted.values():
        for method in METHODS:
            raises_naming(
                lambda: getattr(estimator, method)(Y),  # noqa: B023
                "Y",
                rf"X has {n_features} features, but \w+ is expecting 2 features",
            )
    for estimator in fresh_estimators(data[1])[1:]:
        raises_naming(lambda: estimator.fit(Y), "Y", "outputs")  # noqa: B023


def test_numeric_object_arrays_and_lists_are_accepted(data, fitted):
    Y = data[0]
    for estimator in fitted.values():
        expected = estimator.predict(Y)
        np.testing.assert_array_equal(estimator.predict(Y.astype(object)), expected)
        np.testing.assert_array_equal(estimator.predict(Y.tolist()), expected)
        np.testing.assert_array_equal(
            estimator.predict(Y[0].tolist()), estimator.predict(Y[0])
        )


@settings(max_examples=25)
@given(
    Y=hnp.arrays(
        np.float64,
        (2, 6, N_FEATURES),
        elements=st.one_of(
            st.floats(-3.0, 3.0),
            st.floats(-1e150, 1e150),
            st.just(np.nan),
            st.sampled_from([1e6, -1e6, 1e-300, 0.0]),
        ),
    )
)
def test_finite_input_never_gives_nan(Y, fitted):
    """Any finite Y within the bounds (NaN missing) gives finite output everywhere."""
    for estimator in fitted.values():
        assert np.all(np.isfinite(estimator.predict(Y)))
        increments = estimator.score_samples(Y)
        assert np.all(np.isfinite(increments))
        # A row with nothing observed adds nothing.
        assert np.all(increments[np.all(np.isnan(Y), axis=-1)] == 0.0)
        if not np.all(np.isnan(Y)):
            assert np.isfinite(estimator.score(Y))


# ------------------------------------------------------------------------------------
# 2. Bad parameters
# ------------------------------------------------------------------------------------

_not_integers = st.floats(-5.0, 50.0).filter(lambda value: value != int(value))


def _bad_integer(minimum):
    """Integers below ``minimum``, fractions, NaN, infinity and a numeric string."""
    return st.one_of(
        st.integers(-(10**6), minimum - 1),
        _not_integers,
        st.sampled_from([np.nan, np.inf, str(minimum + 1)]),
    )


_positive = st.floats(0.1, 10.0)
_not_positive = st.one_of(st.floats(max_value=0.0), st.just(np.nan))


@st.composite
def _bad_scales(draw):
    """A scalar <= 0, a vector with an entry <= 0 or not finite, or a wrong length."""
    form = draw(st.sampled_from(["scalar", "entry", "length"]))
    if form == "scalar":
        return draw(_not_positive)
    if form == "entry":
        entries = [draw(_positive), draw(st.one_of(_not_positive, st.just(np.inf)))]
        return entries[:: draw(st.sampled_from([1, -1]))]
    return [draw(_positive)] * draw(st.sampled_from([1, 3]))


@st.composite
def _bad_mean(draw):
    if draw(st.booleans()):
        return [0.0, draw(st.sampled_from([np.nan, np.inf, -np.inf]))]
    return [0.0] * draw(st.sampled_from([1, 3]))


@st.composite
def _bad_layers(draw):
    sizes = draw(st.lists(st.integers(1, 8), max_size=3))
    sizes.insert(
        draw(st.integers(0, len(sizes))),
        draw(st.one_of(st.integers(-5, 0), _not_integers, st.just(True))),
    )
    return tuple(sizes)


_not_a_string = st.one_of(st.none(), st.integers(), st.floats(), st.just(True))


def _bad_name(*valid):
    """Strings other than the ``valid`` names (a capital, a typo), or no string."""
    return st.one_of(
        st.text(max_size=12).filter(lambda text: text not in valid),
        st.sampled_from([name.upper() for name in valid] + [valid[0] + " "]),
        _not_a_string,
    )


_bad_boolean = st.one_of(
    st.text(max_size=6).filter(lambda text: text != "auto"),
    st.sampled_from(["Auto", "True", "false"]),
    # Neither 0 and 1 nor None stand for a boolean in scikit-learn's constraints.
    st.integers(),
    st.floats(),
    st.none(),
)


BAD_PARAMETERS = {
    "n_components": _bad_integer(1),
    "n_particles": _bad_integer(1),
    "max_iter": _bad_integer(1),
    "n_init": _bad_integer(1),
    "window_length": _bad_integer(2),
    "batch_size": _bad_integer(1),
    "n_iter_no_change": _bad_integer(1),
    "n_transition_steps": _bad_integer(0),
    "n_proposal_steps": _bad_integer(0),
    "tol": st.one_of(st.floats(max_value=-1e-12), st.just(np.nan)),
    "learning_rate": st.one_of(_not_positive, st.just(np.inf)),
    "ess_threshold": st.one_of(
        st.floats(max_value=-1e-9), st.floats(min_value=1.001), st.just(np.nan)
    ),
    "observation_noise": _bad_scales(),
    "initial_state_scale": _bad_scales(),
    "initial_state_mean": _bad_mean(),
    "hidden_layer_sizes": _bad_layers(),
    "alpha": st.one_of(st.floats(max_value=-1e-12), st.sampled_from([np.nan, np.inf])),
    "validation_fraction": st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=1.0),
        st.sampled_from([np.nan, "0.1"]),
    ),
    "update": _bad_name("joint", "alternating"),
    "init_dynamics": _bad_name("regression", "linear", "random_walk"),
    "periodic_states": st.one_of(
        st.lists(st.integers(N_FEATURES, 50), min_size=1, max_size=3),
        st.lists(st.integers(-50, -1), min_size=1, max_size=3),
        st.lists(st.floats(), min_size=1, max_size=3),
        st.sampled_from([[0, 0], [[0]], [0.0], [True]]),
        st.text(max_size=6).filter(lambda text: text != "auto"),
    ),
    "early_stopping": _bad_boolean,
}


@pytest.mark.parametrize("name", BAD_PARAMETERS)
@settings(max_examples=15)
@given(example=st.data())
def test_bad_parameters_of_statemixfilter_raise_naming_the_parameter(
    name, example, data
):
    value = example.draw(BAD_PARAMETERS[name])
    record(name, value)
    raises_naming(lambda: tiny(**{name: value}).fit(data[0]), name)


def test_early_stopping_without_data_to_hold_out(data):
    """One series of 10 steps is a single window of the default 25 steps: nothing
    can be held out. ``early_stopping=True`` is then an error naming it (and the
    estimator stays unfitted); ``"auto"`` trains on all of it, without validation
    and without any warning but the ConvergenceWarning of a one-epoch fit. With
    windows of 5 steps the same series holds out its last window."""
    series = data[0][0]
    for Y in (series, [series]):
        record("early_stopping without data to hold out", Y)
        estimator = tiny(early_stopping=True)
        raises_naming(lambda: estimator.fit(Y), "early_stopping", "hold out")  # noqa: B023
        assert not hasattr(estimator, "n_features_in_")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = tiny(early_stopping="auto").fit(series)
    assert [warning.category for warning in caught] == [ConvergenceWarning]
    assert estimator.best_validation_score_ is None
    assert estimator.validation_scores_ is None
    validation = [entry.validation_log_likelihood for entry in estimator.history_]
    assert np.all(np.isnan(validation))
    assert np.isfinite(estimator.log_likelihood_)
    held_out = fit_quietly(tiny(early_stopping=True, window_length=5), series)
    assert np.isfinite(held_out.best_validation_score_)
    assert len(held_out.validation_scores_) == len(held_out.history_)


@given(
    bad=st.one_of(
        st.tuples(
            st.just("n_particles"),
            st.one_of(st.integers(-(10**6), 0), _not_integers, st.just(np.nan)),
        ),
        st.tuples(
            st.just("ess_threshold"),
            st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.001)),
        ),
    ),
    estimator_class=st.sampled_from(KNOWN_MODEL_FILTERS),
)
def test_bad_parameters_of_the_known_model_filters_raise_naming_them(
    bad, estimator_class, data
):
    name, value = bad
    if name == "ess_threshold" and estimator_class in (
        AuxiliaryFilter,
        ImprovedAuxiliaryFilter,
    ):
        return  # they resample at every step: no ess_threshold
    record(f"{estimator_class.__name__}.{name}", value)
    estimator = estimator_class(data[1], **{name: value})
    raises_naming(lambda: estimator.fit(data[0]), name)


@given(name=st.sampled_from(["n_steps", "n_sequences"]), value=_bad_integer(1))
def test_bad_arguments_of_sample_raise_naming_them(name, value, fitted):
    record(f"sample {name}", value)
    for estimator in fitted.values():
        arguments = {"n_steps": 5, "n_sequences": 2, name: value}
        raises_naming(lambda: estimator.sample(**arguments), name)  # noqa: B023


# ------------------------------------------------------------------------------------
# 3. Bad observation models
# ------------------------------------------------------------------------------------


@st.composite
def bad_observation_matrix(draw, form):
    if form == "ndim":
        ndim = draw(st.sampled_from([0, 1, 3]))
        shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1))
        return form, draw(hnp.arrays(np.float64, shape, elements=_values)), "2-D"
    if form == "empty":
        return form, np.zeros(draw(st.sampled_from([(0, 2), (2, 0), (0, 0)]))), "2-D"
    matrix = draw(hnp.arrays(np.float64, (2, 2), elements=_values))
    entry = {
        "non-finite": draw(st.sampled_from([np.nan, np.inf, -np.inf])),
        "huge": draw(st.floats(1.0001e150, 1e308)),
        "complex": 1j,
    }[form]
    matrix = _with_entry(matrix, draw, entry)
    phrase = {"non-finite": "finite", "huge": "cannot be squared", "complex": "real"}
    return form, matrix, phrase[form]


@pytest.mark.parametrize("form", ["ndim", "empty", "non-finite", "huge", "complex"])
@settings(max_examples=10)
@given(example=st.data())
def test_bad_observation_matrices_raise_naming_them(form, example):
    form, matrix, phrase = example.draw(bad_observation_matrix(form))
    record(f"observation_matrix {form}", matrix)
    raises_naming(
        lambda: LinearGaussianObservation(matrix, noise_scale=0.7),
        "observation_matrix",
        phrase,
    )


@settings(max_examples=15)
@given(
    matrix=hnp.arrays(
        np.float64,
        st.tuples(
            st.integers(1, 4).filter(lambda n: n != N_FEATURES), st.integers(1, 3)
        ),
        elements=st.floats(0.1, 2.0),
    )
)
def test_an_observation_matrix_of_the_wrong_shape_for_y_is_an_error(matrix, data):
    Y = data[0]
    observation = LinearGaussianObservation(matrix, noise_scale=0.7)
    record("observation_matrix of the wrong shape", matrix)
    raises_naming(lambda: tiny(observation=observation).fit(Y), "observation", "Y")
    n_states = matrix.shape[1]
    wrong = LinearGaussianModel(0.9 * np.eye(n_states), 0.3, observation)
    for estimator_class in KNOWN_MODEL_FILTERS:
        estimator = estimator_class(wrong)
        raises_naming(lambda: estimator.fit(Y), "observation", "outputs")  # noqa: B023


NOISE_FORMS = ["negative", "indefinite", "singular", "zero", "asymmetric", "non-finite"]


@st.composite
def bad_noise(draw, form):
    # A 1 x 1 outer product v v' is singular only for v = 0: rank-one needs size 2.
    size = draw(st.integers(2 if form in ("asymmetric", "singular") else 1, 3))
    factor = draw(hnp.arrays(np.float64, (size, size), elements=st.floats(-2.0, 2.0)))
    positive = factor @ factor.T + np.eye(size)
    if form == "negative":
        covariance = -positive
    elif form == "indefinite":
        covariance = positive.copy()
        covariance[0, 0] = -draw(st.floats(0.0, 10.0))
    elif form == "singular":
        vector = draw(hnp.arrays(np.float64, (size, 1), elements=_values))
        covariance = vector @ vector.T
    elif form == "zero":
        covariance = np.zeros((size, size))
    elif form == "asymmetric":
        covariance = positive + np.triu(np.ones((size, size)), 1) * draw(
            st.floats(0.01, 5.0)
        )
    else:
        covariance = _with_entry(positive, draw, np.nan)
    if form in ("negative", "zero") and draw(st.booleans()):
        return form, "noise_scale", np.diag(covariance)  # standard deviations
    return form, "noise_covariance", covariance


@pytest.mark.parametrize("form", NOISE_FORMS)
@settings(max_examples=10)
@given(example=st.data())
def test_negative_or_singular_noise_raises_naming_it(form, example):
    form, name, value = example.draw(bad_noise(form))
    record(f"{name} {form}", value)
    size = np.shape(value)[0]
    raises_naming(
        lambda: LinearGaussianObservation(np.eye(size), **{name: value}), name
    )


def _random_walk(observation):
    """A user-written model around a GaussianObservation (``x_t = 0.9 x + w``)."""

    class Damped(GaussianTransitionModel):
        def transition_mean(self, x_prev):
            return 0.9 * x_prev

    return Damped(2, observation, 0.3, 0.0, 1.0)


FUNCTION_FORMS = [
    "first rows",
    "transposed",
    "extra columns",
    "flat",
    "cube",
    "scalar",
    "non-finite everywhere",
    "non-finite far away",
]


@st.composite
def bad_function(draw, form):
    """An observation function of 2 states with 2 outputs that misbehaves."""
    parameter = draw(st.integers(2, 5))
    limit = draw(st.floats(0.05, 3.0))
    bad_value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    functions = {
        # Right on the constructor's probe (2 states), wrong on other inputs.
        "first rows": lambda x: x[:parameter],
        "transposed": lambda x: x if len(x) == 2 else x.T,
        "extra columns": lambda x: (
            x if len(x) == 2 else anp.concatenate([x] * parameter, axis=1)
        ),
        # Wrong on the probe already.
        "flat": lambda x: anp.sum(x, axis=1),
        "cube": lambda x: x[..., None] * anp.ones(parameter),
        "scalar": lambda x: anp.sum(x),
        "non-finite everywhere": lambda x: x * bad_value,
        # Finite near the data, not beyond ``limit``.
        "non-finite far away": lambda x: anp.where(anp.abs(x) < limit, x, bad_value),
    }
    return form, functions[form], (form, parameter, limit, bad_value)


@pytest.mark.parametrize("form", FUNCTION_FORMS)
@settings(max_examples=6)
@given(example=st.data())
def test_a_bad_observation_function_raises_or_gives_finite_output(form, example, data):
    """A wrong shape or non-finite output on finite states is a ValueError naming
    ``function`` (or, for non-finite values the particles may reach, the model);
    it is never NaN output."""
    form, function, key = example.draw(bad_function(form))
    record(f"function {form}", key)
    Y = data[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN in the user's code
        try:
            observation = GaussianObservation(function, 2, noise_scale=0.7)
        except ValueError as error:
            assert "function" in str(error), str(error)
            assert form not in ("first rows", "transposed", "extra columns")
            return
        assert form in (
            "first rows",
            "transposed",
            "extra columns",
            "non-finite far away",
        )
        shape_error = "function" if form != "non-finite far away" else None
        estimators = [tiny(observation=observation)] + [
            estimator_class(_random_walk(observation), n_particles=8, random_state=0)
            for estimator_class in KNOWN_MODEL_FILTERS[:3]
        ]
        for estimator in estimators:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    estimator.fit(Y)
                    states, score = estimator.predict(Y), estimator.score(Y)
            except ValueError as error:
                message = str(error)
                assert not isinstance(error, np.linalg.LinAlgError), message
                expected = shape_error or r"not finite|diverged"
                assert re.search(expected, message), message
                continue
            assert shape_error is None, "a wrong shape went unnoticed"
            assert np.all(np.isfinite(states)) and np.isfinite(score)


# ------------------------------------------------------------------------------------
# 4. Numerical faults
# ------------------------------------------------------------------------------------


def _with_outliers(Y, steps=(4,)):
    """Y with 1e6 added to the first feature at ``steps`` of every series."""
    Y = Y.copy()
    for step in steps:
        Y[:, step, 0] += 1e6
    return Y


@pytest.mark.parametrize(
    "name", ["StateMixFilter", *(c.__name__ for c in KNOWN_MODEL_FILTERS)]
)
def test_an_outlier_far_from_every_particle_gives_a_finite_log_likelihood(
    name, data, fitted
):
    """A 1e6 outlier: every particle is about 1e6 away, so every log-density is
    about -(1e6)**2 / (2 s**2) with s**2 between the noise variance 0.49 (1 for
    StateMixFilter's default y = x + v) and 0.49 + 0.09 (the locally optimal
    filter's predictive variance): about -1e12 to -5e11. In the log domain the
    increment is that, finite; in the linear domain every weight would be 0."""
    estimator = fitted[name]
    Y = _with_outliers(data[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegeneracyWarning)
        result = estimator.filter(Y)
    increments = np.asarray(result.log_likelihood_increments)
    assert np.all(np.isfinite(increments))
    assert np.all((-1.1e12 < increments[:, 4]) & (increments[:, 4] < -4e11))
    assert np.all(np.isfinite(result.filtered_means))
    assert np.isfinite(estimator.score(Y))
    assert np.all(np.isfinite(estimator.predict(Y)))


def test_filter_warns_once_when_the_ess_falls_below_two(data):
    """After a 1e6 outlier the weights differ by factors of exp(1e6 * distance):
    one particle carries all the weight, ESS = 1, at both outlier steps of both
    series. One call, one warning, which counts the steps where ESS < 2."""
    Y, model = data
    # With 200 particles the ESS of this data stays above 19 (measured) elsewhere.
    estimator = BootstrapFilter(model, n_particles=200, random_state=0).fit(Y)
    Z = _with_outliers(Y, steps=(3, 7))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = estimator.filter(Z)
    assert [warning.category for warning in caught] == [DegeneracyWarning]
    assert "at 4 of 20 steps (first at step 3 of series 0" in str(caught[0].message)
    assert result.ess.shape == (2, N_STEPS)
    np.testing.assert_allclose(result.ess[:, [3, 7]], 1.0)
    assert np.all(np.delete(result.ess, [3, 7], axis=1) > 2)
    # A ragged list: the padding of the shorter series does not count.
    with pytest.warns(DegeneracyWarning, match="at 1 of 13 steps"):
        results = estimator.filter([Z[0][:5], Y[1][:8]])
    assert [np.shape(one.ess) for one in results] == [(5,), (8,)]
    # Without outliers, no warning (warnings are errors here).
    assert estimator.filter(Y).ess.min() > 2


def test_training_never_warns_about_degeneracy(data):
    """The ESS collapses during training on data with outliers (filter warns on
    the same data), but fit warns about convergence only."""
    Y = _with_outliers(data[0])
    model = tiny(max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(Y)
    assert [warning.category for warning in caught] == [ConvergenceWarning]
    with pytest.warns(DegeneracyWarning):
        result = model.filter(Y)
    np.testing.assert_allclose(result.ess[:, 4], 1.0)  # so did training's filter


def test_the_learned_scales_are_bounded_away_from_zero_and_infinity(fitted):
    """Whatever the networks output (here +-1e6 and far states), every standard
    deviation of both mixtures lies between the heads' bounds, which are 0.01 and
    10 times a positive finite scale read off the data."""
    estimator = fitted["StateMixFilter"]
    rng = np.random.default_rng(0)
    for head in (estimator.spec_.transition_head, estimator.spec_.proposal_head):
        assert np.all(head.scale_low > 0) and np.all(np.isfinite(head.scale_high))
        outputs = rng.choice([-1e6, 1e6], size=(50, head.n_outputs))
        _, _, scales = apply_mixture_head(head, outputs)
        assert np.all(scales >= head.scale_low) and np.all(scales <= head.scale_high)
    far = np.array([[1e6, -1e6], [0.0, 0.0], [-1e12, 1e12]])
    scales = np.asarray(estimator.model_.transition_mixture(far).scales)
    head = estimator.spec_.transition_head
    assert np.all(scales >= head.scale_low) and np.all(scales <= head.scale_high)


def test_a_nearly_noiseless_observation_works_with_the_locally_optimal_filter(data):
    """Noise variance 1e-20 next to a process variance of 0.09: Q - K H Q cancels
    to 0 in float64 (once a LinAlgError); the information form stays positive."""
    Y, model = data
    observation = LinearGaussianObservation(
        np.eye(2), noise_covariance=np.diag([1e-20, 0.49])
    )
    nearly_exact = LinearGaussianModel(model.transition_matrix, 0.3, observation)
    estimator = LocallyOptimalFilter(nearly_exact, n_particles=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegeneracyWarning)
        result = estimator.fit(Y).filter(Y)
    assert np.all(np.isfinite(result.log_likelihood))
    # The first state is pinned to its observation.
    np.testing.assert_allclose(result.filtered_means[..., 0], Y[..., 0], atol=1e-8)


# ------------------------------------------------------------------------------------
# 5. Missing data
# ------------------------------------------------------------------------------------


def test_statemixfilter_filters_scores_and_predicts_every_row_with_missing_data(
    data,
):
    """First, consecutive and last rows fully missing, other rows partly missing;
    in a 3-D batch and a ragged list. The score is the sum of the increments over
    the rows with an observed entry."""
    Y = data[0].copy()
    Y[0, 0] = np.nan  # the first row
    Y[0, 4:6] = np.nan  # consecutive rows
    Y[1, -1] = np.nan  # the last row
    Y[0, 7, 1] = np.nan  # partly missing rows
    Y[1, 2, 0] = np.nan
    model = fit_quietly(tiny(), Y)
    missing = np.all(np.isnan(Y), axis=-1)
    for structure in (Y, [Y[0], Y[1][:7]]):
        states = model.predict(structure)
        increments = model.score_samples(structure)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegeneracyWarning)
            results = model.filter(structure)
        for index in range(2):
            assert np.all(np.isfinite(states[index]))
            assert np.all(np.isfinite(increments[index]))
            n_steps = len(increments[index])
            np.testing.assert_array_equal(
                increments[index] == 0.0, missing[index, :n_steps]
            )
        for result in [results] if isinstance(results, tuple) else results:
            for field in ("filtered_means", "filtered_scales", "ess"):
                assert np.all(np.isfinite(getattr(result, field)))
    observed_rows = np.sum(~missing)
    assert model.score(Y) == pytest.approx(
        np.sum(model.score_samples(Y)) / observed_rows, rel=1e-12
    )
    # A partly missing row counts, with the density of its observed entry.
    assert model.score_samples(Y)[0, 7] != 0.0


def test_an_entirely_missing_training_set_is_an_error(data):
    Y = np.full_like(data[0], np.nan)
    record("all missing", Y)
    raises_naming(lambda: tiny().fit(Y), "Y", "no observed entry")


# ------------------------------------------------------------------------------------
# 6. Reproducibility
# ------------------------------------------------------------------------------------


def _outputs(estimator, Y):
    """Everything a fitted estimator computes on Y."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegeneracyWarning)
        result = estimator.filter(Y, return_particles=True)
    return [
        estimator.predict(Y),
        estimator.score_samples(Y),
        np.array(estimator.score(Y)),
        *(np.asarray(field) for field in result),
    ]


def _assert_identical(first, second):
    for one, other in zip(first, second, strict=True):
        np.testing.assert_array_equal(one, other)


def test_n_jobs_and_pickling_give_bitwise_identical_results(data):
    Y = data[0]
    serial = fit_quietly(tiny(n_init=2, n_jobs=1), Y)
    parallel = fit_quietly(tiny(n_init=2, n_jobs=2), Y)
    np.testing.assert_array_equal(flat(parallel.params_), flat(serial.params_))
    np.testing.assert_array_equal(parallel.restart_scores_, serial.restart_scores_)
    assert parallel.log_likelihood_ == serial.log_likelihood_
    expected = _outputs(serial, Y)
    _assert_identical(_outputs(parallel, Y), expected)
    restored = pickle.loads(pickle.dumps(serial))
    np.testing.assert_array_equal(flat(restored.params_), flat(serial.params_))
    _assert_identical(_outputs(restored, Y), expected)
    # The restarts differ (the test would not see a restart mix-up otherwise).
    assert serial.restart_scores_[0] != serial.restart_scores_[1]


_CHILD = textwrap.dedent(
    """
    import pickle, sys, warnings
    import numpy
    warnings.simplefilter("error")
    with open(sys.argv[1], "rb") as file:
        estimators, Y = pickle.load(file)
    outputs = {}
    for name, estimator in estimators.items():
        outputs[name] = (estimator.predict(Y), estimator.score_samples(Y),
                         estimator.score(Y))
    with open(sys.argv[2], "wb") as file:
        pickle.dump(outputs, file)
    """
)


def test_a_model_pickled_in_one_process_predicts_identically_in_another(
    data, fitted, tmp_path
):
    Y = data[0]
    estimators = {name: fitted[name] for name in ("StateMixFilter", "BootstrapFilter")}
    (tmp_path / "in.pkl").write_bytes(pickle.dumps((estimators, Y)))
    package_root = str(Path(statemix_sk.__file__).resolve().parents[1])
    subprocess.run(
        [sys.executable, "-c", _CHILD, tmp_path / "in.pkl", tmp_path / "out.pkl"],
        check=True,
        cwd=package_root,
        timeout=120,
    )
    outputs = pickle.loads((tmp_path / "out.pkl").read_bytes())
    for name, estimator in estimators.items():
        states, increments, score = outputs[name]
        np.testing.assert_array_equal(states, estimator.predict(Y))
        np.testing.assert_array_equal(increments, estimator.score_samples(Y))
        assert score == estimator.score(Y)


@pytest.mark.parametrize("name", ["StateMixFilter", "LocallyOptimalFilter"])
def test_unpickling_under_another_statemix_version_warns(name, fitted, monkeypatch):
    estimator = fitted[name]
    state = estimator.__getstate__()
    assert state["_statemix_sk_version"] == statemix_sk.__version__
    assert "_statemix_sk_version" not in vars(estimator)  # the state is a copy
    # Pickled under another version: the state is tampered with on the way.
    monkeypatch.setattr(statemix_sk, "__version__", "0.0.1")
    payload = pickle.dumps(estimator)
    monkeypatch.undo()
    with pytest.warns(InconsistentVersionWarning, match=r"version 0\.0\.1 when"):
        restored = pickle.loads(payload)
    np.testing.assert_array_equal(
        restored.predict(np.zeros((4, 2))), estimator.predict(np.zeros((4, 2)))
    )
    # A state without the version (pickled before it was recorded) warns too.
    del state["_statemix_sk_version"]
    blank = type(estimator).__new__(type(estimator))
    with pytest.warns(InconsistentVersionWarning, match="version unknown"):
        blank.__setstate__(state)
    # The same version: no warning (warnings are errors here).
    pickle.loads(pickle.dumps(estimator))


# ------------------------------------------------------------------------------------
# 7. KeyboardInterrupt
# ------------------------------------------------------------------------------------


def test_an_interrupt_deep_in_training_leaves_the_previous_fit(
    data, fitted, monkeypatch
):
    """Interrupted in its third filter run (the first Adam update, after the
    start's pass over the training windows and its validation score; with warm
    start), the refit re-raises and leaves every attribute as it was."""
    model = pickle.loads(pickle.dumps(fitted["StateMixFilter"]))
    model.set_params(warm_start=True)
    before = dict(vars(model))
    calls = []
    original = training_module.particle_filter

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(training_module, "particle_filter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(data[0])
    assert len(calls) == 3
    assert vars(model).keys() == before.keys()
    for key, value in before.items():
        assert vars(model)[key] is value, key


@pytest.mark.parametrize("estimator_class", KNOWN_MODEL_FILTERS)
def test_an_interrupted_known_model_fit_changes_nothing(
    estimator_class, data, monkeypatch
):
    import statemix_sk.known_model_filters as estimator_module

    Y, model = data
    fresh = estimator_class(model, n_particles=8, random_state=0)
    refitted = estimator_class(model, n_particles=8, random_state=0).fit(Y)
    states = refitted.predict(Y)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(estimator_module, "check_random_state", interrupt)
    for estimator in (fresh, refitted):
        before = dict(vars(estimator))
        with pytest.raises(KeyboardInterrupt):
            estimator.fit(Y[:1])
        assert vars(estimator).keys() == before.keys()
        assert all(vars(estimator)[key] is value for key, value in before.items())
    monkeypatch.undo()
    np.testing.assert_array_equal(refitted.predict(Y), states)


# ------------------------------------------------------------------------------------
# The count of distinct bad inputs (last: it reads what the tests above recorded)
# ------------------------------------------------------------------------------------

_COUNTED = {
    "test_bad_observations_raise_a_value_error_naming_y",
    "test_bad_parameters_of_statemixfilter_raise_naming_the_parameter",
    "test_bad_observation_matrices_raise_naming_them",
    "test_negative_or_singular_noise_raises_naming_it",
    "test_a_bad_observation_function_raises_or_gives_finite_output",
}


def test_the_number_of_distinct_bad_inputs_tried():
    """Every kind of bad input of the issue was tried, many times over.

    Hypothesis is derandomised, so the count is the same on every run with the
    same hypothesis version; the bound leaves room for another version's draws.
    """
    if not _COUNTED <= CONTRIBUTORS:
        pytest.skip("run the whole module to count the bad inputs")
    total = sum(len(digests) for digests in TRIED.values())
    print(f"\n{total} distinct bad inputs in {len(TRIED)} kinds")
    for kind in sorted(TRIED):
        print(f"  {kind}: {len(TRIED[kind])}")
    for kind in (
        "inf",
        "too large to square",
        "0-D",
        "1-D",
        "4-D",
        "0 steps",
        "1 steps",
        "mixed feature counts",
        "strings",
        "complex",
        "another feature count",
        "n_particles",
        "n_components",
        "max_iter",
        "observation_matrix of the wrong shape",
        "noise_covariance singular",
        "function first rows",
        "function non-finite far away",
    ):
        assert TRIED.get(kind), kind
    assert total >= 300
