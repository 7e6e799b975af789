"""THE particle-filter loop, differentiable with autograd.

One loop serves every filter in statemix-sk: the bootstrap filter, the learned
Gaussian-mixture proposal of StateMixNN, and the auxiliary filters. They differ only
in the *proposal* object handed to :func:`particle_filter`, which supplies

``first_stage_log_weights(model, particles, log_weights, y)`` -> (n,) or None
    The auxiliary weights ``log eta`` of the previous particles (None: all 1, as in
    the bootstrap and learned filters). A filter with first-stage weights always
    resamples.
``propose(model, x_prev, y, rng, context)`` -> ``(x, log_ratio)``
    New particles ``x`` (n, n_states), one per row of ``x_prev`` (the previous
    particles already picked by the ancestors), and ``log f(x | .) - log q(x | .)``
    per particle (None when ``q = f``, which saves computing two equal densities).
    ``context`` is a :class:`PreviousCloud` with the whole previous cloud, for
    proposals and weights that use it (the improved auxiliary filter's do).
``propose_and_weigh(model, context, y, offsets, rng)`` (optional) -> \
``(x, log_W, increment)`` or None
    The whole step at once where every entry of ``y`` is observed and there are
    no first-stage weights: the new particles, their normalised log-weights
    (B, N) and the increments (B, 1), with the values that ``propose`` and the
    weighing below give. ``offsets`` (B, N) are the constants the carried
    log-weights add to the parents' ``log W`` (see stop-gradient resampling).
    The learned proposal computes it as one autograd primitive
    (:func:`statemix_sk.fused.learned_filter_step`); None falls back to
    ``propose``.

**Several series at once.** ``Y`` may hold ``B`` series of equal length (pad shorter
ones with NaN rows, which contribute nothing). Their particle clouds are stacked
into one array of ``n = B * N`` rows, series after series, and ``y`` is given per row
(shape (n, n_outputs)), so that models, observation models and proposals only ever
see rows; each series is weighted, normalised and resampled on its own. One pass
over ``B`` series costs autograd's per-call overhead once instead of ``B`` times.
The random numbers of a step are drawn for all the rows at once, so a series
filtered in another batch (or in a batch split in parts) gets other draws.

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
uses the observed entries only (none: no term at all). Where a series observes
nothing at a step, the transition is the proposal (a bootstrap step, with no
first-stage weights): with no observation it is the optimal one. Where it observes
some entries, a proposal whose ``handles_missing_entries`` attribute is true is
given ``y_t`` with NaN at the missing entries and uses the observed ones (the
locally optimal and the learned proposals do); any other proposal is replaced by
the transition there too.

Everything is in the log domain. Random draws and ancestor indices are constants
for autograd; the reported summaries (means, scales, ESS) are computed from the
values, outside the trace.

**Cost.** A pass and its gradient take time linear in the number of steps: the
traced increments are joined by one primitive whose VJP hands each step its
slice of the gradient (autograd's ``concatenate`` VJP is quadratic in the number
of pieces). A pass's per-step outputs are written into arrays allocated once,
so that a pass without gradient holds little more than what it returns.
"""

import warnings
from typing import NamedTuple

import autograd.numpy as np
import numpy
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import getval, isbox

from ._utils import (
    as_generator,
    check_observations,
    check_positive_int,
    logsumexp,
)
from .fused import take_rows
from .resampling import get_resampling_scheme, should_resample

__all__ = [
    "BootstrapProposal",
    "DegeneracyWarning",
    "FilterResult",
    "PreviousCloud",
    "particle_filter",
]


class DegeneracyWarning(RuntimeWarning):
    """The weights of a particle filter collapsed onto one or two particles.

    The estimators' ``filter`` method warns with it, once per call, when the
    effective sample size fell below 2 at some step (the ``ess`` field of the
    :class:`FilterResult` says where): the estimates there rest on one or two
    particles. More particles, a better proposal or a look at the data (an
    outlier?) help. Training never warns: there such collapses are routine.
    """


