"""StateMixNN's two networks as a model and a proposal for the filter loop.

- :class:`MixtureTransitionModel`: a state-space model whose transition
  ``f_theta(x_t | x_{t-1})`` is a Gaussian mixture; a network of the standardised
  previous state gives its logits, mean *increments* (mean = ``x_{t-1}`` + increment)
  and scales. The observation model and initial distribution are known.
- :class:`MixtureProposal`: the proposal ``pi_phi(x_t | x_{t-1}, y_t)``, the same form,
  centred on the transition's predicted mean ``m`` (mean = ``m`` + increment), whose
  network sees ``[standardised x_{t-1}, (y_t - h(m)) / noise_scale]``: the innovation
  carries the same information as ``y_t`` but makes "move towards the observation"
  easy to learn, and centring on ``m`` lets the proposal follow the transition as it
  learns. At a partly observed step the missing entries' innovation is 0 (no
  correction from them; :func:`statemix_sk.fused.scaled_innovation`), so the
  proposal still uses the observed entries; trained on data with missing
  entries, the network also sees which entries are missing
  (:attr:`StateMixSpec.missing_indicator`).

Each network is a dense ``tanh`` network plus a linear map of its input added to its
outputs (``{"layers": [(W, b), ...], "linear": L}``): the linear part lets a network
represent a linear model exactly (the linear-Gaussian case) and lets the proposal
start as the locally optimal proposal of the untrained transition (see
:meth:`StateMixSpec.init_params`), while the dense part learns what is non-linear.

Both are plain objects around such parameters, built inside the objective that
autograd differentiates; :func:`init_mixture_network` draws them.
"""

import copy
import weakref
from typing import NamedTuple

import autograd.numpy as np
import numpy
from autograd.tracer import isbox

from ._utils import check_scale, logsumexp
from .fused import (
    KeptIntermediates,
    StepConfig,
    learned_filter_step,
    learned_proposal_step,
    proposal_inputs,
    scaled_innovation,
    take_block,
)
from .mixtures import GaussianMixture, mixture_log_density, sample_mixture
from .models import simulate
from .networks import (
    apply_mixture_head,
    apply_mlp,
    init_mlp,
    input_width,
    standardize,
)

__all__ = [
    "MixtureProposal",
    "MixtureTransitionModel",
    "StateMixSpec",
    "apply_mixture_network",
    "expand_components",
    "init_mixture_network",
    "locally_optimal_gain",
    "parameter_shapes",
    "periodic_coordinates",
    "with_missing_indicator",
]


def init_mixture_network(head, n_inputs, hidden_layer_sizes, rng, linear=None):
    """Initialise a network whose outputs feed ``head``.

    Parameters
    ----------
    head : MixtureHead
    n_inputs : int
    hidden_layer_sizes : sequence of int
    rng : numpy.random.Generator
    linear : array of shape (n_inputs, head.n_outputs), default=None
        Start of the linear part; None means zeros.

    Returns
    -------
    params : dict
        ``{"layers": [(W, b), ...], "linear": L}``; the outputs are
        ``mlp(layers, inputs) + inputs @ L``.
    """
    layers = init_mlp([n_inputs, *hidden_layer_sizes, head.n_outputs], rng)
    if linear is None:
        linear = numpy.zeros((n_inputs, head.n_outputs))
    return {"layers": layers, "linear": numpy.array(linear, dtype=float)}


def apply_mixture_network(params, inputs):
    """Return ``mlp(params["layers"], inputs) + inputs @ params["linear"]``."""
    return apply_mlp(params["layers"], inputs) + np.dot(inputs, params["linear"])


