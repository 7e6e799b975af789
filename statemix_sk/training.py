"""Training StateMixNN: objective, observation batching, Adam, alternation, restarts.

The objective is the particle filter's log-likelihood estimate per observed time
step, averaged over the training series, differentiated through the filter
(:mod:`statemix_sk.filtering`). Training follows the method notes (section 3):

- **Alternation.** One *iteration* is ``n_transition_steps`` Adam steps on the
  transition network (the proposal fixed), then ``n_proposal_steps`` on the proposal
  network (the transition fixed), each with its own Adam state.
- **Observation batching.** Windows ``y_1:L`` of growing length ``L`` come first,
  each for a number of iterations, because the likelihood of a long series
  concentrates and a random start cannot make progress on it; training then goes
  on over the whole series until ``tol`` or ``max_iter``.
- Fresh particles (a new seed) at every Adam step; every ``eval_every`` iterations
  the objective is evaluated with one fixed seed, after each phase, and recorded;
  so is the start, on the whole series. The run returns the parameters of the
  best evaluation on the whole series (the start included).
- A step whose value or gradient is not finite stops the run; the parameters of
  the last finite evaluation are kept and the run is marked as diverged.
- Gradients are clipped to a norm of ``max_gradient_norm`` (50): a single unlucky
  particle draw then cannot throw the networks far.

Restarts (:func:`fit_restarts`) are independent runs, one per ``SeedSequence``
child, executed through joblib with BLAS limited to one thread in each, so the
result does not depend on ``n_jobs``.
"""

import time
from typing import NamedTuple

import autograd.numpy as np
import joblib
import numpy
from autograd import value_and_grad
from autograd.misc import flatten
from threadpoolctl import threadpool_limits

from .filtering import particle_filter

__all__ = [
    "AdamState",
    "Evaluation",
    "RestartResult",
    "TrainingSettings",
    "adam_init",
    "adam_update",
    "clip_by_norm",
    "count_observed_steps",
    "fit_restarts",
    "mean_log_likelihood",
    "resolve_window_schedule",
    "train",
]

PHASES = ("transition", "proposal")


class AdamState(NamedTuple):
    """Adam's moments for one parameter vector."""

    first_moment: numpy.ndarray
    second_moment: numpy.ndarray
    n_updates: int


def adam_init(size):
    """Return a fresh Adam state for a vector of ``size`` parameters."""
    return AdamState(numpy.zeros(size), numpy.zeros(size), 0)