class PreviousCloud(NamedTuple):
    """The previous step's particle system, handed to a proposal."""

    particles: object
    """(B * N, n_states): ``x_{t-1}`` of every series, before resampling."""
    log_weights: object
    """(B, N): normalised ``log W_{t-1}`` of each series."""
    ancestors: numpy.ndarray
    """(B * N,): the row in ``particles`` of each new particle's parent."""
    first_stage_log_weights: object
    """(B * N,) or None: the ``log eta`` of ``particles``."""
    n_series: int
    """``B``, the number of series filtered together."""
    n_steps_left: int | None = None
    """The steps of the pass from this one on, this one included (None: not
    known). The learned proposal sizes what it keeps for the backward pass
    by it."""


class FilterResult(NamedTuple):
    """What :func:`particle_filter` returns.

    For one series (``Y`` 2-D) the shapes are as listed; for ``B`` series (``Y``
    3-D) every field has a leading axis of length ``B`` (``log_likelihood`` has
    shape (B,)). ``log_likelihood`` and ``log_likelihood_increments`` are
    differentiable (traced when the parameters are); the rest are plain arrays.
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
    final_particles: numpy.ndarray | None = None
    """(N, n_states): the particles after the last step (values, not traced): the
    cloud that a later pass can start from (``initial_particles``)."""
    final_log_weights: numpy.ndarray | None = None
    """(N,): their normalised log-weights (``initial_log_weights``)."""


class BootstrapProposal:
    """Propose from the model's transition (``q = f``): the bootstrap filter."""

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """Return None: no auxiliary weights."""
        return None

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``f(. | x_prev)``; the ratio ``f / q`` is 1 (returned as None)."""
        return model.sample_transition(x_prev, rng), None

    def __repr__(self):  # noqa: D105
        return "BootstrapProposal()"


_BOOTSTRAP = BootstrapProposal()


def _check_series(Y, n_outputs):
    """Validate one series (2-D) or several of equal length (3-D); return 3-D."""
    try:
        dimensions = numpy.ndim(Y)
    except (TypeError, ValueError):  # ragged: check_observations says so
        dimensions = None
    if dimensions == 3:
        array = numpy.asarray(Y)
        n_series, n_steps, n_features = array.shape
        if n_series == 0:
            raise ValueError("Y must hold at least one series, got 0.")
        flat = check_observations(
            numpy.reshape(array, (n_series * n_steps, n_features)),
            "Y",
            n_features=n_outputs,
        )
        return flat.reshape(n_series, n_steps, n_features), True
    return check_observations(Y, "Y", n_features=n_outputs)[None], False


def _frozen_arrays(frozen, batched, shape):
    """Return the frozen run's decisions with a series axis, checking their size."""
    if frozen.ancestors is None or frozen.resampling_log_weights is None:
        raise ValueError(
            "frozen must be a FilterResult computed with return_particles=True."
        )
    ancestors = frozen.ancestors if batched else frozen.ancestors[None]
    if ancestors.shape != shape:
        raise ValueError(
            f"frozen has ancestors for {ancestors.shape} (series, steps, particles), "
            f"but this run needs {shape}."
        )
    if batched:
        return frozen.resampled, ancestors, frozen.resampling_log_weights
    return (
        frozen.resampled[None],
        ancestors,
        frozen.resampling_log_weights[None],
    )


