"""The fused learned-proposal step equals the composition it replaces.

:func:`statemix_sk.fused.learned_proposal_step` computes StateMixNN's whole proposal
step (both networks, both mixtures, the sample and the log ratio) as one autograd
primitive; ``MixtureProposal(fused=False)`` composes the same step from autograd
primitives and is the reference. Checked here:

1. every new primitive (the step, ``take_rows``, ``take_block``, the fused
   linear-Gaussian observation density) against finite differences, and against
   its composition where it has one;
2. the whole filter's log-likelihood, gradient and forward summaries, fused
   against reference, for the same random draws on random small models, whether
   the fused step's backward pass recomputes its intermediates or uses those its
   forward pass kept (``MixtureProposal(cache_bytes=...)``);
3. the point of fusing: recomputing, the fused filter's autograd tape is much
   smaller; keeping, it stays within ``cache_bytes`` of that;
4. the fallback: where the step cannot be fused, the reference path runs.
"""

import gc
import itertools
import tracemalloc
from typing import NamedTuple
from unittest import mock

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, make_vjp, value_and_grad
from autograd.misc import flatten
from autograd.test_util import check_grads
from hypothesis import given, settings
from hypothesis import strategies as st

from statemix_sk import learned
from statemix_sk._utils import logsumexp
from statemix_sk.datasets import make_lorenz96
from statemix_sk.filtering import particle_filter
from statemix_sk.fused import (
    KeptIntermediates,
    StepConfig,
    _add_rows,
    learned_filter_step,
    learned_proposal_step,
    take_block,
    take_rows,
)
from statemix_sk.learned import (
    DEFAULT_CACHE_BYTES,
    MixtureProposal,
    MixtureTransitionModel,
    apply_mixture_network,
    init_mixture_network,
)
from statemix_sk.networks import (
    Standardizer,
    apply_mixture_head,
    input_width,
    make_mixture_head,
    standardize,
)
from statemix_sk.observations import (
    GaussianObservation,
    LinearGaussianObservation,
    _linear_gaussian_log_density,
    phase_observation,
)

# Fused against reference: the same float64 operations, in the same order in the
# forward pass (so the same components and ancestors are drawn) and in another
# order in the backward pass, so they differ by a few rounding errors; elements of
# a gradient that are sums of terms of both signs are judged against its norm.
VALUE_RTOL = 1e-10
GRADIENT_RTOL, GRADIENT_NORM_TOL = 1e-10, 1e-12

# The finite differences of check_grads move every argument by about 1e-6 along
# a random direction, which moves the proposal's cumulative mixture weights by
# far less than this; a uniform this far from every boundary keeps its component.
COMPONENT_MARGIN = 1e-3


# --------------------------------------------------------------------------------------
# Random models
# --------------------------------------------------------------------------------------


class LearnedPieces(NamedTuple):
    """Everything but the parameters that a learned filter needs."""

    transition_head: object
    proposal_head: object
    input_stats: Standardizer
    observation: object
    initial_mean: np.ndarray
    initial_scale: np.ndarray


def _random_observation(kind, n_states, n_outputs, rng):
    """A linear observation (diagonal or full noise) or the nonlinear phase map."""
    if kind == "phase":
        return GaussianObservation(
            phase_observation, n_states, noise_scale=rng.uniform(0.2, 0.6, 2 * n_states)
        )
    observation_matrix = rng.standard_normal((n_outputs, n_states))
    if kind == "diag":
        return LinearGaussianObservation(
            observation_matrix, noise_scale=rng.uniform(0.3, 1.0, n_outputs)
        )
    factor = rng.standard_normal((n_outputs, n_outputs))
    covariance = factor @ factor.T / n_outputs + np.diag(
        rng.uniform(0.2, 0.5, n_outputs)
    )
    return LinearGaussianObservation(observation_matrix, noise_covariance=covariance)


def _random_pieces(
    rng,
    n_states,
    observation,
    transition_components,
    proposal_components,
    covariance_types=("diag", "diag"),
    periodic=None,
):
    """Heads, standardisation and initial distribution drawn at random.

    ``periodic``: the coordinates that the networks see as phases.
    """
    heads = [
        make_mixture_head(
            n_components,
            n_states,
            location_scale=rng.uniform(0.3, 1.0, n_states),
            initial_scale=rng.uniform(0.3, 1.0, n_states),
            covariance_type=covariance_type,
        )
        for n_components, covariance_type in zip(
            (transition_components, proposal_components), covariance_types, strict=True
        )
    ]
    return LearnedPieces(
        *heads,
        Standardizer(
            rng.standard_normal(n_states),
            rng.uniform(0.5, 2.0, n_states),
            None if periodic is None else np.asarray(periodic, dtype=int),
        ),
        observation,
        rng.standard_normal(n_states),
        rng.uniform(0.5, 1.5, n_states),
    )


