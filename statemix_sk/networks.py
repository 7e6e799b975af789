"""Small dense networks on plain nested lists, and the Gaussian-mixture head.

A network's parameters are a list of ``(W, b)`` tuples, one per layer, with ``W`` of
shape (n_in, n_out); autograd differentiates such containers directly, and the
optimiser flattens them only when it needs a vector. Hidden layers use ``tanh``
(smooth, bounded, so a particle far out does not produce an exploding output); the
output layer is linear.

Initialisation is Glorot (Xavier) normal: ``W ~ N(0, 2 / (n_in + n_out))``, ``b = 0``,
with the output layer multiplied by ``output_scale`` (0.01 by default) so that a new
network's outputs are close to zero. Through :func:`apply_mixture_head` a near-zero
output means equal mixture weights, near-zero mean increments and the initial scale:
an untrained transition is a random walk with a sensible spread.
"""

import itertools
from typing import NamedTuple

import autograd.numpy as np
import numpy
from autograd.extend import defvjp, defvjp_argnums, primitive

__all__ = [
    "MixtureHead",
    "Standardizer",
    "apply_mixture_head",
    "apply_mlp",
    "bounded_scale",
    "init_mlp",
    "input_width",
    "make_mixture_head",
    "reference_apply_mlp",
    "standardize",
    "standardize_vjp",
]


def init_mlp(layer_sizes, rng, *, output_scale=0.01):
    """Initialise a dense network.

    Parameters
    ----------
    layer_sizes : sequence of int
        Input size, hidden sizes, output size.
    rng : numpy.random.Generator
    output_scale : float, default=0.01
        Factor applied to the output layer's weights.

    Returns
    -------
    params : list of (W, b)
        ``W`` of shape (n_in, n_out), ``b`` of shape (n_out,).

    Examples
    --------
    >>> params = init_mlp([3, 8, 2], numpy.random.default_rng(0))
    >>> [(W.shape, b.shape) for W, b in params]
    [((3, 8), (8,)), ((8, 2), (2,))]
    """
    layer_sizes = list(layer_sizes)
    params = []
    for index, (n_in, n_out) in enumerate(itertools.pairwise(layer_sizes)):
        W = rng.normal(0.0, numpy.sqrt(2.0 / (n_in + n_out)), size=(n_in, n_out))
        if index == len(layer_sizes) - 2:
            W = W * output_scale
        params.append((W, numpy.zeros(n_out)))
    return params


def reference_apply_mlp(params, inputs):
    """Apply a dense network by composing autograd primitives (the reference).

    Same result as :func:`apply_mlp`, which computes it as one primitive.
    """
    hidden = inputs
    for W, b in params[:-1]:
        hidden = np.tanh(np.dot(hidden, W) + b)
    W, b = params[-1]
    return np.dot(hidden, W) + b


# Below this, exp(-2 a) in tanh_into would overflow; tanh(-20) = -1 + 8e-18 is
# already -1.0 in float64, so the floor changes no value.
_TANH_FLOOR = -20.0
# sigmoid(-700) is 1e-304 (0 to any use of it) and exp(700) is still finite.
_SIGMOID_FLOOR = -700.0


def tanh_into(a):
    """Overwrite ``a`` with ``tanh(a)``, as ``2 / (1 + exp(-2 a)) - 1``; return it.

    NumPy's ``tanh`` costs about 14 ns per float64 element on an AVX2 machine,
    ``exp`` about 5, and the hidden units of the two networks are most of a
    filter step's transcendental functions. The two differ by at most a few
    rounding errors in absolute value (the exp form has no small relative
    error near 0, which an activation does not need). Every path of the library
    computes its hidden units with this function, so they all agree to the bit.
    """
    numpy.maximum(a, _TANH_FLOOR, out=a)
    numpy.multiply(a, -2.0, out=a)
    numpy.exp(a, out=a)
    numpy.add(a, 1.0, out=a)
    numpy.divide(2.0, a, out=a)
    numpy.subtract(a, 1.0, out=a)
    return a


