"""The learned filter's proposal step as one autograd primitive.

At every time step StateMixNN's proposal runs the transition network, takes the
transition mixture's mean, runs the proposal network on the innovation of that
prediction, samples from the proposal mixture and evaluates both mixture densities
at the sample (see :meth:`statemix_sk.learned.MixtureProposal.propose`). Composed
from autograd primitives this is about 25 nodes per step, and autograd's tape keeps
each node's output until the backward pass: the two networks' outputs (n, 123) and
the mixtures' means and scales (n, S, d), about 6 MB per step at n = 1000, d = 20.

:func:`learned_proposal_step` computes the same thing as **one** primitive whose
backward pass recomputes the forward pass from its inputs, the previous particles
and the two networks' weights, which the tape holds anyway. Only its output, the
new particles and the log ratio ``log f - log pi``, stays on the tape. The
straightforward composition remains in :mod:`statemix_sk.learned` as the
reference, and the tests check that both give the same value and gradient for the
same random draws.

:func:`take_rows` is the gather by ancestors, with a backward pass that sums the
gradients of the copies of a particle with ``numpy.add.reduceat`` (ancestors are
sorted) instead of autograd's ``numpy.add.at``.

Everything here is plain NumPy on values; only the primitives' wrappers meet
autograd.
"""

from typing import NamedTuple

import autograd.numpy as anp
import numpy
from autograd import make_vjp
from autograd.extend import defvjp, defvjp_argnums, primitive

from ._utils import logsumexp
from .mixtures import (
    _diag_density_gradients,
    _diag_terms,
    components_from_weights,
    log_softmax,
    logsumexp_components,
    sum_components,
)
from .networks import (
    _mlp_activations,
    _mlp_backward,
    input_width,
    shifted_sigmoid,
    standardize,
    standardize_vjp,
)
from .observations import (
    LinearGaussianObservation,
    _linear_gaussian_log_density_vjp,
)

__all__ = [
    "KeptIntermediates",
    "StepConfig",
    "learned_filter_step",
    "learned_proposal_step",
    "take_block",
    "take_rows",
]


class StepConfig(NamedTuple):
    """What :func:`learned_proposal_step` needs besides arrays (all constants)."""

    transition_head: object
    """MixtureHead of the transition network (diagonal)."""
    proposal_head: object
    """MixtureHead of the proposal network (diagonal)."""
    input_stats: object
    """Standardizer of the previous state."""
    observation: object
    """The observation model: ``mean`` and ``noise_scale`` are used."""
    n_transition_arrays: int
    """How many of the weight arrays belong to the transition network."""
    kept: object = None
    """A :class:`KeptIntermediates` in which the forward pass leaves its
    intermediates for the backward pass, or None: the backward pass recomputes
    them."""
    missing_indicator: bool = False
    """Whether the proposal network also sees which entries of ``y`` are missing
    (:func:`proposal_inputs`)."""


class KeptIntermediates:
    """A forward pass's intermediates, held for its backward pass.

    Recomputing them costs one more forward pass of the step (about a third of
    a value-and-gradient); holding them costs about 1.5 kB per particle and
    step at d = 10 (:attr:`nbytes`). :class:`statemix_sk.learned.MixtureProposal`
    holds them up to a memory budget and recomputes beyond it. The backward
    pass drops them as soon as it has used them.
    """

    __slots__ = ("__weakref__", "n_steps", "nbytes", "room", "values")

    def __init__(self, room=None, n_steps=None):
        self.values = None
        self.nbytes = 0
        # The mixtures' means are kept only if ``n_steps`` steps like this one
        # (the rest of the pass) fit in ``room`` bytes with them (None: no
        # limit); otherwise the backward pass recomputes them from the last
        # hidden layers (_means), with the same bits, and the budget keeps
        # more steps: recomputing the means costs about a seventh of
        # recomputing a step.
        self.room = room
        self.n_steps = n_steps

    def keep(self, values):
        """Hold ``values`` (a dict of arrays, tuples and lists of arrays)."""
        self.values = values
        self.nbytes = _nbytes(values)
        if (
            self.room is not None
            and "means" in values
            and self.nbytes * (self.n_steps or 1) > self.room
        ):
            self.values = {
                key: value for key, value in values.items() if key != "means"
            }
            self.nbytes = _nbytes(self.values)

    def take(self):
        """Return the values and stop holding them (None if none are held)."""
        values, self.values = self.values, None
        return values