def expand_components(params, one_head, head, start):
    """Turn a one-component mixture network into an ``S``-component one.

    Every component of the result has the one component's mean increment and
    scales (and, for full covariances, its off-diagonal factor), plus the small
    differences of ``start``'s output layer and linear part (a fresh draw for
    ``head``, see :func:`init_mixture_network`), so that the components start
    nearly equal, with nearly equal weights, yet not identical (identical
    components would receive identical gradients forever).

    Parameters
    ----------
    params : dict
        A network for ``one_head`` (``{"layers": ..., "linear": ...}``).
    one_head : MixtureHead
        With one component.
    head : MixtureHead
        The same but for ``head.n_components`` components.
    start : dict
        A network for ``head`` with the same hidden layers.

    Returns
    -------
    params : dict
        A network for ``head``: ``params``' hidden layers, and output layer and
        linear part expanded.
    """
    S, d = head.n_components, head.n_dims
    # Widths of each component's outputs, kind by kind: logit, increments, raw
    # scales and (full) off-diagonal factor; the outputs list every component's
    # block of one kind, then the next kind.
    n_off = head.tril_embedding.shape[0] if head.covariance_type == "full" else 0
    widths = [1, d, d] + ([n_off] if n_off else [])

    def expand(one, many):
        one, many = numpy.asarray(one, float), numpy.array(many, dtype=float)
        first_one = first_many = 0
        for kind, width in enumerate(widths):
            block = one[..., first_one : first_one + width]
            if kind > 0:  # the logits keep start's: equal weights
                for k in range(S):
                    start_column = first_many + k * width
                    many[..., start_column : start_column + width] += block
            first_one += width
            first_many += S * width
        return many

    W, b = params["layers"][-1]
    W_start, b_start = start["layers"][-1]
    layers = [tuple(numpy.array(a) for a in layer) for layer in params["layers"][:-1]]
    layers.append((expand(W, W_start), expand(b, b_start)))
    return {"layers": layers, "linear": expand(params["linear"], start["linear"])}


def _unpack(params):
    # Unpacked once per filter call: autograd records every container access, and
    # the filter applies the network at every step.
    layers = [tuple(layer) for layer in params["layers"]]
    return {
        "layers": layers,
        "linear": params["linear"],
        # W_1, b_1, ..., W_L, b_L, linear: the arguments of the fused step.
        "arrays": [array for layer in layers for array in layer] + [params["linear"]],
    }


def locally_optimal_gain(observation_matrix, noise_covariance, increment_scale):
    """Gain and spread of the locally optimal proposal of a Gaussian random walk.

    For ``x_t = x_{t-1} + w``, ``w ~ N(0, diag(increment_scale**2))`` and
    ``y_t = H x_t + v``, ``v ~ N(0, R)``, the proposal ``p(x_t | x_{t-1}, y_t)`` is
    ``N(x_{t-1} + K (y_t - H x_{t-1}), (I - K H) Q)`` with
    ``K = Q H' (H Q H' + R)^-1``.

    Parameters
    ----------
    observation_matrix : array of shape (n_outputs, n_states)
    noise_covariance : array of shape (n_outputs, n_outputs)
    increment_scale : array of shape (n_states,)

    Returns
    -------
    gain : ndarray of shape (n_states, n_outputs)
    scale : ndarray of shape (n_states,)
        Square roots of the diagonal of ``(I - K H) Q``.

    Examples
    --------
    >>> gain, scale = locally_optimal_gain(numpy.eye(1), numpy.eye(1), numpy.ones(1))
    >>> round(float(gain[0, 0]), 12), round(float(scale[0] ** 2), 12)
    (0.5, 0.5)
    """
    H = numpy.asarray(observation_matrix, dtype=float)
    Q = numpy.diag(numpy.asarray(increment_scale, dtype=float) ** 2)
    innovation_covariance = H @ Q @ H.T + numpy.asarray(noise_covariance, float)
    gain = numpy.linalg.solve(innovation_covariance, H @ Q).T
    posterior = (numpy.eye(len(Q)) - gain @ H) @ Q
    return gain, numpy.sqrt(numpy.clip(numpy.diag(posterior), 0.0, None))