def _random_network(head, n_inputs, hidden_layer_sizes, rng, dense_scale, linear_scale):
    """A network of :func:`learned.init_mixture_network`'s form, far from zero.

    The library starts the output layer near zero, where every mixture component
    is alike and a bug that mixes them up goes unseen: here every layer has
    weights of ``dense_scale / sqrt(fan_in)`` and biases of about
    ``dense_scale / 3``, so the components differ in weight, mean and scale.
    """
    sizes = [n_inputs, *hidden_layer_sizes, head.n_outputs]
    layers = [
        (
            rng.normal(0.0, dense_scale / np.sqrt(n_in), (n_in, n_out)),
            rng.normal(0.0, dense_scale / 3, n_out),
        )
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    linear = linear_scale * rng.standard_normal((n_inputs, head.n_outputs))
    return {"layers": layers, "linear": linear}


def _random_params(
    pieces,
    hidden_layer_sizes,
    rng,
    dense_scale,
    linear_scale,
    missing_indicator=False,
):
    """Both networks' parameters, ``{"transition": ..., "proposal": ...}``.

    ``missing_indicator``: the proposal also has the indicator's inputs.
    """
    n_state_inputs = input_width(pieces.input_stats)
    n_proposal_inputs = n_state_inputs + pieces.observation.n_outputs * (
        2 if missing_indicator else 1
    )
    return {
        "transition": _random_network(
            pieces.transition_head,
            n_state_inputs,
            hidden_layer_sizes,
            rng,
            dense_scale,
            linear_scale,
        ),
        "proposal": _random_network(
            pieces.proposal_head,
            n_proposal_inputs,
            hidden_layer_sizes,
            rng,
            dense_scale,
            linear_scale,
        ),
    }


def _step_config(pieces, model, kept=None):
    """The StepConfig of a fused step of ``pieces``, for ``model``'s networks."""
    return StepConfig(
        pieces.transition_head,
        pieces.proposal_head,
        pieces.input_stats,
        pieces.observation,
        len(model.params["arrays"]),
        kept,
    )


def _build(pieces, params, fused, **proposal_options):
    """The learned model and proposal; ``fused`` picks the proposal's path.

    ``proposal_options`` go to :class:`MixtureProposal` (``cache_bytes``,
    ``missing_indicator``).
    """
    model = MixtureTransitionModel(
        params["transition"],
        pieces.transition_head,
        pieces.input_stats,
        pieces.observation,
        pieces.initial_mean,
        pieces.initial_scale,
    )
    proposal = MixtureProposal(
        params["proposal"],
        pieces.proposal_head,
        pieces.input_stats,
        fused=fused,
        **proposal_options,
    )
    return model, proposal


class FilterRun(NamedTuple):
    """One value-and-gradient of a filter's log-likelihood, and what it did."""

    value: float
    gradient: dict
    result: object
    """The FilterResult of the forward pass (with particles and ancestors)."""
    fused_calls: int
    """How many times the filter called the fused step."""
    fuses: bool
    """``proposal._fuses(model)``: whether the proposal chose the fused path."""


def _run_filter(build, params, Y, **filter_kwargs):
    """``value_and_grad`` of the summed log-likelihood, counting fused steps.

    ``build(params)`` returns ``(model, proposal)``.
    """
    seen = {}

    def log_likelihood(params):
        model, proposal = build(params)
        seen["fuses"] = proposal._fuses(model)
        seen["result"] = particle_filter(
            Y, model, proposal, return_particles=True, **filter_kwargs
        )
        return anp.sum(seen["result"].log_likelihood)

    # A step calls one of the two fused primitives: the whole filter step where
    # every entry is observed, the proposal step alone where some are missing.
    with (
        mock.patch.object(
            learned, "learned_proposal_step", wraps=learned_proposal_step
        ) as proposal_step,
        mock.patch.object(
            learned, "learned_filter_step", wraps=learned_filter_step
        ) as filter_step,
    ):
        value, gradient = value_and_grad(log_likelihood)(params)
    calls = proposal_step.call_count + filter_step.call_count
    return FilterRun(value, gradient, seen["result"], calls, seen["fuses"])


def _assert_gradients_agree(fast, reference):
    """``|fast - ref| <= GRADIENT_RTOL |ref| + GRADIENT_NORM_TOL ||ref||``."""
    fast, _ = flatten(fast)
    reference, _ = flatten(reference)
    assert fast.shape == reference.shape
    assert np.all(np.isfinite(reference))
    bound = GRADIENT_RTOL * np.abs(reference) + GRADIENT_NORM_TOL * np.linalg.norm(
        reference
    )
    excess = np.abs(fast - reference) - bound
    worst = int(np.argmax(excess))
    assert np.all(excess <= 0), (
        f"gradient element {worst} of {reference.size}: fused {fast[worst]!r}, "
        f"reference {reference[worst]!r}, difference "
        f"{abs(fast[worst] - reference[worst]):.3e} > bound {bound[worst]:.3e} "
        f"(gradient norm {np.linalg.norm(reference):.3e})"
    )


# --------------------------------------------------------------------------------------
# 1. The primitives against finite differences and their compositions
# --------------------------------------------------------------------------------------


class _FixedDraws:
    """Stands in for a Generator: hands out given uniforms and normal draws.

    The reference proposal draws ``rng.random(n)`` then
    ``rng.standard_normal((n, d))`` (``mixtures.draw_mixture_noise``), the order
    the fused step's caller uses too.
    """

    def __init__(self, uniforms, noise):
        self.uniforms, self.noise = uniforms, noise

    def random(self, size):
        assert np.shape(np.empty(size)) == self.uniforms.shape
        return self.uniforms

    def standard_normal(self, size):
        assert np.shape(np.empty(size)) == self.noise.shape
        return self.noise


def _proposal_cumulative_weights(pieces, params, x_prev, y):
    """The proposal mixture's cumulative weights, from the public composition."""
    model, _ = _build(pieces, params, fused=False)
    observation = pieces.observation
    centre = model.transition_mean(x_prev)
    innovation = (y - observation.mean(centre)) / observation.noise_scale
    inputs = np.concatenate([standardize(x_prev, pieces.input_stats), innovation], 1)
    outputs = apply_mixture_network(params["proposal"], inputs)
    logits, _, _ = apply_mixture_head(pieces.proposal_head, outputs)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)


