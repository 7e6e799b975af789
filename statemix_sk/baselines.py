"""Baselines that StateMixNN is measured against.

- :func:`random_walk_model`: a linear-Gaussian random walk ``x_t = x_{t-1} + w`` whose
  increment variance is read off the data; with the Kalman filter
  (:func:`statemix_sk.models.kalman_filter`) it is the best filter that assumes no
  dynamics at all. A learned model that does not beat it has not learned the
  dynamics.
"""

import warnings

import numpy

from .models import LinearGaussianModel, LinearGaussianObservation

__all__ = ["random_walk_model"]


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
