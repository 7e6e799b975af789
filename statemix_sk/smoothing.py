"""Particle smoothers: estimates of ``E[x_t | y_1:T]`` from a particle filter's run.

Two smoothers read a run of :func:`~statemix_sk.filtering.particle_filter` made
with ``return_particles=True``; neither draws random numbers, so each is a
deterministic function of the run.

:func:`ffbs_smoothed_moments` is the forward-filtering backward-smoothing
(FFBS) *marginal* smoother (Doucet, Godsill and Andrieu, 2000): it keeps the
filter's particles ``x_t^i`` and reweights them, from the last step back, with

``W_{t|T}^i = W_t^i sum_j W_{t+1|T}^j f(x_{t+1}^j | x_t^i)
/ sum_k W_t^k f(x_{t+1}^j | x_t^k)``.

``(x_t^i, W_t^i)`` is the weighted cloud after step ``t`` of the filter (before
the resampling that opens step ``t + 1``), the particle approximation of
``p(x_t | y_1:t)``; the smoother needs the transition density ``f`` and costs
``O(N^2)`` density evaluations per step. :func:`pairwise_transition_log_density`
computes them as (N, N) matrices, with the transition's mean (or mixture) of each
``x_t^i`` computed once: a Lorenz 96 mean is an RK4 integration.

:func:`genealogy_smoothed_means` reads the smoothed means off the genealogy of a
filter's particles (Kitagawa, 1996): each particle of the last step is traced back
through its ancestors, and the paths are averaged with the final weights. It needs
no transition density and costs ``O(T N)``, but the genealogy of a resampled
cloud collapses going back in time, so the early steps rest on few distinct paths:
the estimates are consistent, with a variance that grows with ``T - t``. The
estimator uses them where only a rough state estimate is needed (the regression
start of :class:`~statemix_sk.StateMixFilter` for a non-linear observation).

Everything is in the log domain: the backward weights are sums of products of
densities that underflow in float64 far from the data.
"""

from typing import NamedTuple

import numpy

from ._utils import logsumexp

__all__ = [
    "SmoothedMoments",
    "ffbs_smoothed_moments",
    "genealogy_smoothed_means",
    "pairwise_transition_log_density",
]

_LOG_2PI = numpy.log(2.0 * numpy.pi)
# Memory for one block of pairwise densities and its temporaries: a block of
# 32 MB keeps the smoother's peak memory near that of storing the particles,
# while blocks of hundreds of rows keep numpy's per-call overhead negligible.
_BLOCK_BYTES = 32 * 2**20


class SmoothedMoments(NamedTuple):
    """What :func:`ffbs_smoothed_moments` returns.

    For one series the shapes are as listed; for a batched filter result every
    field has a leading series axis.
    """

    smoothed_means: numpy.ndarray
    """(n_steps, n_states): estimates of ``E[x_t | y_1:T]``."""
    smoothed_scales: numpy.ndarray
    """(n_steps, n_states): estimates of the standard deviations of
    ``x_t | y_1:T``."""
    log_weights: numpy.ndarray
    """(n_steps, N): the normalised smoothing log-weights ``log W_{t|T}`` of the
    filter's particles ``x_t^i`` (the last step's are the filter's)."""