def _nbytes(values):
    if isinstance(values, numpy.ndarray):
        return values.nbytes
    if isinstance(values, dict):
        values = list(values.values())
    if isinstance(values, (list, tuple)):
        return sum(_nbytes(value) for value in values)
    return 0


def _network_forward(arrays, inputs):
    """``mlp(layers, inputs) + inputs @ linear``; arrays ``W_1, b_1, ..., L``.

    The same operations as :func:`statemix_sk.learned.apply_mixture_network`, so
    that the fused and the reference path agree to the last bit in the forward
    pass (a different mixture component could otherwise be drawn). Returns the
    outputs and every layer's input, which the backward pass reuses.
    """
    layers, linear = arrays[:-1], arrays[-1]
    activations = _mlp_activations(inputs, layers)
    # The last activation is the dense part's output: the backward pass does
    # not need it.
    outputs = activations.pop()
    outputs += numpy.dot(inputs, linear)
    return outputs, activations


def _network_backward(arrays, activations, upstream, weights=True):
    """Gradients of the weights (same order as ``arrays``) and of the inputs.

    ``weights=False`` skips the weights' gradients (None in the list): training
    differentiates one network at a time, but needs the other's input gradient.
    """
    layers, linear = arrays[:-1], arrays[-1]
    gradients, delta = _mlp_backward(activations, layers, upstream, weights)
    linear_gradient = activations[0].T @ upstream if weights else None
    delta += upstream @ linear.T
    return [*gradients, linear_gradient], delta


def _head_forward(head, outputs, reference):
    """Logits, means (``reference`` plus increments) and the scales' sigmoid.

    The same operations as :func:`statemix_sk.networks.apply_mixture_head`.
    """
    n_items = outputs.shape[0]
    S, d = head.n_components, head.n_dims
    logits = outputs[:, :S]
    means = numpy.reshape(outputs[:, S : S + S * d], (n_items, S, d))
    means = means * head.location_scale
    means += reference[:, None, :]
    raw = numpy.reshape(outputs[:, S + S * d : S + 2 * S * d], (n_items, S, d))
    sigmoid = shifted_sigmoid(raw, head.scale_offset)
    return logits, means, sigmoid


def _scales(head, sigmoid):
    """Return the bounded scales from their sigmoid (cheaper to redo than keep)."""
    scales = sigmoid * (head.scale_high - head.scale_low)
    scales += head.scale_low
    return scales


def _head_backward(head, sigmoid, d_logits, d_means, d_scales):
    """Gradient of the network outputs from those of logits, means and scales."""
    n_items, S, d = d_means.shape
    gradient = numpy.empty((n_items, S + 2 * S * d))
    gradient[:, :S] = d_logits
    numpy.multiply(
        d_means,
        head.location_scale,
        out=numpy.reshape(gradient[:, S : S + S * d], (n_items, S, d)),
    )
    d_raw = numpy.reshape(gradient[:, S + S * d :], (n_items, S, d))
    numpy.subtract(1.0, sigmoid, out=d_raw)
    d_raw *= sigmoid
    d_raw *= d_scales
    d_raw *= head.scale_high - head.scale_low
    return gradient


def _density_backward(x, means, scales, density, upstream):
    """VJP of :func:`statemix_sk.mixtures.diag_mixture_log_density` for all args.

    ``density`` is ``(log_weights, joint, log_density)`` from the forward pass
    (see ``_diag_terms``); ``z`` is recomputed, as it is cheap.
    """
    z = x[:, None, :] - means
    z /= scales
    return _diag_density_gradients(z, *density, scales, upstream)