def _initial_cloud(particles, log_weights, shape, batched):
    """Check a given starting cloud; return it as (rows, n_states) and (B, N)."""
    n_series, n_particles, n_states = shape
    expected = shape if batched else shape[1:]
    particles = numpy.asarray(particles, dtype=float)
    if particles.shape != expected:
        raise ValueError(
            f"initial_particles must have shape {expected} (series, particles, "
            f"states for several series), got {particles.shape}."
        )
    if not numpy.all(numpy.isfinite(particles)):
        raise ValueError("initial_particles must be finite.")
    if log_weights is None:
        log_weights = numpy.full((n_series, n_particles), -numpy.log(n_particles))
    else:
        log_weights = numpy.asarray(log_weights, dtype=float)
        if log_weights.shape != expected[:-1]:
            raise ValueError(
                f"initial_log_weights must have shape {expected[:-1]}, got "
                f"{log_weights.shape}."
            )
        log_weights = numpy.reshape(log_weights, (n_series, n_particles))
        if numpy.any(numpy.isnan(log_weights)) or numpy.any(log_weights == numpy.inf):
            raise ValueError("initial_log_weights must not be NaN or +inf.")
        # Normalised here, so that a cloud's weights may come unnormalised.
        log_weights = log_weights - logsumexp(log_weights, axis=1, keepdims=True)
        if not numpy.all(numpy.isfinite(log_weights).any(axis=1)):
            raise ValueError("initial_log_weights give a series no weight at all.")
    return numpy.reshape(particles, (n_series * n_particles, n_states)), log_weights


def _record(records, step, t, n_steps):
    """Write step ``t``'s values into ``records``, allocating them at step 0.

    Each record has shape (n_series, n_steps, ...) and the dtype of its first
    value, as ``numpy.stack(values, axis=1)`` of the values would.
    """
    for key, value in step.items():
        value = numpy.asarray(value)
        if t == 0:
            records[key] = numpy.empty(
                (value.shape[0], n_steps, *value.shape[1:]), dtype=value.dtype
            )
        records[key][:, t] = value


@primitive
def _join_columns(*pieces):
    """``numpy.concatenate(pieces, axis=1)``, with a VJP linear in the pieces.

    autograd's own VJP of ``concatenate`` finds each piece's columns by adding
    up the widths of all the pieces before it, once per piece: O(T**2) for the
    T increments of a series, which made the gradient of a long series
    quadratic in its length. Here the offsets are added up once.
    """
    return numpy.concatenate(pieces, axis=1)


def _join_columns_vjp(argnums, result, args, kwargs):
    widths = [numpy.shape(piece)[1] for piece in args]
    stops = numpy.cumsum(widths)
    starts = stops - widths

    def vjp(upstream):
        # Views of the upstream gradient, as autograd's concatenate VJP gives.
        return tuple(upstream[:, starts[i] : stops[i]] for i in argnums)

    return vjp


defvjp_argnums(_join_columns, _join_columns_vjp)


def _joined_increments(values, traced):
    """Return the (n_series, n_steps) increments, traced where the steps were.

    ``values`` holds every step's values; ``traced`` the ``(step, increment)``
    pairs of the steps whose increment autograd traces. Without any, the values
    are the result (no list of steps kept, nothing joined).
    """
    if not traced:
        return values
    pieces = [values[:, t : t + 1] for t in range(values.shape[1])]
    for t, increment in traced:
        pieces[t] = increment
    return _join_columns(*pieces)


class _Step(NamedTuple):
    """Which rows of one step take the proposal, and the observations they see."""

    y_rows: object
    """(B * N, n_outputs): ``y_t`` per row (NaN where missing)."""
    y_proposal: object
    """``y_rows`` with zeros in the rows that take a bootstrap step."""
    proposal: object
    """The proposal of the step (the bootstrap one where no series uses it)."""
    proposal_rows: numpy.ndarray | None
    """(B * N,) of bool: the rows that use ``proposal`` (None: all of them)."""
    uses_proposal: numpy.ndarray
    """(B,) of bool: the series that use ``proposal``."""
    partly_observed: numpy.ndarray
    """(B,) of bool: the series that observe at least one entry."""
    complete: bool
    """Whether every series observes every entry."""


