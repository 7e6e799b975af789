"""Where StateMixFilter's networks start: pure functions of the data.

Before any gradient step, the networks' scales and a first transition are read
off the observations (the user guide's training page says why each helps):

1. :func:`state_statistics`: the standardisation of the networks' input, the
   increment spread (the scale unit of both mixtures) and the initial
   distribution, from the least-squares states ``pinv(H) y`` of a linear
   observation;
2. :func:`dynamics_start`: the linear dynamics ``(A, diag(Q))`` fitted by the
   method of moments (or, where too few steps give least-squares states, from
   the random walk) and then EM (:mod:`statemix_sk.kalman`), as the
   transition's linear drift and spread;
3. :func:`proposal_start`: the gain and spread of the locally optimal proposal
   for that transition's noise;
4. :func:`regression_start`: optionally, the transition network fitted by
   maximum likelihood (:func:`fit_transition_to_states`) to smoothed states
   (:func:`linear_smoother` of the fitted linear model, or
   :func:`particle_smoother`), kept only if :func:`start_score` prefers it.

:func:`start_spec` assembles a :class:`~statemix_sk.learned.StateMixSpec` from
these parts. Nothing here holds state or uses scikit-learn; randomness comes in
as seeds.
"""

import warnings

import autograd.numpy as np
import numpy
from autograd import value_and_grad
from autograd.misc import flatten

from ._utils import check_magnitude, check_scale, logsumexp, pad_series
from .filtering import particle_filter
from .kalman import linear_dynamics_by_em, linear_dynamics_by_moments, smoothed_states
from .learned import StateMixSpec, expand_components, locally_optimal_gain
from .networks import Standardizer, make_mixture_head
from .objective import (
    count_observed_steps,
    mean_log_likelihood,
    validation_log_likelihood,
)
from .smoothing import genealogy_smoothed_means
from .training import adam_init, adam_update, all_finite, clip_by_norm

__all__ = [
    "dynamics_start",
    "fit_transition_to_states",
    "least_squares_states",
    "linear_smoother",
    "particle_smoother",
    "proposal_start",
    "regression_start",
    "start_score",
    "start_spec",
    "state_statistics",
]

# Every standard deviation of the networks' mixtures stays within these multiples
# of the data's increment spread (the bounded scale link).
SCALE_BOUNDS = (0.01, 10.0)
# Particles of the filter whose genealogy gives the regression start its states
# for a non-linear observation (on Kuramoto, 20 series: 500 gave a start with
# held-out MSE 0.033 against the random-walk start's 0.069).
SMOOTHER_PARTICLES = 500