def scaled_innovation(y, predicted, noise_scale):
    """Return ``(y - predicted) / noise_scale``, zero at the missing entries of ``y``.

    A missing entry (NaN) carries no innovation: the proposal network sees 0
    there, "no correction towards the observation", and no gradient flows through
    it. Differentiable in ``predicted`` with autograd.
    """
    observed = ~numpy.isnan(y)
    if observed.all():
        return (y - predicted) / noise_scale
    filled = numpy.where(observed, y, 0.0)
    return anp.where(observed, (filled - predicted) / noise_scale, 0.0)


def proposal_inputs(standardized, innovation, y, missing_indicator, join):
    """Return the proposal network's input ``[standardized, innovation, indicator]``.

    The indicator (1.0 where ``y`` is missing, 0.0 where observed) comes last
    and only with ``missing_indicator``; the backward pass reads the innovation's
    columns by this layout. ``join`` is ``numpy.concatenate`` on values or
    autograd's on the reference path.
    """
    parts = [standardized, innovation]
    if missing_indicator:
        parts.append(numpy.isnan(y).astype(float))
    return join(parts, axis=1)


def _forward(x_prev, y, uniforms, noise, config, arrays, x=None):
    """Run the whole step on values; return the sample and what the backward needs.

    Given ``x`` (the backward pass recomputing a step whose sample it knows),
    the sample is not redrawn and ``noise`` is not needed.
    """
    transition_arrays = arrays[: config.n_transition_arrays]
    proposal_arrays = arrays[config.n_transition_arrays :]
    stats, observation = config.input_stats, config.observation
    standardized = standardize(x_prev, stats)
    f_outputs, f_activations = _network_forward(transition_arrays, standardized)
    f_logits, f_means, f_sigmoid = _head_forward(
        config.transition_head, f_outputs, x_prev
    )
    f_log_weights = log_softmax(f_logits)
    # The transition's mixture mean, computed as learned._mixture_mean does.
    f_weights = numpy.exp(f_log_weights)
    centre = sum_components(f_weights[:, :, None] * f_means)
    innovation = scaled_innovation(y, observation.mean(centre), observation.noise_scale)
    q_outputs, q_activations = _network_forward(
        proposal_arrays,
        proposal_inputs(
            standardized, innovation, y, config.missing_indicator, numpy.concatenate
        ),
    )
    q_logits, q_means, q_sigmoid = _head_forward(
        config.proposal_head, q_outputs, centre
    )
    q_log_weights = log_softmax(q_logits)
    components = components_from_weights(numpy.exp(q_log_weights), uniforms)
    rows = numpy.arange(len(components))
    q_scales = _scales(config.proposal_head, q_sigmoid)
    if x is None:
        # x = means[c] + scales[c] * noise, as the one-hot sum of
        # mixtures.transform_mixture_noise gives it (the other terms add zeros).
        x = q_scales[rows, components]
        x *= noise
        x += q_means[rows, components]
    f_scales = _scales(config.transition_head, f_sigmoid)
    _, _, f_joint = _diag_terms(x, f_logits, f_means, f_scales, f_log_weights)
    _, _, q_joint = _diag_terms(x, q_logits, q_means, q_scales, q_log_weights)
    f_log_density = logsumexp_components(f_joint)
    q_log_density = logsumexp_components(q_joint)
    # What the backward pass needs, less what is cheap to redo from it: the
    # scales from their sigmoids, z from x, the means from the last hidden
    # layer (one small product; see _means), the mixture mean from them, the
    # transition network's input from the proposal network's, the sample from
    # the step's result, the noise from the sample. About 2.5 kB per particle
    # at d = 20, S = 3, 32-32, so that MixtureProposal's default budget keeps
    # every step of a 100-step series of 1000 particles.
    kept = {
        "f": (f_activations[1:], f_sigmoid, f_weights),
        "f_density": (f_log_weights, f_joint, f_log_density),
        "q": (q_activations, q_sigmoid),
        "q_density": (q_log_weights, q_joint, q_log_density),
        "components": components,
        # Kept only where the budget has room for them (KeptIntermediates).
        "means": (f_means, centre, q_means),
    }
    return x, f_log_density - q_log_density, kept