def shifted_sigmoid(raw, shift=0.0):
    """Return ``sigmoid(raw + shift) = 1 / (1 + exp(-(raw + shift)))``, new array.

    Computed as ``exp(-shift - raw)`` (``-shift - raw`` is ``-(raw + shift)``
    exactly) in place, with the exponent capped (see :func:`tanh_into`).
    """
    negated = numpy.subtract(-shift, raw)
    numpy.minimum(negated, -_SIGMOID_FLOOR, out=negated)
    numpy.exp(negated, out=negated)
    numpy.add(negated, 1.0, out=negated)
    numpy.reciprocal(negated, out=negated)
    return negated


def _mlp_activations(inputs, weights):
    """Return the input of every layer and the output: ``[h_0, ..., h_L]``."""
    activations = [inputs]
    for W, b in zip(weights[0:-2:2], weights[1:-2:2], strict=True):
        hidden = activations[-1] @ W
        hidden += b
        activations.append(tanh_into(hidden))
    output = activations[-1] @ weights[-2]
    output += weights[-1]
    activations.append(output)
    return activations


@primitive
def _mlp(inputs, *weights):
    """Run a dense network given as ``inputs, W_1, b_1, ..., W_L, b_L``."""
    return _mlp_activations(inputs, weights)[-1]


def _mlp_vjp(argnums, output, args, kwargs):
    """Back-propagate through every layer once, for all requested arguments.

    The hidden activations are recomputed when the backward pass runs, not
    held from the forward pass: autograd keeps this closure for the whole
    series, and the activations were about 2.8 MB per filter step at N = 1000.
    """
    inputs, weights = args[0], args[1:]

    def vjp(upstream):
        activations = _mlp_activations(inputs, weights)
        weight_gradients, input_gradient = _mlp_backward(activations, weights, upstream)
        gradients = [input_gradient, *weight_gradients]
        return tuple(gradients[argnum] for argnum in argnums)

    return vjp


def _mlp_backward(activations, weights, upstream, weight_gradients=True):
    """Back-propagate ``upstream`` through a dense network's layers.

    Parameters
    ----------
    activations : list of arrays
        Every layer's input, ``h_0 ... h_{L-1}`` (``_mlp_activations`` without
        the output).
    weights : sequence of arrays
        ``W_1, b_1, ..., W_L, b_L``.
    upstream : array of shape (n, n_out)
        The gradient of the output.
    weight_gradients : bool, default=True
        False skips the weights' gradients (None in the list) and returns only
        the inputs' gradient.

    Returns
    -------
    gradients : list
        The gradients of ``W_1, b_1, ..., W_L, b_L``.
    input_gradient : array of shape (n, n_in)
    """
    n_layers = len(weights) // 2
    gradients = [None] * len(weights)
    delta = upstream
    for layer in reversed(range(n_layers)):
        below = activations[layer]
        if weight_gradients:
            gradients[2 * layer] = below.T @ delta
            # A product with ones: half the time of numpy.sum over axis 0.
            gradients[2 * layer + 1] = numpy.ones(len(delta)) @ delta
        delta = delta @ weights[2 * layer].T
        if layer > 0:
            delta = delta * (1.0 - below**2)
    return gradients, delta


defvjp_argnums(_mlp, _mlp_vjp)


def apply_mlp(params, inputs):
    """Apply a dense network: ``tanh`` hidden layers, linear output.

    Computed as one autograd primitive with a hand-written backward pass (autograd
    charges per primitive call, and the filter applies two networks per time
    step); :func:`reference_apply_mlp` is the plain composition it must equal.

    Parameters
    ----------
    params : list of (W, b)
    inputs : array of shape (n, n_in)

    Returns
    -------
    outputs : array of shape (n, n_out)
    """
    return _mlp(inputs, *(array for layer in params for array in layer))


