"""The objective of training: a filter's log-likelihood per observed step.

Every score of :mod:`statemix_sk.training` is the particle filter's
log-likelihood estimate (:func:`statemix_sk.filtering.particle_filter`) per
observed time step, differentiable with autograd:

- :func:`window_log_likelihood`: the minibatch objective, over windows
  (:func:`take_windows`) each started from the cloud its series' previous window
  left, minus an optional L2 penalty;
- :func:`mean_log_likelihood`: over whole series, from the initial distribution;
- :func:`validation_log_likelihood` and :func:`held_out_log_likelihood`: with a
  fixed seed, on the held-out data of a :class:`Validation`, which
  :func:`split_validation` sets apart (whole series, or the last windows of one).

NaN rows (padding or missing observations) contribute nothing, and
:func:`count_observed_steps` counts only the rows with an observed entry.
"""

from typing import NamedTuple

import autograd.numpy as np
import numpy
from autograd.tracer import getval

from ._utils import pad_series
from .filtering import particle_filter

__all__ = [
    "PHASES",
    "Validation",
    "WindowBatch",
    "count_observed_steps",
    "held_out_log_likelihood",
    "mean_log_likelihood",
    "series_lengths",
    "split_validation",
    "take_windows",
    "validation_log_likelihood",
    "window_log_likelihood",
]

PHASES = ("transition", "proposal")
"""The two networks, the keys of a parameter dict."""


def count_observed_steps(Y):
    """Count the rows of ``Y`` (..., n_steps, n_outputs) with an observed entry."""
    return int(numpy.sum(~numpy.all(numpy.isnan(Y), axis=-1)))


class Validation(NamedTuple):
    """Held-out observations that score training (early stopping)."""

    Y: numpy.ndarray
    """(n_series, n_steps, n_outputs): the series filtered to score."""
    first_step: int = 0
    """Only the increments from this step on are scored: 0 when whole series are
    held out; for one series held out by time, the first held-out step (the
    steps before it are filtered, not scored)."""


def _filter(Y, model, proposal, settings, random_state, **options):
    """Run :func:`particle_filter` with the training settings' filter options."""
    return particle_filter(
        Y,
        model,
        proposal,
        n_particles=settings.n_particles,
        resampling=settings.resampling,
        ess_threshold=settings.ess_threshold,
        random_state=random_state,
        **options,
    )


def mean_log_likelihood(params, spec, Y, n_observed, settings, seed):
    """Return the log-likelihood estimate per observed step over ``Y``.

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
    result = _filter(
        Y,
        model,
        proposal,
        settings,
        seed,
    )
    return np.sum(result.log_likelihood) / n_observed


def validation_log_likelihood(params, spec, validation, settings, seed):
    """Return the fixed-seed log-likelihood per observed held-out step.

    Parameters
    ----------
    params : dict
    spec : StateMixSpec
    validation : Validation
    settings : TrainingSettings
    seed : int

    Returns
    -------
    score : float
    """
    model, proposal = spec.build(params)
    return held_out_log_likelihood(model, proposal, validation, settings, seed)


def held_out_log_likelihood(model, proposal, validation, settings, seed):
    """Return a filter's fixed-seed log-likelihood per observed held-out step.

    Parameters
    ----------
    model : state-space model
    proposal : proposal or None
        None: the bootstrap filter (the transition proposes).
    validation : Validation
    settings : TrainingSettings
    seed : int

    Returns
    -------
    score : float
    """
    result = _filter(
        validation.Y,
        model,
        proposal,
        settings,
        seed,
    )
    scored = validation.Y[:, validation.first_step :]
    increments = numpy.asarray(result.log_likelihood_increments)
    total = numpy.sum(increments[:, validation.first_step :])
    return float(total / count_observed_steps(scored))


def series_lengths(Y):
    """Return each series' length: up to its last row with an observed entry.

    A series with no observed entry has length 1.
    """
    observed = ~numpy.all(numpy.isnan(Y), axis=-1)
    last = observed.shape[1] - numpy.argmax(observed[:, ::-1], axis=1)
    # A series with no observation at all keeps one (missing) step: its window
    # then contributes nothing, instead of being a window of no steps.
    return numpy.where(observed.any(axis=1), last, 1)


class WindowBatch(NamedTuple):
    """A minibatch of windows: which series, which window, and the observations."""

    series: numpy.ndarray
    """(n_windows,): the training series of each window."""
    windows: numpy.ndarray
    """(n_windows,): the window's index in its series (0: its first steps)."""
    Y: numpy.ndarray
    """(n_windows, length, n_outputs): the windows, NaN-padded to one length."""