class _Resampled(NamedTuple):
    """The outcome of one step's resampling."""

    resample: numpy.ndarray
    """(B,) of bool: the series that resampled."""
    ancestors: numpy.ndarray
    """(B, N): each new particle's parent within its series."""
    rows: numpy.ndarray
    """(B * N,): the parents' rows in the stacked cloud."""
    reference: numpy.ndarray
    """(B, N): the stop-gradient values ``log vbar_a`` (0 where not resampled)."""
    offsets: numpy.ndarray
    """(B, N): the constant that each new particle's carried log-weight adds to
    its parent's ``log vbar`` (or ``log W``): ``-reference - log N`` where
    resampled, 0 where not."""


def _check_arguments(n_particles, ess_threshold):
    """Check ``n_particles`` (warning at 1) and ``ess_threshold``."""
    n_particles = check_positive_int(n_particles, "n_particles")
    if n_particles == 1:
        warnings.warn(
            "n_particles=1: a particle filter with one particle cannot weight "
            "anything (its normalised weight is always 1, and resampling only "
            "copies it), so its estimates are those of its proposal alone. Use "
            "n_particles=2 or more (in practice 100 or more).",
            UserWarning,
            stacklevel=3,
        )
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}.")
    return n_particles


def _start(model, shape, batched, rng, initial_particles, initial_log_weights):
    """Return the starting cloud: drawn from the model, or the one given."""
    n_series, n_particles = shape
    if initial_particles is None:
        if initial_log_weights is not None:
            raise ValueError(
                "initial_log_weights needs initial_particles: the weights belong "
                "to a given cloud."
            )
        particles = model.sample_initial(n_series * n_particles, rng)
        log_weights = numpy.full((n_series, n_particles), -numpy.log(n_particles))
        return particles, log_weights
    return _initial_cloud(
        initial_particles,
        initial_log_weights,
        (n_series, n_particles, model.n_states),
        batched,
    )


def _step_inputs(y, n_particles, proposal, handles_missing):
    """Return step ``t``'s observations per row and the rows using ``proposal``."""
    # Per step, not for all of Y at once: nothing that grows with the series.
    n_series = y.shape[0]
    observed = ~numpy.isnan(y)
    partly_observed = observed.any(axis=1)
    uses_proposal = partly_observed if handles_missing else observed.all(axis=1)
    if n_series == 1:
        # A read-only view: nothing to copy, and nothing kept on the tape.
        y_rows = numpy.broadcast_to(y[0], (n_series * n_particles, y.shape[1]))
    else:
        y_rows = numpy.repeat(y, n_particles, axis=0)
    if uses_proposal.all():
        step_proposal, proposal_rows = proposal, None
    elif not uses_proposal.any():
        step_proposal, proposal_rows = _BOOTSTRAP, None
    else:
        # Some series miss an entry (or, for a proposal that handles missing
        # entries, all of them): they take a bootstrap step (in _propose); the
        # proposal sees zeros there, so nothing NaN enters the computation.
        step_proposal = proposal
        proposal_rows = numpy.repeat(uses_proposal, n_particles)
    y_proposal = (
        y_rows
        if proposal_rows is None
        else numpy.where(proposal_rows[:, None], y_rows, 0.0)
    )
    return _Step(
        y_rows,
        y_proposal,
        step_proposal,
        proposal_rows,
        uses_proposal,
        partly_observed,
        bool(observed.all()),
    )


def _first_stage(step, model, particles, log_weights):
    """Return the proposal's first-stage log-weights ``log eta``, (B, N) or None."""
    log_eta = step.proposal.first_stage_log_weights(
        model, particles, log_weights, step.y_proposal
    )
    if log_eta is not None:
        log_eta = np.reshape(log_eta, np.shape(log_weights))
        if step.proposal_rows is not None:
            log_eta = np.where(step.uses_proposal[:, None], log_eta, 0.0)
    return log_eta