def periodic_coordinates(observation, probes):
    """State coordinates that ``observation`` sees only modulo ``2 pi``.

    A coordinate is periodic when shifting it by ``2 pi`` leaves the
    observation's mean unchanged at every probe state (to 1e-9 of the mean's
    magnitude) while shifting it by 1 changes it: the data then cannot tell a
    state from the same state with that coordinate ``2 pi`` further (a phase),
    and a network of the state may as well be periodic in it. A coordinate that
    the observation does not see at all is not periodic. A linear observation
    has none.

    Parameters
    ----------
    observation : observation model
        Its ``mean`` maps states of shape (n, n_states) to (n, n_outputs).
    probes : array of shape (n_probes, n_states)
        States at which to compare (where the filter will evaluate the model).

    Returns
    -------
    coordinates : ndarray of int
        The periodic coordinates, in increasing order.

    Examples
    --------
    >>> from statemix_sk.observations import GaussianObservation, phase_observation
    >>> observation = GaussianObservation(phase_observation, 3, 0.5)
    >>> periodic_coordinates(observation, numpy.zeros((4, 3))).tolist()
    [0, 1, 2]
    """
    probes = numpy.asarray(probes, dtype=float)
    if getattr(observation, "observation_matrix", None) is not None:
        return numpy.zeros(0, dtype=int)

    def mean(states):
        with numpy.errstate(all="ignore"):
            return numpy.asarray(observation.mean(states), dtype=float)

    base = mean(probes)
    if not numpy.all(numpy.isfinite(base)):
        return numpy.zeros(0, dtype=int)
    tolerance = 1e-9 * (1.0 + numpy.max(numpy.abs(base), initial=0.0))
    found = []
    for coordinate in range(probes.shape[1]):
        differences = []
        for shift in (2.0 * numpy.pi, 1.0):
            shifted = probes.copy()
            shifted[:, coordinate] += shift
            differences.append(numpy.max(numpy.abs(mean(shifted) - base), initial=0.0))
        # NaN differences (the mean not finite there) compare False: not periodic.
        if differences[0] <= tolerance < differences[1]:
            found.append(coordinate)
    return numpy.array(found, dtype=int)


DEFAULT_CACHE_BYTES = 256 * 2**20
"""Default memory for the fused step's kept intermediates (see MixtureProposal)."""


def _release(held_bytes, nbytes):
    held_bytes[0] -= nbytes


def _mixture_mean(mixture):
    """Return ``sum_k w_k mean_k`` of every row of a mixture."""
    weights = np.exp(mixture.logits - logsumexp(mixture.logits, axis=1, keepdims=True))
    return np.sum(np.expand_dims(weights, 2) * mixture.means, axis=1)


def _mixture_around(x_prev, head, outputs):
    """Build the mixture whose means are ``x_prev`` plus the head's increments."""
    logits, increments, scales = apply_mixture_head(head, outputs)
    return GaussianMixture(logits, np.expand_dims(x_prev, 1) + increments, scales)


class MixtureTransitionModel:
    """A state-space model with a learned Gaussian-mixture transition.

    Follows the model protocol of :mod:`statemix_sk.models`.

    Parameters
    ----------
    params : dict
        The transition network (see :func:`init_mixture_network`), input size
        ``input_width(input_stats)`` (``n_states`` unless some states are
        periodic).
    head : MixtureHead
    input_stats : Standardizer
        Fixed statistics standardising the previous state.
    observation : observation model
        The known ``g(y | x)``.
    initial_mean, initial_scale : array-like of shape (n_states,)
        The initial distribution ``N(initial_mean, diag(initial_scale**2))``.
    """

    def __init__(
        self, params, head, input_stats, observation, initial_mean, initial_scale
    ):
        self.params = _unpack(params)
        self.head = head
        self.input_stats = input_stats
        self.observation = observation
        self.n_states = head.n_dims
        self.initial_mean = numpy.broadcast_to(
            numpy.asarray(initial_mean, float), (self.n_states,)
        ).copy()
        self.initial_scale = check_scale(initial_scale, "initial_scale", self.n_states)

    def transition_mixture(self, x_prev):
        """Return the mixture ``f_theta(. | x_prev[i])`` of every row."""
        outputs = apply_mixture_network(
            self.params, standardize(x_prev, self.input_stats)
        )
        return _mixture_around(x_prev, self.head, outputs)

    def sample_initial(self, n, rng):
        """Draw ``n`` initial states."""
        return self.initial_mean + self.initial_scale * rng.standard_normal(
            (n, self.n_states)
        )

    def sample_transition(self, x_prev, rng):
        """Reparameterised draw from the learned transition, one per row."""
        return sample_mixture(self.transition_mixture(x_prev), rng)

    def transition_log_density(self, x, x_prev):
        """``log f_theta(x[i] | x_prev[i])``, shape (n,)."""
        return mixture_log_density(self.transition_mixture(x_prev), x)

    def transition_mean(self, x_prev):
        """Return the mixture mean ``sum_k w_k mean_k``, shape (n, n_states)."""
        return _mixture_mean(self.transition_mixture(x_prev))

    def simulate(self, n_steps, n_sequences=None, random_state=None):
        """Simulate series from the learned model; see :func:`models.simulate`."""
        return simulate(self, n_steps, n_sequences, random_state)