def _spread(values, axis):
    """Return the NaN-ignoring standard deviation, 1 where it is 0 or undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = numpy.nanstd(values, axis=axis)
    return numpy.where(numpy.isfinite(spread) & (spread > 0), spread, 1.0)


def least_squares_states(Y, inverse):
    """Return ``pinv(H) y`` per row, NaN where a state needs a missing entry.

    ``inverse`` is ``pinv(H)``. State ``j`` of a row is
    ``sum_k inverse[j, k] y[k]``: it is known where every ``y[k]`` with a
    non-zero weight is observed (for ``H = I``, where ``y[j]`` is), and NaN
    otherwise, rather than NaN wherever the row misses any entry. Weights
    under ``1e-12`` of the largest count as zero (``pinv`` leaves rounding
    where a block-diagonal ``H`` has exact zeros).

    Raises
    ------
    ValueError
        Where a known state overflows float64.
    """
    missing = numpy.isnan(Y)
    with numpy.errstate(over="ignore", invalid="ignore"):
        states = numpy.where(missing, 0.0, Y) @ inverse.T
    weighs = numpy.abs(inverse) > 1e-12 * numpy.abs(inverse).max()
    unknown = (missing.astype(float) @ weighs.T) > 0
    if not numpy.all(numpy.isfinite(states[~unknown])):
        raise ValueError("They overflow float64.")
    states[unknown] = numpy.nan
    return states


def state_statistics(
    series, observation, initial_state_mean=None, initial_state_scale=None
):
    """Scales the networks start from, read off the data.

    For a linear observation the least-squares states ``pinv(H) y`` give the
    standardisation of the networks' input, the increment spread (the
    random-walk scale that the untrained transition starts with) and the
    default initial distribution. The increment spread is a method-of-moments
    estimate: the differences of the least-squares states carry the
    observation noise twice, so its variance ``2 diag(pinv(H) R pinv(H)')`` is
    taken off (keeping at least a tenth of the raw spread). For any other
    observation nothing about the state's scale can be read off ``Y``: zero
    mean, unit scale, and an increment spread of a tenth of the initial scale.

    Returns
    -------
    stats : Standardizer
    increments : ndarray of shape (n_states,)
    initial_mean, initial_scale : ndarray of shape (n_states,)
        The given ``initial_state_mean`` and ``initial_state_scale`` where not
        None, else read off the data.
    """
    n_states = observation.n_states
    matrix = getattr(observation, "observation_matrix", None)
    if matrix is not None:
        inverse = numpy.linalg.pinv(matrix)
        try:
            states = [least_squares_states(one, inverse) for one in series]
            stacked = numpy.concatenate(states)
            check_magnitude(stacked, "pinv(observation_matrix) @ Y")
        except ValueError as exc:
            raise ValueError(
                "observation_matrix is too close to singular for this Y: the "
                f"least-squares states pinv(H) y are out of range. {exc}"
            ) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = numpy.nanmean(stacked, axis=0)
            first = numpy.nanmean(numpy.stack([one[0] for one in states]), 0)
        mean = numpy.where(numpy.isfinite(mean), mean, 0.0)
        scale = _spread(stacked, axis=0)
        raw = _spread(numpy.concatenate([numpy.diff(one, axis=0) for one in states]), 0)
        noise_variance = numpy.diag(inverse @ observation.noise_covariance @ inverse.T)
        increments = numpy.sqrt(
            numpy.maximum(raw**2 - 2.0 * noise_variance, (0.1 * raw) ** 2)
        )
        initial_mean = numpy.where(numpy.isfinite(first), first, mean)
        initial_scale = scale
    else:
        mean, scale = numpy.zeros(n_states), numpy.ones(n_states)
        initial_mean, initial_scale = mean, scale
        increments = None
    if initial_state_mean is not None:
        value = numpy.asarray(initial_state_mean, dtype=float)
        if (
            value.ndim > 1
            or (value.ndim == 1 and value.size != n_states)
            or not (numpy.all(numpy.isfinite(value)))
        ):
            raise ValueError(
                f"initial_state_mean must be a finite scalar or a vector of "
                f"{n_states} entries, got {initial_state_mean!r}."
            )
        initial_mean = numpy.broadcast_to(value, (n_states,)).copy()
    if initial_state_scale is not None:
        initial_scale = check_scale(
            initial_state_scale, "initial_state_scale", n_states
        )
    if increments is None:
        increments = 0.1 * initial_scale
    return Standardizer(mean, scale), increments, initial_mean, initial_scale


def dynamics_start(
    series,
    observation,
    stats,
    increments,
    initial_mean,
    initial_scale,
    init_dynamics="linear",
):
    """Where the linear parts start: see StateMixFilter's ``init_dynamics``.

    Returns the transition's drift (None: a random walk) and spread, and the
    fitted linear model ``(A, diag(Q))`` (None unless one was fitted).
    """
    matrix = getattr(observation, "observation_matrix", None)
    if matrix is None or init_dynamics == "random_walk":
        return None, increments, None
    inverse = numpy.linalg.pinv(matrix)
    transition_matrix, process_variance = linear_dynamics_by_moments(
        [least_squares_states(one, inverse) for one in series],
        inverse @ observation.noise_covariance @ inverse.T,
        stats.mean,
    )
    if transition_matrix is None:
        # Too few steps read off states by least squares (little data, or an
        # H that mixes every state into every output with entries missing).
        # EM needs no such states: given as many steps observing something as
        # the moments need pairs (beyond each series' first), it starts from
        # the random walk that the transition would otherwise start as.
        n_steps = sum(
            max(int(numpy.sum(~numpy.all(numpy.isnan(one), axis=1))) - 1, 0)
            for one in series
        )
        if n_steps < 2 * len(stats.mean) + 2:
            return None, increments, None
        transition_matrix = 0.999 * numpy.eye(len(stats.mean))
        process_variance = increments**2
    transition_matrix, process_variance, _ = linear_dynamics_by_em(
        series,
        observation,
        stats.mean,
        transition_matrix,
        process_variance,
        initial_mean,
        initial_scale,
    )
    # Increment = (A - I)(x - mean) = (A - I) diag(scale) z for the
    # standardised input z.
    drift = (transition_matrix - numpy.eye(len(stats.mean))) * stats.scale
    transition_scale = numpy.clip(
        numpy.sqrt(process_variance), 0.05 * increments, increments
    )
    return drift, transition_scale, (transition_matrix, process_variance)


def proposal_start(observation, transition_scale, increments):
    """Gain and spread of the locally optimal proposal of a transition's noise.

    Returns ``(None, transition_scale)`` (the proposal starts as the
    transition) when the observation is not linear.
    """
    matrix = getattr(observation, "observation_matrix", None)
    if matrix is None:
        return None, transition_scale
    # Without this start, a proposal that starts as the transition is a
    # bootstrap filter, which loses track in a few dimensions and gives the
    # networks little to learn from.
    gain, proposal_scale = locally_optimal_gain(
        matrix, observation.noise_covariance, transition_scale
    )
    gain = gain * observation.noise_scale  # per unit of scaled innovation
    return gain, numpy.maximum(proposal_scale, 1e-3 * increments)


def start_spec(
    noise_scale,
    transition_params=None,
    *,
    observation,
    stats,
    increments,
    transition_scale,
    initial_mean,
    initial_scale,
    drift,
    hidden_layer_sizes,
    n_components,
    covariance_type,
    missing_indicator=False,
):
    """Return the StateMixSpec whose proposal starts for a noise ``noise_scale``.

    The transition's mixture starts with spread ``transition_scale`` (and, with
    ``transition_params``, those network parameters); the proposal starts as the
    locally optimal proposal for a Gaussian transition of noise ``noise_scale``,
    around the transition's mean (:func:`proposal_start`). ``missing_indicator``:
    see :attr:`statemix_sk.learned.StateMixSpec.missing_indicator`.
    """

    def head(initial_scale):
        return make_mixture_head(
            n_components,
            observation.n_states,
            location_scale=increments,
            initial_scale=initial_scale,
            scale_bounds=SCALE_BOUNDS,
            covariance_type=covariance_type,
        )

    gain, proposal_scale = proposal_start(observation, noise_scale, increments)
    return StateMixSpec(
        head(transition_scale),
        head(proposal_scale),
        stats,
        observation,
        initial_mean,
        initial_scale,
        hidden_layer_sizes,
        transition_drift=drift,
        proposal_gain=gain,
        transition_params=transition_params,
        missing_indicator=missing_indicator,
    )


def linear_smoother(spec, linear):
    """State estimates for the regression start, linear observation.

    The Kalman smoother of the fitted linear model (``linear``: its
    ``(A, diag(Q))``): a function from series to their smoothed means.
    """
    transition_matrix, process_variance = linear

    def smooth(sequences):
        return smoothed_states(
            sequences,
            spec.observation,
            spec.input_stats.mean,
            transition_matrix,
            process_variance,
            spec.initial_mean,
            spec.initial_scale,
        )

    return smooth


def particle_smoother(spec, seed):
    """State estimates for the regression start, any observation.

    The ancestral paths of a bootstrap filter with the untrained (random-walk)
    transition of ``spec``, at ``SMOOTHER_PARTICLES`` particles
    (:func:`~statemix_sk.smoothing.genealogy_smoothed_means`): a function
    from series to their smoothed means. A few series at a time, so that the
    stored particles stay within about 40 MB.
    """
    model, _ = spec.build(spec.init_params(numpy.random.default_rng(seed)))
    n_states = spec.observation.n_states

    def smooth(sequences):
        length = max(len(one) for one in sequences)
        per_chunk = max(1, 5_000_000 // (length * SMOOTHER_PARTICLES * n_states))
        means = []
        for first in range(0, len(sequences), per_chunk):
            chunk = sequences[first : first + per_chunk]
            with numpy.errstate(all="ignore"):
                result = particle_filter(
                    pad_series(chunk),
                    model,
                    None,
                    n_particles=SMOOTHER_PARTICLES,
                    random_state=seed + first,
                    return_particles=True,
                )
            paths = genealogy_smoothed_means(result)
            means.extend(p[: len(y)] for p, y in zip(paths, chunk, strict=True))
        return means

    return smooth


def fit_transition_to_states(
    params,
    spec,
    states,
    validation_states=None,
    *,
    rng,
    learning_rate=0.01,
    batch_size=1000,
    max_steps=2000,
    eval_every=25,
    n_iter_no_change=10,
    steps_without_validation=500,
):
    """Fit the transition network by maximum likelihood to state sequences.

    Maximises the mean of ``log f_theta(x_t | x_{t-1})`` over the consecutive
    pairs of ``states`` by Adam on random minibatches of pairs: a regression of
    each state on the previous one, with the transition's mixture as the noise
    model. With ``validation_states``, the mean over their pairs is evaluated
    every ``eval_every`` steps, the best parameters are kept and fitting stops
    after ``n_iter_no_change`` evaluations without improvement (or
    ``max_steps``); without, it runs ``steps_without_validation`` steps and keeps
    the last parameters.

    Parameters
    ----------
    params : dict
        ``{"transition": ..., "proposal": ...}``; only the transition is fitted.
    spec : StateMixSpec
    states : list of ndarray of shape (n_steps_i, n_states)
    validation_states : list of ndarray of shape (n_steps_i, n_states), \
