"""Resampling schemes: ``(weights, rng) -> ancestors``.

Every scheme has the same signature. ``weights`` is a vector of normalised weights
(non-negative, summing to one; the filter passes ``exp`` of normalised log-weights,
taken out of any autograd trace) and ``rng`` a :class:`numpy.random.Generator`. The
result is an int array of ``len(weights)`` ancestor indices, each in
``[0, len(weights))``, sorted in increasing order, with ``E[count_n] = N W_n``.

- ``multinomial``: N independent draws from the weights.
- ``stratified``: one uniform in each stratum ``[n/N, (n+1)/N)``.
- ``systematic``: one uniform shifted through all strata (lowest variance in
  practice; the default). Each particle gets ``floor(N W)`` or ``ceil(N W)``
  offspring.
- ``residual``: ``floor(N W)`` deterministic copies, the rest multinomial on the
  residual weights.

:data:`RESAMPLING_SCHEMES` maps each name to its function and
:func:`get_resampling_scheme` looks one up. The filter resamples only when the
effective sample size falls to ``ess_threshold * N`` (:func:`should_resample`).
"""

import numpy

from ._utils import ess_from_log_weights

__all__ = [
    "RESAMPLING_SCHEMES",
    "get_resampling_scheme",
    "multinomial_resampling",
    "residual_resampling",
    "should_resample",
    "stratified_resampling",
    "systematic_resampling",
]


def _inverse_cdf(sorted_uniforms, weights):
    """Find ``i`` with ``cumsum(w)[i-1] <= u < cumsum(w)[i]`` for each sorted u."""
    cumulative = numpy.cumsum(weights)
    # The last cumulative sum may differ from 1 by rounding: scale the uniforms to
    # it, and clip so that no index can run past the end.
    ancestors = numpy.searchsorted(
        cumulative, sorted_uniforms * cumulative[-1], side="right"
    )
    return numpy.minimum(ancestors, len(weights) - 1)


def multinomial_resampling(weights, rng):
    """Draw ``N`` ancestors independently from ``weights`` (sorted)."""
    n = len(weights)
    return _inverse_cdf(numpy.sort(rng.random(n)), weights)


def stratified_resampling(weights, rng):
    """One uniform in each of the ``N`` strata of ``[0, 1)``."""
    n = len(weights)
    return _inverse_cdf((numpy.arange(n) + rng.random(n)) / n, weights)


def systematic_resampling(weights, rng):
    """One uniform, shifted by ``1/N`` through all strata."""
    n = len(weights)
    return _inverse_cdf((numpy.arange(n) + rng.random()) / n, weights)


def residual_resampling(weights, rng):
    """``floor(N W)`` copies of each particle, then multinomial on the residuals."""
    n = len(weights)
    scaled = n * numpy.asarray(weights, dtype=float)
    copies = numpy.floor(scaled).astype(numpy.intp)
    n_rest = n - int(copies.sum())
    deterministic = numpy.repeat(numpy.arange(n), copies)
    if n_rest == 0:
        return deterministic
    residuals = scaled - copies
    rest = _inverse_cdf(numpy.sort(rng.random(n_rest)), residuals / residuals.sum())
    return numpy.sort(numpy.concatenate([deterministic, rest]))


RESAMPLING_SCHEMES = {
    "multinomial": multinomial_resampling,
    "residual": residual_resampling,
    "stratified": stratified_resampling,
    "systematic": systematic_resampling,
}
"""Name -> resampling function, each ``(weights, rng) -> ancestors``."""


def get_resampling_scheme(name):
    """Return the resampling function called ``name``.

    Parameters
    ----------
    name : str
        One of the keys of :data:`RESAMPLING_SCHEMES`.

    Returns
    -------
    scheme : callable ``(weights, rng) -> ancestors``

    Examples
    --------
    >>> scheme = get_resampling_scheme("systematic")
    >>> scheme(numpy.array([0.5, 0.5]), numpy.random.default_rng(0))
    array([0, 1])
    """
    try:
        return RESAMPLING_SCHEMES[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(key) for key in sorted(RESAMPLING_SCHEMES))
        raise ValueError(f"resampling must be one of {valid}, got {name!r}.") from None


def should_resample(log_weights, ess_threshold):
    """Whether ``ESS / N <= ess_threshold`` for these log-weights.

    ``ess_threshold=1`` resamples at every step, ``0`` never.
    """
    # ESS of equal weights can come out a rounding error above N: treat a
    # threshold of 1 as "always" rather than trusting that comparison.
    if ess_threshold >= 1.0:
        return True
    return ess_from_log_weights(log_weights) <= ess_threshold * len(log_weights)