class MixtureProposal:
    """A learned Gaussian-mixture proposal ``pi_phi(x_t | x_{t-1}, y_t)``.

    Parameters
    ----------
    params : dict
        The proposal network (see :func:`init_mixture_network`), input size
        ``input_width(input_stats) + n_outputs`` (twice ``n_outputs`` with
        ``missing_indicator``).
    head : MixtureHead
    input_stats : Standardizer
        Fixed statistics standardising the previous state (the innovation part of
        the input is already scaled by the observation noise).
    fused : bool, default=True
        Compute the step as the one primitive
        :func:`statemix_sk.fused.learned_proposal_step` (less time and far less
        memory under autograd) when it applies: a :class:`MixtureTransitionModel`
        and diagonal heads. False composes it from autograd primitives, the
        reference the fused step is tested against; both give the same values,
        gradients and random draws.
    cache_bytes : int, default=256 MiB
        Memory in which the fused step holds, under autograd, each step's
        intermediates for the backward pass instead of recomputing them there
        (recomputing costs about a third of a value-and-gradient). Counted over
        the steps held at once; beyond it, steps recompute. 0 always
        recomputes. The results are the same either way.
    missing_indicator : bool, default=False
        Whether the network also sees, after the innovation, which entries of
        ``y_t`` are missing (1.0) or observed (0.0). Without it a missing
        entry looks like one observed exactly where predicted (innovation 0),
        so the proposal cannot narrow the observed entries' spread and keep
        the missing ones' (see :attr:`StateMixSpec.missing_indicator`).
    """

    handles_missing_entries = True
    """The filter gives it partly observed steps: the missing entries' innovation
    is 0 (see :func:`statemix_sk.fused.scaled_innovation`), and with
    ``missing_indicator`` the network is told which entries those are."""

    def __init__(
        self,
        params,
        head,
        input_stats,
        fused=True,
        cache_bytes=DEFAULT_CACHE_BYTES,
        missing_indicator=False,
    ):
        self.params = _unpack(params)
        self.head = head
        self.input_stats = input_stats
        self.fused = fused
        self.cache_bytes = cache_bytes
        self.missing_indicator = missing_indicator
        # Bytes held now by this proposal's KeptIntermediates, in a list that
        # their finalizers update (a closure on self would keep it alive).
        self._held_bytes = [0]

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """None: the learned filter has no auxiliary weights."""
        return None

    def propose(self, model, x_prev, y, rng, context):
        """Draw from the proposal; return it with ``log f_theta - log pi_phi``.

        The proposal is centred on the transition's predicted mean
        ``m = E_f[x_t | x_{t-1}]`` and its network sees the innovation of that
        prediction, ``(y_t - h(m)) / noise_scale``: it learns a correction of the
        prediction towards the observation (the form of the locally optimal
        proposal, ``m + K (y_t - H m)``), so it keeps up while the transition
        learns instead of having to relearn the dynamics itself.
        """
        if self._fuses(model):
            if context is None:
                return self._propose_fused(
                    model, x_prev, numpy.arange(len(x_prev)), y, rng
                )
            return self._propose_fused(
                model,
                context.particles,
                context.ancestors,
                y,
                rng,
                getattr(context, "n_steps_left", None),
            )
        observation = model.observation
        if isinstance(model, MixtureTransitionModel):
            # One network pass gives both the mean and, below, the density.
            transition = model.transition_mixture(x_prev)
            centre = _mixture_mean(transition)
        else:
            transition, centre = None, model.transition_mean(x_prev)
        innovation = scaled_innovation(
            y, observation.mean(centre), observation.noise_scale
        )
        inputs = proposal_inputs(
            standardize(x_prev, self.input_stats),
            innovation,
            y,
            self.missing_indicator,
            np.concatenate,
        )
        proposal = _mixture_around(
            centre, self.head, apply_mixture_network(self.params, inputs)
        )
        x = sample_mixture(proposal, rng)
        if transition is None:
            log_transition = model.transition_log_density(x, x_prev)
        else:
            log_transition = mixture_log_density(transition, x)
        return x, log_transition - mixture_log_density(proposal, x)

    def propose_and_weigh(self, model, context, y, offsets, rng):
        """Run the whole filter step as one primitive (None: it cannot be fused).

        See :func:`statemix_sk.fused.learned_filter_step`: the same random draws
        and values as :meth:`propose` followed by the filter's weighing. Returns
        the new particles (B * N, n_states), their normalised log-weights (B, N)
        and the log-likelihood increments (B, 1).
        """
        if not self._fuses(model):
            return None
        n_series, n_particles = numpy.shape(offsets)
        step = self._fused_call(
            learned_filter_step,
            model,
            (context.particles, context.log_weights, context.ancestors, offsets),
            y,
            rng,
            getattr(context, "n_steps_left", None),
        )
        n_states = model.n_states
        return (
            take_block(step, (slice(None), slice(0, n_states))),
            np.reshape(take_block(step, (slice(None), n_states)), (n_series, -1)),
            take_block(
                step, (slice(None, None, n_particles), slice(n_states + 1, None))
            ),
        )

    def _fuses(self, model):
        return (
            self.fused
            and isinstance(model, MixtureTransitionModel)
            and model.head.covariance_type == "diag"
            and self.head.covariance_type == "diag"
        )

    def _propose_fused(self, model, particles, rows, y, rng, n_steps=None):
        """:meth:`propose` from ``particles[rows]`` as one primitive.

        Same random draws, values and gradients as the composition.
        """
        step = self._fused_call(
            learned_proposal_step, model, (particles, rows), y, rng, n_steps
        )
        n_states = model.n_states
        return (
            take_block(step, (slice(None), slice(0, n_states))),
            take_block(step, (slice(None), n_states)),
        )

    def _fused_call(self, step_function, model, leading, y, rng, n_steps=None):
        """Call a fused step primitive with this step's draws and the weights.

        ``leading`` are its arguments before ``y``: the previous cloud, with or
        without its log-weights, and the parents' rows (one per new particle)
        and then, or not, the carried offsets. ``n_steps``: the steps of the
        pass from this one on (None: not known), for what it keeps.
        """
        n_items = len(y)
        # The order of draws of mixtures.draw_mixture_noise.
        uniforms = rng.random(n_items)
        noise = rng.standard_normal((n_items, model.n_states))
        arrays = [*model.params["arrays"], *self.params["arrays"]]
        traced = any(isbox(value) for value in leading) or any(
            isbox(array) for array in arrays
        )
        kept = None
        if traced and self._held_bytes[0] < self.cache_bytes:
            kept = KeptIntermediates(self.cache_bytes - self._held_bytes[0], n_steps)
        config = StepConfig(
            model.head,
            self.head,
            self.input_stats,
            model.observation,
            len(model.params["arrays"]),
            kept,
            self.missing_indicator,
        )
        step = step_function(
            *leading,
            numpy.asarray(y, dtype=float),
            uniforms,
            noise,
            config,
            *arrays,
        )
        if kept is not None:
            self._held_bytes[0] += kept.nbytes
            weakref.finalize(kept, _release, self._held_bytes, kept.nbytes)
        return step


