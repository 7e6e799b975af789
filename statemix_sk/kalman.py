"""The exact Kalman filter and smoother, and linear-Gaussian models fitted with them.

For a :class:`~statemix_sk.models.LinearGaussianModel` (``x_t = A x_{t-1} + w``,
``y_t = H x_t + v``, Gaussian noise) :func:`kalman_filter` gives the exact
filtering distributions and log-likelihood (the oracle the particle filters are
tested against) and :func:`kalman_smoother` the smoothing distributions (the
Rauch-Tung-Striebel recursion). Missing entries (NaN) are left out of the update.

Linear-Gaussian models fitted to data, for the Kalman filter:

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

Log-densities are in the log domain.
"""

import warnings
from typing import NamedTuple

import numpy

from ._utils import check_observations
from .models import LinearGaussianModel
from .observations import LinearGaussianObservation

__all__ = [
    "KalmanResult",
    "KalmanSmootherResult",
    "kalman_filter",
    "kalman_smoother",
    "linear_dynamics_by_em",
    "linear_dynamics_by_moments",
    "random_walk_model",
    "smoothed_states",
]

_LOG_2PI = numpy.log(2.0 * numpy.pi)


# --------------------------------------------------------------------------------------
# The exact Kalman filter and smoother
# --------------------------------------------------------------------------------------


class KalmanResult(NamedTuple):
    """What :func:`kalman_filter` returns."""

    filtered_means: numpy.ndarray
    """(n_steps, n_states): ``E[x_t | y_1:t]``."""
    filtered_covariances: numpy.ndarray
    """(n_steps, n_states, n_states): ``Cov[x_t | y_1:t]``."""
    log_likelihood: float
    """``log p(y_1:T)``, the sum of the increments."""
    log_likelihood_increments: numpy.ndarray
    """(n_steps,): ``log p(y_t | y_1:t-1)`` (0 where nothing is observed)."""


def _kalman_forward(Y, A, Q, H, R, mean, covariance):
    """Run the Kalman recursion, keeping the predictions the smoother needs."""
    # Plain numpy.linalg on small matrices: scipy's wrappers cost more than the
    # arithmetic here, and EM runs this recursion many times.
    n_steps, n_states = len(Y), len(mean)
    means = numpy.empty((n_steps, n_states))
    covariances = numpy.empty((n_steps, n_states, n_states))
    predicted_covariances = numpy.empty((n_steps, n_states, n_states))
    increments = numpy.zeros(n_steps)
    observed_rows = ~numpy.isnan(Y)
    for t in range(n_steps):
        mean = A @ mean
        covariance = A @ covariance @ A.T + Q
        predicted_covariances[t] = covariance
        observed = observed_rows[t]
        n_observed = int(observed.sum())
        if n_observed:
            if n_observed == len(observed):
                H_obs, R_obs, y = H, R, Y[t]
            else:
                H_obs, R_obs = H[observed], R[numpy.ix_(observed, observed)]
                y = Y[t, observed]
            innovation = y - H_obs @ mean
            cross = H_obs @ covariance
            innovation_cov = cross @ H_obs.T + R_obs
            lower = numpy.linalg.cholesky(innovation_cov)
            # One solve for the gain and the whitened innovation together.
            solved = numpy.linalg.solve(
                innovation_cov, numpy.column_stack([cross, innovation])
            )
            gain = solved[:, :-1].T
            mean = mean + gain @ innovation
            covariance = covariance - gain @ cross
            covariance = 0.5 * (covariance + covariance.T)
            increments[t] = -0.5 * (
                innovation @ solved[:, -1]
                + 2.0 * numpy.sum(numpy.log(numpy.diag(lower)))
                + n_observed * _LOG_2PI
            )
        means[t] = mean
        covariances[t] = covariance
    return means, covariances, predicted_covariances, increments


def _linear_gaussian_parts(model):
    return (
        model.transition_matrix,
        model.process_covariance,
        model.observation.observation_matrix,
        model.observation.noise_covariance,
        numpy.asarray(model.initial_mean, dtype=float),
        numpy.diag(numpy.asarray(model.initial_scale, dtype=float) ** 2),
    )


def kalman_filter(Y, model):
    """Exact filtering for a linear-Gaussian model, skipping missing entries.

    Parameters
    ----------
    Y : array-like of shape (n_steps, n_outputs)
        One series; NaN entries are missing and contribute nothing.
    model : LinearGaussianModel
        Or any object with ``transition_matrix``, ``process_covariance``,
        ``initial_mean``, ``initial_scale`` and a linear-Gaussian ``observation``
        (``observation_matrix``, ``noise_covariance``).

    Returns
    -------
    result : KalmanResult
    """
    A, Q, H, R, mean, covariance = _linear_gaussian_parts(model)
    Y = check_observations(Y, "Y", n_features=H.shape[0])
    means, covariances, _, increments = _kalman_forward(Y, A, Q, H, R, mean, covariance)
    return KalmanResult(means, covariances, float(increments.sum()), increments)


