"""Baselines that StateMixNN is measured against.

Filters given the true model, each a proposal for the one loop of
:func:`statemix_sk.filtering.particle_filter` (see its module docstring for the
protocol: ``first_stage_log_weights`` and ``propose``):

- the bootstrap filter, :class:`~statemix_sk.filtering.BootstrapProposal`
  (``q = f``);
- :class:`AuxiliaryProposal`, the auxiliary particle filter of Pitt and Shephard
  (1999): first-stage weights ``eta_n = g(y_t | mu_n)`` at the predicted means
  ``mu_n = E_f[x_t | x_{t-1}^n]``, then ``q = f`` and the second-stage weight
  ``g(y_t | x_t) / g(y_t | mu_a)``;
- :class:`ImprovedAuxiliaryProposal`, the improved auxiliary particle filter of
  Elvira, Martino, Bugallo and Djuric (2018), O(N^2) per step, vectorised;
- :class:`LocallyOptimalProposal`, the exact optimal proposal
  ``p(x_t | x_{t-1}, y_t)`` of a Gaussian transition with a linear-Gaussian
  observation; with many particles it is the best any filter can do there.

And linear-Gaussian models fitted to data, for the Kalman filter
(:func:`statemix_sk.models.kalman_filter`):

- :func:`random_walk_model`: a linear-Gaussian random walk ``x_t = x_{t-1} + w`` whose
  increment variance is read off the data; with the Kalman filter it is the best
  filter that assumes no dynamics at all. A learned model that does not beat it
  has not learned the dynamics.
- :func:`linear_dynamics_by_moments`: the stationary linear-Gaussian dynamics
  ``x_t - mu = A (x_{t-1} - mu) + w`` whose lag-0 and lag-1 covariances match the
  data's, for noisy state estimates.
- :func:`linear_dynamics_by_em`: the maximum-likelihood linear-Gaussian dynamics
  (expectation-maximisation with the Kalman smoother), started from the moments;
  :class:`~statemix_sk.StateMixFilter` starts its networks from it.

All weights are in the log domain.
"""

import warnings

import autograd.numpy as np
import numpy
import scipy.linalg

from ._utils import logsumexp
from .models import LinearGaussianModel, LinearGaussianObservation, kalman_smoother
from .smoothing import pairwise_transition_log_density

__all__ = [
    "AuxiliaryProposal",
    "ImprovedAuxiliaryProposal",
    "LocallyOptimalProposal",
    "check_locally_optimal_applies",
    "linear_dynamics_by_em",
    "linear_dynamics_by_moments",
    "random_walk_model",
    "smoothed_states",
]


