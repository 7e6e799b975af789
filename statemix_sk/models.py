"""State-space models with known densities, observation models, the Kalman filter.

The model protocol
------------------
Anything with these members can be filtered by :func:`statemix_sk.filtering.\
particle_filter` and simulated by :func:`simulate` (write your own model against it;
nothing needs to inherit from a class here). Arrays of states have one row per
particle, shape (n, n_states); functions on them use ``autograd.numpy`` so that a
learned model can be differentiated.

``n_states`` : int
    The state dimension.
``observation`` : observation model
    See below.
``initial_mean``, ``initial_scale`` : ndarray of shape (n_states,)
    The filters' initial distribution ``x_0 ~ N(initial_mean, diag(initial_scale**2))``.
``sample_initial(n, rng)`` -> (n, n_states)
    Draws from that initial distribution.
``sample_transition(x_prev, rng)`` -> (n, n_states)
    One draw of ``x_t`` from ``f(. | x_prev[i])`` per row.
``transition_log_density(x, x_prev)`` -> (n,)
    ``log f(x[i] | x_prev[i])``.
``transition_mean(x_prev)`` -> (n, n_states)
    ``E[x_t | x_prev[i]]`` (used by the auxiliary filters).
``sample_simulation_start(n, rng)`` -> (n, n_states), optional
    Where simulated true series start, if not from the initial distribution (Lorenz
    96 starts on the attractor while its filters start from the climatology).
``process_noise`` : ndarray of shape (n_states,), optional
    A *declaration*: the transition is ``N(transition_mean(x_prev),
    diag(process_noise**2))``. The improved auxiliary filter then computes its
    pairwise densities by matrix products, and the locally optimal filter applies.
    Do not define it for any other transition noise.

An observation model has ``n_states``, ``n_outputs``, ``noise_scale`` (the standard
deviation of each output's noise, shape (n_outputs,)), ``mean(x)`` (the noiseless
observation ``h(x)``, (n, n_outputs)), ``log_density(x, y)`` (``log g(y | x[i])``,
(n,), where NaN entries of ``y`` are missing and left out) and ``sample(x, rng)``.

Every ``*_noise`` or ``*_scale`` argument is a standard deviation, a scalar or one
per component; full matrices are called ``*_covariance``.
"""

from typing import NamedTuple, Protocol

import autograd.numpy as np
import numpy
import scipy.linalg
from autograd.extend import defvjp, primitive

from ._utils import (
    MAX_MAGNITUDE,
    as_generator,
    check_magnitude,
    check_observations,
    check_positive_int,
    check_scale,
)

__all__ = [
    "GaussianObservation",
    "GaussianTransitionModel",
    "KalmanResult",
    "KalmanSmootherResult",
    "KuramotoModel",
    "LinearGaussianModel",
    "LinearGaussianObservation",
    "Lorenz96Model",
    "StateSpaceModel",
    "kalman_filter",
    "kalman_smoother",
    "phase_observation",
    "simulate",
]

_LOG_2PI = numpy.log(2.0 * numpy.pi)


class StateSpaceModel(Protocol):
    """The members a model needs (see the module docstring); for type checkers."""

    n_states: int
    observation: object
    initial_mean: numpy.ndarray
    initial_scale: numpy.ndarray

    def sample_initial(self, n, rng): ...  # noqa: D102

    def sample_transition(self, x_prev, rng): ...  # noqa: D102

    def transition_log_density(self, x, x_prev): ...  # noqa: D102

    def transition_mean(self, x_prev): ...  # noqa: D102


# --------------------------------------------------------------------------------------
# Observation models
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# State-space models
# --------------------------------------------------------------------------------------