class StateMixSpec(NamedTuple):
    """Everything but the parameters that a StateMixNN filter needs.

    ``build(params)`` turns a parameter dict ``{"transition": {...}, "proposal":
    {...}}`` into the model and proposal for :func:`statemix_sk.filtering.\
particle_filter`; :meth:`init_params` draws such a dict.
    """

    transition_head: object
    """MixtureHead of the transition network."""
    proposal_head: object
    """MixtureHead of the proposal network."""
    input_stats: object
    """Standardizer of the previous state, for both networks."""
    observation: object
    """The known observation model."""
    initial_mean: numpy.ndarray
    """(n_states,): mean of the initial distribution."""
    initial_scale: numpy.ndarray
    """(n_states,): standard deviations of the initial distribution."""
    hidden_layer_sizes: tuple
    """Hidden layer sizes of both networks."""
    transition_drift: object = None
    """(n_states, n_states) or None: the untrained transition's mean increment per
    unit of standardised previous state (a linear model's ``A - I`` times the
    standardisation scales); None starts the transition as a random walk."""
    proposal_gain: object = None
    """(n_states, n_outputs) or None: the untrained proposal's mean increment per
    unit of scaled innovation (:func:`locally_optimal_gain` times the noise
    scales); None starts the proposal as the untrained transition."""
    transition_params: object = None
    """A transition network to start from (a fitted start, copied by
    :meth:`init_params`); None draws one."""
    missing_indicator: bool = False
    """Whether the proposal network also sees which entries of ``y_t`` are
    missing (see :class:`MixtureProposal`): the estimator sets it when its
    training data have missing entries. Its weights start at zero, and with
    every entry observed the indicator is 0, so it changes nothing there."""

    def _linear_start(self, head, n_inputs, first_input, matrix):
        """Linear part whose increments are ``matrix @ inputs[first_input:]``."""
        linear = numpy.zeros((n_inputs, head.n_outputs))
        if matrix is None:
            return linear
        matrix = numpy.asarray(matrix, dtype=float)
        # Output block of component k's increments: S + k d ... S + (k + 1) d, in
        # units of location_scale.
        per_output = (matrix / head.location_scale[:, None]).T
        S, d = head.n_components, head.n_dims
        for k in range(S):
            start = S + k * d
            linear[first_input : first_input + len(per_output), start : start + d] = (
                per_output
            )
        return linear

    def init_params(self, rng):
        """Draw initial parameters for both networks.

        The dense parts start near zero. The transition is
        ``transition_params`` when given; otherwise its linear part starts at
        ``transition_drift`` (a linear model; zero: a random walk). The
        proposal's at ``proposal_gain`` (the locally optimal proposal of that
        start, when the heads' initial scales match; zero: the transition).
        """
        n_state_inputs = input_width(self.input_stats)
        n_proposal_inputs = n_state_inputs + self.observation.n_outputs * (
            2 if self.missing_indicator else 1
        )
        transition = init_mixture_network(
            self.transition_head,
            n_state_inputs,
            self.hidden_layer_sizes,
            rng,
            linear=self._linear_start(
                self.transition_head, n_state_inputs, 0, self.transition_drift
            ),
        )
        if self.transition_params is not None:
            # Drawn all the same, so that the proposal's draw does not depend on
            # whether the transition was given.
            transition = copy.deepcopy(self.transition_params)
        return {
            "transition": transition,
            "proposal": init_mixture_network(
                self.proposal_head,
                n_proposal_inputs,
                self.hidden_layer_sizes,
                rng,
                linear=self._linear_start(
                    self.proposal_head,
                    n_proposal_inputs,
                    n_state_inputs,
                    self.proposal_gain,
                ),
            ),
        }

    def build(self, params):
        """Return ``(model, proposal)`` for these parameters."""
        model = MixtureTransitionModel(
            params["transition"],
            self.transition_head,
            self.input_stats,
            self.observation,
            self.initial_mean,
            self.initial_scale,
        )
        proposal = MixtureProposal(
            params["proposal"],
            self.proposal_head,
            self.input_stats,
            missing_indicator=self.missing_indicator,
        )
        return model, proposal