def random_walk_model(Y, observation, initial_mean, initial_scale):
    """Fit a Gaussian random walk to observations by the method of moments.

    With ``y_t = H x_t + v_t`` and ``x_t = x_{t-1} + w_t``, the differences
    ``y_t - y_{t-1} = H w_t + v_t - v_{t-1}`` have covariance ``H Q H' + 2 R``; the
    increment variances ``diag(Q)`` are solved from it by least squares (each at
    least 1e-6 of the observations' variance, so the model stays proper).

    Parameters
    ----------
    Y : array-like of shape (n_steps, n_outputs) or (n_series, n_steps, n_outputs)
        Training observations; NaN entries are ignored.
    observation : LinearGaussianObservation
    initial_mean, initial_scale : array-like of shape (n_states,)
        The initial distribution of the random walk.

    Returns
    -------
    model : LinearGaussianModel
        With ``transition_matrix = I``.
    """
    if not isinstance(observation, LinearGaussianObservation):
        raise ValueError(
            "random_walk_model needs a LinearGaussianObservation, got "
            f"{type(observation).__name__}."
        )
    Y = numpy.asarray(Y, dtype=float)
    Y = Y[None] if Y.ndim == 2 else Y
    differences = numpy.diff(Y, axis=1).reshape(-1, Y.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        variance = numpy.nanvar(differences, axis=0)
        floor = 1e-6 * numpy.nanmean(numpy.nanvar(Y.reshape(-1, Y.shape[-1]), 0))
    H = observation.observation_matrix
    excess = variance - 2.0 * numpy.diag(observation.noise_covariance)
    # Each output's excess variance is sum_j H_ij^2 q_j: least squares in q.
    increment_variance, *_ = numpy.linalg.lstsq(H**2, excess, rcond=None)
    increment_variance = numpy.maximum(increment_variance, max(floor, 1e-12))
    return LinearGaussianModel(
        numpy.eye(observation.n_states),
        numpy.sqrt(increment_variance),
        observation,
        initial_mean=initial_mean,
        initial_scale=initial_scale,
    )


def linear_dynamics_by_moments(states, noise_covariance, mean, *, min_pairs=None):
    """Fit ``x_t - mu = A (x_{t-1} - mu) + w`` to noisy states by the method of moments.

    The states are observed as ``s_t = x_t + e_t`` with ``e_t ~ N(0, noise_covariance)``
    independent over time (for example ``pinv(H) y_t``). Then ``Cov(s_t) = C + E``
    and ``Cov(s_t, s_{t-1}) = A C`` with ``C`` the states' stationary covariance,
    so ``A = Cov(s_t, s_{t-1}) (Cov(s_t) - E)^-1`` and ``Q = C - A C A'``; unlike a
    regression of ``s_t`` on ``s_{t-1}``, this is not biased towards zero by the
    noise. ``C`` is kept positive definite (eigenvalues at least 1e-3 of the
    largest), ``A`` stable (spectral radius at most 0.999) and every variance of
    ``Q`` at least 1e-4 of the matching one of ``C``.

    Parameters
    ----------
    states : list of ndarray of shape (n_steps_i, n_states)
        Noisy state estimates; pairs of consecutive rows with a NaN are skipped.
    noise_covariance : array-like of shape (n_states, n_states)
        ``E``, the covariance of the estimates' noise.
    mean : array-like of shape (n_states,)
        ``mu``, the stationary mean.
    min_pairs : int, default=None
        Fewest usable pairs; None means ``2 * n_states + 2``.

    Returns
    -------
    transition_matrix : ndarray of shape (n_states, n_states) or None
        ``A``; None when there are fewer than ``min_pairs`` pairs.
    process_variance : ndarray of shape (n_states,) or None
        The diagonal of ``Q``.

    Examples
    --------
    >>> from statemix_sk import make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(2000, random_state=0)
    >>> A, q = linear_dynamics_by_moments([Y], 0.7**2 * numpy.eye(4), Y.mean(0))
    >>> bool(numpy.abs(A - model.transition_matrix).max() < 0.1)
    True
    """
    mean = numpy.asarray(mean, dtype=float)
    n_states = mean.size
    min_pairs = 2 * n_states + 2 if min_pairs is None else min_pairs
    previous, current = [], []
    for one in states:
        one = numpy.asarray(one, dtype=float) - mean
        usable = numpy.all(numpy.isfinite(one[1:]), 1) & numpy.all(
            numpy.isfinite(one[:-1]), 1
        )
        previous.append(one[:-1][usable])
        current.append(one[1:][usable])
    previous, current = numpy.concatenate(previous), numpy.concatenate(current)
    if len(previous) < min_pairs:
        return None, None
    both = numpy.concatenate([previous, current])
    lag0 = both.T @ both / len(both)
    lag1 = current.T @ previous / len(previous)
    values, vectors = numpy.linalg.eigh(
        lag0 - numpy.asarray(noise_covariance, dtype=float)
    )
    values = numpy.maximum(values, 1e-3 * max(values.max(), 1e-12))
    stationary = (vectors * values) @ vectors.T
    transition_matrix = lag1 @ numpy.linalg.inv(stationary)
    radius = numpy.abs(numpy.linalg.eigvals(transition_matrix)).max()
    if radius > 0.999:
        transition_matrix = transition_matrix * (0.999 / radius)
    process = stationary - transition_matrix @ stationary @ transition_matrix.T
    process_variance = numpy.maximum(numpy.diag(process), 1e-4 * numpy.diag(stationary))
    return transition_matrix, process_variance


def _stabilise(transition_matrix, max_radius=0.999):
    radius = numpy.abs(numpy.linalg.eigvals(transition_matrix)).max()
    if radius > max_radius:
        transition_matrix = transition_matrix * (max_radius / radius)
    return transition_matrix


def _as_linear_gaussian(observation):
    """Return a LinearGaussianObservation for any object with its members."""
    if isinstance(observation, LinearGaussianObservation):
        return observation
    return LinearGaussianObservation(
        observation.observation_matrix,
        noise_covariance=observation.noise_covariance,
    )


def _centred_model(
    observation, mean, transition_matrix, process_variance, initial_mean, initial_scale
):
    """Return the model of ``x_t - mu`` for ``x_t - mu = A (x_{t-1} - mu) + w``."""
    return LinearGaussianModel(
        numpy.asarray(transition_matrix, dtype=float),
        numpy.sqrt(numpy.asarray(process_variance, dtype=float)),
        observation,
        initial_mean=numpy.asarray(initial_mean, dtype=float) - mean,
        initial_scale=initial_scale,
    )


def smoothed_states(
    series,
    observation,
    mean,
    transition_matrix,
    process_variance,
    initial_mean,
    initial_scale,
):
    """Return the Kalman-smoothed states of a stationary linear-Gaussian model.

    For ``x_t - mu = A (x_{t-1} - mu) + w``, ``w ~ N(0, diag(q))``, and the known
    ``y_t = H x_t + v`` (the model :func:`linear_dynamics_by_em` fits), the
    smoothed means ``E[x_t | y_1:T]`` of every series, ``x_0`` included.

    Parameters
    ----------
    series : list of ndarray of shape (n_steps_i, n_outputs)
        Observations; NaN entries are missing.
    observation : LinearGaussianObservation
    mean : array-like of shape (n_states,)
        ``mu``.
    transition_matrix : array-like of shape (n_states, n_states)
    process_variance : array-like of shape (n_states,)
    initial_mean, initial_scale : array-like of shape (n_states,)
        The distribution of ``x_0``.

    Returns
    -------
    states : list of ndarray of shape (n_steps_i + 1, n_states)
        Row 0 is ``x_0``.

    Examples
    --------
    >>> from statemix_sk import make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(50, random_state=0)
    >>> states = smoothed_states([Y], model.observation, numpy.zeros(4),
    ...     model.transition_matrix, model.process_noise**2, numpy.zeros(4),
    ...     numpy.ones(4))
    >>> states[0].shape
    (51, 4)
    """
    observation = _as_linear_gaussian(observation)
    mean = numpy.asarray(mean, dtype=float)
    model = _centred_model(
        observation,
        mean,
        transition_matrix,
        process_variance,
        initial_mean,
        initial_scale,
    )
    offset = observation.observation_matrix @ mean
    return [
        kalman_smoother(numpy.asarray(one, dtype=float) - offset, model).smoothed_means
        + mean
        for one in series
    ]


def linear_dynamics_by_em(
    series,
    observation,
    mean,
    transition_matrix,
    process_variance,
    initial_mean,
    initial_scale,
    *,
    max_iter=50,
    tol=1e-4,
):
    """Fit ``x_t - mu = A (x_{t-1} - mu) + w`` by maximum likelihood (EM).

    Expectation-maximisation for a linear-Gaussian state-space model with a known
    observation ``y_t = H x_t + v_t`` (Shumway and Stoffer, 1982): the E-step is
    the Kalman smoother (:func:`statemix_sk.models.kalman_smoother`), the M-step
    ``A = S10 S00^-1`` and ``diag(Q) = diag(S11 - A S10') / n`` from the smoothed
    second moments of the pairs ``(x_{t-1}, x_t)``. Each iteration raises the
    exact log-likelihood; the method of moments
    (:func:`linear_dynamics_by_moments`) gives a consistent but noisier
    estimate, so it is the natural start. ``A`` is kept stable (spectral radius
    at most 0.999) and ``diag(Q)`` positive.

    Parameters
    ----------
    series : list of ndarray of shape (n_steps_i, n_outputs)
        Observations; NaN entries are missing.
    observation : LinearGaussianObservation
        ``H`` and the noise covariance ``R``, both known (or any object with
        ``observation_matrix`` and ``noise_covariance``).
    mean : array-like of shape (n_states,)
        ``mu``, kept fixed.
    transition_matrix : array-like of shape (n_states, n_states)
        Where ``A`` starts.
    process_variance : array-like of shape (n_states,)
        Where ``diag(Q)`` starts.
    initial_mean, initial_scale : array-like of shape (n_states,)
        The distribution of ``x_0`` (not ``x_0 - mu``), kept fixed.
    max_iter : int, default=50
    tol : float, default=1e-4
        Stop when an iteration raises the log-likelihood per observed step by
        less than this.

    Returns
    -------
    transition_matrix : ndarray of shape (n_states, n_states)
        The best ``A`` seen.
    process_variance : ndarray of shape (n_states,)
    log_likelihoods : ndarray
        The exact log-likelihood per observed step before each M-step: the first
        entry is the start's.

    Examples
    --------
    >>> from statemix_sk import make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(100, n_sequences=5, random_state=0)
    >>> start = numpy.eye(4), numpy.full(4, 0.1)
    >>> A, q, trace = linear_dynamics_by_em(
    ...     list(Y), model.observation, numpy.zeros(4), *start, numpy.zeros(4),
    ...     numpy.ones(4))
    >>> bool(numpy.all(numpy.diff(trace) > -1e-9))
    True
    """
    # Any object with the same members (the documented protocol).
    observation = _as_linear_gaussian(observation)
    mean = numpy.asarray(mean, dtype=float)
    transition_matrix = numpy.array(transition_matrix, dtype=float)
    process_variance = numpy.array(process_variance, dtype=float)
    offset = observation.observation_matrix @ mean
    centred = [numpy.asarray(one, dtype=float) - offset for one in series]
    n_observed = sum(int(numpy.sum(~numpy.all(numpy.isnan(one), 1))) for one in centred)
    n_pairs = sum(len(one) for one in centred)
    floor = 1e-10 * max(float(numpy.max(process_variance)), 1e-300)
    log_likelihoods = []
    for _ in range(max_iter + 1):
        model = _centred_model(
            observation,
            mean,
            transition_matrix,
            process_variance,
            initial_mean,
            initial_scale,
        )
        n_states = len(mean)
        current_current = numpy.zeros((n_states, n_states))  # S11
        current_previous = numpy.zeros((n_states, n_states))  # S10
        previous_previous = numpy.zeros((n_states, n_states))  # S00
        total = 0.0
        for one in centred:
            result = kalman_smoother(one, model)
            m, P = result.smoothed_means, result.smoothed_covariances
            second = P + m[:, :, None] * m[:, None, :]
            current_current += second[1:].sum(0)
            previous_previous += second[:-1].sum(0)
            current_previous += (
                result.lag_one_covariances + m[1:, :, None] * m[:-1, None, :]
            ).sum(0)
            total += result.log_likelihood
        log_likelihoods.append(total / max(n_observed, 1))
        if log_likelihoods[-1] >= max(log_likelihoods):
            best = transition_matrix, process_variance
        if len(log_likelihoods) == max_iter + 1 or (
            len(log_likelihoods) > 1 and log_likelihoods[-1] - log_likelihoods[-2] < tol
        ):
            break
        transition_matrix = _stabilise(
            numpy.linalg.solve(previous_previous.T, current_previous.T).T
        )
        process_variance = numpy.maximum(
            numpy.diag(
                current_current
                - transition_matrix @ current_previous.T
                - current_previous @ transition_matrix.T
                + transition_matrix @ previous_previous @ transition_matrix.T
            )
            / n_pairs,
            floor,
        )
    # An M-step whose A had to be stabilised may lower the likelihood: the best
    # parameters seen are returned.
    return (*best, numpy.array(log_likelihoods))


# --------------------------------------------------------------------------------------
# Proposals for the particle-filter loop
# --------------------------------------------------------------------------------------


class AuxiliaryProposal:
    """The auxiliary particle filter (Pitt and Shephard, 1999).

    First-stage weights ``eta_n = g(y_t | mu_n)`` with ``mu_n =`` the model's
    ``transition_mean(x_{t-1}^n)``; particles move with the transition, and the
    loop's weight becomes ``g(y_t | x_t) / g(y_t | mu_a)`` (times the
    normalising constant the loop carries), which keeps the likelihood estimate
    unbiased. Any model of the protocol with ``transition_mean`` works.
    """

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """Return ``log g(y | mu_n)`` for every particle."""
        return model.observation.log_density(model.transition_mean(particles), y)

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``f(. | x_prev)``; ``q = f``, so the ratio is None."""
        return model.sample_transition(x_prev, rng), None

    def __repr__(self):  # noqa: D105
        return "AuxiliaryProposal()"


def _log_weighted_sums(pairs, log_a, log_b):
    """Return ``log sum_i a_i exp(pairs[m, i])`` and the same with ``b``, per row.

    One exponential of the (m, i) array serves both sums (matrix-vector products
    after shifting by the row maxima); rows where a shifted sum underflows fall
    back to an exact logsumexp.
    """
    row_max = numpy.max(pairs, axis=1, keepdims=True)
    scaled = numpy.subtract(pairs, row_max)
    numpy.exp(scaled, out=scaled)
    results = []
    for log_c in (log_a, log_b):
        top = numpy.max(log_c)
        with numpy.errstate(divide="ignore"):
            value = numpy.log(scaled @ numpy.exp(log_c - top)) + row_max[:, 0] + top
        bad = ~numpy.isfinite(value)
        if bad.any():
            value[bad] = logsumexp(pairs[bad] + log_c[None, :], axis=1)
        results.append(value)
    return results


class ImprovedAuxiliaryProposal:
    """The improved auxiliary particle filter (Elvira et al., EUSIPCO 2018).

    At step ``t``, with previous particles ``x^i``, normalised weights ``W_i`` and
    predicted means ``mu_m = E_f[x_t | x^m]``, the particles are drawn from the
    mixture ``sum_m lambda_m f(x | x^m)`` with

    ``lambda_m ~ g(y | mu_m) sum_i W_i f(mu_m | x^i) / sum_i f(mu_m | x^i)``

    (normalised) and weighted by
    ``g(y | x) sum_i W_i f(x | x^i) / sum_i lambda_i f(x | x^i)``; the likelihood
    increment is the mean of those weights. Every sum runs over all particles:
    O(N^2) per step, computed as (N, N) arrays of pairwise log-densities
    (:func:`~statemix_sk.smoothing.pairwise_transition_log_density`), one series
    at a time.

    In the loop's terms the ancestor draw ``a ~ W eta`` with
    ``eta_m = lambda_m / W_m`` is the draw of the mixture component, and the
    ratio returned by :meth:`propose` turns the loop's carried weight into the
    weight above. Particles whose weight ``W_m`` is exactly 0 cannot be drawn.
    """

    def _log_lambda(self, model, particles, log_weights, y):
        """Unnormalised ``log lambda``, (B, N), and the pairwise terms it used."""
        n_series, n_particles = numpy.shape(log_weights)
        states = numpy.reshape(particles, (n_series, n_particles, -1))
        means = numpy.asarray(model.transition_mean(particles))
        log_g = numpy.reshape(
            model.observation.log_density(means, y), (n_series, n_particles)
        )
        means = numpy.reshape(means, (n_series, n_particles, -1))
        log_lambda = numpy.empty((n_series, n_particles))
        for b in range(n_series):
            pairs = pairwise_transition_log_density(model, means[b], states[b])
            weighted, plain = _log_weighted_sums(
                pairs, log_weights[b], numpy.zeros(n_particles)
            )
            log_lambda[b] = log_g[b] + weighted - plain
        return log_lambda

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """Return ``log eta = log lambda - log W``, so that ``W eta = lambda``."""
        log_weights = numpy.asarray(log_weights)
        log_lambda = self._log_lambda(model, particles, log_weights, y)
        return numpy.reshape(
            log_lambda - numpy.maximum(log_weights, -numpy.finfo(float).max), (-1,)
        )

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``f(. | x^a)``; return the ratio that completes the weight.

        The loop carries ``log sum(lambda) - log N - log eta_a``; adding
        ``log sum_i W_i f(x|x^i) - log sum_i lambda_i f(x|x^i) + log eta_a`` and
        ``log g(y|x)`` gives the IAPF weight over ``N``.
        """
        x = numpy.asarray(model.sample_transition(x_prev, rng))
        n_series = context.n_series
        log_weights = numpy.asarray(context.log_weights)
        n_particles = log_weights.shape[1]
        log_eta = numpy.reshape(
            context.first_stage_log_weights, (n_series, n_particles)
        )
        log_lambda = log_eta + log_weights
        states = numpy.reshape(context.particles, (n_series, n_particles, -1))
        new = numpy.reshape(x, (n_series, n_particles, -1))
        ancestors = numpy.reshape(context.ancestors, (n_series, n_particles))
        ancestors = ancestors - (numpy.arange(n_series) * n_particles)[:, None]
        log_ratio = numpy.empty((n_series, n_particles))
        for b in range(n_series):
            pairs = pairwise_transition_log_density(model, new[b], states[b])
            weighted, mixture = _log_weighted_sums(pairs, log_weights[b], log_lambda[b])
            log_ratio[b] = weighted - mixture + log_eta[b][ancestors[b]]
        return x, numpy.reshape(log_ratio, (-1,))

    def __repr__(self):  # noqa: D105
        return "ImprovedAuxiliaryProposal()"


def check_locally_optimal_applies(model):
    """Raise a ValueError unless ``model`` has what the locally optimal proposal needs.

    That is a Gaussian transition around ``transition_mean`` with diagonal
    ``process_noise`` and a linear-Gaussian observation (``observation_matrix``
    and ``noise_covariance``).
    """
    missing = [
        name
        for name, owner in (
            ("transition_mean", model),
            ("process_noise", model),
            ("observation_matrix", model.observation),
            ("noise_covariance", model.observation),
        )
        if getattr(owner, name, None) is None
    ]
    if missing:
        raise ValueError(
            "The locally optimal proposal needs a Gaussian transition "
            "(transition_mean and process_noise) and a linear-Gaussian observation "
            "(observation_matrix and noise_covariance); "
            f"{type(model).__name__} with {type(model.observation).__name__} lacks "
            f"{', '.join(missing)}. Use the bootstrap or an auxiliary filter instead."
        )


class LocallyOptimalProposal:
    """The exact optimal proposal ``p(x_t | x_{t-1}, y_t)``.

    For ``x_t = m(x_{t-1}) + w``, ``w ~ N(0, Q)`` and ``y_t = H x_t + v``,
    ``v ~ N(0, R)``, it is ``N(m + K (y - H m), (I - K H) Q)`` with
    ``K = Q H' (H Q H' + R)^-1``, and the weight ``g f / q`` equals
    ``p(y_t | x_{t-1}) = N(y_t; H m, H Q H' + R)`` whatever ``x_t`` is drawn. With
    many particles this filter is the best any filter can do with the true model;
    the experiments use it (N = 10,000) as the floor.

    Where some entries of ``y_t`` are missing (NaN), the same formulas hold with
    the observation restricted to the observed entries (the rows of ``H``, the
    sub-block of ``R``): the proposal is still exact, and the weight is
    ``p(y_t^obs | x_{t-1})``. The gain and covariance are computed once per
    pattern of missing entries and kept.

    Parameters
    ----------
    model : state-space model
        Checked by :func:`check_locally_optimal_applies`.
    """

    handles_missing_entries = True
    """The filter gives it partly observed steps (with NaN), not only full ones."""

    def __init__(self, model):
        check_locally_optimal_applies(model)
        H = numpy.asarray(model.observation.observation_matrix, dtype=float)
        R = numpy.asarray(model.observation.noise_covariance, dtype=float)
        Q = numpy.diag(
            numpy.broadcast_to(
                numpy.asarray(model.process_noise, dtype=float) ** 2, (H.shape[1],)
            )
        )
        self.observation_matrix = H
        self._noise_covariance = R
        self._process_covariance = Q
        self._by_pattern = {}
        self.gain, self.cholesky, self.log_det = self._conditional(
            numpy.ones(len(H), dtype=bool)
        )

    def _conditional(self, observed):
        """Gain, covariance factor and log-determinant given the observed entries.

        The gain has a zero column for each missing entry, so it can multiply a
        residual whose missing entries are anything finite.
        """
        key = observed.tobytes()
        if key in self._by_pattern:
            return self._by_pattern[key]
        H_all, Q = self.observation_matrix, self._process_covariance
        gain = numpy.zeros((len(Q), len(H_all)))
        if observed.any():
            H = H_all[observed]
            R = self._noise_covariance[numpy.ix_(observed, observed)]
            innovation_cov = H @ Q @ H.T + R
            gain[:, observed] = scipy.linalg.solve(
                innovation_cov, H @ Q, assume_a="pos"
            ).T
            # The covariance in information form, (Q^-1 + H' R^-1 H)^-1: positive
            # definite by construction. Q - K H Q loses it to cancellation when R
            # is small next to H Q H' (a nearly noiseless observation).
            whitened = scipy.linalg.solve_triangular(
                numpy.linalg.cholesky(R), H, lower=True
            )
            information = numpy.diag(1.0 / numpy.diag(Q)) + whitened.T @ whitened
            covariance = scipy.linalg.cho_solve(
                scipy.linalg.cho_factor(information, lower=True), numpy.eye(len(Q))
            )
        else:
            covariance = Q
        cholesky = numpy.linalg.cholesky(0.5 * (covariance + covariance.T))
        log_det = 2.0 * numpy.sum(numpy.log(numpy.diag(cholesky)))
        self._by_pattern[key] = gain, cholesky, log_det
        return self._by_pattern[key]

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """Return None: the weight is ``p(y_t | x_{t-1})``, applied after the move."""
        return None

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``p(x_t | x_{t-1}, y_t)``; return ``log f - log q``.

        NaN entries of ``y`` are missing: each row conditions on its observed
        entries only.
        """
        mean = np.asarray(model.transition_mean(x_prev))
        y = numpy.asarray(y, dtype=float)
        observed = ~numpy.isnan(y)
        n_states = self.cholesky.shape[0]
        if observed.all():
            centre = mean + (y - mean @ self.observation_matrix.T) @ self.gain.T
            noise = rng.standard_normal(numpy.shape(centre))
            x = centre + noise @ self.cholesky.T
            log_det = self.log_det
        else:
            # Rows share a few patterns of missing entries (one per series).
            patterns, inverse = numpy.unique(
                numpy.broadcast_to(observed, numpy.shape(mean)[:1] + y.shape[-1:]),
                axis=0,
                return_inverse=True,
            )
            parts = [self._conditional(pattern) for pattern in patterns]
            inverse = inverse.ravel()
            gains = numpy.stack([part[0] for part in parts])[inverse]
            choleskys = numpy.stack([part[1] for part in parts])[inverse]
            log_det = numpy.array([part[2] for part in parts])[inverse]
            residual = numpy.where(observed, y, 0.0) - mean @ self.observation_matrix.T
            centre = mean + np.einsum("nij,nj->ni", gains, residual)
            noise = rng.standard_normal(numpy.shape(centre))
            x = centre + numpy.einsum("nij,nj->ni", choleskys, noise)
        log_q = -0.5 * (
            np.sum(noise**2, axis=1) + log_det + n_states * numpy.log(2.0 * numpy.pi)
        )
        return x, model.transition_log_density(x, x_prev) - log_q

    def __repr__(self):  # noqa: D105
        return "LocallyOptimalProposal(...)"