def simulate(model, n_steps, n_sequences=None, random_state=None):
    """Simulate series from any model that follows the protocol.

    Parameters
    ----------
    model : state-space model
    n_steps : int
        Time steps per series (``x_1 .. x_T``; ``x_0`` is not returned).
    n_sequences : int, default=None
        None returns one series as 2-D arrays; an int returns 3-D arrays.
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    Y : ndarray of shape (n_steps, n_outputs) or (n_sequences, n_steps, n_outputs)
        Observations.
    X : ndarray of shape (n_steps, n_states) or (n_sequences, n_steps, n_states)
        True states.
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    n_series = (
        1 if n_sequences is None else check_positive_int(n_sequences, "n_sequences")
    )
    rng = as_generator(random_state)
    start = getattr(model, "sample_simulation_start", model.sample_initial)
    x = numpy.asarray(start(n_series, rng))
    states, observations = [], []
    for _ in range(n_steps):
        x = numpy.asarray(model.sample_transition(x, rng))
        states.append(x)
        observations.append(numpy.asarray(model.observation.sample(x, rng)))
    X = numpy.stack(states, axis=1)
    Y = numpy.stack(observations, axis=1)
    if n_sequences is None:
        return Y[0], X[0]
    return Y, X


class GaussianTransitionModel:
    """A model whose transition is Gaussian around a known map.

    ``x_t = transition_mean(x_{t-1}) + w``, ``w ~ N(0, diag(process_noise**2))``.
    Subclasses define :meth:`transition_mean`.

    Parameters
    ----------
    n_states : int
    observation : observation model
    process_noise : float or array-like of shape (n_states,)
        Standard deviation(s) of ``w``.
    initial_mean : float or array-like of shape (n_states,)
    initial_scale : float or array-like of shape (n_states,)
        Standard deviation(s) of the initial distribution.
    """

    def __init__(
        self, n_states, observation, process_noise, initial_mean, initial_scale
    ):
        self.n_states = check_positive_int(n_states, "n_states")
        if getattr(observation, "n_states", self.n_states) != self.n_states:
            raise ValueError(
                f"observation is for {observation.n_states} states but the model has "
                f"{self.n_states}."
            )
        self.observation = observation
        self.process_noise = check_scale(process_noise, "process_noise", n_states)
        initial_mean = numpy.asarray(initial_mean, dtype=float)
        if initial_mean.ndim > 1 or not numpy.all(numpy.isfinite(initial_mean)):
            raise ValueError("initial_mean must be a finite scalar or vector.")
        if initial_mean.ndim == 1 and initial_mean.shape[0] != n_states:
            raise ValueError(
                f"initial_mean has {initial_mean.shape[0]} entries, but n_states is "
                f"{n_states}."
            )
        self.initial_mean = numpy.broadcast_to(initial_mean, (n_states,)).copy()
        self.initial_scale = check_scale(initial_scale, "initial_scale", n_states)

    @property
    def process_covariance(self):
        """The transition noise covariance, ``diag(process_noise**2)``."""
        return numpy.diag(self.process_noise**2)

    def transition_mean(self, x_prev):
        """``E[x_t | x_prev]`` for each row; shape (n, n_states)."""
        raise NotImplementedError

    def sample_initial(self, n, rng):
        """Draw ``n`` initial states, shape (n, n_states)."""
        return self.initial_mean + self.initial_scale * rng.standard_normal(
            (n, self.n_states)
        )

    def sample_transition(self, x_prev, rng):
        """Draw ``x_t`` for each row of ``x_prev`` (reparameterised)."""
        noise = rng.standard_normal(numpy.shape(x_prev))
        return self.transition_mean(x_prev) + self.process_noise * noise

    def transition_log_density(self, x, x_prev):
        """``log f(x[i] | x_prev[i])``, shape (n,)."""
        z = (x - self.transition_mean(x_prev)) / self.process_noise
        return (
            -0.5 * np.sum(z**2, axis=-1)
            - numpy.sum(numpy.log(self.process_noise))
            - 0.5 * self.n_states * _LOG_2PI
        )

    def simulate(self, n_steps, n_sequences=None, random_state=None):
        """Simulate series from this model; see :func:`simulate`."""
        return simulate(self, n_steps, n_sequences, random_state)


def _rk4(drift, x, dt, n_substeps):
    """Integrate ``dx/dt = drift(x)`` over ``dt`` with ``n_substeps`` RK4 steps."""
    h = dt / n_substeps
    for _ in range(n_substeps):
        k1 = drift(x)
        k2 = drift(x + 0.5 * h * k1)
        k3 = drift(x + 0.5 * h * k2)
        k4 = drift(x + h * k3)
        x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x


class LinearGaussianModel(GaussianTransitionModel):
    """``x_t = A x_{t-1} + w``, with a linear-Gaussian observation.

    Parameters
    ----------
    transition_matrix : array-like of shape (n_states, n_states)
        ``A``.
    process_noise : float or array-like of shape (n_states,)
    observation : LinearGaussianObservation
    initial_mean : float or array-like, default=0.0
    initial_scale : float or array-like, default=1.0

    Examples
    --------
    >>> model = LinearGaussianModel(
    ...     numpy.eye(2) * 0.9, 0.3, LinearGaussianObservation(noise_scale=[0.7, 0.7]))
    >>> Y, X = model.simulate(5, random_state=0)
    >>> Y.shape, X.shape
    ((5, 2), (5, 2))
    """

    def __init__(
        self,
        transition_matrix,
        process_noise,
        observation,
        initial_mean=0.0,
        initial_scale=1.0,
    ):
        matrix = numpy.asarray(transition_matrix, dtype=float)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
            raise ValueError(
                f"transition_matrix must be square, got shape {matrix.shape}."
            )
        if not numpy.all(numpy.isfinite(matrix)):
            raise ValueError("transition_matrix must be finite.")
        if not isinstance(observation, LinearGaussianObservation):
            raise ValueError(
                "observation must be a LinearGaussianObservation for a "
                f"LinearGaussianModel, got {type(observation).__name__}."
            )
        self.transition_matrix = matrix
        super().__init__(
            matrix.shape[0], observation, process_noise, initial_mean, initial_scale
        )

    def transition_mean(self, x_prev):
        """``x_prev @ A.T``."""
        return np.dot(x_prev, self.transition_matrix.T)


class Lorenz96Model(GaussianTransitionModel):
    """Stochastic Lorenz 96: an RK4 step of the ODE, then Gaussian noise.

    ``dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + forcing`` (indices cyclic),
    integrated over ``dt`` with ``n_substeps`` RK4 sub-steps; then
    ``N(0, process_noise**2 I)`` is added.

    Parameters
    ----------
    n_states : int, default=10
    forcing : float, default=8.0
    dt : float, default=0.05
    n_substeps : int, default=5
    process_noise : float or array-like, default=0.5
    observation : observation model, default=None
        None observes every component with noise standard deviation 0.5.
    initial_mean : float or array-like, default=2.2
    initial_scale : float or array-like, default=3.9
        The filters' prior: the climatology of the attractor.
    burn_in : int, default=200
        Steps a simulated true series runs from a draw of the prior before its
        ``x_0``, so that it starts on the attractor.
    """

    def __init__(
        self,
        n_states=10,
        *,
        forcing=8.0,
        dt=0.05,
        n_substeps=5,
        process_noise=0.5,
        observation=None,
        initial_mean=2.2,
        initial_scale=3.9,
        burn_in=200,
    ):
        n_states = check_positive_int(n_states, "n_states", minimum=4)
        if observation is None:
            observation = LinearGaussianObservation(noise_scale=0.5, n_states=n_states)
        self.forcing = float(forcing)
        self.dt = check_scale(dt, "dt", 1)[0]
        self.n_substeps = check_positive_int(n_substeps, "n_substeps")
        self.burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
        super().__init__(
            n_states, observation, process_noise, initial_mean, initial_scale
        )

    def _drift(self, x):
        return (
            (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1)) * np.roll(x, 1, axis=-1)
            - x
            + self.forcing
        )

    def transition_mean(self, x_prev):
        """Integrate the ODE over one step with RK4: the noiseless part."""
        return _rk4(self._drift, x_prev, self.dt, self.n_substeps)

    def sample_simulation_start(self, n, rng):
        """Draw true ``x_0``: ``burn_in`` stochastic steps from a prior draw."""
        x = self.sample_initial(n, rng)
        for _ in range(self.burn_in):
            x = self.sample_transition(x, rng)
        return x


class KuramotoModel(GaussianTransitionModel):
    """Kuramoto oscillators with unwrapped phases and sin/cos observations.

    ``dtheta_i/dt = omega_i + (coupling / n) sum_j sin(theta_j - theta_i)``,
    integrated over ``dt`` with ``n_substeps`` RK4 sub-steps, then
    ``N(0, process_noise**2 I)`` is added. Observed through
    ``[sin(theta), cos(theta)] + N(0, 0.5**2 I)`` by default.

    Parameters
    ----------
    natural_frequencies : array-like of shape (n_states,)
        ``omega``; :func:`statemix_sk.datasets.make_kuramoto` draws them from
        ``N(0, 0.5**2)``.
    coupling : float, default=1.5
    dt : float, default=0.1
    n_substeps : int, default=4
    process_noise : float or array-like, default=0.05
    observation : observation model, default=None
        None means :func:`phase_observation` with noise standard deviation 0.5.
    initial_mean : float or array-like, default=0.0
    initial_scale : float or array-like, default=1.0
    """

    def __init__(
        self,
        natural_frequencies,
        *,
        coupling=1.5,
        dt=0.1,
        n_substeps=4,
        process_noise=0.05,
        observation=None,
        initial_mean=0.0,
        initial_scale=1.0,
    ):
        omega = numpy.asarray(natural_frequencies, dtype=float)
        if omega.ndim != 1 or omega.size < 2 or not numpy.all(numpy.isfinite(omega)):
            raise ValueError(
                "natural_frequencies must be a finite vector with at least 2 entries."
            )
        n_states = omega.size
        if observation is None:
            observation = GaussianObservation(phase_observation, n_states, 0.5)
        self.natural_frequencies = omega
        self.coupling = float(coupling)
        self.dt = check_scale(dt, "dt", 1)[0]
        self.n_substeps = check_positive_int(n_substeps, "n_substeps")
        super().__init__(
            n_states, observation, process_noise, initial_mean, initial_scale
        )

    def _drift(self, theta):
        # sum_j sin(theta_j - theta_i) = cos(theta_i) S - sin(theta_i) C, with
        # S = sum_j sin(theta_j) and C = sum_j cos(theta_j): O(n) instead of O(n^2).
        sin, cos = np.sin(theta), np.cos(theta)
        total_sin = np.sum(sin, axis=-1, keepdims=True)
        total_cos = np.sum(cos, axis=-1, keepdims=True)
        return self.natural_frequencies + (self.coupling / self.n_states) * (
            cos * total_sin - sin * total_cos
        )

    def transition_mean(self, x_prev):
        """Integrate the ODE over one step with RK4: the noiseless part."""
        return _rk4(self._drift, x_prev, self.dt, self.n_substeps)


# --------------------------------------------------------------------------------------
# The exact Kalman filter
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