def _means(head, arrays, activations, reference):
    """Recompute a mixture's means from its network's last hidden layer.

    Only the output columns of the means: ``reference + location_scale *
    (h_L W[:, cols] + b[cols] + inputs @ linear[:, cols])``, the operations of
    the forward pass on fewer columns.
    """
    S, d = head.n_components, head.n_dims
    columns = slice(S, S + S * d)
    increments = activations[-1] @ arrays[-3][:, columns]
    increments += arrays[-2][columns]
    increments += numpy.dot(activations[0], arrays[-1][:, columns])
    means = numpy.reshape(increments, (len(reference), S, d))
    means *= head.location_scale
    means += reference[:, None, :]
    return means


@primitive
def learned_proposal_step(particles, rows, y, uniforms, noise, config, *arrays):
    """Propose from the learned mixture; return ``[x, log f(x) - log pi(x)]``.

    Parameters
    ----------
    particles : array of shape (m, n_states)
        The previous particle cloud.
    rows : ndarray of int of shape (n,)
        The row of ``particles`` that each new particle descends from: the step
        starts from ``particles[rows]`` (the gather is inside the primitive, so
        that the gathered copy is not kept on the tape).
    y : ndarray of shape (n, n_outputs)
        The observation of each row (constant).
    uniforms : ndarray of shape (n,)
        The uniforms that choose each row's proposal component (constant).
    noise : ndarray of shape (n, n_states)
        The standard normal draws of the reparameterised sample (constant).
    config : StepConfig
    *arrays : arrays
        The transition network's ``W_1, b_1, ..., W_L, b_L, linear``, then the
        proposal network's.

    Returns
    -------
    step : array of shape (n, n_states + 1)
        The new particles in the first ``n_states`` columns, the log ratio of the
        transition and proposal densities at them in the last.
    """
    x, log_ratio, kept = _forward(particles[rows], y, uniforms, noise, config, arrays)
    if config.kept is not None:
        config.kept.keep(kept)
    return numpy.concatenate([x, log_ratio[:, None]], axis=1)


