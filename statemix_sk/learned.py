"""StateMixNN's two networks as a model and a proposal for the filter loop.

- :class:`MixtureTransitionModel`: a state-space model whose transition
  ``f_theta(x_t | x_{t-1})`` is a Gaussian mixture; a network of the standardised
  previous state gives its logits, mean *increments* (mean = ``x_{t-1}`` + increment)
  and scales. The observation model and initial distribution are known.
- :class:`MixtureProposal`: the proposal ``pi_phi(x_t | x_{t-1}, y_t)``, the same form,
  whose network sees ``[standardised x_{t-1}, (y_t - h(x_{t-1})) / noise_scale]``:
  the innovation carries the same information as ``y_t`` but makes "move towards the
  observation" easy to learn.

Both are plain objects around a parameter list, built inside the objective that
autograd differentiates; :func:`init_mixture_network` draws such a list.
"""

from typing import NamedTuple

import autograd.numpy as np
import numpy

from ._utils import check_scale
from .mixtures import GaussianMixture, mixture_log_density, sample_mixture
from .models import simulate
from .networks import apply_mixture_head, apply_mlp, init_mlp, standardize

__all__ = [
    "MixtureProposal",
    "MixtureTransitionModel",
    "StateMixSpec",
    "init_mixture_network",
]


def init_mixture_network(head, n_inputs, hidden_layer_sizes, rng):
    """Initialise a network whose outputs feed ``head``.

    Parameters
    ----------
    head : MixtureHead
    n_inputs : int
    hidden_layer_sizes : sequence of int
    rng : numpy.random.Generator

    Returns
    -------
    params : list of (W, b)
    """
    return init_mlp([n_inputs, *hidden_layer_sizes, head.n_outputs], rng)


def _mixture_around(x_prev, head, outputs):
    """Build the mixture whose means are ``x_prev`` plus the head's increments."""
    logits, increments, scales = apply_mixture_head(head, outputs)
    return GaussianMixture(logits, np.expand_dims(x_prev, 1) + increments, scales)


class MixtureTransitionModel:
    """A state-space model with a learned Gaussian-mixture transition.

    Follows the model protocol of :mod:`statemix_sk.models`.

    Parameters
    ----------
    params : list of (W, b)
        The transition network, input size ``n_states``.
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
        # Unpacked once here: autograd records every container access, and the
        # filter applies the network at every step.
        self.params = [tuple(layer) for layer in params]
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
        outputs = apply_mlp(self.params, standardize(x_prev, self.input_stats))
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
        mixture = self.transition_mixture(x_prev)
        weights = np.exp(mixture.logits - np.max(mixture.logits, axis=1, keepdims=True))
        weights = weights / np.sum(weights, axis=1, keepdims=True)
        return np.sum(weights[:, :, None] * mixture.means, axis=1)

    def simulate(self, n_steps, n_sequences=None, random_state=None):
        """Simulate series from the learned model; see :func:`models.simulate`."""
        return simulate(self, n_steps, n_sequences, random_state)


class MixtureProposal:
    """A learned Gaussian-mixture proposal ``pi_phi(x_t | x_{t-1}, y_t)``.

    Parameters
    ----------
    params : list of (W, b)
        The proposal network, input size ``n_states + n_outputs``.
    head : MixtureHead
    input_stats : Standardizer
        Fixed statistics standardising the previous state (the innovation part of
        the input is already scaled by the observation noise).
    """

    def __init__(self, params, head, input_stats):
        self.params = [tuple(layer) for layer in params]
        self.head = head
        self.input_stats = input_stats

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """None: the learned filter has no auxiliary weights."""
        return None

    def propose(self, model, x_prev, y, rng, context):
        """Draw from the proposal; return it with ``log f_theta - log pi_phi``."""
        observation = model.observation
        innovation = (y - observation.mean(x_prev)) / observation.noise_scale
        inputs = np.concatenate(
            [standardize(x_prev, self.input_stats), innovation], axis=1
        )
        proposal = _mixture_around(x_prev, self.head, apply_mlp(self.params, inputs))
        x = sample_mixture(proposal, rng)
        log_ratio = model.transition_log_density(x, x_prev) - mixture_log_density(
            proposal, x
        )
        return x, log_ratio


class StateMixSpec(NamedTuple):
    """Everything but the parameters that a StateMixNN filter needs.

    ``build(params)`` turns a parameter dict ``{"transition": [...], "proposal":
    [...]}`` into the model and proposal for :func:`statemix_sk.filtering.\
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

    def init_params(self, rng):
        """Draw initial parameters for both networks."""
        n_states = self.transition_head.n_dims
        return {
            "transition": init_mixture_network(
                self.transition_head, n_states, self.hidden_layer_sizes, rng
            ),
            "proposal": init_mixture_network(
                self.proposal_head,
                n_states + self.observation.n_outputs,
                self.hidden_layer_sizes,
                rng,
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
            params["proposal"], self.proposal_head, self.input_stats
        )
        return model, proposal
