"""Gaussian observation models ``y = h(x) + v``, where entries may be missing.

An observation model has ``n_states``, ``n_outputs``, ``noise_scale`` (the standard
deviation of each output's noise, shape (n_outputs,)), ``mean(x)`` (the noiseless
observation ``h(x)``, (n, n_outputs)), ``log_density(x, y)`` (``log g(y | x[i])``,
(n,), where NaN entries of ``y`` are missing and left out) and ``sample(x, rng)``:
the protocol that :mod:`statemix_sk.models` states for every model's
``observation``. The two here are :class:`LinearGaussianObservation` (``h(x) = H
x``, whose log-density is one primitive with a hand-derived gradient) and
:class:`GaussianObservation` (any ``h``, e.g. :func:`phase_observation`).

Every ``*_noise`` or ``*_scale`` argument is a standard deviation, a scalar or one
per component; full matrices are called ``*_covariance``. Densities are in the log
domain.
"""

import autograd.numpy as np
import numpy
import scipy.linalg
from autograd.extend import defvjp, primitive

from ._utils import (
    MAX_MAGNITUDE,
    check_magnitude,
    check_positive_int,
    check_scale,
)

__all__ = [
    "GaussianObservation",
    "LinearGaussianObservation",
    "phase_observation",
]

_LOG_2PI = numpy.log(2.0 * numpy.pi)


def _as_real_array(value, name):
    """Return ``value`` as a float array, or raise a ValueError naming ``name``."""
    if numpy.iscomplexobj(value):
        raise ValueError(f"{name} must be real, got complex numbers.")
    try:
        return numpy.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers: {exc}") from None


def _check_covariance(covariance, name, size=None):
    """Validate a symmetric positive-definite matrix; return it and its Cholesky."""
    covariance = _as_real_array(covariance, name)
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1]:
        raise ValueError(
            f"{name} must be a square matrix, got shape {covariance.shape}."
        )
    if size is not None and covariance.shape[0] != size:
        raise ValueError(
            f"{name} must be {size} x {size} to match the observations, got "
            f"{covariance.shape}."
        )
    if not numpy.all(numpy.isfinite(covariance)):
        raise ValueError(f"{name} must be finite.")
    variances = numpy.diag(covariance)
    if numpy.any(variances > MAX_MAGNITUDE**2) or numpy.any(
        (variances > 0) & (variances < MAX_MAGNITUDE**-2)
    ):
        raise ValueError(
            f"{name} must have variances between {MAX_MAGNITUDE**-2:g} and "
            f"{MAX_MAGNITUDE**2:g} (standard deviations between "
            f"{1 / MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g}), got {variances}."
        )
    if not numpy.allclose(covariance, covariance.T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name} must be symmetric.")
    singular = ValueError(
        f"{name} must be positive definite (it is singular or has a negative "
        "eigenvalue)."
    )
    try:
        cholesky = numpy.linalg.cholesky(covariance)
    except numpy.linalg.LinAlgError:
        raise singular from None
    # Rounding can let an exactly singular matrix through the factorisation
    # (v v' has a last pivot of about 1e-18, not 0). Judged on the correlation
    # matrix, so that small but well-conditioned noise stays allowed.
    scale = numpy.sqrt(numpy.diag(covariance))
    correlation = covariance / numpy.outer(scale, scale)
    if numpy.linalg.eigvalsh(correlation)[0] <= 1e-12 * len(covariance):
        raise singular
    return covariance, cholesky