def _uniforms_inside_components(cumulative, rng):
    """Uniforms at the middle of a random component's interval, per row.

    Only components of weight at least 0.05 are chosen (one always has at least
    1 / S), so each uniform is at least 0.025 from every boundary.
    """
    lower = np.concatenate([np.zeros((len(cumulative), 1)), cumulative[:, :-1]], 1)
    uniforms = np.empty(len(cumulative))
    for row, (low, high) in enumerate(zip(lower, cumulative, strict=True)):
        component = rng.choice(np.flatnonzero(high - low >= 0.05))
        uniforms[row] = (low[component] + high[component]) / 2
    return uniforms


def _params_from_arrays(arrays, n_transition_arrays):
    """The params dict from the fused step's ``W_1, b_1, ..., linear`` arrays."""

    def network(flat):
        layers = [tuple(flat[i : i + 2]) for i in range(0, len(flat) - 1, 2)]
        return {"layers": layers, "linear": flat[-1]}

    return {
        "transition": network(arrays[:n_transition_arrays]),
        "proposal": network(arrays[n_transition_arrays:]),
    }


# (rows, n_previous, n_states, transition and proposal components, hidden layers,
# observation kind, n_outputs, dense scale, periodic coordinates): one component
# and no hidden layer; sorted rows with repeats; unsorted rows; the nonlinear
# observation, with and without phases as inputs (all of them, some); a
# non-square observation matrix with full noise covariance.
STEP_CASES = [
    ([0], 1, 1, 1, 1, (), "diag", 1, 1.0, None),
    ([0, 0, 1, 3, 3, 3], 4, 3, 2, 3, (4,), "full", 2, 1.0, None),
    ([4, 1, 1, 0, 6, 2, 5], 7, 2, 3, 2, (4, 3), "phase", 4, 2.0, None),
    ([4, 1, 1, 0, 6, 2, 5], 7, 2, 3, 2, (4, 3), "phase", 4, 2.0, [0, 1]),
    ([1, 2, 2, 0], 3, 3, 2, 2, (5,), "phase", 6, 1.0, [1]),
    ([2, 0, 1], 3, 4, 4, 4, (5,), "diag", 3, 3.0, None),
]


def _step_problem(case, rng):
    """A STEP_CASES case's rows, pieces (with the observation), parameters and
    particles."""
    (
        rows,
        n_previous,
        n_states,
        transition_components,
        proposal_components,
        hidden_layer_sizes,
        observation_kind,
        n_outputs,
        dense_scale,
        periodic,
    ) = case
    observation = _random_observation(observation_kind, n_states, n_outputs, rng)
    pieces = _random_pieces(
        rng,
        n_states,
        observation,
        transition_components,
        proposal_components,
        periodic=periodic,
    )
    params = _random_params(pieces, hidden_layer_sizes, rng, dense_scale, 0.3)
    particles = pieces.input_stats.mean + rng.standard_normal((n_previous, n_states))
    return np.array(rows), pieces, params, particles


def _step_draws(pieces, params, particles, rows, rng):
    """``y``, the normal draws and component uniforms away from every boundary."""
    y = rng.standard_normal((len(rows), pieces.observation.n_outputs))
    noise = rng.standard_normal((len(rows), particles.shape[1]))
    cumulative = _proposal_cumulative_weights(pieces, params, particles[rows], y)
    uniforms = _uniforms_inside_components(cumulative, rng)
    assert np.min(np.abs(cumulative - uniforms[:, None])) > COMPONENT_MARGIN
    return y, noise, uniforms


def _assert_step_agrees(fused_step, reference_step, inputs, rng):
    """The fused step passes check_grads and equals its reference composition."""
    check_grads(fused_step, modes=["rev"], order=1)(inputs)
    reference_value = reference_step(inputs)
    np.testing.assert_allclose(
        fused_step(inputs),
        reference_value,
        rtol=VALUE_RTOL,
        atol=1e-12 * np.max(np.abs(reference_value)),
    )
    weighting = rng.standard_normal(reference_value.shape)
    _assert_gradients_agree(
        grad(lambda inputs: anp.sum(weighting * fused_step(inputs)))(inputs),
        grad(lambda inputs: anp.sum(weighting * reference_step(inputs)))(inputs),
    )


