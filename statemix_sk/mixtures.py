"""Batches of Gaussian mixtures: log-densities and reparameterised sampling.

A batch holds one mixture per particle. Its parameters are a :class:`GaussianMixture`:

- ``logits`` of shape (n, n_components): unnormalised log mixture weights;
- ``means`` of shape (n, n_components, n_dims);
- ``scales``: either the per-dimension standard deviations, of shape
  (n, n_components, n_dims) (``covariance_type="diag"``), or lower-triangular
  Cholesky factors of the covariances with a positive diagonal, of shape
  (n, n_components, n_dims, n_dims) (``covariance_type="full"``). The kind is read
  from the number of dimensions of ``scales``.

All densities are returned in the log domain. Sampling is reparameterised: the
component index and the standard normal noise are drawn as constants from a
:class:`numpy.random.Generator`, and the sample ``mean_k + scale_k @ eps`` carries the
gradient to the means and scales. The mixture weights get no gradient through the
sample (the component choice is discrete); they get it through the density terms
of the importance weight, as the method's documentation explains.
"""

from typing import NamedTuple

import autograd.numpy as np
import numpy
from autograd.extend import defvjp, defvjp_argnums, primitive
from autograd.tracer import getval

from ._utils import logsumexp

__all__ = [
    "GaussianMixture",
    "choose_components",
    "diag_mixture_log_density",
    "draw_mixture_noise",
    "mixture_log_density",
    "reference_mixture_log_density",
    "sample_mixture",
    "transform_mixture_noise",
]

_LOG_2PI = numpy.log(2.0 * numpy.pi)


class GaussianMixture(NamedTuple):
    """Parameters of a batch of Gaussian mixtures (see the module docstring)."""

    logits: object
    """Array of shape (n, n_components): unnormalised log mixture weights."""
    means: object
    """Array of shape (n, n_components, n_dims)."""
    scales: object
    """Array of shape (n, n_components, n_dims) or (n, n_components, n_dims, n_dims)."""

    @property
    def covariance_type(self):
        """``"diag"`` or ``"full"``, read from the shape of ``scales``."""
        return (
            "full" if numpy.ndim(self.scales) == numpy.ndim(self.means) + 1 else "diag"
        )


def _component_log_densities(mixture, x):
    """Log N(x_i | mean_ik, cov_ik) for every item i and component k: (n, S)."""
    diff = np.expand_dims(x, -2) - mixture.means
    n_dims = x.shape[-1]
    if mixture.covariance_type == "diag":
        z = diff / mixture.scales
        log_det = np.sum(np.log(mixture.scales), axis=-1)
    else:
        # Solve L z = diff for each (item, component); log|L| is the sum of the
        # log-diagonal because L is triangular.
        z = np.linalg.solve(mixture.scales, diff[..., None])[..., 0]
        # (axis1=-1, axis2=-2: the order autograd can differentiate; same diagonal.)
        log_det = np.sum(np.log(np.diagonal(mixture.scales, axis1=-1, axis2=-2)), -1)
    return -0.5 * np.sum(z**2, axis=-1) - log_det - 0.5 * n_dims * _LOG_2PI


def reference_mixture_log_density(mixture, x):
    """Log-density of each item of ``x`` under its own mixture, in plain autograd.

    The straightforward composition of autograd primitives, for any covariance
    type; :func:`mixture_log_density` uses the fused
    :func:`diag_mixture_log_density` for diagonal mixtures and this otherwise.
    Parameters and result as :func:`mixture_log_density`.
    """
    log_mixture_weights = mixture.logits - logsumexp(
        mixture.logits, axis=-1, keepdims=True
    )
    return logsumexp(
        log_mixture_weights + _component_log_densities(mixture, x), axis=-1
    )


# Up to this many terms NumPy adds a reduction's terms one after another, so a
# sum over the rows of the transposed array has the same bits; beyond, it adds
# them in eight interleaved partial sums.
_SEQUENTIAL_SUM = 7


def logsumexp_components(values):
    """``logsumexp(values, axis=-1)`` of (n, S) values, on values (no autograd).

    The same operations and bits as :func:`statemix_sk._utils.logsumexp`,
    without its autograd wrapper, and for a few components over the rows of
    the transposed array: NumPy's reductions over a short last axis cost about
    three times as much (120 against 40 us at 1000 x 3).
    """
    if values.shape[-1] > _SEQUENTIAL_SUM:
        return logsumexp.fun(values, axis=-1)
    columns = numpy.ascontiguousarray(values.T)
    shift = numpy.maximum.reduce(columns, axis=0)
    # A row of -inf (or with +inf) must not give NaN from inf - inf.
    shift = numpy.where(numpy.isfinite(shift), shift, 0.0)
    with numpy.errstate(divide="ignore"):
        total = numpy.log(numpy.add.reduce(numpy.exp(columns - shift), axis=0))
    total += shift
    return total