def _resample(
    log_weights, log_resampling, first_stage, scheme, ess_threshold, rng, frozen_step
):
    """Pick the ancestors (stop-gradient resampling); see the module docstring.

    ``log_resampling`` is ``log vbar`` (:func:`_log_resampling_weights`);
    ``first_stage`` whether the proposal has first-stage weights (it then
    always resamples). ``frozen_step`` is None or the frozen run's
    ``(resampled, ancestors, reference)`` at this step, reused instead of the
    decisions drawn here. All of it is computed on values:
    :func:`_carried_log_weights` traces the weights that the new particles carry.
    """
    n_series, n_particles = numpy.shape(log_weights)
    values = getval(log_weights)
    if frozen_step is not None:
        resample = frozen_step[0]
    elif first_stage:
        resample = numpy.ones(n_series, dtype=bool)
    else:
        resample = numpy.array([should_resample(row, ess_threshold) for row in values])

    resampling_values = getval(log_resampling)
    ancestors = numpy.broadcast_to(
        numpy.arange(n_particles), (n_series, n_particles)
    ).copy()
    for series in numpy.flatnonzero(resample):
        ancestors[series] = scheme(numpy.exp(resampling_values[series]), rng)
    if frozen_step is not None:
        # Drawn above all the same, so that the proposals' random numbers stay
        # those of the frozen run.
        ancestors = frozen_step[1]
    # Row offsets of each series' block, to turn per-series ancestors into rows.
    offsets = (numpy.arange(n_series) * n_particles)[:, None]
    rows = (ancestors + offsets).ravel()
    if frozen_step is not None:
        reference = frozen_step[2]
    else:
        gathered = numpy.reshape(
            resampling_values.ravel()[rows], (n_series, n_particles)
        )
        reference = numpy.where(resample[:, None], gathered, 0.0)
    # A resampled particle carries log vbar_a - stop_gradient(log vbar_a)
    # (zero in value; its gradient is the score of the ancestor choice) plus
    # log sum(v) - log N - log eta_a; one that was not resampled carries log W.
    log_n = numpy.log(n_particles)
    carried_offsets = numpy.where(resample[:, None], -reference - log_n, 0.0)
    return _Resampled(resample, ancestors, rows, reference, carried_offsets)


def _log_resampling_weights(log_weights, log_eta):
    """Return ``log vbar = log(W eta / sum(W eta))`` and ``log sum(W eta)``.

    Without first-stage weights ``vbar = W``, normalised already (the total is
    None). Traced when its arguments are.
    """
    if log_eta is None:
        return log_weights, None
    log_v = log_weights + log_eta
    log_total = logsumexp(log_v, axis=1, keepdims=True)
    return log_v - log_total, log_total


def _carried_log_weights(log_resampling, log_total, log_eta, resampled):
    """Return the log-weight each new particle carries into the step, (B, N)."""
    shape = numpy.shape(log_resampling)
    gathered = np.reshape(
        take_rows(np.reshape(log_resampling, (-1,)), resampled.rows), shape
    )
    log_carried = gathered + resampled.offsets
    if log_eta is not None:
        eta_rows = take_rows(np.reshape(log_eta, (-1,)), resampled.rows)
        log_carried = log_carried + log_total - np.reshape(eta_rows, shape)
    return log_carried


def _propose_and_weigh(
    step, model, particles, log_weights, log_eta, resampled, rng, n_steps_left
):
    """Return the whole step from a proposal that does it at once, or None.

    A proposal may offer ``propose_and_weigh(model, context, y, offsets, rng)``
    (see the module docstring): the fused learned filter computes the step's
    new particles, their normalised log-weights and the increment as one
    autograd primitive, with the same values as :func:`_propose` and
    :func:`_weigh`. It is asked only where the step is the plain case: every
    series complete and using it, no first-stage weights.
    """
    method = getattr(step.proposal, "propose_and_weigh", None)
    if method is None or log_eta is not None or not step.complete:
        return None
    context = PreviousCloud(
        particles,
        log_weights,
        resampled.rows,
        None,
        numpy.shape(log_weights)[0],
        n_steps_left,
    )
    return method(model, context, step.y_rows, resampled.offsets, rng)


