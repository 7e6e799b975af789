"""Baselines that StateMixNN is measured against.

- :func:`random_walk_model`: a linear-Gaussian random walk ``x_t = x_{t-1} + w`` whose
  increment variance is read off the data; with the Kalman filter
  (:func:`statemix_sk.models.kalman_filter`) it is the best filter that assumes no
  dynamics at all. A learned model that does not beat it has not learned the
  dynamics.
- :func:`linear_dynamics_by_moments`: the stationary linear-Gaussian dynamics
  ``x_t - mu = A (x_{t-1} - mu) + w`` whose lag-0 and lag-1 covariances match the
  data's, for noisy state estimates; :class:`~statemix_sk.StateMixFilter` starts
  its networks from it.
"""

import warnings

import numpy

from .models import LinearGaussianModel, LinearGaussianObservation

__all__ = ["linear_dynamics_by_moments", "random_walk_model"]


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