class Standardizer(NamedTuple):
    """Fixed statistics that map a network input to unit scale.

    Coordinates listed in ``periodic`` are phases: they enter a network as
    ``(sin x, cos x)`` instead of standardised, so that the network is
    2 pi-periodic in them (see :func:`standardize`).
    """

    mean: numpy.ndarray
    """Array of shape (n_features,)."""
    scale: numpy.ndarray
    """Array of shape (n_features,), strictly positive."""
    periodic: object = None
    """Int array of the periodic coordinates, or None (none is)."""


def input_width(stats):
    """Return the number of network inputs that :func:`standardize` makes."""
    extra = 0 if stats.periodic is None else len(stats.periodic)
    return len(stats.mean) + extra


def standardize(x, stats):
    """Map states ``x`` of shape (n, n_features) to network inputs.

    ``(x - stats.mean) / stats.scale``; a periodic coordinate's column holds
    ``sin x`` instead, and the ``cos x`` of the periodic coordinates follow the
    ``n_features`` columns (:func:`input_width` in all).
    """
    standardized = (x - stats.mean) / stats.scale
    if stats.periodic is None or len(stats.periodic) == 0:
        return standardized
    is_periodic = numpy.zeros(len(stats.mean), dtype=bool)
    is_periodic[stats.periodic] = True
    phases = x[:, stats.periodic]
    return np.concatenate(
        [np.where(is_periodic, np.sin(x), standardized), np.cos(phases)], axis=1
    )


def standardize_vjp(x, stats, upstream):
    """Gradient with respect to ``x`` of ``sum(upstream * standardize(x, stats))``.

    Plain NumPy, for the hand-written backward passes (:mod:`statemix_sk.fused`).
    """
    n_features = len(stats.mean)
    gradient = upstream[:, :n_features] / stats.scale
    if stats.periodic is None or len(stats.periodic) == 0:
        return gradient
    phases = x[:, stats.periodic]
    gradient[:, stats.periodic] = upstream[:, stats.periodic] * numpy.cos(
        phases
    ) - upstream[:, n_features:] * numpy.sin(phases)
    return gradient


class MixtureHead(NamedTuple):
    """How a network's outputs become the parameters of a Gaussian mixture.

    Build it with :func:`make_mixture_head`.
    """

    n_components: int
    n_dims: int
    covariance_type: str
    location_scale: numpy.ndarray
    """(n_dims,): a unit output moves the mean by this much (data units)."""
    scale_low: numpy.ndarray
    """(n_dims,): lower bound of every standard deviation."""
    scale_high: numpy.ndarray
    """(n_dims,): upper bound of every standard deviation."""
    scale_offset: numpy.ndarray
    """(n_dims,): added before the link; a zero output then gives the initial scale."""
    tril_embedding: numpy.ndarray
    """(n_dims * (n_dims - 1) / 2, n_dims * n_dims): places off-diagonal outputs."""

    @property
    def n_outputs(self):
        """Number of network outputs this head consumes."""
        n_off_diagonal = self.tril_embedding.shape[0]
        per_component = 2 * self.n_dims
        if self.covariance_type == "full":
            per_component += n_off_diagonal
        return self.n_components * (1 + per_component)