def log_softmax(logits):
    """``logits - logsumexp(logits)`` along the last axis, on values (no autograd).

    The same bits as with :func:`statemix_sk._utils.logsumexp`; see
    :func:`logsumexp_components`.
    """
    return logits - logsumexp_components(logits)[:, None]


def sum_components(values):
    """``numpy.sum(values, axis=1)`` for (n, S, ...) arrays, with the same bits.

    Added slice by slice, in the order NumPy's reduction over a middle axis adds
    them, at less than half its cost for a few components.
    """
    total = values[:, 0].copy()
    for component in range(1, values.shape[1]):
        total += values[:, component]
    return total


# Products of scales within these bounds are normal floats, so their logarithm
# is as accurate as the sum of the scales' logarithms.
_PRODUCT_RANGE = (1e-280, 1e280)


def _sum_log_scales(scales):
    """``sum(log(scales), axis=-1)``, as the log of the product where it is safe.

    One logarithm per component instead of one per dimension (``log`` is most
    of the density's cost); the sum of logarithms where the product would leave
    the normal range. Both are accurate to a few rounding errors of the result.
    """
    product = numpy.multiply.reduce(scales, axis=-1)
    if numpy.all(product > _PRODUCT_RANGE[0]) and numpy.all(
        product < _PRODUCT_RANGE[1]
    ):
        return numpy.log(product)
    return numpy.add.reduce(numpy.log(scales), axis=-1)


def _diag_terms(x, logits, means, scales, log_weights=None):
    """Forward pass of the fused diagonal density, with what the VJP reuses.

    ``log_weights``, the log-softmax of ``logits``, is computed unless given.
    """
    z = x[:, None, :] - means
    z /= scales
    if log_weights is None:
        log_weights = log_softmax(logits)
    # einsum: a third of the time of numpy.sum over the last, short axis.
    squares = numpy.einsum("nkd,nkd->nk", z, z)
    squares *= -0.5
    joint = log_weights + squares
    joint -= _sum_log_scales(scales)
    joint -= 0.5 * x.shape[-1] * _LOG_2PI
    return z, log_weights, joint


@primitive
def diag_mixture_log_density(x, logits, means, scales):
    """Log-density of diagonal Gaussian mixtures: one autograd primitive.

    Autograd charges a fixed cost per primitive call and the filter evaluates two
    mixture densities per time step, so this computes in one call what
    :func:`reference_mixture_log_density` composes from about fifteen, with a
    hand-derived gradient (checked against it and against finite differences in
    the tests).

    Parameters
    ----------
    x : array of shape (n, n_dims)
    logits : array of shape (n, n_components)
    means : array of shape (n, n_components, n_dims)
    scales : array of shape (n, n_components, n_dims)
        Standard deviations, strictly positive.

    Returns
    -------
    log_density : array of shape (n,)
    """
    _, _, joint = _diag_terms(x, logits, means, scales)
    return logsumexp(joint, axis=-1)


def _diag_mixture_vjp(argnums, result, args, kwargs):
    """VJP of :func:`diag_mixture_log_density` for the requested arguments.

    With responsibilities ``r_k = w_k N_k(x) / p(x)`` and ``z = (x - m) / s``:
    ``d/dx = -sum_k r_k z_k / s_k``, ``d/dlogits = r - softmax(logits)``,
    ``d/dm_k = r_k z_k / s_k``, ``d/ds_k = r_k (z_k^2 - 1) / s_k``.

    Autograd builds this when the forward pass records the call, and keeps it
    until the backward pass: so it holds only the arguments (kept anyway) and
    computes ``z`` and the responsibilities when it runs, once for every
    argument. Holding them instead cost about 3.7 MB per filter step at
    N = 1000, d = 20.
    """
    x, logits, means, scales = args

    def vjp(upstream):
        z, log_weights, joint = _diag_terms(x, logits, means, scales)
        gradients = _diag_density_gradients(
            z, log_weights, joint, result, scales, upstream
        )
        return tuple(gradients[argnum] for argnum in argnums)

    return vjp


def _diag_density_gradients(z, log_weights, joint, log_density, scales, upstream):
    """Gradients of the diagonal mixture density in ``x, logits, means, scales``.

    From the forward pass's terms (:func:`_diag_terms`) and result; the
    formulas are in :func:`_diag_mixture_vjp`.
    """
    responsibilities = numpy.exp(joint - log_density[:, None])
    weighted = (upstream[:, None] * responsibilities)[..., None]
    by_mean = weighted * z / scales
    return (
        -sum_components(by_mean),
        upstream[:, None] * (responsibilities - numpy.exp(log_weights)),
        by_mean,
        weighted * (z**2 - 1.0) / scales,
    )


defvjp_argnums(diag_mixture_log_density, _diag_mixture_vjp)