def take_windows(Y, series, windows, window_length, lengths):
    """Cut window ``windows[i]`` of series ``series[i]`` out of ``Y``.

    Window ``k`` of a series is its steps ``k L`` to ``min((k + 1) L, length)``;
    windows shorter than the longest one in the batch are padded with NaN rows,
    which contribute nothing to the likelihood.
    """
    starts = windows * window_length
    stops = numpy.minimum(starts + window_length, lengths[series])
    length = int(numpy.max(stops - starts))
    batch = numpy.full((len(series), length, Y.shape[2]), numpy.nan)
    for row, (index, begin, end) in enumerate(zip(series, starts, stops, strict=True)):
        batch[row, : end - begin] = Y[index, begin:end]
    return WindowBatch(numpy.asarray(series), numpy.asarray(windows), batch)


def window_log_likelihood(params, spec, batch, clouds, settings, rng, alpha=0.0):
    """Return the minibatch objective and the clouds its windows leave.

    The log-likelihood per observed step of the windows in ``batch``, each
    filtered from the cloud its series carries (``clouds[s]``, a constant) or,
    for a series' first window, from the initial distribution; minus the L2
    penalty ``alpha / 2 * sum(W**2)`` of the dense weights per observed step.

    Parameters
    ----------
    params : dict
    spec : StateMixSpec
    batch : WindowBatch
    clouds : dict
        ``{series: (particles (N, n_states), log_weights (N,))}``: where each
        series' previous window ended.
    settings : TrainingSettings
    rng : numpy.random.Generator
    alpha : float, default=0.0

    Returns
    -------
    value : float (traced when ``params`` are)
    log_likelihood : float
        The log-likelihood per observed step, without the penalty (a value).
    final : tuple of ndarray
        The clouds after the windows: particles (n_windows, N, n_states) and
        log-weights (n_windows, N).
    """
    model, proposal = spec.build(params)
    n_observed = count_observed_steps(batch.Y)
    initial_particles = initial_log_weights = None
    if numpy.any(batch.windows > 0):
        # Series at their first window start from the initial distribution (drawn
        # here in the order of the batch); the others from their carried cloud.
        n = settings.n_particles
        particles, log_weights = [], []
        for series, window in zip(batch.series, batch.windows, strict=True):
            if window == 0:
                particles.append(model.sample_initial(n, rng))
                log_weights.append(numpy.full(n, -numpy.log(n)))
            else:
                particles.append(clouds[series][0])
                log_weights.append(clouds[series][1])
        initial_particles = numpy.stack(particles)
        initial_log_weights = numpy.stack(log_weights)
    result = _filter(
        batch.Y,
        model,
        proposal,
        settings,
        rng,
        initial_particles=initial_particles,
        initial_log_weights=initial_log_weights,
    )
    log_likelihood = np.sum(result.log_likelihood) / max(n_observed, 1)
    value = log_likelihood
    if alpha > 0:
        squares = sum(
            np.sum(W**2) for phase in PHASES for W, _ in params[phase]["layers"]
        )
        value = value - 0.5 * alpha * squares / max(n_observed, 1)
    final = (result.final_particles, result.final_log_weights)
    return value, float(getval(log_likelihood)), final


def split_validation(
    series, random_state, *, early_stopping, validation_fraction, window_length
):
    """Return the training series, the :class:`Validation` and its series.

    See StateMixFilter's ``early_stopping``: whole series are held out when there
    are two or more (``ceil(validation_fraction * n_series)``, at most all but one,
    drawn with ``random_state``), otherwise the last windows of the one series;
    None (twice) when ``early_stopping`` is False or the data are too few (an
    error when it is True).
    """
    if early_stopping is False:
        return series, None, None
    n_series = len(series)
    if n_series >= 2:
        n_held = min(int(numpy.ceil(validation_fraction * n_series)), n_series - 1)
        order = random_state.permutation(n_series)
        held = sorted(order[:n_held])
        kept = sorted(order[n_held:])
        held_out = [series[i] for i in held]
        training = [series[i] for i in kept]

        def observed(sequences):
            return any(numpy.any(~numpy.isnan(one)) for one in sequences)

        # Both parts need an observation to learn from and to score.
        if observed(held_out) and observed(training):
            return training, Validation(pad_series(held_out)), held_out
    n_steps = len(series[0])
    n_windows = -(-n_steps // window_length)
    if n_series == 1 and n_windows >= 2:
        n_held = min(int(numpy.ceil(validation_fraction * n_windows)), n_windows - 1)
        first_held = (n_windows - n_held) * window_length
        held = series[0][first_held:]
        if numpy.any(~numpy.isnan(held)) and numpy.any(
            ~numpy.isnan(series[0][:first_held])
        ):
            return (
                [series[0][:first_held]],
                Validation(series[0][None], first_step=first_held),
                [series[0][first_held:]],
            )
    if early_stopping is True:
        raise ValueError(
            "early_stopping=True needs data to hold out: two series or more "
            "with observations among both the held-out and the training "
            "series, or one series of at least two windows (window_length="
            f"{window_length}) with observations in both parts; got "
            f"{n_series} series of {n_steps} steps. Use early_stopping='auto' "
            "or False to train on all the data."
        )
    return series, None, None