def _rows_per_block(bytes_per_row, max_bytes=_BLOCK_BYTES):
    """Return how many rows of ``bytes_per_row`` fit in ``max_bytes`` (at least 1)."""
    return max(1, int(max_bytes // max(bytes_per_row, 1)))


class _GaussianKernel:
    """Pairwise ``log f`` of ``N(transition_mean(x_prev), diag(process_noise**2))``.

    The model declares ``process_noise`` (see the model protocol in
    :mod:`statemix_sk.models`), so ``log f(x | x_prev)`` is a function of the
    whitened distance between ``x`` and the mean: ``|a - b|^2 = |a|^2 + |b|^2 -
    2 a.b`` turns the (m, n) distances into one matrix product. Both sides are
    centred on the means' average first, so that the cancellation in that sum
    loses digits of the spread of the cloud, not of its distance from the origin.
    """

    def __init__(self, model, x_prev):
        noise = numpy.broadcast_to(
            numpy.asarray(model.process_noise, dtype=float), x_prev.shape[1:]
        )
        self.noise = noise
        mean = numpy.asarray(model.transition_mean(x_prev), dtype=float)
        self.centre = mean.mean(axis=0)
        self.whitened_mean = (mean - self.centre) / noise
        self.mean_norms = 0.5 * numpy.sum(self.whitened_mean**2, axis=1)
        self.constant = numpy.sum(numpy.log(noise)) + 0.5 * x_prev.shape[1] * _LOG_2PI
        self.bytes_per_row = 2 * 8 * len(x_prev)

    def __call__(self, x):
        whitened = (x - self.centre) / self.noise
        log_density = whitened @ self.whitened_mean.T
        log_density -= 0.5 * numpy.sum(whitened**2, axis=1)[:, None]
        log_density -= self.mean_norms[None, :]
        # Rounding can make a squared distance slightly negative.
        numpy.minimum(log_density, 0.0, out=log_density)
        log_density -= self.constant
        return log_density


class _MixtureKernel:
    """Pairwise ``log f`` of a Gaussian-mixture transition (``transition_mixture``).

    The mixture of every ``x_prev[i]`` (one network pass for all of them) is
    evaluated at every ``x[j]`` with the operations of
    :func:`~statemix_sk.mixtures.mixture_log_density`, broadcast over the pairs.
    """

    def __init__(self, model, x_prev):
        mixture = model.transition_mixture(x_prev)
        logits = numpy.asarray(mixture.logits, dtype=float)
        self.means = numpy.asarray(mixture.means, dtype=float)
        scales = numpy.asarray(mixture.scales, dtype=float)
        self.full = scales.ndim == self.means.ndim + 1
        n_prev, n_components, n_dims = self.means.shape
        if self.full:
            # L^-1 of every component: one triangular solve per pair is too many.
            self.whitening = numpy.linalg.inv(scales)
            log_det = numpy.sum(
                numpy.log(numpy.diagonal(scales, axis1=-1, axis2=-2)), axis=-1
            )
        else:
            self.inverse_scales = 1.0 / scales
            log_det = numpy.sum(numpy.log(scales), axis=-1)
        log_mixture_weights = logits - logsumexp(logits, axis=-1, keepdims=True)
        self.offsets = log_mixture_weights - log_det - 0.5 * n_dims * _LOG_2PI
        # The (rows, n_prev, n_components, n_dims) differences and their squares.
        self.bytes_per_row = 3 * 8 * n_prev * n_components * n_dims

    def __call__(self, x):
        diff = x[:, None, None, :] - self.means[None]
        if self.full:
            z = numpy.einsum("iskl,jisl->jisk", self.whitening, diff)
        else:
            z = diff * self.inverse_scales[None]
        joint = self.offsets[None] - 0.5 * numpy.sum(z**2, axis=-1)
        return logsumexp(joint, axis=-1)


class _ProtocolKernel:
    """Pairwise ``log f`` from ``transition_log_density`` on every pair of rows."""

    def __init__(self, model, x_prev):
        self.model = model
        self.x_prev = x_prev
        # Each pair holds both states and the model's temporaries (a guess: ten
        # arrays of the state's size).
        self.bytes_per_row = 10 * 8 * len(x_prev) * x_prev.shape[1]

    def __call__(self, x):
        m, n = len(x), len(self.x_prev)
        values = self.model.transition_log_density(
            numpy.repeat(x, n, axis=0), numpy.tile(self.x_prev, (m, 1))
        )
        return numpy.reshape(numpy.asarray(values, dtype=float), (m, n))


def _pairwise_kernel(model, x_prev):
    """Return the kernel for ``model`` that fits its transition's form."""
    if callable(getattr(model, "transition_mixture", None)):
        return _MixtureKernel(model, x_prev)
    if getattr(model, "process_noise", None) is not None and hasattr(
        model, "transition_mean"
    ):
        return _GaussianKernel(model, x_prev)
    return _ProtocolKernel(model, x_prev)


def _blocks(n_rows, bytes_per_row, max_bytes):
    """Yield slices of ``range(n_rows)`` that fit ``max_bytes``."""
    size = _rows_per_block(bytes_per_row, max_bytes)
    for first in range(0, n_rows, size):
        yield slice(first, min(first + size, n_rows))


def pairwise_transition_log_density(model, x, x_prev, *, max_bytes=_BLOCK_BYTES):
    """Return ``log f(x[j] | x_prev[i])`` for every pair, shape (len(x), len(x_prev)).

    The transition's parameters are computed once per row of ``x_prev``, not once
    per pair, by the path that fits the model:

    - a model with ``transition_mixture`` (the learned
      :class:`~statemix_sk.learned.MixtureTransitionModel`): its Gaussian
      mixtures, evaluated at every ``x[j]``;
    - a model that declares ``process_noise`` and has ``transition_mean`` (every
      :class:`~statemix_sk.models.GaussianTransitionModel`: linear-Gaussian,
      Lorenz 96, Kuramoto, whose phases are unwrapped and so have a plain
      Gaussian density): whitened distances by matrix products;
    - any other model of the protocol: ``transition_log_density`` on every pair,
      in blocks of rows of ``x``.

    Parameters
    ----------
    model : state-space model
        See :mod:`statemix_sk.models`.
    x : array-like of shape (m, n_states)
        The states ``x_t``.
    x_prev : array-like of shape (n, n_states)
        The previous states ``x_{t-1}``.
    max_bytes : int, default=32 MiB
        About the most memory the temporaries of one block of rows may take
        (the result itself, ``8 m n`` bytes, comes on top).

    Returns
    -------
    log_density : ndarray of shape (m, n)
        Equal to ``model.transition_log_density(x[j], x_prev[i])`` up to
        rounding.

    Examples
    --------
    >>> from statemix_sk import make_linear_gaussian
    >>> _, X, model = make_linear_gaussian(3, random_state=0)
    >>> pairs = pairwise_transition_log_density(model, X[1:], X[:-1])
    >>> pairs.shape
    (2, 2)
    >>> bool(numpy.isclose(pairs[0, 0], model.transition_log_density(X[1:2], X[:1])[0]))
    True
    """
    x = numpy.asarray(x, dtype=float)
    x_prev = numpy.asarray(x_prev, dtype=float)
    kernel = _pairwise_kernel(model, x_prev)
    log_density = numpy.empty((len(x), len(x_prev)))
    for rows in _blocks(len(x), kernel.bytes_per_row, max_bytes):
        log_density[rows] = kernel(x[rows])
    return log_density


def genealogy_smoothed_means(result):
    """Smoothed means from the ancestral paths of a particle filter's run.

    Parameters
    ----------
    result : FilterResult
        From :func:`~statemix_sk.filtering.particle_filter` with
        ``return_particles=True``, for one series or several.

    Returns
    -------
    means : ndarray of shape (n_steps, n_states) or (n_series, n_steps, n_states)
        ``sum_n W_T^n x_t^{a_t^n}``: the final weights on the particles' paths,
        where ``a_t^n`` is the ancestor at step ``t`` of the ``n``-th particle of
        the last step. The last row equals the filtered mean.

    Examples
    --------
    >>> from statemix_sk import make_linear_gaussian, particle_filter
    >>> Y, X, model = make_linear_gaussian(30, random_state=0)
    >>> result = particle_filter(Y, model, n_particles=50, random_state=0,
    ...                          return_particles=True)
    >>> genealogy_smoothed_means(result).shape
    (30, 4)
    """
    if result.particles is None or result.ancestors is None:
        raise ValueError(
            "genealogy_smoothed_means needs the particles and their ancestors: "
            "run particle_filter with return_particles=True."
        )
    particles = numpy.asarray(result.particles)
    batched = particles.ndim == 4
    if not batched:
        particles = particles[None]
    ancestors = numpy.asarray(result.ancestors).reshape(particles.shape[:3])
    log_weights = numpy.asarray(result.log_weights).reshape(particles.shape[:3])
    n_series, n_steps, n_particles, n_states = particles.shape
    weights = numpy.exp(log_weights[:, -1])
    weights = weights / weights.sum(axis=1, keepdims=True)
    rows = numpy.arange(n_series)[:, None]
    # index[b, n]: the particle at step t on the path of particle n of step T.
    index = numpy.broadcast_to(numpy.arange(n_particles), (n_series, n_particles))
    means = numpy.empty((n_series, n_steps, n_states))
    for t in range(n_steps - 1, -1, -1):
        means[:, t] = numpy.einsum("bn,bnd->bd", weights, particles[rows, t, index])
        index = ancestors[rows, t, index]
    return means if batched else means[0]


def _backward_log_weights(particles, log_weights, model, max_bytes):
    """Return the FFBS log-weights ``log W_{t|T}`` of one series, (n_steps, N).

    The sums over particles are done as matrix-vector products after a shift
    (a logsumexp whose exponential is shared by both sums): with ``E_ji =
    W_t^i f(x_{t+1}^j | x_t^i) / max_i(.)``, the smoothed weight of ``x_t^i`` is
    proportional to ``sum_j W_{t+1|T}^j E_ji / sum_k E_jk``. An entry that
    underflows to 0 in ``E`` is below ``1e-308`` times the largest of its row,
    and so is its share of the backward kernel.
    """
    n_steps, n_particles, _ = particles.shape
    smoothed = numpy.empty((n_steps, n_particles))
    smoothed[-1] = log_weights[-1]
    for t in range(n_steps - 2, -1, -1):
        kernel = _pairwise_kernel(model, particles[t])
        following = smoothed[t + 1]
        scaled_following = numpy.exp(following - numpy.max(following))
        totals = numpy.zeros(n_particles)
        # The block's (rows, N) densities and their exponentials come on top of
        # the kernel's temporaries.
        row_bytes = kernel.bytes_per_row + 2 * 8 * n_particles
        for rows in _blocks(n_particles, row_bytes, max_bytes):
            joint = kernel(particles[t + 1, rows])
            joint += log_weights[t][None, :]
            shift = numpy.max(joint, axis=1, keepdims=True)
            # A particle that no particle of step t can reach (-inf everywhere:
            # possible only for a user's density) gets no backward mass.
            shift[~numpy.isfinite(shift)] = numpy.inf
            numpy.subtract(joint, shift, out=joint)
            numpy.exp(joint, out=joint)
            predictive = numpy.sum(joint, axis=1)
            share = numpy.divide(
                scaled_following[rows],
                predictive,
                out=numpy.zeros_like(predictive),
                where=predictive > 0,
            )
            totals += share @ joint
        with numpy.errstate(divide="ignore"):
            log_totals = numpy.log(totals)
        smoothed[t] = log_totals - logsumexp(log_totals)
    return smoothed


def _weighted_moments(log_weights, particles):
    """Return the weighted means and standard deviations of every step's cloud."""
    weights = numpy.exp(log_weights)
    means = numpy.einsum("tn,tnd->td", weights, particles)
    spread = numpy.einsum("tn,tnd->td", weights, (particles - means[:, None]) ** 2)
    return means, numpy.sqrt(spread)


def ffbs_smoothed_moments(result, model, *, lengths=None, max_bytes=_BLOCK_BYTES):
    """Smooth a particle filter's run by forward filtering, backward smoothing.

    The marginal FFBS smoother of Doucet, Godsill and Andrieu (2000): the
    filter's particles of every step, reweighted by the backward recursion of
    the module docstring into estimates of ``p(x_t | y_1:T)``. ``O(N^2)``
    transition densities per step (each transition's mean or mixture computed
    once per particle); memory ``max_bytes`` beyond the result. Steps with
    missing observations need nothing special: the filter leaves the weights
    of an unobserved step as they were, and the backward pass carries the later
    observations through it. Deterministic given ``result``.

    Parameters
    ----------
    result : FilterResult
        From :func:`~statemix_sk.filtering.particle_filter` with
        ``return_particles=True``, for one series or several, with any proposal.
    model : state-space model
        The model the filter ran (its transition density is the smoother's): a
        model of :mod:`statemix_sk.models`, a learned
        :class:`~statemix_sk.learned.MixtureTransitionModel`, or any model of
        the protocol.
    lengths : array-like of int of shape (n_series,), default=None
        For a batched result of series padded at the end with NaN rows to a
        common length: each series' own number of steps. The backward pass of
        a series starts at its last step; on the padding, the filter's weights
        (its predictions, the exact smoothing distributions there) are kept.
        None: every series has all the steps.
    max_bytes : int, default=32 MiB
        About the most memory one block of pairwise densities and its
        temporaries may take.

    Returns
    -------
    moments : SmoothedMoments
        ``smoothed_means`` and ``smoothed_scales`` of shape (n_steps, n_states)
        (or (n_series, n_steps, n_states)), and the smoothing ``log_weights``.
        The last step's are the filter's.

    Examples
    --------
    >>> from statemix_sk import make_linear_gaussian, particle_filter
    >>> Y, X, model = make_linear_gaussian(30, random_state=0)
    >>> result = particle_filter(Y, model, n_particles=50, random_state=0,
    ...                          return_particles=True)
    >>> moments = ffbs_smoothed_moments(result, model)
    >>> moments.smoothed_means.shape, moments.smoothed_scales.shape
    ((30, 4), (30, 4))
    """
    if result.particles is None or result.log_weights is None:
        raise ValueError(
            "ffbs_smoothed_moments needs the particles and their weights at every "
            "step: run particle_filter with return_particles=True."
        )
    particles = numpy.asarray(result.particles, dtype=float)
    batched = particles.ndim == 4
    if not batched:
        particles = particles[None]
    log_weights = numpy.asarray(result.log_weights, dtype=float).reshape(
        particles.shape[:3]
    )
    n_series, n_steps = particles.shape[:2]
    if lengths is None:
        lengths = numpy.full(n_series, n_steps)
    else:
        lengths = numpy.asarray(lengths)
        if (
            lengths.shape != (n_series,)
            or not numpy.issubdtype(lengths.dtype, numpy.integer)
            or numpy.any(lengths < 1)
            or numpy.any(lengths > n_steps)
        ):
            raise ValueError(
                f"lengths must hold {n_series} integers between 1 and {n_steps} "
                f"(one per series), got {lengths!r}."
            )
    smoothed = log_weights.copy()
    for series, length in enumerate(lengths):
        smoothed[series, :length] = _backward_log_weights(
            particles[series, :length], log_weights[series, :length], model, max_bytes
        )
    moments = [
        _weighted_moments(smoothed[series], particles[series])
        for series in range(n_series)
    ]
    means = numpy.stack([mean for mean, _ in moments])
    scales = numpy.stack([scale for _, scale in moments])
    if batched:
        return SmoothedMoments(means, scales, smoothed)
    return SmoothedMoments(means[0], scales[0], smoothed[0])