def adam_update(state, gradient, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """One Adam step for *ascent*: return ``(step, new_state)``; add ``step``.

    Parameters
    ----------
    state : AdamState
    gradient : ndarray
        Gradient of the objective to maximise.
    learning_rate : float
    beta1, beta2, epsilon : float
        Adam's constants (Kingma and Ba, 2015).

    Returns
    -------
    step : ndarray
    state : AdamState
    """
    n_updates = state.n_updates + 1
    first = beta1 * state.first_moment + (1.0 - beta1) * gradient
    second = beta2 * state.second_moment + (1.0 - beta2) * gradient**2
    first_hat = first / (1.0 - beta1**n_updates)
    second_hat = second / (1.0 - beta2**n_updates)
    step = learning_rate * first_hat / (numpy.sqrt(second_hat) + epsilon)
    return step, AdamState(first, second, n_updates)


def clip_by_norm(gradient, max_norm):
    """Scale ``gradient`` down to Euclidean norm ``max_norm`` if it is longer."""
    norm = numpy.sqrt(numpy.sum(gradient**2))
    if norm > max_norm:
        return gradient * (max_norm / norm)
    return gradient


def resolve_window_schedule(window_schedule, n_steps, max_iter):
    """Turn a window schedule into ``(length, n_iterations)`` pairs.

    Parameters
    ----------
    window_schedule : sequence of (window, n_iterations)
        The windows that precede the whole series. ``window`` is a number of
        steps (int >= 2) or a fraction of ``n_steps`` (float in (0, 1]);
        ``n_iterations`` an int >= 0 or a fraction of ``max_iter`` (float in
        [0, 1]).
    n_steps : int
        Length of the longest training series.
    max_iter : int

    Returns
    -------
    schedule : list of (int, int)
        Window lengths (non-decreasing, at most ``n_steps``) with their
        iterations, ending with ``(n_steps, remaining)``: whatever ``max_iter``
        leaves goes to the whole series.
    """
    schedule, used = [], 0
    for window, n_iterations in window_schedule:
        if isinstance(window, float):
            length = max(2, int(numpy.ceil(window * n_steps)))
        else:
            length = int(window)
        length = min(length, n_steps)
        if isinstance(n_iterations, float):
            n_iterations = round(n_iterations * max_iter)
        n_iterations = min(int(n_iterations), max_iter - used)
        if schedule and length < schedule[-1][0]:
            raise ValueError(
                "window_schedule must have non-decreasing windows, got "
                f"{window_schedule!r}."
            )
        if n_iterations > 0 and length < n_steps:
            schedule.append((length, n_iterations))
            used += n_iterations
    schedule.append((n_steps, max_iter - used))
    return schedule


def count_observed_steps(Y):
    """Count the rows of ``Y`` (..., n_steps, n_outputs) with an observed entry."""
    return int(numpy.sum(~numpy.all(numpy.isnan(Y), axis=-1)))


class TrainingSettings(NamedTuple):
    """The knobs of :func:`train` (the estimator's parameters, validated)."""

    n_particles: int
    resampling: str
    ess_threshold: float
    max_iter: int
    tol: float
    learning_rate: float
    n_transition_steps: int
    n_proposal_steps: int
    eval_every: int
    verbose: int = 0
    max_gradient_norm: float = 50.0


class Evaluation(NamedTuple):
    """One entry of the training history."""

    iteration: int
    """Iterations completed (0: the start, before any step)."""
    window: int
    """Length of the window trained on (the whole series for the start)."""
    phase: str
    """``"transition"`` or ``"proposal"``: the phase just completed; ``"start"``
    for the evaluation of the initial parameters."""
    log_likelihood: float
    """Fixed-seed log-likelihood per observed step on the window."""
    seconds: float
    """Time since the start of this run."""


class TrainingResult(NamedTuple):
    """What :func:`train` returns."""

    params: dict
    """The parameters of the best evaluation on the whole series."""
    history: list
    n_iter: int
    converged: bool
    diverged: bool
    final_params: dict
    """The parameters where training stopped (the last finite ones)."""


class RestartResult(NamedTuple):
    """One restart of :func:`fit_restarts`: its training and its final score."""

    params: dict
    history: list
    n_iter: int
    converged: bool
    diverged: bool
    score: float
    """Fixed-seed log-likelihood per observed step on all the training data."""


def mean_log_likelihood(params, spec, Y, n_observed, settings, seed):
    """Return the objective: log-likelihood estimate per observed step over ``Y``.

    Parameters
    ----------
    params : dict
        ``{"transition": [...], "proposal": [...]}``.
    spec : StateMixSpec
    Y : ndarray of shape (n_series, n_steps, n_outputs)
        NaN rows (padding or missing) contribute nothing.
    n_observed : int
        Rows of ``Y`` with an observed entry.
    settings : TrainingSettings
    seed : int or numpy.random.Generator

    Returns
    -------
    value : float (traced when ``params`` are)
    """
    model, proposal = spec.build(params)
    result = particle_filter(
        Y,
        model,
        proposal,
        n_particles=settings.n_particles,
        resampling=settings.resampling,
        ess_threshold=settings.ess_threshold,
        random_state=seed,
    )
    return np.sum(result.log_likelihood) / n_observed


def _is_finite(value, gradient):
    return bool(numpy.isfinite(value)) and bool(numpy.all(numpy.isfinite(gradient)))


def _record(history, entry, settings):
    history.append(entry)
    if settings.verbose:
        print(
            f"iteration {entry.iteration:4d}  window {entry.window:4d}  "
            f"{entry.phase:10s}  log-likelihood per step {entry.log_likelihood:10.4f}"
            f"  ({entry.seconds:.1f} s)",
            flush=True,
        )


def train(params, spec, Y, schedule, settings, rng, eval_seed):
    """Train both networks by alternating Adam on growing windows.

    Parameters
    ----------
    params : dict
        Initial parameters, ``{"transition": [...], "proposal": [...]}``.
    spec : StateMixSpec
    Y : ndarray of shape (n_series, n_steps, n_outputs)
        Training series, padded with NaN to a common length.
    schedule : list of (int, int)
        From :func:`resolve_window_schedule`.
    settings : TrainingSettings
    rng : numpy.random.Generator
        Seeds of the Adam steps' particles.
    eval_seed : int
        The fixed seed of the evaluations.

    Returns
    -------
    result : TrainingResult
    """
    vectors, unflatten = {}, {}
    for phase in PHASES:
        vectors[phase], unflatten[phase] = flatten(params[phase])
    adam = {phase: adam_init(vectors[phase].size) for phase in PHASES}
    n_steps_per_phase = {
        "transition": settings.n_transition_steps,
        "proposal": settings.n_proposal_steps,
    }

    def as_params(vectors):
        return {phase: unflatten[phase](vectors[phase]) for phase in PHASES}

    def objective(vector, phase, other, Y_window, n_observed, seed):
        current = {phase: vector, PHASES[1 - PHASES.index(phase)]: other}
        return mean_log_likelihood(
            as_params(current), spec, Y_window, n_observed, settings, seed
        )

    gradient_of = value_and_grad(objective)
    history, start = [], time.perf_counter()
    last_good = as_params(vectors)
    iteration, converged, diverged = 0, False, False
    previous_full = None
    # The best fixed-seed evaluation on the whole series and its parameters: the
    # estimate is noisy, and a step may make the model worse, so the run returns
    # the best parameters it evaluated there, not merely the last ones. The start
    # is a candidate too: it may already be a fitted linear model that noisy
    # gradient steps cannot improve.
    best_full, best_params = -numpy.inf, None
    score = float(
        mean_log_likelihood(
            last_good, spec, Y, count_observed_steps(Y), settings, eval_seed
        )
    )
    if numpy.isfinite(score):
        best_full, best_params = score, last_good
        _record(history, Evaluation(0, Y.shape[1], "start", score, 0.0), settings)
    for length, n_iterations in schedule:
        Y_window = Y[:, :length]
        n_observed = count_observed_steps(Y_window)
        is_full = length == Y.shape[1]
        for _ in range(n_iterations):
            iteration += 1
            evaluate = iteration % settings.eval_every == 0 or (
                is_full and _ == n_iterations - 1
            )
            for phase in PHASES:
                other = vectors[PHASES[1 - PHASES.index(phase)]]
                for _step in range(n_steps_per_phase[phase]):
                    seed = int(rng.integers(2**63))
                    value, gradient = gradient_of(
                        vectors[phase], phase, other, Y_window, n_observed, seed
                    )
                    if not _is_finite(value, gradient):
                        diverged = True
                        break
                    gradient = clip_by_norm(gradient, settings.max_gradient_norm)
                    step, adam[phase] = adam_update(
                        adam[phase], gradient, settings.learning_rate
                    )
                    vectors[phase] = vectors[phase] + step
                if diverged:
                    break
                if evaluate:
                    score = float(
                        mean_log_likelihood(
                            as_params(vectors),
                            spec,
                            Y_window,
                            n_observed,
                            settings,
                            eval_seed,
                        )
                    )
                    if not numpy.isfinite(score):
                        diverged = True
                        break
                    last_good = as_params(vectors)
                    if is_full and score > best_full:
                        best_full, best_params = score, last_good
                    entry = Evaluation(
                        iteration, length, phase, score, time.perf_counter() - start
                    )
                    _record(history, entry, settings)
            if diverged:
                break
            if evaluate and is_full:
                current = history[-1].log_likelihood
                if (
                    previous_full is not None
                    and abs(current - previous_full) < settings.tol
                ):
                    converged = True
                    break
                previous_full = current
        if converged or diverged:
            break
    final_params = last_good if diverged else as_params(vectors)
    params = final_params if best_params is None else best_params
    return TrainingResult(params, history, iteration, converged, diverged, final_params)


def _fit_one(spec, Y, schedule, settings, seed_sequence, eval_seed, init_params):
    """One restart: initialise (unless given), train, score on all the data."""
    with threadpool_limits(limits=1), numpy.errstate(all="ignore"):
        rng = numpy.random.default_rng(seed_sequence)
        params = spec.init_params(rng) if init_params is None else init_params
        result = train(params, spec, Y, schedule, settings, rng, eval_seed)
        score = float(
            mean_log_likelihood(
                result.params, spec, Y, count_observed_steps(Y), settings, eval_seed
            )
        )
    return RestartResult(
        result.params,
        result.history,
        result.n_iter,
        result.converged,
        result.diverged,
        score=score,
    )


def fit_restarts(
    spec,
    Y,
    schedule,
    settings,
    seed_sequences,
    eval_seed,
    *,
    n_jobs=None,
    init_params=None,
):
    """Run independent training restarts through joblib.

    Parameters
    ----------
    spec : StateMixSpec
    Y : ndarray of shape (n_series, n_steps, n_outputs)
    schedule : list of (int, int)
    settings : TrainingSettings
    seed_sequences : list of numpy.random.SeedSequence
        One per restart.
    eval_seed : int
    n_jobs : int, default=None
        joblib's ``n_jobs`` (None: one process, unless a joblib context says
        otherwise).
    init_params : dict, default=None
        Start every restart from these parameters instead of a random draw
        (``warm_start``).

    Returns
    -------
    results : list of RestartResult
        In the order of ``seed_sequences``.
    """
    return joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_fit_one)(
            spec, Y, schedule, settings, seed_sequence, eval_seed, init_params
        )
        for seed_sequence in seed_sequences
    )
