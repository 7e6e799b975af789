"""State-space models with known densities: the protocol, Lorenz 96, Kuramoto.

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
(n,), where NaN entries of ``y`` are missing and left out) and ``sample(x, rng)``;
:mod:`statemix_sk.observations` has two.

Every ``*_noise`` or ``*_scale`` argument is a standard deviation, a scalar or one
per component; full matrices are called ``*_covariance``. The exact Kalman filter of
the linear-Gaussian model is in :mod:`statemix_sk.kalman`.
"""

import functools
from typing import Protocol

import autograd.numpy as np
import numpy
from autograd.tracer import isbox

from ._utils import (
    as_generator,
    check_positive_int,
    check_scale,
    moved_names,
)
from .observations import (
    GaussianObservation,
    LinearGaussianObservation,
    phase_observation,
)

__all__ = [
    "GaussianTransitionModel",
    "KuramotoModel",
    "LinearGaussianModel",
    "Lorenz96Model",
    "StateSpaceModel",
    "simulate",
]

_LOG_2PI = numpy.log(2.0 * numpy.pi)

# Moved in issue 16; the old paths warn (FutureWarning) and will go.
__getattr__ = moved_names(
    "models",
    {
        "KalmanResult": "kalman",
        "KalmanSmootherResult": "kalman",
        "kalman_filter": "kalman",
        "kalman_smoother": "kalman",
    },
)


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


_BLOCK_ROWS = 8192
"""Rows that Lorenz 96's integration handles at once (10 states: 640 KiB a
temporary); measured on a 2-core x86_64: 1.4 us per row at 100,000 rows in
blocks of 8192, 2.7 us in one block, 1.2 to 1.5 at 10,000 rows."""


@functools.cache
def _neighbours(n_states):
    """Return where ``x_{i+1}``, ``x_{i-2}``, ``x_{i-1}`` are (cyclic, Lorenz 96)."""
    coordinates = numpy.arange(n_states)
    return tuple((coordinates + shift) % n_states for shift in (1, -2, -1))


def _rk4(drift, x, dt, n_substeps):
    """Integrate ``dx/dt = drift(x)`` over ``dt`` with ``n_substeps`` RK4 steps."""
    h = dt / n_substeps
    if not isbox(x):
        return _rk4_values(drift, numpy.asarray(x, dtype=float), h, n_substeps)
    for _ in range(n_substeps):
        k1 = drift(x)
        k2 = drift(x + 0.5 * h * k1)
        k3 = drift(x + 0.5 * h * k2)
        k4 = drift(x + h * k3)
        x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x


def _rk4_values(drift, x, h, n_substeps):
    """:func:`_rk4` on values: the same operations, in place where they can be.

    Additions and products commute bit for bit, so ``t = k * c; t += x`` is
    ``x + c * k``; the sum of the slopes keeps its order.
    """
    for _ in range(n_substeps):
        k1 = drift(x)
        stage = k1 * (0.5 * h)
        stage += x
        k2 = drift(stage)
        numpy.multiply(k2, 0.5 * h, out=stage)
        stage += x
        k3 = drift(stage)
        numpy.multiply(k3, h, out=stage)
        stage += x
        k4 = drift(stage)
        # k1 + 2 k2 + 2 k3 + k4, added left to right.
        k2 *= 2.0
        k2 += k1
        k3 *= 2.0
        k2 += k3
        k2 += k4
        k2 *= h / 6.0
        k2 += x
        x = k2
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
        if isbox(x):
            return (
                (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1))
                * np.roll(x, 1, axis=-1)
                - x
                + self.forcing
            )
        # The same operations on values, with the neighbours gathered by index
        # (numpy.roll costs about ten times a gather on small arrays, and RK4
        # calls this 20 times per step) and updated in place: the same bits.
        ahead, two_back, back = _neighbours(numpy.shape(x)[-1])
        drift = x[..., ahead]
        drift -= x[..., two_back]
        drift *= x[..., back]
        drift -= x
        drift += self.forcing
        return drift

    def transition_mean(self, x_prev):
        """Integrate the ODE over one step with RK4: the noiseless part."""
        if isbox(x_prev) or numpy.ndim(x_prev) != 2 or len(x_prev) <= _BLOCK_ROWS:
            return _rk4(self._drift, x_prev, self.dt, self.n_substeps)
        # Many rows (many series filtered together): each row integrates on its
        # own, so blocks of rows whose temporaries stay in the cache give the
        # same bits (additions and products only) at less memory traffic.
        x_prev = numpy.asarray(x_prev)
        mean = numpy.empty_like(x_prev, dtype=numpy.result_type(x_prev, float))
        for start in range(0, len(x_prev), _BLOCK_ROWS):
            block = slice(start, start + _BLOCK_ROWS)
            mean[block] = _rk4(self._drift, x_prev[block], self.dt, self.n_substeps)
        return mean

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
