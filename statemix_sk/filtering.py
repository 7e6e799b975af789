"""THE particle-filter loop, differentiable with autograd.

One loop serves every filter in statemix-sk: the bootstrap filter, the learned
Gaussian-mixture proposal of StateMixNN, and the auxiliary filters. They differ only
in the *proposal* object handed to :func:`particle_filter`, which supplies

``first_stage_log_weights(model, particles, log_weights, y)`` -> (N,) or None
    The auxiliary weights ``log eta`` of the previous particles (None: all 1, as in
    the bootstrap and learned filters). A filter with first-stage weights always
    resamples.
``propose(model, x_prev, y, rng, context)`` -> ``(x, log_ratio)``
    New particles ``x`` (N, n_states), one per row of ``x_prev`` (the previous
    particles already picked by the ancestors), and ``log f(x | .) - log q(x | .)``
    per particle (None when ``q = f``, which saves computing two equal densities).
    ``context`` is a :class:`PreviousCloud` with the whole previous cloud, for
    proposals and weights that use it (the improved auxiliary filter's do).

At step ``t`` with particles ``x_{t-1}`` and normalised log-weights ``log W``:

- resample when ``ESS/N <= ess_threshold`` or when the proposal has first-stage
  weights: ``v = W eta``, ancestors ``a ~ v / sum(v)``; each new particle carries
  ``log sum(v) - log N - log eta_a``;
- otherwise ``a`` is the identity and each particle carries ``log W``;
- ``log w = carried + log g(y | x) + log f - log q``; the log-likelihood increment
  is ``logsumexp(log w)`` and ``log W_t = log w - increment``.

**Stop-gradient resampling** (Scibior and Wood, 2021): after resampling, particle
``n`` also carries ``log vbar_a - stop_gradient(log vbar_a)`` (``vbar = v / sum v``).
Its value is exactly zero, so the forward pass is an ordinary particle filter, but
its gradient is the score of the ancestor choice, which the resampling would
otherwise cut. ``stop_gradient`` is :func:`autograd.tracer.getval`. The estimator
of the gradient this gives is not unbiased over many steps, and the discrete
mixture-component choice gives a proposal's mixture weights only the gradient of
the density terms.

**Missing observations**: NaN entries of ``y`` are missing. The observation density
uses the observed entries only (none: no term at all), and at any step with a NaN
the proposal is not used: the transition is (a bootstrap step).

Everything is in the log domain. Random draws and ancestor indices are constants
for autograd; the reported summaries (means, scales, ESS) are computed from the
values, outside the trace.
"""

from typing import NamedTuple

import autograd.numpy as np
import numpy
from autograd.scipy.special import logsumexp
from autograd.tracer import getval

from ._utils import (
    as_generator,
    check_observations,
    check_positive_int,
    ess_from_log_weights,
)
from .resampling import get_resampling_scheme, should_resample

__all__ = ["BootstrapProposal", "FilterResult", "PreviousCloud", "particle_filter"]


class PreviousCloud(NamedTuple):
    """The previous step's particle system, handed to a proposal."""

    particles: object
    """(N, n_states): ``x_{t-1}``, before resampling."""
    log_weights: object
    """(N,): normalised ``log W_{t-1}``."""
    ancestors: numpy.ndarray
    """(N,): the index in ``particles`` of each new particle's parent."""
    first_stage_log_weights: object
    """(N,) or None: the ``log eta`` of ``particles``."""


class FilterResult(NamedTuple):
    """What :func:`particle_filter` returns.

    ``log_likelihood`` and ``log_likelihood_increments`` are differentiable (traced
    when the parameters are); the rest are plain arrays.
    """

    log_likelihood: object
    """The estimate of ``log p(y_1:T)``, the sum of the increments."""
    log_likelihood_increments: object
    """(n_steps,): the estimates of ``log p(y_t | y_1:t-1)``."""
    filtered_means: numpy.ndarray
    """(n_steps, n_states): weighted particle means, estimates of ``E[x_t | y_1:t]``."""
    filtered_scales: numpy.ndarray
    """(n_steps, n_states): weighted particle standard deviations."""
    ess: numpy.ndarray
    """(n_steps,): effective sample size of the weights after step ``t``."""
    resampled: numpy.ndarray
    """(n_steps,) of bool: whether step ``t`` resampled."""
    particles: numpy.ndarray | None = None
    """(n_steps, N, n_states), with ``return_particles=True``."""
    log_weights: numpy.ndarray | None = None
    """(n_steps, N): normalised log-weights, with ``return_particles=True``."""
    ancestors: numpy.ndarray | None = None
    """(n_steps, N): parents' indices (identity where not resampled)."""
    resampling_log_weights: numpy.ndarray | None = None
    """(n_steps, N): the stop-gradient values ``log vbar_a`` (0 where not resampled)."""