default=None
    rng : numpy.random.Generator
    learning_rate, batch_size, max_steps, eval_every, n_iter_no_change, \
steps_without_validation
        Adam's step size and the schedule above. On Lorenz 96 (45 series) the
        held-out score rose for about 600 steps and was flat from 1,000.

    Returns
    -------
    params : dict
        A new dict with the fitted transition (the proposal untouched).
    scale : ndarray of shape (n_states,)
        The fitted transition's standard deviation per state, averaged over
        the training pairs (its components' scales weighted by their weights).
    """

    def pairs(sequences):
        previous = numpy.concatenate([one[:-1] for one in sequences])
        current = numpy.concatenate([one[1:] for one in sequences])
        keep = numpy.all(numpy.isfinite(previous) & numpy.isfinite(current), axis=1)
        return previous[keep], current[keep]

    x_prev, x = pairs(states)
    vector, unflatten = flatten(params["transition"])

    def mean_log_density(vector, x_prev, x):
        model, _ = spec.build(
            {"transition": unflatten(vector), "proposal": params["proposal"]}
        )
        return np.mean(model.transition_log_density(x, x_prev))

    gradient_of = value_and_grad(mean_log_density)
    validation = None if validation_states is None else pairs(validation_states)
    adam = adam_init(vector.size)
    best, best_score, no_improvement = vector, -numpy.inf, 0
    if validation is not None:
        best_score = float(mean_log_density(vector, *validation))
    n_steps = max_steps if validation is not None else steps_without_validation
    for step in range(1, n_steps + 1):
        rows = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        value, gradient = gradient_of(vector, x_prev[rows], x[rows])
        if not all_finite(value, [gradient]):
            break
        update, adam = adam_update(adam, clip_by_norm(gradient, 50.0), learning_rate)
        vector = vector + update
        if validation is None or step % eval_every:
            continue
        score = float(mean_log_density(vector, *validation))
        if score > best_score:
            best, best_score, no_improvement = vector, score, 0
        else:
            no_improvement += 1
            if no_improvement >= n_iter_no_change:
                break
    if validation is None:
        best = vector
    fitted = {"transition": unflatten(best), "proposal": params["proposal"]}
    model, _ = spec.build(fitted)
    mixture = model.transition_mixture(x_prev)
    weights = numpy.exp(
        mixture.logits - logsumexp(mixture.logits, axis=1, keepdims=True)
    )
    scales = (
        mixture.scales
        if mixture.scales.ndim == 3
        else numpy.sqrt(numpy.sum(mixture.scales**2, axis=-1))
    )
    scale = numpy.mean(numpy.sum(weights[..., None] * scales, axis=1), axis=0)
    return fitted, scale


def regression_start(spec, make_spec, series, held_out, smooth, seed):
    """Start the transition as a regression on smoothed states.

    ``smooth`` estimates the states of every training series (the Kalman
    smoother of the linear start, or the particle smoother of the random-walk
    start); the transition network is fitted to them by maximum likelihood
    (:func:`fit_transition_to_states`, early-stopped
    on the held-out series' smoothed states when there are any), and the
    proposal starts as the locally optimal proposal for the fitted
    transition's noise (``make_spec(noise_scale, transition_params)``).
    Returns the spec that starts there.
    """
    # The regression is fitted with one component, then each of the S
    # components starts from it: fitted with S components, the mixture
    # overfitted 18 Lorenz 96 series (held-out log-likelihood per step
    # -17.3, against -15.5 with one component).
    one_head = spec.transition_head._replace(n_components=1)
    one_spec = spec._replace(transition_head=one_head)
    rng = numpy.random.default_rng(seed)
    params = one_spec.init_params(rng)
    with numpy.errstate(all="ignore"):
        fitted, noise_scale = fit_transition_to_states(
            params,
            one_spec,
            smooth(series),
            None if held_out is None else smooth(held_out),
            rng=rng,
        )
    # Near-zero output weights, without the linear drift (in the fit already).
    start = spec._replace(transition_drift=None).init_params(rng)["transition"]
    transition = expand_components(
        fitted["transition"], one_head, spec.transition_head, start
    )
    return make_spec(noise_scale, transition)


def start_score(spec, Y, validation, settings, seed):
    """Fixed-seed log-likelihood per step of a start (held-out data if any)."""
    params = spec.init_params(numpy.random.default_rng(seed))
    with numpy.errstate(all="ignore"):
        if validation is not None:
            score = validation_log_likelihood(params, spec, validation, settings, seed)
        else:
            score = float(
                mean_log_likelihood(
                    params, spec, Y, count_observed_steps(Y), settings, seed
                )
            )
    return score if numpy.isfinite(score) else -numpy.inf