def make_mixture_head(
    n_components,
    n_dims,
    *,
    location_scale=1.0,
    initial_scale=1.0,
    scale_bounds=(0.01, 10.0),
    covariance_type="diag",
):
    """Describe a mixture head with a bounded scale link.

    A standard deviation is ``low + (high - low) * sigmoid(raw + offset)``, so it
    can never reach 0 or infinity, and ``offset`` makes a zero output give
    ``initial_scale``.

    Parameters
    ----------
    n_components : int
        Number of mixture components ``S``.
    n_dims : int
        Dimension of the mixture.
    location_scale : float or array-like of shape (n_dims,), default=1.0
        Mean increment per unit of network output.
    initial_scale : float or array-like of shape (n_dims,), default=1.0
        Standard deviation that a zero output gives.
    scale_bounds : (float, float), default=(0.01, 10.0)
        Multiples of ``initial_scale`` bounding every standard deviation.
    covariance_type : {"diag", "full"}, default="diag"
        ``"full"`` adds the strictly lower part of a Cholesky factor per component.

    Returns
    -------
    head : MixtureHead
    """
    if covariance_type not in ("diag", "full"):
        raise ValueError(
            f"covariance_type must be 'diag' or 'full', got {covariance_type!r}."
        )
    low_factor, high_factor = scale_bounds
    if not 0 < low_factor < 1 < high_factor:
        raise ValueError(
            f"scale_bounds must satisfy 0 < low < 1 < high, got {scale_bounds!r}."
        )
    initial_scale = numpy.broadcast_to(
        numpy.asarray(initial_scale, float), (n_dims,)
    ).copy()
    low, high = low_factor * initial_scale, high_factor * initial_scale
    fraction = (initial_scale - low) / (high - low)
    rows, cols = numpy.tril_indices(n_dims, k=-1)
    embedding = numpy.zeros((rows.size, n_dims * n_dims))
    embedding[numpy.arange(rows.size), rows * n_dims + cols] = 1.0
    return MixtureHead(
        n_components=int(n_components),
        n_dims=int(n_dims),
        covariance_type=covariance_type,
        location_scale=numpy.broadcast_to(
            numpy.asarray(location_scale, float), (n_dims,)
        ).copy(),
        scale_low=low,
        scale_high=high,
        scale_offset=numpy.log(fraction) - numpy.log1p(-fraction),
        tril_embedding=embedding,
    )


def _sigmoid(z):
    return shifted_sigmoid(numpy.asarray(z, dtype=float))


@primitive
def bounded_scale(raw, low, high):
    """Map ``raw`` to ``low + (high - low) * sigmoid(raw)``, as one primitive.

    Differentiable in ``raw`` only (the bounds are constants).
    """
    return low + (high - low) * _sigmoid(raw)


defvjp(
    bounded_scale,
    lambda result, raw, low, high: (
        lambda upstream: upstream * (high - low) * _sigmoid(raw) * (1.0 - _sigmoid(raw))
    ),
)


def apply_mixture_head(head, outputs):
    """Split network outputs into mixture logits, mean increments and scales.

    Parameters
    ----------
    head : MixtureHead
    outputs : array of shape (n, head.n_outputs)

    Returns
    -------
    logits : array of shape (n, n_components)
    increments : array of shape (n, n_components, n_dims)
        To be added to a reference point (the previous state).
    scales : array of shape (n, n_components, n_dims) or \
(n, n_components, n_dims, n_dims)
        Standard deviations (``"diag"``) or Cholesky factors (``"full"``).
    """
    n_items = outputs.shape[0]
    S, d = head.n_components, head.n_dims
    logits = outputs[:, :S]
    increments = np.reshape(outputs[:, S : S + S * d], (n_items, S, d))
    raw_scales = np.reshape(outputs[:, S + S * d : S + 2 * S * d], (n_items, S, d))
    increments = increments * head.location_scale
    scales = bounded_scale(
        raw_scales + head.scale_offset, head.scale_low, head.scale_high
    )
    if head.covariance_type == "diag":
        return logits, increments, scales
    off_diagonal = np.reshape(outputs[:, S + 2 * S * d :], (n_items * S, -1))
    lower = np.reshape(np.dot(off_diagonal, head.tril_embedding), (n_items, S, d, d))
    # Entry (i, j) of a Cholesky factor multiplies unit noise into dimension i, so
    # it is in the units of dimension i.
    lower = lower * head.location_scale[:, None]
    cholesky = lower + scales[..., None] * numpy.eye(d)
    return logits, increments, cholesky
