"""Training StateMixNN: minibatches of windows, validation, Adam, restarts.

The objective is the particle filter's log-likelihood estimate per observed time
step, differentiated through the filter (:mod:`statemix_sk.objective` computes
it, :mod:`statemix_sk.filtering` runs the filter). Training
follows the method notes (section 3), in the form that scales with the data:

- **Windows with carried clouds.** Each training series is cut into windows of
  ``window_length`` steps. An update filters a minibatch of ``batch_size``
  windows, each started from the particle cloud (particles and log-weights) that
  the previous window of its series left one update earlier for that series (a
  constant: no gradient flows into it), or from the initial distribution for a
  series' first window; so the cost of an update does not grow with the number or
  length of the series, and a short window keeps the likelihood from
  concentrating (the role the growing windows of "observation batching" had).
  An *epoch* filters every window of every series once: in round ``r`` series
  ``s`` processes its window ``(r + o_s) mod n_windows_s``, with offsets ``o_s``
  drawn once (an initial pass with no gradient leaves the clouds where each
  series starts), so that a minibatch mixes positions in the series.
- **Updates.** ``update="joint"``: one Adam step on both networks per minibatch;
  ``"alternating"`` (the paper's scheme): cycles of ``n_transition_steps``
  updates of the transition (the proposal fixed), then ``n_proposal_steps`` of
  the proposal, each network with its own Adam state. Fresh particles at every
  update. Gradients are clipped to a norm of ``max_gradient_norm`` (50).
- **Validation and early stopping.** After every epoch the held-out data
  (:class:`~statemix_sk.objective.Validation`) are filtered with one fixed seed;
  the parameters of the best score are kept (the start included), and training
  stops when the score has not improved by ``tol`` for ``n_iter_no_change``
  epochs. Without held-out data the epoch's training score decides when to stop
  and the last parameters are kept.
- A non-finite value or gradient stops the run; its best (or last) finite
  parameters are kept and it is marked as diverged.

:func:`~statemix_sk.network_start.fit_transition_to_states` fits the transition
network alone to state sequences (the regression start of
``init_dynamics="regression"``), with the Adam steps here.

Restarts (:func:`fit_restarts`) are independent runs, one per ``SeedSequence``
child, executed through joblib with BLAS limited to one thread in each, so the
result does not depend on ``n_jobs``.
"""

import time
from typing import NamedTuple

import joblib
import numpy
from autograd import value_and_grad
from autograd.misc import flatten
from threadpoolctl import threadpool_limits

from ._utils import moved_names
from .objective import (
    PHASES,
    count_observed_steps,
    mean_log_likelihood,
    series_lengths,
    take_windows,
    validation_log_likelihood,
    window_log_likelihood,
)

__all__ = [
    "AdamState",
    "Evaluation",
    "RestartResult",
    "TrainingSettings",
    "adam_init",
    "adam_update",
    "all_finite",
    "best_restart",
    "clip_by_norm",
    "fit_restarts",
    "train",
]

# Moved in issue 16 (to objective.py, network_start.py): the old paths warn
# (FutureWarning) and will go.
__getattr__ = moved_names(
    "training",
    {
        name: "objective"
        for name in (
            "WindowBatch",
            "held_out_log_likelihood",
        )
    }
    | {"fit_transition_to_states": "network_start"},
)


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


class TrainingSettings(NamedTuple):
    """The knobs of :func:`train` (the estimator's parameters, validated)."""

    n_particles: int
    resampling: str
    ess_threshold: float
    max_iter: int
    """Epochs at most."""
    tol: float
    learning_rate: float
    window_length: int = 25
    batch_size: int = 10
    update: str = "joint"
    """``"joint"``: every update steps both networks; ``"alternating"``: cycles of
    ``n_transition_steps`` updates of the transition, then ``n_proposal_steps``
    of the proposal."""
    n_transition_steps: int = 1
    n_proposal_steps: int = 1
    n_iter_no_change: int = 10
    alpha: float = 0.0
    verbose: int = 0
    max_gradient_norm: float = 50.0


class Evaluation(NamedTuple):
    """One entry of the training history: the state after an epoch."""

    epoch: int
    """Epochs completed (0: the start, before any update)."""
    n_updates: int
    """Adam updates so far."""
    train_log_likelihood: float
    """Log-likelihood per observed step on the training windows, averaged over the
    epoch's updates (for the start: one pass of the initial model)."""
    validation_log_likelihood: float
    """Fixed-seed log-likelihood per observed step on the held-out data (NaN
    without validation)."""
    seconds: float
    """Time since the start of this run."""