@pytest.mark.parametrize("keep", [False, True], ids=["recompute", "keep"])
@pytest.mark.parametrize("case", STEP_CASES, ids=range(len(STEP_CASES)))
def test_learned_proposal_step_passes_check_grads_and_equals_the_composition(
    case, keep
):
    rng = np.random.default_rng(len(case[0]))
    np.random.seed(0)  # noqa: NPY002 (check_grads draws directions from it)
    rows, pieces, params, particles = _step_problem(case, rng)
    y, noise, uniforms = _step_draws(pieces, params, particles, rows, rng)
    model, proposal = _build(pieces, params, fused=False)
    config = _step_config(pieces, model)

    def fused_step(inputs):
        # keep: the backward pass uses the intermediates this forward pass kept,
        # in a holder of its own (as MixtureProposal gives every step).
        particles, arrays = inputs
        kept = KeptIntermediates() if keep else None
        return learned_proposal_step(
            particles, rows, y, uniforms, noise, config._replace(kept=kept), *arrays
        )

    def reference_step(inputs):
        particles, arrays = inputs
        model, proposal = _build(
            pieces,
            _params_from_arrays(arrays, config.n_transition_arrays),
            fused=False,
        )
        x, log_ratio = proposal.propose(
            model, take_rows(particles, rows), y, _FixedDraws(uniforms, noise), None
        )
        return anp.concatenate([x, log_ratio[:, None]], axis=1)

    inputs = (particles, [*model.params["arrays"], *proposal.params["arrays"]])
    _assert_step_agrees(fused_step, reference_step, inputs, rng)