def _propose(step, model, particles, log_weights, log_eta, rows, rng, n_steps_left):
    """Draw the new particles; return them and ``log f - log q`` (or None)."""
    n_series = numpy.shape(log_weights)[0]
    x_prev = take_rows(particles, rows)
    context = PreviousCloud(
        particles, log_weights, rows, log_eta, n_series, n_steps_left
    )
    new_particles, log_ratio = step.proposal.propose(
        model, x_prev, step.y_proposal, rng, context
    )
    if step.proposal_rows is not None:
        bootstrap = model.sample_transition(x_prev, rng)
        new_particles = np.where(step.proposal_rows[:, None], new_particles, bootstrap)
        if log_ratio is not None:
            log_ratio = np.where(step.proposal_rows, log_ratio, 0.0)
    return new_particles, log_ratio


def _weigh(step, model, particles, log_carried, log_ratio):
    """Weigh the new particles; return ``log W_t`` and the increments, (B, 1)."""
    shape = numpy.shape(log_carried)
    log_w = log_carried
    if log_ratio is not None:
        log_w = log_w + np.reshape(log_ratio, shape)
    if step.partly_observed.any():
        log_w = log_w + np.reshape(
            model.observation.log_density(particles, step.y_rows), shape
        )
    increment = logsumexp(log_w, axis=1, keepdims=True)
    if not step.partly_observed.all():
        # Nothing observed: the increment is log 1 = 0, exactly, not 0 up to
        # rounding; its gradient (the resampling score) is kept.
        increment = np.where(
            step.partly_observed[:, None], increment, increment - getval(increment)
        )
    return log_w - increment, increment


def _summarise(particles, log_weights, resampled, return_particles):
    """Return step ``t``'s reported values (from values, outside the trace)."""
    n_series, n_particles = numpy.shape(log_weights)
    weight_values = numpy.exp(getval(log_weights))
    particle_values = numpy.reshape(getval(particles), (n_series, n_particles, -1))
    mean = numpy.einsum("bn,bnd->bd", weight_values, particle_values)
    spread = numpy.einsum(
        "bn,bnd->bd", weight_values, (particle_values - mean[:, None]) ** 2
    )
    step = {
        "means": mean,
        "scales": numpy.sqrt(spread),
        # 1 / sum(W**2) from the weights already at hand (normalised, but
        # written as (sum W)**2 / sum(W**2), exact whatever their total).
        "ess": numpy.square(numpy.add.reduce(weight_values, axis=1))
        / numpy.add.reduce(numpy.square(weight_values), axis=1),
        "resampled": resampled.resample,
    }
    if return_particles:
        step.update(
            particles=particle_values,
            log_weights=getval(log_weights),
            ancestors=resampled.ancestors,
            reference=resampled.reference,
        )
    return step