def _step_backward(x_prev, x, y, config, arrays, v, d_x, d_ratio, which):
    """Back-propagate through the proposal step ``_forward`` that kept ``v``.

    ``x`` is the step's sample; ``d_x`` and ``d_ratio`` are the gradients of
    the new particles and of the log ratio; ``which`` is ``(transition,
    proposal)``: whether each network's weight gradients are wanted. Returns
    the gradient of ``x_prev`` and the list of the weights' gradients (None
    where not wanted).
    """
    observation = config.observation
    transition_arrays = arrays[: config.n_transition_arrays]
    proposal_arrays = arrays[config.n_transition_arrays :]
    q_activations, q_sigmoid = v["q"]
    # The transition network's input is the first columns of the proposal's.
    n_inputs = input_width(config.input_stats)
    f_hidden, f_sigmoid, f_weights = v["f"]
    f_activations = [q_activations[0][:, :n_inputs], *f_hidden]
    if "means" in v:
        f_means, centre, q_means = v["means"]
    else:
        f_means = _means(
            config.transition_head, transition_arrays, f_activations, x_prev
        )
        centre = sum_components(f_weights[:, :, None] * f_means)
        q_means = _means(config.proposal_head, proposal_arrays, q_activations, centre)
    f_scales = _scales(config.transition_head, f_sigmoid)
    q_scales = _scales(config.proposal_head, q_sigmoid)
    components = v["components"]
    rows_of_x = numpy.arange(len(components))
    # The standard normal draws, from x = q_means_c + q_scales_c noise.
    noise = x - q_means[rows_of_x, components]
    noise /= q_scales[rows_of_x, components]

    # log_ratio = log f(x) - log pi(x).
    f_dx, d_f_logits, d_f_means, d_f_scales = _density_backward(
        x, f_means, f_scales, v["f_density"], d_ratio
    )
    q_dx, d_q_logits, d_q_means, d_q_scales = _density_backward(
        x, q_means, q_scales, v["q_density"], -d_ratio
    )
    d_x = d_x + f_dx
    d_x += q_dx
    # x = q_means_c + q_scales_c noise, c the chosen component.
    d_q_means[rows_of_x, components] += d_x
    d_q_scales[rows_of_x, components] += d_x * noise
    # The proposal network and its head, centred on the transition's mean.
    d_centre = sum_components(d_q_means)
    proposal_gradients, d_inputs = _network_backward(
        arrays[config.n_transition_arrays :],
        q_activations,
        _head_backward(
            config.proposal_head, q_sigmoid, d_q_logits, d_q_means, d_q_scales
        ),
        weights=which[1],
    )
    d_standardized = d_inputs[:, :n_inputs]
    # innovation = (y - h(centre)) / noise_scale, zero where y is missing; the
    # missing indicator's columns, if any, come after (proposal_inputs): constants.
    d_predicted = (
        -d_inputs[:, n_inputs : n_inputs + y.shape[1]] / observation.noise_scale
    )
    observed = ~numpy.isnan(y)
    if not observed.all():
        d_predicted = numpy.where(observed, d_predicted, 0.0)
    if isinstance(observation, LinearGaussianObservation):
        d_centre = d_centre + d_predicted @ observation.observation_matrix
    else:
        observation_vjp, _ = make_vjp(observation.mean)(centre)
        d_centre = d_centre + observation_vjp(d_predicted)
    # centre = sum_k w_k f_means_k, w = softmax(f_logits).
    d_f_means = d_f_means + f_weights[:, :, None] * d_centre[:, None, :]
    d_f_logits = d_f_logits + f_weights * (
        numpy.einsum("nkd,nd->nk", f_means, d_centre)
        - numpy.einsum("nd,nd->n", d_centre, centre)[:, None]
    )
    # f_means = x_prev + increments; the transition network and its head.
    d_x_prev = sum_components(d_f_means)
    transition_gradients, d_inputs = _network_backward(
        arrays[: config.n_transition_arrays],
        f_activations,
        _head_backward(
            config.transition_head, f_sigmoid, d_f_logits, d_f_means, d_f_scales
        ),
        weights=which[0],
    )
    d_standardized = d_standardized + d_inputs
    d_x_prev = d_x_prev + standardize_vjp(x_prev, config.input_stats, d_standardized)
    return d_x_prev, transition_gradients + proposal_gradients


def _wanted_networks(argnums, first_array, config):
    """Which networks' weight gradients the requested ``argnums`` need."""
    first_proposal = first_array + config.n_transition_arrays
    return (
        any(first_array <= argnum < first_proposal for argnum in argnums),
        any(argnum >= first_proposal for argnum in argnums),
    )


def _pick_gradients(name, argnums, gradients):
    """Return ``gradients[argnum]`` for every requested argument, in order."""
    for argnum in argnums:
        if argnum not in gradients:
            raise ValueError(
                f"{name} is differentiable in the particles, the log-weights and "
                f"the network weights only, not in argument {argnum}."
            )
    return tuple(gradients[argnum] for argnum in argnums)


def _intermediates(config, x_prev, x, y, uniforms, arrays):
    """Return what the step's forward pass kept, or recompute it (given ``x``)."""
    kept = None if config.kept is None else config.kept.take()
    if kept is None:
        kept = _forward(x_prev, y, uniforms, None, config, arrays, x=x)[2]
    return kept