def mixture_log_density(mixture, x):
    """Log-density of each item of ``x`` under its own mixture.

    Parameters
    ----------
    mixture : GaussianMixture
        A batch of ``n`` mixtures.
    x : array of shape (n, n_dims)
        One point per mixture.

    Returns
    -------
    log_density : array of shape (n,)

    Examples
    --------
    >>> import numpy
    >>> mixture = GaussianMixture(
    ...     logits=numpy.zeros((1, 2)),
    ...     means=numpy.array([[[-1.0], [1.0]]]),
    ...     scales=numpy.ones((1, 2, 1)),
    ... )
    >>> mixture_log_density(mixture, numpy.array([[0.0]])).round(6)
    array([-1.418939])
    """
    if mixture.covariance_type == "diag":
        return diag_mixture_log_density(x, *mixture)
    return reference_mixture_log_density(mixture, x)


def draw_mixture_noise(mixture, rng):
    """Draw the constants of a reparameterised sample: component indices and noise.

    Parameters
    ----------
    mixture : GaussianMixture
        A batch of ``n`` mixtures; only the values of its logits are read (they are
        taken out of any autograd trace).
    rng : numpy.random.Generator

    Returns
    -------
    components : ndarray of int of shape (n,)
        The chosen component of each mixture, by inversion of its weights' CDF.
    noise : ndarray of shape (n, n_dims)
        Standard normal draws.
    """
    logits = numpy.asarray(getval(mixture.logits))
    n_items = logits.shape[0]
    n_dims = numpy.shape(mixture.means)[-1]
    components = choose_components(logits, rng.random(n_items))
    return components, rng.standard_normal((n_items, n_dims))


def choose_components(logits, uniforms):
    """Pick each row's component by inverting its weights' CDF at a uniform.

    Parameters
    ----------
    logits : ndarray of shape (n, n_components)
    uniforms : ndarray of shape (n,)
        In [0, 1).

    Returns
    -------
    components : ndarray of int of shape (n,)
    """
    n_items, n_components = logits.shape
    if n_components == 1:
        return numpy.zeros(n_items, dtype=numpy.intp)
    return components_from_weights(
        numpy.exp(logits - logsumexp(logits, axis=1, keepdims=True)), uniforms
    )


def components_from_weights(weights, uniforms):
    """:func:`choose_components` from the normalised weights (n, n_components)."""
    n_components = weights.shape[1]
    if n_components == 1:
        return numpy.zeros(len(weights), dtype=numpy.intp)
    # Over the rows of the transposed weights: the same running sums (a cumsum
    # adds in order), at a third of the cost over the short last axis.
    cumulative = numpy.cumsum(numpy.ascontiguousarray(weights.T), axis=0)
    below = cumulative < uniforms * cumulative[-1]
    return numpy.minimum(numpy.add.reduce(below, axis=0), n_components - 1)


@primitive
def _diag_sample(means, scales, one_hot, noise):
    """``sum_k one_hot_k (means_k + scales_k noise)``: one primitive."""
    return numpy.sum(one_hot[:, :, None] * (means + scales * noise[:, None, :]), 1)


defvjp(
    _diag_sample,
    lambda result, means, scales, one_hot, noise: (
        lambda upstream: one_hot[:, :, None] * upstream[:, None, :]
    ),
    lambda result, means, scales, one_hot, noise: (
        lambda upstream: one_hot[:, :, None] * (upstream * noise)[:, None, :]
    ),
)


def transform_mixture_noise(mixture, components, noise):
    """Map drawn constants to a sample: ``means[k] + scales[k] @ noise``.

    Differentiable in the means and scales. The chosen component is selected with
    a one-hot sum over components rather than fancy indexing, which autograd
    differentiates without a scatter (``np.add.at``).

    Parameters
    ----------
    mixture : GaussianMixture
    components : ndarray of int of shape (n,)
    noise : ndarray of shape (n, n_dims)

    Returns
    -------
    x : array of shape (n, n_dims)
    """
    n_components = numpy.shape(mixture.logits)[-1]
    one_hot = (components[:, None] == numpy.arange(n_components)).astype(float)
    if mixture.covariance_type == "diag":
        return _diag_sample(mixture.means, mixture.scales, one_hot, noise)
    mean = np.sum(one_hot[:, :, None] * mixture.means, axis=1)
    cholesky = np.sum(one_hot[:, :, None, None] * mixture.scales, axis=1)
    return mean + np.einsum("nij,nj->ni", cholesky, noise)


def sample_mixture(mixture, rng):
    """Draw one reparameterised sample from each mixture of the batch.

    Parameters
    ----------
    mixture : GaussianMixture
    rng : numpy.random.Generator

    Returns
    -------
    x : array of shape (n, n_dims)
    """
    components, noise = draw_mixture_noise(mixture, rng)
    return transform_mixture_noise(mixture, components, noise)
