"""The experiments' data: a true model drawn from a seed, and series simulated from it.

Each ``make_*`` function returns ``(Y, X, model)``: the observations, the true
states (``x_1 .. x_T``, aligned with the rows of ``Y``) and the true model, which
carries its observation model and the initial distribution every filter starts
from, so that callers never re-type a noise level. ``model.simulate`` draws more
series from the same model (held-out test series, say).

The defaults are the definitions in the project's method notes (section 4); the
paper's own constants are not known to us.
"""

import numpy

from ._utils import as_generator, check_positive_int
from .models import KuramotoModel, LinearGaussianModel, Lorenz96Model
from .observations import (
    GaussianObservation,
    LinearGaussianObservation,
    phase_observation,
)

__all__ = ["make_kuramoto", "make_linear_gaussian", "make_lorenz96"]


def _random_orthogonal(n, rng):
    """Draw a Haar-distributed orthogonal matrix (QR of a Gaussian, signs fixed)."""
    q, r = numpy.linalg.qr(rng.standard_normal((n, n)))
    return q * numpy.sign(numpy.diag(r))


def make_linear_gaussian(
    n_steps=100,
    n_sequences=None,
    *,
    n_states=4,
    spectral_radius=0.95,
    process_noise=0.3,
    observation_noise=0.7,
    random_state=None,
):
    """Linear-Gaussian series, where the Kalman filter is exact.

    ``x_t = A x_{t-1} + N(0, process_noise**2 I)`` with ``A`` a random orthogonal
    matrix times ``spectral_radius``; ``y_t = x_t + N(0, observation_noise**2 I)``;
    ``x_0 ~ N(0, I)``.

    Parameters
    ----------
    n_steps : int, default=100
    n_sequences : int, default=None
        None returns one series (2-D arrays); an int that many (3-D arrays).
    n_states : int, default=4
    spectral_radius : float, default=0.95
    process_noise : float, default=0.3
    observation_noise : float, default=0.7
    random_state : None, int or numpy.random.Generator
        Draws ``A`` first, then the series.

    Returns
    -------
    Y : ndarray of shape (n_steps, n_states) or (n_sequences, n_steps, n_states)
    X : ndarray, same shape as ``Y``
    model : LinearGaussianModel

    Examples
    --------
    >>> Y, X, model = make_linear_gaussian(50, random_state=0)
    >>> Y.shape, X.shape, model.n_states
    ((50, 4), (50, 4), 4)
    """
    rng = as_generator(random_state)
    n_states = check_positive_int(n_states, "n_states")
    matrix = spectral_radius * _random_orthogonal(n_states, rng)
    model = LinearGaussianModel(
        matrix,
        process_noise,
        LinearGaussianObservation(noise_scale=observation_noise, n_states=n_states),
        initial_mean=0.0,
        initial_scale=1.0,
    )
    Y, X = model.simulate(n_steps, n_sequences, rng)
    return Y, X, model


def make_lorenz96(
    n_steps=100,
    n_sequences=None,
    *,
    n_states=10,
    forcing=8.0,
    process_noise=0.5,
    observation_noise=0.5,
    observed=None,
    random_state=None,
):
    """Stochastic Lorenz 96 series, observed with Gaussian noise.

    Each step integrates the ODE over ``dt = 0.05`` with 5 RK4 sub-steps and adds
    ``N(0, process_noise**2 I)``. The true ``x_0`` comes from a 200-step burn-in (on
    the attractor); filters start from the climatological prior ``N(2.2, 3.9**2 I)``.

    Parameters
    ----------
    n_steps : int, default=100
    n_sequences : int, default=None
    n_states : int, default=10
    forcing : float, default=8.0
    process_noise : float, default=0.5
    observation_noise : float, default=0.5
    observed : array-like of int, default=None
        Indices of the observed components; None observes all of them.
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    Y : ndarray of shape (n_steps, n_observed) or (n_sequences, n_steps, n_observed)
    X : ndarray of shape (n_steps, n_states) or (n_sequences, n_steps, n_states)
    model : Lorenz96Model

    Examples
    --------
    >>> Y, X, model = make_lorenz96(20, n_sequences=2, random_state=0)
    >>> Y.shape
    (2, 20, 10)
    """
    rng = as_generator(random_state)
    n_states = check_positive_int(n_states, "n_states", minimum=4)
    matrix = None
    if observed is not None:
        index = numpy.asarray(observed)
        if (
            index.ndim != 1
            or index.size == 0
            or index.dtype.kind not in "iu"
            or index.min() < 0
            or index.max() >= n_states
            or numpy.unique(index).size != index.size
        ):
            raise ValueError(
                f"observed must be distinct component indices in [0, {n_states}), "
                f"got {observed!r}."
            )
        matrix = numpy.eye(n_states)[index]
    observation = LinearGaussianObservation(
        matrix, noise_scale=observation_noise, n_states=n_states
    )
    model = Lorenz96Model(
        n_states, forcing=forcing, process_noise=process_noise, observation=observation
    )
    Y, X = model.simulate(n_steps, n_sequences, rng)
    return Y, X, model


def make_kuramoto(
    n_steps=100,
    n_sequences=None,
    *,
    n_oscillators=6,
    coupling=1.5,
    frequency_scale=0.5,
    process_noise=0.05,
    observation_noise=0.5,
    random_state=None,
):
    """Kuramoto oscillators observed through noisy ``[sin(theta), cos(theta)]``.

    The natural frequencies are drawn once per model from
    ``N(0, frequency_scale**2)``; every series of one call (and of
    ``model.simulate``) shares them. Each step integrates ``dt = 0.1`` with 4 RK4
    sub-steps and adds ``N(0, process_noise**2 I)``; ``theta_0 ~ N(0, I)``. States
    are unwrapped phases.

    Parameters
    ----------
    n_steps : int, default=100
    n_sequences : int, default=None
    n_oscillators : int, default=6
    coupling : float, default=1.5
    frequency_scale : float, default=0.5
    process_noise : float, default=0.05
    observation_noise : float, default=0.5
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    Y : ndarray of shape (n_steps, 2 * n_oscillators) or (n_sequences, ...)
    X : ndarray of shape (n_steps, n_oscillators) or (n_sequences, ...)
    model : KuramotoModel

    Examples
    --------
    >>> Y, X, model = make_kuramoto(30, random_state=0)
    >>> Y.shape, X.shape
    ((30, 12), (30, 6))
    """
    rng = as_generator(random_state)
    n_oscillators = check_positive_int(n_oscillators, "n_oscillators", minimum=2)
    omega = frequency_scale * rng.standard_normal(n_oscillators)
    model = KuramotoModel(
        omega,
        coupling=coupling,
        process_noise=process_noise,
        observation=GaussianObservation(
            phase_observation, n_oscillators, observation_noise
        ),
    )
    Y, X = model.simulate(n_steps, n_sequences, rng)
    return Y, X, model