def _proposal_gradients(argnums, first_array, step, x, d_x, d_ratio):
    """Gradients of a fused step's particles and weights, by argument number.

    ``step`` is ``(particles, rows, y, uniforms, config, arrays)`` of the step,
    whose weights are its arguments from ``first_array`` on; ``x`` its sample,
    ``d_x`` and ``d_ratio`` the gradients of the sample and of the log ratio
    ``log f - log pi``. The intermediates are those the forward pass kept
    (``config.kept``), or are recomputed now.
    """
    particles, rows, y, uniforms, config, arrays = step
    x_prev = particles[rows]
    kept = _intermediates(config, x_prev, x, y, uniforms, arrays)
    d_x_prev, weight_gradients = _step_backward(
        x_prev,
        x,
        y,
        config,
        arrays,
        kept,
        d_x,
        d_ratio,
        _wanted_networks(argnums, first_array, config),
    )
    gradients = dict(enumerate(weight_gradients, start=first_array))
    if 0 in argnums:
        gradients[0] = _add_rows(d_x_prev, rows, numpy.shape(particles))
    return gradients


def _learned_step_vjp(argnums, result, args, kwargs):
    """VJP of :func:`learned_proposal_step`: the forward pass, reversed.

    The closure holds the arguments it needs, not the noise (the sample in
    ``result`` gives it back): the intermediates (both networks' activations,
    both mixtures) are those the forward pass kept (``config.kept``), or are
    recomputed when the backward pass reaches this step.
    """
    particles, rows, y, uniforms, _, config = args[:6]
    step = (particles, rows, y, uniforms, config, args[6:])

    def vjp(upstream):
        n_states = numpy.shape(upstream)[1] - 1
        gradients = _proposal_gradients(
            argnums,
            6,
            step,
            result[:, :n_states],
            upstream[:, :n_states],
            upstream[:, n_states],
        )
        return _pick_gradients("learned_proposal_step", argnums, gradients)

    return vjp


defvjp_argnums(learned_proposal_step, _learned_step_vjp)


def _observation_gradient(observation, x, y, upstream):
    """Return ``upstream * d log g(y | x) / dx``, row by row, ``y`` complete.

    The gradient of the observation's own ``log_density``: by autograd, or for
    a linear-Gaussian observation that keeps its density, directly by that
    density primitive's VJP (a nested autograd trace per step cost about 5% of
    a value-and-gradient at N = 100).
    """
    if type(observation).log_density is LinearGaussianObservation.log_density:
        return _linear_gaussian_log_density_vjp(None, x, y, observation)(upstream)
    return make_vjp(lambda states: observation.log_density(states, y))(x)[0](upstream)


@primitive
def learned_filter_step(
    particles, log_weights, rows, offsets, y, uniforms, noise, config, *arrays
):
    """Run a whole step of the learned filter: propose, weigh, normalise.

    :func:`learned_proposal_step` followed by what
    :func:`statemix_sk.filtering.particle_filter` does with its result where
    every entry of ``y`` is observed: the carried log-weights (the parents'
    normalised ``log W`` plus ``offsets``, which hold the stop-gradient
    resampling terms), plus the log ratio and ``log g(y | x)``, normalised per
    series. The same operations in the same order, so the same values; one
    primitive instead of about fifteen, whose autograd bookkeeping was a large
    part of a step's cost at N = 100.

    Parameters
    ----------
    particles : array of shape (B * N, n_states)
        The previous particle cloud.
    log_weights : array of shape (B, N)
        Its normalised log-weights.
    rows : ndarray of int of shape (B * N,)
        The parents' rows (see :func:`learned_proposal_step`).
    offsets : ndarray of shape (B, N)
        Constants added to each parent's log-weight: ``-log vbar_a - log N``
        where the series resampled, 0 where it did not.
    y, uniforms, noise, config, *arrays
        As for :func:`learned_proposal_step`.

    Returns
    -------
    step : array of shape (B * N, n_states + 2)
        The new particles, their normalised log-weights, and in the last column
        the series' log-likelihood increment (the same in every row of a series).
    """
    x, log_ratio, kept = _forward(particles[rows], y, uniforms, noise, config, arrays)
    if config.kept is not None:
        config.kept.keep(kept)
    shape = numpy.shape(offsets)
    log_w = numpy.reshape(numpy.ravel(log_weights)[rows], shape) + offsets
    log_w = log_w + numpy.reshape(log_ratio, shape)
    log_density = config.observation.log_density(x, y)
    log_w = log_w + numpy.reshape(log_density, shape)
    increment = logsumexp.fun(log_w, axis=1, keepdims=True)
    n_states = x.shape[1]
    step = numpy.empty((len(rows), n_states + 2))
    step[:, :n_states] = x
    step[:, n_states] = numpy.ravel(log_w - increment)
    step[:, n_states + 1] = numpy.repeat(numpy.ravel(increment), shape[1])
    return step