@pytest.mark.parametrize("keep", [False, True], ids=["recompute", "keep"])
@pytest.mark.parametrize("case", STEP_CASES, ids=range(len(STEP_CASES)))
def test_learned_filter_step_passes_check_grads_and_equals_the_composition(case, keep):
    # The whole step (propose, weigh, normalise) against finite differences in
    # the particles, the parents' log-weights and the weights, and against the
    # composition the filter loop makes of the reference proposal and its
    # weighing.
    rng = np.random.default_rng(100 + len(case[0]))
    np.random.seed(1)  # noqa: NPY002 (check_grads draws directions from it)
    rows, pieces, params, particles = _step_problem(case, rng)
    # Two series where the sizes split evenly, one otherwise.
    n_previous = len(particles)
    n_series = 2 if len(rows) % 2 == 0 and n_previous % 2 == 0 else 1
    log_weights = rng.standard_normal((n_series, n_previous // n_series))
    log_weights -= logsumexp(log_weights, axis=1, keepdims=True)
    offsets = rng.uniform(-2.0, 0.0, (n_series, len(rows) // n_series))
    y, noise, uniforms = _step_draws(pieces, params, particles, rows, rng)
    model, proposal = _build(pieces, params, fused=False)
    n_transition_arrays = len(model.params["arrays"])
    config = _step_config(pieces, model)

    def fused_step(inputs):
        particles, log_weights, arrays = inputs
        kept = KeptIntermediates() if keep else None
        return learned_filter_step(
            particles,
            log_weights,
            rows,
            offsets,
            y,
            uniforms,
            noise,
            config._replace(kept=kept),
            *arrays,
        )

    def reference_step(inputs):
        particles, log_weights, arrays = inputs
        model, proposal = _build(
            pieces, _params_from_arrays(arrays, n_transition_arrays), fused=False
        )
        x, log_ratio = proposal.propose(
            model, take_rows(particles, rows), y, _FixedDraws(uniforms, noise), None
        )
        shape = offsets.shape
        log_w = anp.reshape(take_rows(anp.reshape(log_weights, (-1,)), rows), shape)
        log_w = log_w + offsets + anp.reshape(log_ratio, shape)
        log_w = log_w + anp.reshape(pieces.observation.log_density(x, y), shape)
        increment = logsumexp(log_w, axis=1, keepdims=True)
        return anp.concatenate(
            [
                x,
                anp.reshape(log_w - increment, (-1, 1)),
                anp.reshape(anp.repeat(increment, shape[1], axis=1), (-1, 1)),
            ],
            axis=1,
        )

    inputs = (
        particles,
        log_weights,
        [*model.params["arrays"], *proposal.params["arrays"]],
    )
    _assert_step_agrees(fused_step, reference_step, inputs, rng)


def test_learned_proposal_step_refuses_gradients_of_its_constants():
    rng = np.random.default_rng(5)
    observation = _random_observation("diag", 2, 2, rng)
    pieces = _random_pieces(rng, 2, observation, 2, 2)
    params = _random_params(pieces, (3,), rng, 1.0, 0.3)
    model, proposal = _build(pieces, params, fused=False)
    config = _step_config(pieces, model)
    arrays = [*model.params["arrays"], *proposal.params["arrays"]]
    rows, y = np.array([0, 1]), rng.standard_normal((2, 2))

    def step_of_y(y):
        return anp.sum(
            learned_proposal_step(
                np.ones((2, 2)),
                rows,
                y,
                np.full(2, 0.5),
                np.ones((2, 2)),
                config,
                *arrays,
            )
        )

    with pytest.raises(ValueError, match="not in argument 2"):
        grad(step_of_y)(y)


@pytest.mark.parametrize(
    ("shape", "rows"),
    [
        ((5,), [0, 0, 2, 3, 3, 3, 4]),  # sorted, with repeats (the filter's case)
        ((5,), [3, 1, 1, 4, 0, 1]),  # unsorted
        ((4, 3), [0, 1, 1, 1, 3]),
        ((4, 3), [2, 0, 3, 0, 2, 1, 1]),
        ((3, 2, 2), [2, 2, 0]),
        ((5,), []),
        ((4, 3), []),
    ],
)
def test_take_rows_is_indexing_with_an_add_at_gradient(shape, rows):
    rng = np.random.default_rng(len(shape) + len(rows))
    np.random.seed(1)  # noqa: NPY002 (check_grads draws directions from it)
    array = rng.standard_normal(shape)
    rows = np.array(rows, dtype=np.intp)
    np.testing.assert_array_equal(take_rows(array, rows), array[rows])
    check_grads(lambda a: take_rows(a, rows), modes=["rev"], order=1)(array)
    upstream = rng.standard_normal((len(rows), *shape[1:]))
    expected = np.zeros(shape)
    np.add.at(expected, rows, upstream)
    np.testing.assert_allclose(_add_rows(upstream, rows, shape), expected, rtol=1e-14)
    np.testing.assert_allclose(
        grad(lambda a: anp.sum(upstream * take_rows(a, rows)))(array),
        expected,
        rtol=1e-14,
    )


@pytest.mark.parametrize(
    ("shape", "index"),
    [
        ((4, 5), (slice(None), slice(0, 3))),  # the fused step's particles
        ((4, 5), (slice(None), 4)),  # ... and its log ratio
        ((4, 5), (2,)),
        ((6,), (slice(1, 5, 2),)),
        ((3, 4, 2), (slice(1, 3), 0, slice(None))),
    ],
)
def test_take_block_is_basic_indexing_with_a_zero_filled_gradient(shape, index):
    rng = np.random.default_rng(len(shape))
    np.random.seed(2)  # noqa: NPY002 (check_grads draws directions from it)
    array = rng.standard_normal(shape)
    np.testing.assert_array_equal(take_block(array, index), array[index])
    check_grads(lambda a: take_block(a, index), modes=["rev"], order=1)(array)
    upstream = rng.standard_normal(np.shape(array[index]))
    expected = np.zeros(shape)
    expected[index] = upstream
    np.testing.assert_array_equal(
        grad(lambda a: anp.sum(upstream * take_block(a, index)))(array), expected
    )


@pytest.mark.parametrize(
    ("n_states", "n_outputs", "noise"),
    [
        (3, 3, "diag"),
        (2, 4, "diag"),  # more outputs than states
        (4, 2, "full"),  # fewer
        (3, 3, "full"),
        (2, 3, "diagonal matrix"),  # a noise_covariance that happens to be diagonal
    ],
)
def test_fused_linear_gaussian_density_equals_the_general_composition(
    n_states, n_outputs, noise
):
    rng = np.random.default_rng(n_states * 10 + n_outputs)
    np.random.seed(3)  # noqa: NPY002 (check_grads draws directions from it)
    observation_matrix = rng.standard_normal((n_outputs, n_states))
    if noise == "diag":
        observation = LinearGaussianObservation(
            observation_matrix, noise_scale=rng.uniform(0.3, 2.0, n_outputs)
        )
    elif noise == "full":
        observation = _random_observation("full", n_states, n_outputs, rng)
        assert not observation._diagonal
    else:
        observation = LinearGaussianObservation(
            observation_matrix,
            noise_covariance=np.diag(rng.uniform(0.1, 2.0, n_outputs)),
        )
        assert observation._diagonal
    n_rows = 6
    x = rng.standard_normal((n_rows, n_states)) * 2
    y = rng.standard_normal((n_rows, n_outputs)) * 2
    check_grads(
        lambda x: _linear_gaussian_log_density(x, y, observation),
        modes=["rev"],
        order=1,
    )(x)

    def composition(x):
        return super(LinearGaussianObservation, observation).log_density(x, y)

    reference = composition(x)
    np.testing.assert_allclose(observation.log_density(x, y), reference, rtol=1e-12)
    np.testing.assert_allclose(
        _linear_gaussian_log_density(x, y, observation), reference, rtol=1e-12
    )
    weighting = rng.standard_normal(n_rows)
    _assert_gradients_agree(
        grad(lambda x: anp.sum(weighting * observation.log_density(x, y)))(x),
        grad(lambda x: anp.sum(weighting * composition(x)))(x),
    )
    # One observation for every state (shape (n_outputs,)) broadcasts the same.
    np.testing.assert_allclose(
        observation.log_density(x, y[0]),
        super(LinearGaussianObservation, observation).log_density(x, y[0]),
        rtol=1e-12,
    )


# --------------------------------------------------------------------------------------
# 2. The whole filter: fused against reference
# --------------------------------------------------------------------------------------


def _with_missing_entries(Y, rng, entry_fraction, row_fraction):
    """Copy of ``Y`` with NaN at random entries and at random whole time steps.

    The first series' first step stays observed: with nothing observed the
    log-likelihood would not depend on the parameters at all.
    """
    Y = Y.copy()
    missing = rng.random(Y.shape) < entry_fraction
    missing |= (rng.random(Y.shape[:-1]) < row_fraction)[..., None]
    missing.reshape(-1, *Y.shape[-2:])[0, 0] = False
    Y[missing] = np.nan
    return Y


@settings(max_examples=60, deadline=None)
@pytest.mark.filterwarnings("ignore:n_particles=1:UserWarning")
@given(
    seed=st.integers(0, 2**16),
    n_states=st.integers(1, 4),
    n_outputs=st.integers(1, 4),
    transition_components=st.integers(1, 4),
    proposal_components=st.integers(1, 4),
    hidden_layer_sizes=st.sampled_from([(), (5,), (4, 3)]),
    observation_kind=st.sampled_from(["diag", "full", "phase"]),
    dense_scale=st.sampled_from([0.3, 1.0, 3.0]),
    linear_scale=st.sampled_from([0.01, 0.3]),
    periodic_fraction=st.sampled_from([0.0, 0.5, 1.0]),
    n_particles=st.integers(1, 6),
    n_steps=st.integers(1, 4),
    n_series=st.sampled_from([None, 2, 3]),
    entry_fraction=st.sampled_from([0.0, 0.25]),
    row_fraction=st.sampled_from([0.0, 0.3]),
    resampling=st.sampled_from(["systematic", "stratified", "multinomial", "residual"]),
    ess_threshold=st.sampled_from([0.0, 0.5, 1.0]),
    cache_bytes=st.sampled_from([0, 1, DEFAULT_CACHE_BYTES]),
    missing_indicator=st.booleans(),
)
def test_fused_filter_equals_the_reference_in_value_gradient_and_draws(
    seed,
    n_states,
    n_outputs,
    transition_components,
    proposal_components,
    hidden_layer_sizes,
    observation_kind,
    dense_scale,
    linear_scale,
    periodic_fraction,
    n_particles,
    n_steps,
    n_series,
    entry_fraction,
    row_fraction,
    resampling,
    ess_threshold,
    cache_bytes,
    missing_indicator,
):
    # cache_bytes: 0 recomputes every step's intermediates in the backward pass,
    # 1 keeps the first step's and recomputes the others', the default keeps all.
    rng = np.random.default_rng(seed)
    observation = _random_observation(observation_kind, n_states, n_outputs, rng)
    # Phases as inputs (periodic_fraction of the coordinates at random).
    periodic = np.flatnonzero(rng.random(n_states) < periodic_fraction)
    pieces = _random_pieces(
        rng,
        n_states,
        observation,
        transition_components,
        proposal_components,
        periodic=periodic if periodic.size else None,
    )
    params = _random_params(
        pieces, hidden_layer_sizes, rng, dense_scale, linear_scale, missing_indicator
    )
    # Observations from the learned model itself, so that the weights are neither
    # all alike nor all but one zero.
    model, _ = _build(pieces, params, fused=False)
    Y, _ = model.simulate(n_steps, n_series, rng)
    Y = _with_missing_entries(Y, rng, entry_fraction, row_fraction)
    filter_kwargs = {
        "n_particles": n_particles,
        "resampling": resampling,
        "ess_threshold": ess_threshold,
        "random_state": seed,
    }
    indicator = {"missing_indicator": missing_indicator}
    fast = _run_filter(
        lambda p: _build(pieces, p, True, cache_bytes=cache_bytes, **indicator),
        params,
        Y,
        **filter_kwargs,
    )
    reference = _run_filter(
        lambda p: _build(pieces, p, False, **indicator), params, Y, **filter_kwargs
    )

    assert fast.fuses and not reference.fuses
    # The fused step runs at every step where some series observes an entry (a
    # series that observes nothing takes a bootstrap step there; missing entries
    # carry no innovation); the reference never calls it.
    partly_observed = (~np.isnan(Y)).any(axis=-1).reshape(-1, n_steps)
    assert fast.fused_calls == np.sum(partly_observed.any(axis=0))
    assert reference.fused_calls == 0
    assert np.isfinite(reference.value)
    assert abs(fast.value - reference.value) <= VALUE_RTOL * abs(reference.value), (
        fast.value,
        reference.value,
    )
    _assert_gradients_agree(fast.gradient, reference.gradient)
    # Same draws, so the same resampling decisions and ancestors.
    np.testing.assert_array_equal(fast.result.resampled, reference.result.resampled)
    np.testing.assert_array_equal(fast.result.ancestors, reference.result.ancestors)
    np.testing.assert_allclose(fast.result.ess, reference.result.ess, rtol=VALUE_RTOL)
    # Untraced, the fused step keeps nothing; same value.
    untraced = particle_filter(
        Y, *_build(pieces, params, True, **indicator), **filter_kwargs
    )
    np.testing.assert_allclose(
        np.sum(untraced.log_likelihood), reference.value, rtol=VALUE_RTOL
    )
    means = reference.result.filtered_means
    np.testing.assert_allclose(
        fast.result.filtered_means,
        means,
        rtol=VALUE_RTOL,
        atol=1e-12 * (1 + np.max(np.abs(means))),
    )


@pytest.mark.parametrize("trained", ["transition", "proposal"])
def test_one_network_at_a_time_equals_the_reference(trained):
    # Training differentiates one network with the other fixed; the fused step
    # then skips the fixed network's weight gradients but still back-propagates
    # through it (its input gradients carry the trained network's influence on
    # later steps).
    rng = np.random.default_rng(11)
    observation = _random_observation("diag", 3, 2, rng)
    pieces = _random_pieces(rng, 3, observation, 2, 3)
    params = _random_params(pieces, (5, 4), rng, 1.0, 0.1)
    model, _ = _build(pieces, params, fused=False)
    Y, _ = model.simulate(6, 2, rng)
    fixed = "proposal" if trained == "transition" else "transition"

    def gradient(fused):
        def log_likelihood(trained_params):
            both = {trained: trained_params, fixed: params[fixed]}
            result = particle_filter(
                Y, *_build(pieces, both, fused), n_particles=7, random_state=3
            )
            return anp.sum(result.log_likelihood)

        return value_and_grad(log_likelihood)(params[trained])

    fast_value, fast_gradient = gradient(True)
    reference_value, reference_gradient = gradient(False)
    assert abs(fast_value - reference_value) <= VALUE_RTOL * abs(reference_value)
    _assert_gradients_agree(fast_gradient, reference_gradient)
    assert np.linalg.norm(flatten(reference_gradient)[0]) > 0


# --------------------------------------------------------------------------------------
# 3. The tape
# --------------------------------------------------------------------------------------

# Lorenz 96 at a modest size, with the networks of benchmarks/bench_filter.py.
TAPE_STATES, TAPE_PARTICLES, TAPE_STEPS = 8, 200, 20
TAPE_COMPONENTS, TAPE_HIDDEN = 3, (32, 32)


def _tape_problem():
    """The data, pieces and parameters of the tape tests."""
    Y, _, truth = make_lorenz96(TAPE_STEPS, n_states=TAPE_STATES, random_state=0)
    spread = np.std(np.diff(Y, axis=0), axis=0)
    head = make_mixture_head(
        TAPE_COMPONENTS, TAPE_STATES, location_scale=spread, initial_scale=spread
    )
    pieces = LearnedPieces(
        head,
        head,
        Standardizer(Y.mean(axis=0), Y.std(axis=0)),
        truth.observation,
        truth.initial_mean,
        truth.initial_scale,
    )
    rng = np.random.default_rng(1)
    params = {
        phase: init_mixture_network(
            head,
            n_inputs,
            TAPE_HIDDEN,
            rng,
            linear=0.01 * rng.standard_normal((n_inputs, head.n_outputs)),
        )
        for phase, n_inputs in (
            ("transition", TAPE_STATES),
            ("proposal", TAPE_STATES + Y.shape[1]),
        )
    }
    return Y, pieces, params


def _tape_words(Y, pieces, params, fused, **proposal_options):
    """Bytes that the tape of one log-likelihood holds, per particle-step, / 8.

    Measured with tracemalloc (NumPy reports its buffers to it) as what is still
    allocated after ``make_vjp`` has run the forward pass, while the VJP is alive.
    """

    def log_likelihood(params):
        model, proposal = _build(pieces, params, fused, **proposal_options)
        return particle_filter(
            Y, model, proposal, n_particles=TAPE_PARTICLES, random_state=2
        ).log_likelihood

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        vjp, _ = make_vjp(log_likelihood)(params)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del vjp
    return retained / (8 * TAPE_PARTICLES * TAPE_STEPS)


def _one_step_kept_bytes(Y, pieces, params):
    """What one step of the tape problem keeps, as KeptIntermediates counts it."""
    model, proposal = _build(pieces, params, True)
    rng = np.random.default_rng(0)
    kept = KeptIntermediates()
    config = _step_config(pieces, model, kept)
    learned_proposal_step(
        model.sample_initial(TAPE_PARTICLES, rng),
        np.arange(TAPE_PARTICLES),
        np.broadcast_to(Y[0], (TAPE_PARTICLES, Y.shape[1])),
        rng.random(TAPE_PARTICLES),
        rng.standard_normal((TAPE_PARTICLES, TAPE_STATES)),
        config,
        *model.params["arrays"],
        *proposal.params["arrays"],
    )
    assert kept.nbytes > 0
    return kept.nbytes


def test_the_fused_tape_is_at_most_a_quarter_of_the_composition():
    # In 8-byte words per particle and step (an int64 index is one word), with
    # d = 8 states, S = 3 components, n_outputs = d:
    #
    # The fused path, recomputing (cache_bytes=0), keeps the arguments and output
    # of the one primitive per step (the whole step where y is complete): the
    # output [x, log W, increment] (d + 2), the uniforms (1), the rows (1) and
    # the carried offsets (1), d + 5 = 13 words; not the noise, which the sample
    # gives back; the previous particles and weights are that output.
    #
    # The composition keeps, besides, what its primitives hold: the reshapes of the
    # heads hold views of both networks' outputs, 2 (S + 2 S d) = 102 words, and
    # the mixture densities and the sample hold both mixtures' means and scales,
    # 4 S d = 96 words: at least 2 S + 8 S d = 198 words.
    #
    # Both also keep the loop's bookkeeping, c words: log-weights and their
    # gathers, the observation density, autograd's nodes (some 14 words at
    # N = 200). The ratio is at most (13 + c) / (198 + c), 0.13 at c = 14, and
    # stays below 1/4 for any c up to 48.
    d, S = TAPE_STATES, TAPE_COMPONENTS
    Y, pieces, params = _tape_problem()
    fused_words = _tape_words(Y, pieces, params, True, cache_bytes=0)
    reference_words = _tape_words(Y, pieces, params, False)
    # The measurement sees at least the arrays the derivation counts.
    assert fused_words >= d + 5
    assert reference_words >= 2 * S + 8 * S * d
    assert fused_words <= reference_words / 4, (fused_words, reference_words)


def test_kept_intermediates_stay_within_cache_bytes_and_do_not_change_gradients():
    # Within its budget the fused step also keeps its forward intermediates
    # (about as much as the composition keeps); it starts keeping a step while
    # it holds less than cache_bytes, so it holds at most cache_bytes plus one
    # step's intermediates.
    Y, pieces, params = _tape_problem()
    budget = 2**20
    recomputing = _tape_words(Y, pieces, params, True, cache_bytes=0)
    caching = _tape_words(Y, pieces, params, True, cache_bytes=budget)
    one_step = _one_step_kept_bytes(Y, pieces, params)
    words_per_byte = 1 / (8 * TAPE_PARTICLES * TAPE_STEPS)
    assert recomputing < caching
    assert caching <= recomputing + (budget + one_step) * words_per_byte

    def log_likelihood(params, cache_bytes):
        model, proposal = _build(pieces, params, True, cache_bytes=cache_bytes)
        return particle_filter(
            Y[:5], model, proposal, n_particles=20, random_state=2
        ).log_likelihood

    # The backward pass takes what a step kept: a second call of the same VJP
    # recomputes, with the same result.
    vjp, value = make_vjp(log_likelihood)(params, DEFAULT_CACHE_BYTES)
    first, second = flatten(vjp(1.0))[0], flatten(vjp(1.0))[0]
    np.testing.assert_array_equal(first, second)
    recomputed_vjp, recomputed_value = make_vjp(log_likelihood)(params, 0)
    assert value == recomputed_value
    _assert_gradients_agree(first, flatten(recomputed_vjp(1.0))[0])


def test_keeping_the_means_or_not_changes_no_bit():
    # A step keeps the mixtures' means where its budget has room for them and
    # otherwise recomputes them from the last hidden layers (one product on
    # their columns): the gradients must not depend on which, to the bit.
    Y, pieces, params = _tape_problem()
    model, proposal = _build(pieces, params, True)
    rng = np.random.default_rng(0)
    sizes = {}
    for room in (None, 0):
        kept = KeptIntermediates(room=room)
        learned_filter_step(
            model.sample_initial(TAPE_PARTICLES, rng),
            np.full((1, TAPE_PARTICLES), -np.log(TAPE_PARTICLES)),
            np.arange(TAPE_PARTICLES),
            np.zeros((1, TAPE_PARTICLES)),
            np.broadcast_to(Y[0], (TAPE_PARTICLES, Y.shape[1])),
            rng.random(TAPE_PARTICLES),
            rng.standard_normal((TAPE_PARTICLES, TAPE_STATES)),
            _step_config(pieces, model, kept),
            *model.params["arrays"],
            *proposal.params["arrays"],
        )
        sizes[room] = kept.nbytes
    assert sizes[0] < sizes[None]

    def gradient(cache_bytes):
        def log_likelihood(params):
            model, proposal = _build(pieces, params, True, cache_bytes=cache_bytes)
            return particle_filter(
                Y, model, proposal, n_particles=TAPE_PARTICLES, random_state=3
            ).log_likelihood

        return flatten(grad(log_likelihood)(params))[0]

    everything = gradient(DEFAULT_CACHE_BYTES)
    # Room for the first step without its means (the later ones recompute).
    np.testing.assert_array_equal(gradient(sizes[0] + 1), everything)
    np.testing.assert_array_equal(gradient(0), everything)


# --------------------------------------------------------------------------------------
# 4. Where the step cannot be fused
# --------------------------------------------------------------------------------------


def _fallback_case(kind):
    """A model and proposal builder that the fused step does not apply to."""
    rng = np.random.default_rng(7)
    if kind == "lorenz96":
        # A known model with a transition_mean but no mixture transition.
        Y, _, truth = make_lorenz96(6, n_states=4, random_state=0)
        head = make_mixture_head(2, 4, location_scale=0.5, initial_scale=0.5)
        stats = Standardizer(Y.mean(axis=0), Y.std(axis=0))
        params = {
            "proposal": _random_network(head, 8, (5,), rng, 1.0, 0.3),
        }

        def build(params, fused):
            return truth, MixtureProposal(params["proposal"], head, stats, fused=fused)

        return Y, params, build
    covariance_types = (
        ("full", "diag") if kind == "full transition" else ("diag", "full")
    )
    observation = _random_observation("diag", 3, 2, rng)
    pieces = _random_pieces(rng, 3, observation, 2, 3, covariance_types)
    params = _random_params(pieces, (4,), rng, 1.0, 0.3)
    model, _ = _build(pieces, params, False)
    Y, _ = model.simulate(5, random_state=rng)
    return Y, params, lambda params, fused: _build(pieces, params, fused)


@pytest.mark.parametrize("kind", ["full transition", "full proposal", "lorenz96"])
def test_without_a_diagonal_mixture_transition_the_reference_path_runs(kind):
    Y, params, build = _fallback_case(kind)
    filter_kwargs = {"n_particles": 10, "random_state": 3}
    asked_to_fuse, reference = (
        _run_filter(lambda p, fused=fused: build(p, fused), params, Y, **filter_kwargs)
        for fused in (True, False)
    )
    assert not asked_to_fuse.fuses
    assert asked_to_fuse.fused_calls == 0
    assert np.isfinite(asked_to_fuse.value)
    assert np.all(np.isfinite(flatten(asked_to_fuse.gradient)[0]))
    assert np.any(flatten(asked_to_fuse.gradient)[0] != 0)
    # The same code runs: the same numbers, exactly.
    assert asked_to_fuse.value == reference.value
    np.testing.assert_array_equal(
        flatten(asked_to_fuse.gradient)[0], flatten(reference.gradient)[0]
    )