def parameter_shapes(params):
    """Return the shapes of a parameter dict's arrays, in a fixed order.

    Two dicts with equal shapes fit the same networks (a warm start needs it).
    """
    return [
        numpy.shape(array)
        for phase in ("transition", "proposal")
        for array in [
            *(array for layer in params[phase]["layers"] for array in layer),
            params[phase]["linear"],
        ]
    ]


def with_missing_indicator(params, n_outputs):
    """Return ``params`` with the proposal's missing-entry inputs added, at zero.

    For a warm start of a fit whose data have missing entries from one whose
    data had none: the proposal network gets ``n_outputs`` more inputs (see
    :attr:`StateMixSpec.missing_indicator`) whose weights are zero, so it
    computes what it computed before (the indicator is 0 wherever every entry
    is observed) and training takes it from there. A new dict; the transition
    is shared, the proposal's arrays copied.
    """
    (first, bias), *rest = params["proposal"]["layers"]
    linear = params["proposal"]["linear"]

    def grown(weights):
        return numpy.concatenate([weights, numpy.zeros((n_outputs, weights.shape[1]))])

    return {
        "transition": params["transition"],
        "proposal": {
            "layers": [(grown(first), numpy.copy(bias)), *copy.deepcopy(rest)],
            "linear": grown(linear),
        },
    }