def _learned_filter_step_vjp(argnums, result, args, kwargs):
    """VJP of :func:`learned_filter_step` (see :func:`_learned_step_vjp`)."""
    particles, log_weights, rows, offsets, y, uniforms, _, config = args[:8]
    step = (particles, rows, y, uniforms, config, args[8:])

    def vjp(upstream):
        n_states = numpy.shape(upstream)[1] - 2
        x = result[:, :n_states]
        shape = numpy.shape(offsets)
        # log W = log w - logsumexp(log w) per series, and the increment is
        # that logsumexp: d log w = dW + W (d increment - sum dW).
        normalised = numpy.exp(numpy.reshape(result[:, n_states], shape))
        d_normalised = numpy.reshape(upstream[:, n_states], shape)
        d_increment = numpy.sum(
            numpy.reshape(upstream[:, n_states + 1], shape), axis=1, keepdims=True
        )
        d_log_w = d_normalised + normalised * (
            d_increment - numpy.sum(d_normalised, axis=1, keepdims=True)
        )
        d_rows = numpy.ravel(d_log_w)
        d_x = upstream[:, :n_states] + _observation_gradient(
            config.observation, x, y, d_rows
        )
        gradients = _proposal_gradients(argnums, 8, step, x, d_x, d_rows)
        if 1 in argnums:
            gradients[1] = numpy.reshape(
                _add_rows(d_rows, rows, (numpy.size(log_weights),)),
                numpy.shape(log_weights),
            )
        return _pick_gradients("learned_filter_step", argnums, gradients)

    return vjp


defvjp_argnums(learned_filter_step, _learned_filter_step_vjp)


@primitive
def take_block(array, index):
    """``array[index]`` for a basic index (slices and integers, no arrays).

    Its VJP writes the upstream gradient into zeros; autograd's own indexing VJP
    scatters with ``numpy.add.at``, which is slow. The result is a view, so it
    costs no memory on the tape.
    """
    return array[index]


def _take_block_vjp(result, array, index):
    shape = numpy.shape(array)

    def vjp(upstream):
        gradient = numpy.zeros(shape)
        gradient[index] = upstream
        return gradient

    return vjp


defvjp(take_block, _take_block_vjp)


@primitive
def take_rows(array, rows):
    """``array[rows]`` for an int vector ``rows``: the gather by ancestors.

    Its VJP adds up the gradients of the copies of each row with
    ``numpy.add.reduceat`` over the sorted rows (the filter's ancestors are
    sorted, so usually no sort is needed) rather than ``numpy.add.at``.
    """
    return array[rows]


def _add_rows(values, rows, shape):
    """``out = zeros(shape); out[rows] += values``, repeated rows adding up.

    By ``numpy.add.reduceat`` over runs of equal rows, sorting first unless
    ``rows`` is already sorted (the filter's ancestors are).
    """
    gradient = numpy.zeros(shape)
    if rows.size == 0:
        return gradient
    if numpy.any(rows[1:] < rows[:-1]):
        order = numpy.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
    starts = numpy.flatnonzero(numpy.concatenate([[True], rows[1:] != rows[:-1]]))
    gradient[rows[starts]] = numpy.add.reduceat(values, starts, axis=0)
    return gradient


def _take_rows_vjp(result, array, rows):
    shape = numpy.shape(array)
    return lambda upstream: _add_rows(upstream, rows, shape)


defvjp(take_rows, _take_rows_vjp)