def _result(records, increments, particles, log_weights, batched):
    """Assemble the FilterResult (for one series, without the series axis)."""
    n_series, n_particles = numpy.shape(log_weights)
    final_particles = numpy.reshape(
        numpy.array(getval(particles)), (n_series, n_particles, -1)
    )
    result = FilterResult(
        log_likelihood=np.sum(increments, axis=1),
        log_likelihood_increments=increments,
        filtered_means=records["means"],
        filtered_scales=records["scales"],
        ess=records["ess"],
        resampled=records["resampled"],
        particles=records.get("particles"),
        log_weights=records.get("log_weights"),
        ancestors=records.get("ancestors"),
        resampling_log_weights=records.get("reference"),
        final_particles=final_particles,
        final_log_weights=numpy.array(getval(log_weights)),
    )
    if batched:
        return result
    return FilterResult(*(None if field is None else field[0] for field in result))


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
    initial_particles=None,
    initial_log_weights=None,
):
    """Run a particle filter over one series, or several series together.

    Parameters
    ----------
    Y : array-like of shape (n_steps, n_outputs) or (n_series, n_steps, n_outputs)
        Observations, time down the rows; NaN entries are missing. A 3-D array is
        several series of the same length, filtered independently in one pass.
    model : state-space model
        See :mod:`statemix_sk.models` for the protocol: the transition ``f``, the
        observation ``g`` and the initial distribution.
    proposal : object, default=None
        See the module docstring; None is the bootstrap filter.
    n_particles : int, default=100
        ``N``, per series (1 warns: see Warns).
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
    initial_particles : array-like of shape (N, n_states) or \
(n_series, N, n_states), default=None
        Start from this cloud instead of drawing from the model's initial
        distribution: the cloud an earlier pass left at this point of the series
        (``FilterResult.final_particles``), to filter a window of a series as
        the continuation of that pass. It is a constant: no gradient flows into
        it. The first step treats it as the previous step's particles (it
        resamples them, by ``initial_log_weights``, as any step would).
    initial_log_weights : array-like of shape (N,) or (n_series, N), default=None
        Normalised log-weights of ``initial_particles`` (None: equal weights).

    Returns
    -------
    result : FilterResult

    Warns
    -----
    UserWarning
        When ``n_particles`` is 1: one particle cannot be weighted against
        another, so the filter's estimates are those of its proposal alone.

    Examples
    --------
    >>> from statemix_sk.datasets import make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(20, random_state=0)
    >>> result = particle_filter(Y, model, n_particles=200, random_state=0)
    >>> result.filtered_means.shape
    (20, 4)
    """
    Y, batched = _check_series(Y, model.observation.n_outputs)
    n_particles = _check_arguments(n_particles, ess_threshold)
    scheme = get_resampling_scheme(resampling)
    rng = as_generator(random_state)
    proposal = _BOOTSTRAP if proposal is None else proposal
    handles_missing = bool(getattr(proposal, "handles_missing_entries", False))
    n_series, n_steps, _ = Y.shape
    if frozen is not None:
        frozen_arrays = _frozen_arrays(
            frozen, batched, (n_series, n_steps, n_particles)
        )
    particles, log_weights = _start(
        model,
        (n_series, n_particles),
        batched,
        rng,
        initial_particles,
        initial_log_weights,
    )
    # The per-step outputs are written into arrays allocated at the first step
    # (shape and dtype from its values), not kept in lists and stacked: a pass
    # then holds its outputs once, whatever the length of the series.
    records = {}
    # Traced increments, joined at the end by one primitive (_join_columns);
    # untraced ones go straight into ``increment_values``.
    traced_increments = []
    increment_values = numpy.empty((n_series, n_steps))
    for t in range(n_steps):
        step = _step_inputs(Y[:, t], n_particles, proposal, handles_missing)
        log_eta = _first_stage(step, model, particles, log_weights)
        frozen_step = (
            None if frozen is None else tuple(array[:, t] for array in frozen_arrays)
        )
        # Traced (auxiliary filters); its values decide the ancestors.
        log_resampling, log_total = _log_resampling_weights(log_weights, log_eta)
        resampled = _resample(
            log_weights,
            log_resampling,
            log_eta is not None,
            scheme,
            ess_threshold,
            rng,
            frozen_step,
        )
        weighed = _propose_and_weigh(
            step, model, particles, log_weights, log_eta, resampled, rng, n_steps - t
        )
        if weighed is not None:
            particles, log_weights, increment = weighed
        else:
            log_carried = _carried_log_weights(
                log_resampling, log_total, log_eta, resampled
            )
            new_particles, log_ratio = _propose(
                step,
                model,
                particles,
                log_weights,
                log_eta,
                resampled.rows,
                rng,
                n_steps - t,
            )
            particles = new_particles
            log_weights, increment = _weigh(
                step, model, particles, log_carried, log_ratio
            )
        if isbox(increment):
            traced_increments.append((t, increment))
        increment_values[:, t] = getval(increment)[:, 0]
        _record(
            records,
            _summarise(particles, log_weights, resampled, return_particles),
            t,
            n_steps,
        )

    increments = _joined_increments(increment_values, traced_increments)
    return _result(records, increments, particles, log_weights, batched)
