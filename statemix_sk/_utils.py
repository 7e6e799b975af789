"""Log-space helpers, random-generator coercion and input checks.

Every weight in statemix-sk lives in the log domain: particle filters multiply many
small densities, and only log-weights normalised with ``logsumexp`` stay finite when
an observation is far from every particle. The helpers here work on plain arrays and
on autograd's traced values alike.
"""

import importlib
import numbers
import warnings

import numpy
import scipy.sparse
from autograd.extend import defvjp, primitive
from sklearn.utils import check_array
from sklearn.utils.validation import validate_data

__all__ = [
    "MAX_MAGNITUDE",
    "NonNumericError",
    "as_generator",
    "check_magnitude",
    "check_observations",
    "check_positive_int",
    "check_scale",
    "ess_from_log_weights",
    "logsumexp",
    "moved_names",
    "ndim_or_none",
    "normalise_log_weights",
    "pad_series",
    "validate_series",
]

MAX_MAGNITUDE = 1e150
"""The largest magnitude an observation may have, and the bounds of a standard
deviation (``1 / MAX_MAGNITUDE`` to ``MAX_MAGNITUDE``): squares (and a few sums of
them) must stay finite and non-zero in float64, whose largest value is 1.8e308."""


@primitive
def logsumexp(values, axis=None, keepdims=False):
    """``log(sum(exp(values)))`` along ``axis``, without overflow.

    One autograd primitive with its own gradient (``softmax``), because the
    filter calls it several times per time step and autograd charges per call;
    scipy's version is also slower on small arrays.

    Parameters
    ----------
    values : array
    axis : int, optional
        None reduces over all entries.
    keepdims : bool, default=False

    Returns
    -------
    result : float or array
        ``-inf`` where every value is ``-inf``.

    Examples
    --------
    >>> float(logsumexp(numpy.array([1000.0, 1000.0])) - 1000.0)
    0.6931471805599453
    """
    shift = numpy.max(values, axis=axis, keepdims=True)
    # A reduction over all -inf (or a +inf) must not produce NaN from inf - inf.
    shift = numpy.where(numpy.isfinite(shift), shift, 0.0)
    with numpy.errstate(divide="ignore"):
        result = (
            numpy.log(numpy.sum(numpy.exp(values - shift), axis=axis, keepdims=True))
            + shift
        )
    return result if keepdims else numpy.squeeze(result, axis=axis)


def _logsumexp_vjp(result, values, axis=None, keepdims=False):
    """Gradient of logsumexp: the upstream gradient times the softmax."""
    if not keepdims and axis is not None:
        result = numpy.expand_dims(result, axis)

    def vjp(upstream):
        if not keepdims and axis is not None:
            upstream = numpy.expand_dims(upstream, axis)
        with numpy.errstate(invalid="ignore"):
            softmax = numpy.exp(values - result)
        return upstream * numpy.where(numpy.isfinite(values), softmax, 0.0)

    return vjp


defvjp(logsumexp, _logsumexp_vjp)


def normalise_log_weights(log_weights):
    """Return log-weights shifted so that their exponentials sum to one.

    Parameters
    ----------
    log_weights : array of shape (n_particles,)
        Unnormalised log-weights; ``-inf`` entries are allowed.

    Returns
    -------
    log_normalised : array of shape (n_particles,)
        ``log_weights - logsumexp(log_weights)``.

    Examples
    --------
    >>> import numpy
    >>> numpy.exp(normalise_log_weights(numpy.log([1.0, 3.0])))
    array([0.25, 0.75])
    """
    return log_weights - logsumexp(log_weights)


def ess_from_log_weights(log_weights):
    """Effective sample size ``1 / sum(W**2)`` from (unnormalised) log-weights.

    Computed as ``exp(2 logsumexp(l) - logsumexp(2 l))`` so that it is exact for
    log-weights of any magnitude.

    Parameters
    ----------
    log_weights : array of shape (..., n_particles)
        One set of weights per row of the last axis.

    Returns
    -------
    ess : float or ndarray of shape (...)
        Between 1 and ``n_particles``.

    Examples
    --------
    >>> round(float(ess_from_log_weights(numpy.log([1.0, 1.0, 2.0]))), 6)
    2.666667
    """
    return numpy.exp(
        2.0 * logsumexp(log_weights, axis=-1) - logsumexp(2.0 * log_weights, axis=-1)
    )