class KalmanSmootherResult(NamedTuple):
    """What :func:`kalman_smoother` returns."""

    smoothed_means: numpy.ndarray
    """(n_steps + 1, n_states): ``E[x_t | y_1:T]`` for t = 0 (the initial state)
    to T."""
    smoothed_covariances: numpy.ndarray
    """(n_steps + 1, n_states, n_states): ``Cov[x_t | y_1:T]``."""
    lag_one_covariances: numpy.ndarray
    """(n_steps, n_states, n_states): ``Cov[x_t, x_{t-1} | y_1:T]`` for t = 1 to T."""
    log_likelihood: float
    """``log p(y_1:T)``."""


def kalman_smoother(Y, model):
    """Exact smoothing (Rauch-Tung-Striebel) for a linear-Gaussian model.

    Parameters
    ----------
    Y : array-like of shape (n_steps, n_outputs)
        One series; NaN entries are missing.
    model : LinearGaussianModel
        As for :func:`kalman_filter`.

    Returns
    -------
    result : KalmanSmootherResult
        Including the initial state ``x_0`` (row 0), so that the pairs
        ``(x_{t-1}, x_t)`` of every transition are covered; the lag-one covariances
        are ``P_{t|T} J_{t-1}'`` with the smoother gain ``J``.
    """
    A, Q, H, R, initial_mean, initial_covariance = _linear_gaussian_parts(model)
    Y = check_observations(Y, "Y", n_features=H.shape[0])
    means, covariances, predicted, increments = _kalman_forward(
        Y, A, Q, H, R, initial_mean, initial_covariance
    )
    # Row 0 is x_0, whose "filtered" distribution is the prior.
    means = numpy.concatenate([initial_mean[None], means])
    covariances = numpy.concatenate([initial_covariance[None], covariances])
    smoothed_means, smoothed_covariances = means.copy(), covariances.copy()
    lag_one = numpy.empty_like(predicted)
    for t in range(len(Y) - 1, -1, -1):
        # Row t is x_t; predicted[t] is Cov[x_{t+1} | y_1:t].
        gain = numpy.linalg.solve(predicted[t], A @ covariances[t]).T
        smoothed_means[t] = means[t] + gain @ (smoothed_means[t + 1] - A @ means[t])
        smoothed_covariances[t] = (
            covariances[t]
            + gain @ (smoothed_covariances[t + 1] - predicted[t]) @ gain.T
        )
        smoothed_covariances[t] = 0.5 * (
            smoothed_covariances[t] + smoothed_covariances[t].T
        )
        lag_one[t] = smoothed_covariances[t + 1] @ gain.T
    return KalmanSmootherResult(
        smoothed_means, smoothed_covariances, lag_one, float(increments.sum())
    )


# --------------------------------------------------------------------------------------
# Linear-Gaussian models fitted to data
# --------------------------------------------------------------------------------------


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
        Noisy state estimates; NaN entries are missing. Each moment averages
        the pairs of consecutive rows where its two entries are observed.
    noise_covariance : array-like of shape (n_states, n_states)
        ``E``, the covariance of the estimates' noise.
    mean : array-like of shape (n_states,)
        ``mu``, the stationary mean.
    min_pairs : int, default=None
        Fewest pairs observing each entry pair of ``Cov(s_t, s_{t-1})``; None
        means ``2 * n_states + 2``.

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
        previous.append(one[:-1])
        current.append(one[1:])
    previous, current = numpy.concatenate(previous), numpy.concatenate(current)
    # Each moment is averaged over the pairs (rows) where both of its entries
    # are observed, not only over rows observed in full: with 30% of ten entries
    # missing at random, 0.7**20 = 0.08% of the pairs are complete. With
    # nothing missing these are the plain products, as before.
    both = numpy.concatenate([previous, current])
    lag0 = _available_case_product(both, both)
    lag1, n_pairs = _available_case_product(current, previous, counts=True)
    if n_pairs.min() < min_pairs:
        return None, None
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


def _available_case_product(left, right, counts=False):
    """Return ``left.T @ right / n``, each entry over the rows observing its pair.

    ``n[i, j]`` counts the rows where ``left[:, i]`` and ``right[:, j]`` are both
    finite (NaN is missing). With ``counts``, also return ``n``.
    """
    left_observed = numpy.isfinite(left)
    right_observed = numpy.isfinite(right)
    if left_observed.all() and right_observed.all():
        # The plain product (for left is right, NumPy's symmetric one).
        product = left.T @ right / len(left)
        return (product, numpy.full(product.shape, len(left))) if counts else product
    n = left_observed.T.astype(float) @ right_observed.astype(float)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        product = (
            numpy.where(left_observed, left, 0.0).T
            @ numpy.where(right_observed, right, 0.0)
            / n
        )
    return (product, n) if counts else product


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
    the Kalman smoother (:func:`kalman_smoother`), the M-step
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
