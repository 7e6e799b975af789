"""Log-space helpers, random-generator coercion and input checks.

Every weight in statemix-sk lives in the log domain: particle filters multiply many
small densities, and only log-weights normalised with ``logsumexp`` stay finite when
an observation is far from every particle. The helpers here work on plain arrays and
on autograd's traced values alike.
"""

import numbers

import numpy
from autograd.extend import defvjp, primitive
from sklearn.utils import check_array

__all__ = [
    "as_generator",
    "check_observations",
    "check_positive_int",
    "check_scale",
    "ess_from_log_weights",
    "logsumexp",
    "normalise_log_weights",
]


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
    log_weights : array of shape (n_particles,)

    Returns
    -------
    ess : float
        Between 1 and ``n_particles``.

    Examples
    --------
    >>> round(float(ess_from_log_weights(numpy.log([1.0, 1.0, 2.0]))), 6)
    2.666667
    """
    return numpy.exp(2.0 * logsumexp(log_weights) - logsumexp(2.0 * log_weights))


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
        Standard deviation(s); each must be finite and strictly positive.
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
    if size is None:
        return numpy.atleast_1d(scale).copy()
    if scale.ndim == 1 and scale.shape[0] != size:
        raise ValueError(
            f"{name} has {scale.shape[0]} entries but {size} are needed (one per "
            "component)."
        )
    return numpy.broadcast_to(scale, (size,)).copy()


def check_observations(Y, name="Y", *, n_features=None):
    """Validate one series of observations: 2-D, numeric, NaN allowed, no inf.

    Parameters
    ----------
    Y : array-like of shape (n_steps, n_features)
        One series, time down the rows. NaN marks a missing entry.
    name : str, default="Y"
        The argument's name, used in error messages.
    n_features : int, optional
        The number of columns the series must have.

    Returns
    -------
    Y : ndarray of shape (n_steps, n_features), float64
    """
    try:
        Y = check_array(
            Y,
            dtype=numpy.float64,
            ensure_all_finite="allow-nan",
            ensure_min_samples=1,
            input_name=name,
        )
    except ValueError as exc:
        raise ValueError(
            f"{name} must be one series of observations, a 2-D numeric array "
            f"(n_steps, n_features) with at least one step; NaN marks a missing "
            f"entry. {exc}"
        ) from exc
    if n_features is not None and Y.shape[1] != n_features:
        raise ValueError(
            f"{name} has {Y.shape[1]} features (columns) but {n_features} were "
            "expected."
        )
    return Y