class BootstrapProposal:
    """Propose from the model's transition (``q = f``): the bootstrap filter."""

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """None: no auxiliary weights."""
        return None

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``f(. | x_prev)``; the ratio ``f / q`` is 1 (returned as None)."""
        return model.sample_transition(x_prev, rng), None

    def __repr__(self):  # noqa: D105
        return "BootstrapProposal()"


_BOOTSTRAP = BootstrapProposal()


def _check_frozen(frozen, n_steps, n_particles):
    """Check that a frozen run is a full FilterResult of the same size."""
    if frozen.ancestors is None or frozen.resampling_log_weights is None:
        raise ValueError(
            "frozen must be a FilterResult computed with return_particles=True."
        )
    if frozen.ancestors.shape != (n_steps, n_particles):
        raise ValueError(
            f"frozen has ancestors of shape {frozen.ancestors.shape}, but this run "
            f"needs ({n_steps}, {n_particles})."
        )


def particle_filter(
    Y,
    model,
    proposal=None,
    *,
    n_particles=100,
    resampling="systematic",
    ess_threshold=1.0,
    random_state=None,
    return_particles=False,
    frozen=None,
):
    """Run a particle filter over one series.

    Parameters
    ----------
    Y : array-like of shape (n_steps, n_outputs)
        One series of observations, time down the rows; NaN entries are missing.
    model : state-space model
        See :mod:`statemix_sk.models` for the protocol: the transition ``f``, the
        observation ``g`` and the initial distribution.
    proposal : object, default=None
        See the module docstring; None is the bootstrap filter.
    n_particles : int, default=100
    resampling : {"systematic", "stratified", "multinomial", "residual"}, \
default="systematic"
    ess_threshold : float in [0, 1], default=1.0
        Resample when ``ESS / N <= ess_threshold``: 1 resamples at every step, 0
        never (unless the proposal has first-stage weights).
    random_state : None, int or numpy.random.Generator
    return_particles : bool, default=False
        Also return particles, log-weights, ancestors and the stop-gradient values
        at every step.
    frozen : FilterResult, default=None
        A previous result with particles. Its resampling decisions, ancestors and
        stop-gradient values are reused instead of drawn: the filter becomes a
        smooth function of the model's parameters, whose finite differences check
        the gradient (the "frozen surrogate").

    Returns
    -------
    result : FilterResult

    Examples
    --------
    >>> from statemix_sk.datasets import make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(20, random_state=0)
    >>> result = particle_filter(Y, model, n_particles=200, random_state=0)
    >>> result.filtered_means.shape
    (20, 4)
    """
    Y = check_observations(Y, "Y", n_features=model.observation.n_outputs)
    n_particles = check_positive_int(n_particles, "n_particles")
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}.")
    scheme = get_resampling_scheme(resampling)
    rng = as_generator(random_state)
    proposal = _BOOTSTRAP if proposal is None else proposal
    n_steps = Y.shape[0]
    if frozen is not None:
        _check_frozen(frozen, n_steps, n_particles)
    log_n = numpy.log(n_particles)
    identity = numpy.arange(n_particles)

    particles = model.sample_initial(n_particles, rng)
    log_weights = numpy.full(n_particles, -log_n)
    increments, means, scales, ess, resampled = [], [], [], [], []
    history = {"particles": [], "log_weights": [], "ancestors": [], "reference": []}
    for t, y in enumerate(Y):
        observed = ~numpy.isnan(y)
        step_proposal = proposal if observed.all() else _BOOTSTRAP
        log_eta = step_proposal.first_stage_log_weights(
            model, particles, log_weights, y
        )
        if frozen is not None:
            resample = bool(frozen.resampled[t])
        else:
            resample = log_eta is not None or should_resample(
                getval(log_weights), ess_threshold
            )
        if resample:
            if log_eta is None:
                # W is normalised, so v = W needs no renormalising: sum(v) = 1.
                log_resampling = log_weights
                log_carried = -log_n
            else:
                log_v = log_weights + log_eta
                log_total = logsumexp(log_v)
                log_resampling = log_v - log_total
                log_carried = log_total - log_n
            ancestors = scheme(numpy.exp(getval(log_resampling)), rng)
            reference = getval(log_resampling)[ancestors]
            if frozen is not None:
                # Drawn above all the same, so that the proposals' random numbers
                # stay those of the frozen run.
                ancestors = frozen.ancestors[t]
                reference = frozen.resampling_log_weights[t]
            # Zero in value; its gradient is the score of the ancestor choice.
            log_carried = log_carried + (log_resampling[ancestors] - reference)
            if log_eta is not None:
                log_carried = log_carried - log_eta[ancestors]
            x_prev = particles[ancestors]
        else:
            ancestors, reference = identity, numpy.zeros(n_particles)
            log_carried, x_prev = log_weights, particles
        context = PreviousCloud(particles, log_weights, ancestors, log_eta)
        particles, log_ratio = step_proposal.propose(model, x_prev, y, rng, context)
        log_w = log_carried if log_ratio is None else log_carried + log_ratio
        if observed.any():
            log_w = log_w + model.observation.log_density(particles, y)
        increment = logsumexp(log_w)
        log_weights = log_w - increment

        increments.append(increment)
        weight_values = numpy.exp(getval(log_weights))
        particle_values = getval(particles)
        mean = weight_values @ particle_values
        means.append(mean)
        scales.append(numpy.sqrt(weight_values @ (particle_values - mean) ** 2))
        ess.append(ess_from_log_weights(getval(log_weights)))
        resampled.append(resample)
        if return_particles:
            history["particles"].append(particle_values)
            history["log_weights"].append(getval(log_weights))
            history["ancestors"].append(ancestors)
            history["reference"].append(reference)

    increments = np.stack(increments)
    stacked = {key: numpy.array(value) for key, value in history.items()}
    return FilterResult(
        log_likelihood=np.sum(increments),
        log_likelihood_increments=increments,
        filtered_means=numpy.array(means),
        filtered_scales=numpy.array(scales),
        ess=numpy.array(ess),
        resampled=numpy.array(resampled),
        particles=stacked["particles"] if return_particles else None,
        log_weights=stacked["log_weights"] if return_particles else None,
        ancestors=stacked["ancestors"] if return_particles else None,
        resampling_log_weights=stacked["reference"] if return_particles else None,
    )