class TrainingResult(NamedTuple):
    """What :func:`train` returns."""

    params: dict
    """The kept parameters: those of the best validation score (the start
    included); without validation, the last ones."""
    history: list
    n_iter: int
    """Epochs run."""
    n_updates: int
    converged: bool
    """Whether training stopped because the score had not improved by ``tol``
    for ``n_iter_no_change`` epochs (not because of ``max_iter``)."""
    diverged: bool
    final_params: dict
    """The parameters where training stopped (the last finite ones)."""
    validation_score: float
    """The best validation score (NaN without validation)."""


class RestartResult(NamedTuple):
    """One restart of :func:`fit_restarts`: its training and its final scores."""

    params: dict
    history: list
    n_iter: int
    n_updates: int
    converged: bool
    diverged: bool
    score: float
    """Fixed-seed log-likelihood per observed step on all the training data."""
    validation_score: float
    """Fixed-seed log-likelihood per observed step on the held-out data, for the
    kept parameters (NaN without validation)."""


def _carry(clouds, series, final):
    """Store, for each series of a batch, the cloud its window left."""
    for row, index in enumerate(series):
        clouds[index] = (final[0][row], final[1][row])


def all_finite(value, gradient):
    """Whether a value and every part of its gradient are finite."""
    return bool(numpy.isfinite(value)) and all(
        bool(numpy.all(numpy.isfinite(part))) for part in gradient
    )


def _record(history, entry, settings):
    history.append(entry)
    if settings.verbose:
        validation = (
            ""
            if numpy.isnan(entry.validation_log_likelihood)
            else f"  validation {entry.validation_log_likelihood:9.4f}"
        )
        print(
            f"epoch {entry.epoch:4d}  updates {entry.n_updates:6d}  log-likelihood "
            f"per step: training {entry.train_log_likelihood:9.4f}{validation}  "
            f"({entry.seconds:.1f} s)",
            flush=True,
        )


def _update_cycle(settings):
    """Return the networks each update trains, a cycle that repeats."""
    if settings.update == "joint":
        return [PHASES]
    return [("transition",)] * settings.n_transition_steps + [
        ("proposal",)
    ] * settings.n_proposal_steps