class _GaussianNoiseObservation:
    """Shared parts of ``y = mean(x) + v``, ``v ~ N(0, noise_covariance)``."""

    def _set_noise(self, noise_scale, noise_covariance, n_outputs):
        if noise_scale is not None and noise_covariance is not None:
            raise ValueError("Give noise_scale or noise_covariance, not both.")
        if noise_covariance is None:
            scale = check_scale(
                1.0 if noise_scale is None else noise_scale, "noise_scale", n_outputs
            )
            self.noise_covariance = numpy.diag(scale**2)
            self._diagonal = True
        else:
            self.noise_covariance, _ = _check_covariance(
                noise_covariance, "noise_covariance", n_outputs
            )
            self._diagonal = bool(
                numpy.all(
                    self.noise_covariance
                    == numpy.diag(numpy.diag(self.noise_covariance))
                )
            )
        self.n_outputs = self.noise_covariance.shape[0]
        self.noise_scale = numpy.sqrt(numpy.diag(self.noise_covariance))
        self._noise_cholesky = numpy.linalg.cholesky(self.noise_covariance)
        self._whitening = scipy.linalg.solve_triangular(
            self._noise_cholesky, numpy.eye(self.n_outputs), lower=True
        )
        self._log_det = numpy.sum(numpy.log(numpy.diag(self._noise_cholesky)))

    def log_density(self, x, y):
        """Log-density of the observation ``y`` given each state.

        Parameters
        ----------
        x : array of shape (n, n_states)
        y : ndarray of shape (n_outputs,) or (n, n_outputs)
            One observation for every state, or one per state. NaN entries are
            missing: the density is that of the observed entries only (the
            marginal, with the observed sub-block of the covariance).

        Returns
        -------
        log_density : array of shape (n,)
            Zero for a row where nothing is observed.
        """
        y = numpy.asarray(y, dtype=float)
        observed = ~numpy.isnan(y)
        predicted = self.mean(x)
        if observed.all():
            residuals = y - predicted
            n_observed = self.n_outputs
            if self._diagonal:
                whitened = residuals / self.noise_scale
                log_det = self._log_det
            else:
                whitened = np.dot(residuals, self._whitening.T)
                log_det = self._log_det
        else:
            residuals = numpy.where(observed, y, 0.0) - predicted
            n_observed = observed.sum(axis=-1)
            if self._diagonal:
                inverse_scale = numpy.where(observed, 1.0 / self.noise_scale, 0.0)
                whitened = residuals * inverse_scale
                log_det = numpy.sum(
                    numpy.where(observed, numpy.log(self.noise_scale), 0.0), axis=-1
                )
            else:
                whitening, log_det = self._masked_whitening(observed)
                whitened = np.einsum("...ij,...j->...i", whitening, residuals)
        return (
            -0.5 * np.sum(whitened**2, axis=-1) - log_det - 0.5 * n_observed * _LOG_2PI
        )

    def _masked_whitening(self, observed):
        """Whitening matrices and log-determinants for the observed entries.

        For each row of ``observed`` (n_outputs,) the inverse Cholesky factor of
        the observed sub-block of the covariance, embedded with zeros for the
        missing entries; rows sharing a pattern share the computation.
        """
        patterns, inverse = numpy.unique(
            numpy.atleast_2d(observed), axis=0, return_inverse=True
        )
        whitenings = numpy.zeros((len(patterns), self.n_outputs, self.n_outputs))
        log_dets = numpy.zeros(len(patterns))
        for index, pattern in enumerate(patterns):
            if pattern.any():
                block = numpy.ix_(pattern, pattern)
                cholesky = numpy.linalg.cholesky(self.noise_covariance[block])
                whitenings[index][block] = scipy.linalg.solve_triangular(
                    cholesky, numpy.eye(len(cholesky)), lower=True
                )
                log_dets[index] = numpy.sum(numpy.log(numpy.diag(cholesky)))
        inverse = inverse.ravel()
        if numpy.ndim(observed) == 1:
            return whitenings[0], log_dets[0]
        return whitenings[inverse], log_dets[inverse]

    def sample(self, x, rng):
        """Draw one observation per state: ``mean(x) + v``.

        Parameters
        ----------
        x : ndarray of shape (n, n_states)
        rng : numpy.random.Generator

        Returns
        -------
        y : ndarray of shape (n, n_outputs)
        """
        noise = rng.standard_normal((numpy.shape(x)[0], self.n_outputs))
        return self.mean(x) + noise @ self._noise_cholesky.T


def _whitened_residuals(x, y, observation):
    """``(y - x H') / noise_scale`` (or times the whitening matrix)."""
    residuals = y - numpy.dot(x, observation.observation_matrix.T)
    if observation._diagonal:
        return residuals / observation.noise_scale
    return numpy.dot(residuals, observation._whitening.T)


@primitive
def _linear_gaussian_log_density(x, y, observation):
    """Fully observed ``log g(y | x)`` of a LinearGaussianObservation, fused.

    One autograd primitive, differentiable in ``x``, whose VJP holds only its
    arguments: the composition keeps the whitened residuals (n, n_outputs) of
    every time step on autograd's tape. The operations are those of
    ``_log_density``, so both give the same values.
    """
    whitened = _whitened_residuals(x, y, observation)
    return (
        -0.5 * numpy.sum(whitened**2, axis=-1)
        - observation._log_det
        - 0.5 * observation.n_outputs * _LOG_2PI
    )


def _linear_gaussian_log_density_vjp(result, x, y, observation):
    def vjp(upstream):
        whitened = _whitened_residuals(x, y, observation)
        if observation._diagonal:
            by_residual = whitened / observation.noise_scale
        else:
            by_residual = numpy.dot(whitened, observation._whitening)
        # d/dx of -0.5 |W (y - H x)|^2 is H' W' W (y - H x).
        return numpy.dot(
            upstream[:, None] * by_residual, observation.observation_matrix
        )

    return vjp


defvjp(_linear_gaussian_log_density, _linear_gaussian_log_density_vjp)