def as_generator(random_state):
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    Parameters
    ----------
    random_state : None, int, numpy.random.SeedSequence, numpy.random.Generator or \
numpy.random.RandomState
        ``None`` draws fresh entropy; an int or a SeedSequence seeds a new
        generator; a Generator is returned as it is (so draws continue from it);
        a legacy RandomState (as scikit-learn passes around) seeds a new generator
        from one draw of it.

    Returns
    -------
    rng : numpy.random.Generator
    """
    if isinstance(random_state, numpy.random.Generator):
        return random_state
    if isinstance(random_state, numpy.random.RandomState):
        return numpy.random.default_rng(random_state.randint(2**31 - 1))
    if random_state is None or isinstance(
        random_state, numbers.Integral | numpy.random.SeedSequence
    ):
        if isinstance(random_state, numbers.Integral) and random_state < 0:
            raise ValueError(
                f"random_state must be a non-negative integer, got {random_state}."
            )
        return numpy.random.default_rng(random_state)
    raise ValueError(
        "random_state must be None, an int, a SeedSequence, a numpy Generator or a "
        f"RandomState, got {random_state!r}."
    )


def check_positive_int(value, name, *, minimum=1):
    """Return ``value`` as an int, or raise a ValueError naming ``name``."""
    if isinstance(value, bool | numpy.bool_) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def check_scale(value, name, size=None):
    """Return a standard deviation (scalar or per component) as a float vector.

    Parameters
    ----------
    value : float or array-like of shape (size,)
        Standard deviation(s); each must lie in ``[1 / MAX_MAGNITUDE,
        MAX_MAGNITUDE]``.
    name : str
        The argument's name, used in error messages.
    size : int, optional
        The number of components; a scalar is broadcast to it. If None, the
        length of ``value`` (1 for a scalar).

    Returns
    -------
    scale : ndarray of shape (size,)
    """
    try:
        scale = numpy.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a positive number or vector: {exc}") from None
    if scale.ndim > 1:
        raise ValueError(
            f"{name} must be a scalar or a vector of standard deviations, got an "
            f"array of shape {scale.shape}."
        )
    if not numpy.all(numpy.isfinite(scale)) or numpy.any(scale <= 0):
        raise ValueError(
            f"{name} must be finite and strictly positive (a standard deviation), "
            f"got {value!r}."
        )
    if numpy.any(scale < 1.0 / MAX_MAGNITUDE) or numpy.any(scale > MAX_MAGNITUDE):
        raise ValueError(
            f"{name} must lie between {1.0 / MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g} "
            "(a standard deviation whose square is a non-zero, finite float64), got "
            f"{value!r}."
        )
    if size is None:
        return numpy.atleast_1d(scale).copy()
    if scale.ndim == 1 and scale.shape[0] != size:
        raise ValueError(
            f"{name} has {scale.shape[0]} entries but {size} are needed (one per "
            "component)."
        )
    return numpy.broadcast_to(scale, (size,)).copy()


class NonNumericError(ValueError, TypeError):
    """Observations hold something that is not a number (a dict, say).

    A ValueError, as every bad input is, and a TypeError, as scikit-learn's
    estimator checks expect for entries that cannot be turned into numbers
    (scikit-learn's ``NotFittedError`` is a ValueError and an AttributeError in
    the same way).
    """


def _reject_non_numeric(Y, name):
    """Raise a ValueError naming ``name`` unless ``Y`` holds real numbers.

    scikit-learn's ``check_array`` would parse numeric strings and turn dates into
    numbers of days; here strings, bytes, dates, durations and complex numbers are
    errors, while numeric object arrays are accepted.
    """
    if scipy.sparse.issparse(Y):
        raise ValueError(
            f"{name} is a sparse matrix, but sparse data is not supported: pass a "
            f"dense array ({name}.toarray())."
        )
    array = Y if hasattr(Y, "dtype") else None
    if array is None and not hasattr(Y, "dtypes"):  # lists, scalars, other objects
        try:
            array = numpy.asarray(Y)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} must be a rectangular array of numbers (n_steps, "
                f"n_features), with rows of equal length: {exc}"
            ) from None
    if array is None:  # a data frame: check_array converts it
        return
    kind = numpy.dtype(array.dtype).kind if _is_numpy_dtype(array.dtype) else "O"
    if kind == "O":
        # Only object arrays are scanned, element by element.
        types = {type(value) for value in numpy.asarray(array, dtype=object).flat}
        if any(issubclass(type_, str | bytes) for type_ in types):
            kind = "U"
        elif any(issubclass(type_, complex | numpy.complexfloating) for type_ in types):
            kind = "c"
        elif any(
            issubclass(type_, numpy.datetime64 | numpy.timedelta64) for type_ in types
        ):
            kind = "M"
    if kind in "USV":
        raise ValueError(
            f"{name} must hold numbers, got strings or bytes (dtype "
            f"{array.dtype}): convert them to numbers first."
        )
    if kind in "Mm":
        raise ValueError(
            f"{name} must hold numbers, got dates or durations (dtype "
            f"{array.dtype}): convert them to numbers first."
        )
    if kind == "c":
        raise ValueError(
            f"{name} must hold real numbers, got complex numbers (dtype "
            f"{array.dtype}). Complex data not supported."
        )


def _is_numpy_dtype(dtype):
    """Whether ``dtype`` is one numpy understands (not a pandas extension type)."""
    try:
        numpy.dtype(dtype)
    except TypeError:
        return False
    return True


def check_magnitude(values, name):
    """Raise a ValueError naming ``name`` if an entry's magnitude passes MAX_MAGNITUDE.

    NaN entries are ignored. Values that large cannot be squared in float64.
    """
    with numpy.errstate(invalid="ignore"):
        too_large = numpy.abs(values) > MAX_MAGNITUDE
    if numpy.any(too_large):
        index = tuple(int(i) for i in numpy.argwhere(too_large)[0])
        raise ValueError(
            f"{name} has a value of magnitude {abs(values[index]):.3g} at index "
            f"{index}, beyond {MAX_MAGNITUDE:g}: values that large cannot be squared "
            f"in float64. Rescale {name} (with a StandardScaler, say)."
        )


def ndim_or_none(Y):
    """Return the number of dimensions of ``Y``, or None if numpy cannot tell.

    The estimators tell one series (2-D), a 3-D array and a list of series of
    different lengths (None: numpy cannot make one array of it) apart by it.
    """
    dimensions = getattr(Y, "ndim", None)
    if dimensions is not None:
        return dimensions
    try:
        return numpy.ndim(Y)
    except (TypeError, ValueError):  # ragged, or refuses numpy
        return None


def check_observations(Y, name="Y", *, n_features=None, min_steps=1, estimator=None):
    """Validate one series of observations: 2-D, real numbers, NaN allowed, no inf.

    Every error is a ValueError whose message names ``name``: inf, values beyond
    :data:`MAX_MAGNITUDE` in magnitude, the wrong number of dimensions, fewer
    than ``min_steps`` rows, no columns, ragged rows, strings, bytes, dates,
    complex numbers and sparse matrices. Numeric object arrays are accepted.

    Parameters
    ----------
    Y : array-like of shape (n_steps, n_features)
        One series, time down the rows. NaN marks a missing entry.
    name : str, default="Y"
        The argument's name, used in error messages.
    n_features : int, optional
        The number of columns the series must have.
    min_steps : int, default=1
        The fewest rows (time steps) accepted.
    estimator : estimator, optional
        Named in scikit-learn's messages.

    Returns
    -------
    Y : ndarray of shape (n_steps, n_features), float64

    Examples
    --------
    >>> check_observations([[1, 2], [numpy.nan, 4]])
    array([[ 1.,  2.],
           [nan,  4.]])
    >>> try:
    ...     check_observations([["a", "b"]], "Y")
    ... except ValueError as error:
    ...     print(str(error)[:24])
    Y must hold numbers, got
    """
    _reject_non_numeric(Y, name)
    try:
        Y = check_array(
            Y,
            dtype=numpy.float64,
            ensure_all_finite="allow-nan",
            ensure_min_samples=min_steps,
            input_name=name,
            estimator=estimator,
        )
    except (TypeError, ValueError) as exc:
        steps = "one step" if min_steps == 1 else f"{min_steps} steps"
        error = NonNumericError if isinstance(exc, TypeError) else ValueError
        raise error(
            f"{name} must be one series of observations, a 2-D numeric array "
            f"(n_steps, n_features) with at least {steps}; NaN marks a missing "
            f"entry. {exc}"
        ) from exc
    check_magnitude(Y, name)
    if n_features is not None and Y.shape[1] != n_features:
        raise ValueError(
            f"{name} has {Y.shape[1]} features (columns) but {n_features} were "
            "expected."
        )
    return Y


def validate_series(estimator, Y, *, reset, min_steps=1, check_n_features=True):
    """Read ``Y`` as one series, a 3-D array of series or a list of series.

    The kind is ``"single"`` (one 2-D series), ``"array"`` (a 3-D array) or
    ``"list"`` (a list or tuple of 2-D series, lengths free). Every series is
    checked by :func:`check_observations` (at least ``min_steps`` rows) and all
    must have the same number of features, so that every error is a ValueError
    naming ``Y`` (or ``Y[i]``). ``reset`` records ``n_features_in_`` on
    ``estimator`` (and ``feature_names_in_`` for one data-frame series), as
    scikit-learn's ``validate_data`` does; otherwise the number of features is
    checked against it (unless ``check_n_features`` is False).

    Returns
    -------
    series : list of ndarray of shape (n_steps_i, n_features)
    kind : {"single", "array", "list"}
    """
    if isinstance(Y, list | tuple) and (len(Y) == 0 or ndim_or_none(Y[0]) == 2):
        kind, candidates = "list", list(Y)
    elif ndim_or_none(Y) == 3:
        kind, candidates = "array", list(numpy.asarray(Y))
    else:
        # Feature names only (n_features_in_ is recorded below, for every kind of
        # input alike).
        validate_data(estimator, Y, reset=reset, skip_check_array=True, ensure_2d=False)
        kind, candidates = "single", [Y]
    if not candidates:
        raise ValueError("Y must hold at least one series, got none.")
    series = []
    for index, candidate in enumerate(candidates):
        one = check_observations(
            candidate,
            "Y" if kind == "single" else f"Y[{index}]",
            min_steps=min_steps,
            estimator=estimator,
        )
        if series and one.shape[1] != series[0].shape[1]:
            raise ValueError(
                f"Every series in Y must have the same number of features: "
                f"Y[0] has {series[0].shape[1]}, Y[{index}] has {one.shape[1]}."
            )
        series.append(one)
    n_features = series[0].shape[1]
    if reset:
        estimator.n_features_in_ = n_features
        if kind != "single" and hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif check_n_features and n_features != estimator.n_features_in_:
        # scikit-learn's wording first (its estimator checks look for it).
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is "
            f"expecting {estimator.n_features_in_} features as input: the "
            f"observations Y must have the {estimator.n_features_in_} features "
            "(columns) they had in fit."
        )
    return series, kind


def moved_names(module, moved):
    """Return a module ``__getattr__`` that finds names moved to other modules.

    ``moved`` maps each name that ``statemix_sk.<module>`` held to the module
    that holds it now. Reaching one by its old path works, with a FutureWarning
    that names the new one (scikit-learn's way for names moved out of a module).
    """

    def __getattr__(name):
        if name not in moved:
            raise AttributeError(
                f"module 'statemix_sk.{module}' has no attribute {name!r}"
            )
        new = f"statemix_sk.{moved[name]}"
        warnings.warn(
            f"statemix_sk.{module}.{name} has moved to {new}.{name}: import it from "
            f"there (the old path will be removed in a future release).",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new), name)

    return __getattr__


def pad_series(series):
    """Stack series of possibly different lengths into one NaN-padded 3-D array."""
    n_steps = max(len(one) for one in series)
    padded = numpy.full((len(series), n_steps, series[0].shape[1]), numpy.nan)
    for index, one in enumerate(series):
        padded[index, : len(one)] = one
    return padded