def _initial_pass(params, spec, Y, lengths, offsets, settings, rng):
    """Filter the training series once, window by window, with no gradient.

    Returns every series' cloud at the end of the window before its offset (where
    its first update starts) and the log-likelihood per observed step of the pass.
    """
    n_windows = numpy.maximum(-(-lengths // settings.window_length), 1)
    carried, clouds, total = {}, {}, 0.0
    for window in range(int(numpy.max(n_windows))):
        series = numpy.flatnonzero(window < n_windows)
        batch = take_windows(
            Y, series, numpy.full(len(series), window), settings.window_length, lengths
        )
        _, log_likelihood, final = window_log_likelihood(
            params, spec, batch, carried, settings, rng
        )
        if not numpy.isfinite(log_likelihood):
            return clouds, numpy.nan
        total += log_likelihood * count_observed_steps(batch.Y)
        _carry(carried, series, final)
        for index in series:
            if window + 1 == offsets[index]:
                clouds[index] = carried[index]
    return clouds, total / max(count_observed_steps(Y), 1)


class _Run(NamedTuple):
    """What every epoch of a :func:`train` run shares."""

    spec: object
    Y: numpy.ndarray
    settings: TrainingSettings
    lengths: numpy.ndarray
    """(n_series,): each series' length (:func:`series_lengths`)."""
    n_windows: numpy.ndarray
    """(n_series,): each series' number of windows."""
    offsets: numpy.ndarray
    """(n_series,): the window each series starts an epoch's rounds with."""
    cycle: list
    """The networks each update trains (:func:`_update_cycle`)."""


def _differentiable_objective(params, spec, settings):
    """Flatten ``params`` per network; return them and the objective's gradient.

    Returns the flat vectors (a dict, updated in place by training), the
    function that rebuilds a parameter dict from them, the value-and-gradient of
    the minibatch objective with respect to the networks of a group, and the
    dict where each call leaves its log-likelihood and final clouds.
    """
    vectors, unflatten = {}, {}
    for phase in PHASES:
        vectors[phase], unflatten[phase] = flatten(params[phase])

    def as_params(vectors):
        return {phase: unflatten[phase](vectors[phase]) for phase in PHASES}

    side = {}

    def objective(trained, group, batch, clouds, seed_rng):
        current = dict(vectors)
        current.update(zip(group, trained, strict=True))
        value, log_likelihood, final = window_log_likelihood(
            as_params(current), spec, batch, clouds, settings, seed_rng, settings.alpha
        )
        side["log_likelihood"], side["final"] = log_likelihood, final
        return value

    return vectors, as_params, value_and_grad(objective), side


def _minibatches(n_windows, offsets, batch_size, rng):
    """Yield an epoch's minibatches, ``(series, windows)``, round by round.

    In round ``r`` series ``s`` processes its window ``(r + o_s) mod
    n_windows_s``; each round's series are shuffled (drawn as the round starts).
    """
    for round_index in range(int(numpy.max(n_windows))):
        active = numpy.flatnonzero(round_index < n_windows)
        active = active[rng.permutation(len(active))]
        for first in range(0, len(active), batch_size):
            series = active[first : first + batch_size]
            yield series, (round_index + offsets[series]) % n_windows[series]


def _adam_step(vectors, adam, group, gradient, settings):
    """Clip the group's joined gradient and take one Adam step per network."""
    gradient = clip_by_norm(numpy.concatenate(gradient), settings.max_gradient_norm)
    offset = 0
    for phase in group:
        size = vectors[phase].size
        step, adam[phase] = adam_update(
            adam[phase],
            gradient[offset : offset + size],
            settings.learning_rate,
        )
        vectors[phase] = vectors[phase] + step
        offset += size


def _epoch(run, vectors, adam, clouds, n_updates, rng, objective):
    """Run one epoch of updates; ``vectors``, ``adam`` and ``clouds`` move on.

    ``objective`` is what :func:`_differentiable_objective` returns after the
    vectors. Returns the summed log-likelihood of the updates' windows, their
    observed steps, the number of updates so far and whether a value or gradient
    was not finite (the epoch then stops there).
    """
    as_params, gradient_of, side = objective
    settings = run.settings
    total = observed = 0.0
    for series, windows in _minibatches(
        run.n_windows, run.offsets, settings.batch_size, rng
    ):
        batch = take_windows(
            run.Y, series, windows, settings.window_length, run.lengths
        )
        group = run.cycle[n_updates % len(run.cycle)]
        seed_rng = numpy.random.default_rng(int(rng.integers(2**63)))
        if count_observed_steps(batch.Y) == 0:
            # Nothing observed in these windows: no gradient, but their
            # clouds move on to where the next windows start.
            _, _, final = window_log_likelihood(
                as_params(vectors), run.spec, batch, clouds, settings, seed_rng
            )
            _carry(clouds, series, final)
            continue
        value, gradient = gradient_of(
            [vectors[phase] for phase in group], group, batch, clouds, seed_rng
        )
        if not all_finite(value, gradient):
            return total, observed, n_updates, True
        _adam_step(vectors, adam, group, gradient, settings)
        n_updates += 1
        _carry(clouds, series, side["final"])
        n_observed = count_observed_steps(batch.Y)
        total += side["log_likelihood"] * n_observed
        observed += n_observed
    return total, observed, n_updates, False


def train(params, spec, Y, settings, rng, eval_seed, validation=None):
    """Train both networks by Adam on minibatches of windows with carried clouds.

    Each series is cut into windows of ``settings.window_length`` steps. An
    *epoch* filters every window of every training series once: in round ``r``
    each series processes its window ``(r + o_s) mod n_windows_s`` (its offset
    ``o_s`` drawn once, so that a minibatch mixes positions in the series), the
    series of a round shuffled into minibatches of ``batch_size`` windows. A
    window starts from the cloud that the series' previous window left (one
    update earlier for that series, a constant: no gradient flows through it),
    or from the initial distribution for a series' first window. One Adam
    update per minibatch (both networks, or one in turn with
    ``update="alternating"``), so an update costs ``batch_size`` windows
    whatever the amount of data.

    After every epoch the held-out data are scored with a fixed seed; the
    parameters of the best score are kept (the start included), and training
    stops when it has not improved by ``tol`` for ``n_iter_no_change`` epochs
    (without validation: the epoch's training score decides when to stop, and
    the last parameters are kept).

    Parameters
    ----------
    params : dict
        Initial parameters, ``{"transition": [...], "proposal": [...]}``.
    spec : StateMixSpec
    Y : ndarray of shape (n_series, n_steps, n_outputs)
        Training series, padded with NaN to a common length.
    settings : TrainingSettings
    rng : numpy.random.Generator
        Offsets, minibatches and the particles of the updates.
    eval_seed : int
        The fixed seed of the validation scores.
    validation : Validation, default=None

    Returns
    -------
    result : TrainingResult
    """
    vectors, as_params, gradient_of, side = _differentiable_objective(
        params, spec, settings
    )
    adam = {phase: adam_init(vectors[phase].size) for phase in PHASES}
    history, start = [], time.perf_counter()
    lengths = series_lengths(Y)
    n_windows = numpy.maximum(-(-lengths // settings.window_length), 1)
    offsets = rng.integers(n_windows)
    run = _Run(spec, Y, settings, lengths, n_windows, offsets, _update_cycle(settings))
    start_params = as_params(vectors)
    clouds, train_score = _initial_pass(
        start_params, spec, Y, lengths, offsets, settings, rng
    )

    def validate(params):
        if validation is None:
            return numpy.nan
        return validation_log_likelihood(params, spec, validation, settings, eval_seed)

    score = validate(start_params)
    best_params, best_validation = start_params, score
    if validation is not None and not numpy.isfinite(score):
        best_validation = -numpy.inf
    best_criterion = score if validation is not None else train_score
    if not numpy.isfinite(best_criterion):
        best_criterion = -numpy.inf
    _record(history, Evaluation(0, 0, train_score, score, 0.0), settings)
    n_updates, epoch, no_improvement = 0, 0, 0
    converged = False
    # The start's filter is not finite on the training data: nothing to train.
    diverged = not numpy.isfinite(train_score)
    last_good = start_params
    while epoch < settings.max_iter and not (converged or diverged):
        epoch += 1
        total, observed, n_updates, diverged = _epoch(
            run, vectors, adam, clouds, n_updates, rng, (as_params, gradient_of, side)
        )
        if diverged:
            break
        current = as_params(vectors)
        train_score = total / observed if observed else numpy.nan
        score = validate(current)
        criterion = score if validation is not None else train_score
        if not numpy.isfinite(criterion):
            diverged = True
            break
        last_good = current
        _record(
            history,
            Evaluation(
                epoch, n_updates, train_score, score, time.perf_counter() - start
            ),
            settings,
        )
        if validation is not None and score > best_validation:
            best_params, best_validation = current, score
        if criterion > best_criterion + settings.tol:
            best_criterion, no_improvement = criterion, 0
        else:
            no_improvement += 1
            if no_improvement >= settings.n_iter_no_change:
                converged = True
    final_params = last_good if diverged else as_params(vectors)
    if validation is None:
        best_params, best_validation = final_params, numpy.nan
    return TrainingResult(
        best_params,
        history,
        epoch,
        n_updates,
        converged,
        diverged,
        final_params,
        float(best_validation),
    )


def _fit_one(spec, Y, settings, seed_sequence, eval_seed, init_params, validation):
    """One restart: initialise (unless given), train, score on all the data."""
    with threadpool_limits(limits=1), numpy.errstate(all="ignore"):
        rng = numpy.random.default_rng(seed_sequence)
        params = spec.init_params(rng) if init_params is None else init_params
        result = train(params, spec, Y, settings, rng, eval_seed, validation)
        score = float(
            mean_log_likelihood(
                result.params, spec, Y, count_observed_steps(Y), settings, eval_seed
            )
        )
    return RestartResult(
        result.params,
        result.history,
        result.n_iter,
        result.n_updates,
        result.converged,
        result.diverged,
        score=score,
        validation_score=result.validation_score,
    )


def fit_restarts(
    spec,
    Y,
    settings,
    seed_sequences,
    eval_seed,
    *,
    validation=None,
    n_jobs=None,
    init_params=None,
):
    """Run independent training restarts through joblib.

    Parameters
    ----------
    spec : StateMixSpec
    Y : ndarray of shape (n_series, n_steps, n_outputs)
        The training series.
    settings : TrainingSettings
    seed_sequences : list of numpy.random.SeedSequence
        One per restart.
    eval_seed : int
    validation : Validation, default=None
        Held-out data for early stopping and for choosing the kept parameters.
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
            spec, Y, settings, seed_sequence, eval_seed, init_params, validation
        )
        for seed_sequence in seed_sequences
    )


def best_restart(results, validation=None):
    """Return the best of :func:`fit_restarts`' results and every restart's score.

    A restart's score is its validation score with held-out data, else its
    training score; a non-finite one (a diverged restart) never wins.

    Returns
    -------
    best : RestartResult
    scores : ndarray of shape (n_restarts,)
    finite : ndarray of shape (n_restarts,) of bool
        Where ``scores`` is finite.

    Raises
    ------
    ValueError
        When no restart has a finite score.
    """
    scores = numpy.array(
        [
            result.score if validation is None else result.validation_score
            for result in results
        ]
    )
    finite = numpy.isfinite(scores)
    if not finite.any():
        raise ValueError(
            "Every restart diverged: no parameters gave a finite "
            "log-likelihood. Check the observation model and its noise against "
            "the data, or lower learning_rate."
        )
    best = results[int(numpy.argmax(numpy.where(finite, scores, -numpy.inf)))]
    return best, scores, finite