class LinearGaussianObservation(_GaussianNoiseObservation):
    """Linear-Gaussian observations ``y = H x + v``, ``v ~ N(0, R)``.

    Parameters
    ----------
    observation_matrix : array-like of shape (n_outputs, n_states), default=None
        ``H``. None means the identity, whose size is taken from ``n_states`` or
        from the noise.
    noise_scale : float or array-like of shape (n_outputs,), default=None
        Standard deviation(s) of ``v`` (a diagonal ``R``). None with no
        ``noise_covariance`` means 1.0.
    noise_covariance : array-like of shape (n_outputs, n_outputs), default=None
        A full ``R`` instead (symmetric positive definite).
    n_states : int, default=None
        The state dimension, needed only when nothing else gives it.

    Examples
    --------
    >>> obs = LinearGaussianObservation(noise_scale=[0.5, 1.0])
    >>> obs.n_states, obs.n_outputs
    (2, 2)
    >>> obs.log_density(numpy.zeros((1, 2)), numpy.array([0.0, numpy.nan])).round(4)
    array([-0.2258])
    """

    def __init__(
        self,
        observation_matrix=None,
        noise_scale=None,
        *,
        noise_covariance=None,
        n_states=None,
    ):
        if observation_matrix is None:
            size = n_states
            if size is None and noise_covariance is not None:
                size = numpy.shape(noise_covariance)[0]
            if size is None and noise_scale is not None:
                size = numpy.size(noise_scale)
            if size is None:
                raise ValueError(
                    "LinearGaussianObservation needs observation_matrix, n_states, "
                    "or a noise vector or covariance to know its dimension."
                )
            size = check_positive_int(size, "n_states")
            matrix = numpy.eye(size)
        else:
            matrix = _as_real_array(observation_matrix, "observation_matrix")
            if matrix.ndim != 2 or matrix.size == 0:
                raise ValueError(
                    "observation_matrix must be a non-empty 2-D array (n_outputs, "
                    f"n_states), got shape {matrix.shape}."
                )
            if not numpy.all(numpy.isfinite(matrix)):
                raise ValueError("observation_matrix must be finite.")
            check_magnitude(matrix, "observation_matrix")
            if n_states is not None and matrix.shape[1] != n_states:
                raise ValueError(
                    f"observation_matrix has {matrix.shape[1]} columns but n_states "
                    f"is {n_states}."
                )
        self.observation_matrix = matrix
        self.n_states = matrix.shape[1]
        self._set_noise(noise_scale, noise_covariance, matrix.shape[0])

    def mean(self, x):
        """Noiseless observations ``x @ H.T``, shape (n, n_outputs)."""
        return np.dot(x, self.observation_matrix.T)

    def log_density(self, x, y):
        """Log-density of the observation ``y`` given each state.

        Parameters and result as for :class:`GaussianObservation`. When ``y``
        has no missing entry this is one autograd primitive with the same value
        (less memory and time under autograd); otherwise the general composition.
        """
        y = numpy.asarray(y, dtype=float)
        if numpy.isnan(y).any():
            return super().log_density(x, y)
        return _linear_gaussian_log_density(x, y, self)


def phase_observation(phases):
    """``[sin(phases), cos(phases)]``: the Kuramoto experiment's observation map."""
    return np.concatenate([np.sin(phases), np.cos(phases)], axis=-1)


class GaussianObservation(_GaussianNoiseObservation):
    """Gaussian observations around a function: ``y = h(x) + v``.

    Parameters
    ----------
    function : callable
        ``h``, mapping an array of states (n, n_states) to (n, n_outputs); write
        it with ``autograd.numpy`` so that filters can be differentiated through it.
    n_states : int
        The state dimension (cannot be read off a function).
    noise_scale : float or array-like of shape (n_outputs,), default=1.0
        Standard deviation(s) of the independent noise ``v``.

    Examples
    --------
    >>> obs = GaussianObservation(phase_observation, n_states=3, noise_scale=0.5)
    >>> obs.n_outputs
    6
    """

    def __init__(self, function, n_states, noise_scale=1.0):
        if not callable(function):
            raise ValueError(f"function must be callable, got {function!r}.")
        self.function = function
        self.n_states = check_positive_int(n_states, "n_states")
        probe = numpy.linspace(-1.0, 1.0, 2 * self.n_states).reshape(2, self.n_states)
        try:
            output = numpy.asarray(function(probe), dtype=float)
        except Exception as exc:
            raise ValueError(
                f"function failed on an array of shape {probe.shape} (n, n_states): "
                f"{exc}"
            ) from exc
        if output.ndim != 2 or output.shape[0] != 2:
            raise ValueError(
                "function must map states of shape (n, n_states) to observations of "
                f"shape (n, n_outputs); on (2, {self.n_states}) it returned shape "
                f"{output.shape}."
            )
        if not numpy.all(numpy.isfinite(output)):
            raise ValueError("function returned non-finite values on finite states.")
        self._set_noise(noise_scale, None, output.shape[1])

    def mean(self, x):
        """Noiseless observations ``h(x)``, shape (n, n_outputs).

        Raises a ValueError naming ``function`` if it returns another shape (a
        function may pass the check in ``__init__`` and fail on other inputs).
        """
        output = self.function(x)
        expected = (*numpy.shape(x)[:-1], self.n_outputs)
        if numpy.shape(output) != expected:
            raise ValueError(
                "function must map states of shape (n, n_states) to observations of "
                f"shape (n, n_outputs); on {numpy.shape(x)} it returned shape "
                f"{numpy.shape(output)} instead of {expected}."
            )
        return output
