"""Value and gradient of the learned filter: statemix-sk against PyTorch and JAX.

Run by hand, never part of the test suite::

    python benchmarks/bench_frameworks.py          # the full comparison
    python benchmarks/bench_frameworks.py --quick  # smoke run: d = 8, N = 50, T = 10
    python benchmarks/bench_frameworks.py --memory --output results.md

statemix-sk differentiates its particle filter with autograd on plain NumPy. This
script answers how that compares with writing the same filter in a framework built
for differentiation: it computes one value-and-gradient of the filter's
log-likelihood with respect to the parameters of both networks (transition and
proposal) in four ways, checks that all four give the same numbers, and times them
side by side in one run.

The problem is ``bench_filter.py``'s (``build_problem``): stochastic Lorenz 96
data with ``d`` states observed as ``y = H x + N(0, 0.5**2 I)``, ``S = 3``
diagonal Gaussian-mixture components, networks with tanh hidden layers (32, 32)
plus a linear part, the proposal centred on the transition's predicted mixture
mean, systematic resampling at every step, stop-gradient resampling (a resampled
particle carries ``log W_a - stop_gradient(log W_a) - log N``). For several
series filtered together (``B`` series of ``N`` particles, each resampled on its
own) the data are ``make_lorenz96`` series and the networks, head and
standardisation are those of the one-series problem.

The four columns:

package
    ``LIBRARY_VALUE_AND_GRAD`` of ``bench_filter.py``: ``autograd.value_and_grad``
    of the library's ``particle_filter`` (for several series, of the sum of the
    series' log-likelihoods).
torch eager
    The filter written in PyTorch (float64), differentiated by ``backward()``.
torch.compile
    The same, with the per-step function compiled by ``torch.compile``
    (``fullgraph=True, dynamic=False``, inductor backend): the time loop stays in
    Python, so one compiled forward and one compiled backward graph serve every
    step and the compilation does not grow with ``T``.
JAX jit
    The filter written in JAX (float64), ``jax.jit(jax.value_and_grad(f))`` with
    the time loop as ``jax.lax.scan``.

The PyTorch and JAX versions share one step function (:func:`filter_step`),
written against a small table of array operations (:class:`ArrayOps`), so that
both run the same functions as the library's fused step
(``statemix_sk.fused._forward``), each with its framework's own ``tanh``,
``exp`` and ``log`` and in the form a user would write them (``tanh``, not the
library's exp form of it; the log-determinant as a sum of logarithms). Their
random numbers are inputs, drawn in plain NumPy from
``numpy.random.default_rng(seed)`` in the library's order: the initial noise,
then per step one resampling uniform per series, the component uniforms and the
normal noise. The frameworks compute the ancestors (systematic resampling by the
inverse CDF of the normalised weights, with the running sums added one after
another as ``numpy.cumsum`` adds them, so that the same ancestors are picked)
and the components (inverse CDF of the softmax weights) from values, without
gradient.

Notes
-----
Checks, on every timed case: the log-likelihood's relative difference from the
package's, the largest absolute difference of the gradients relative to the
package's largest gradient entry, and whether every ancestor equals the library's.
The frameworks' ``exp``, ``tanh``, ``log``, sums and matrix products round
differently from NumPy's in the last bits, so the numbers agree to rounding, not
to the bit.

Timing: the median of ``--repeats`` calls after a first call (which compiles,
for torch.compile and JAX, and is reported), the frameworks taking turns call by
call so that they share the machine's conditions, everything on one thread:
``torch.set_num_threads(1)``, XLA's flags ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`` (set before JAX is imported), threadpoolctl for
NumPy's BLAS. A full run gives torch.compile a fresh, empty cache, so that its
first calls are cold compiles (``--quick`` keeps the cache as found, to stay
quick). ``--memory`` adds the peak memory of one value-and-gradient at
T = 400, N = 1000, each framework in fresh subprocesses.

PyTorch and JAX are optional: each is imported only when its column runs, and a
missing one is reported as skipped.

See Also
--------
bench_filter.py : the problem, the library's filter, and a plain-NumPy reference
    of the forward pass.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import cache, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from autograd import value_and_grad

# bench_filter.py defines the problem, the library's filter and the reporting
# helpers; it lives next to this script, which is not in a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_filter import (
    DATA_SEED,
    FILTER_SEED,
    LIBRARY_VALUE_AND_GRAD,
    OBSERVATION_NOISE,
    child_environment,
    emit,
    library_log_likelihood,
    limit_threads,
    load_average,
    machine_table,
    peak_rss_kib,
    source_revision,
    thread_pools,
)
from bench_filter import build_problem as build_one_series_problem

from statemix_sk.datasets import make_lorenz96
from statemix_sk.filtering import particle_filter
from statemix_sk.learned import MixtureProposal, MixtureTransitionModel

LOG_2PI = math.log(2.0 * math.pi)
CASES = {
    "1x100": (1, 100),
    "1x1000": (1, 1000),
    "5x100": (5, 100),
    "1x10": (1, 10),
}
"""Timed cases: name -> (number of series B, particles per series N)."""
DEFAULT_CASES = ("1x100", "1x1000", "5x100")
"""The issue's cases. ``1x10`` (``--cases``) shows each framework's fixed cost
per step: ten particles are almost no work."""
FULL_CONFIG = {"states": 20, "steps": 100, "cases": CASES}
QUICK_CONFIG = {"states": 8, "steps": 10, "cases": {"1x50": (1, 50)}}
MEMORY_CASE = {"states": 20, "steps": 400, "series": 1, "particles": 1000}
QUICK_MEMORY_CASE = {"states": 8, "steps": 40, "series": 1, "particles": 50}
DEFAULT_REPEATS = 5
QUICK_REPEATS = 2
FRAMEWORKS = ("package", "torch eager", "torch.compile", "JAX jit")
REQUIRES = {
    "package": None,
    "torch eager": "torch",
    "torch.compile": "torch",
    "JAX jit": "jax",
}
"""The module each column needs beyond the package's own (None: nothing more)."""
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
WARM_UP_STEPS = 2
"""Steps of the memory children's warm-up call (compiles torch.compile's step)."""


def single_thread_environment():
    """Ask every framework for one thread, before any of them is imported.

    XLA reads ``XLA_FLAGS`` when JAX starts, and inductor reads
    ``TORCHINDUCTOR_COMPILE_THREADS`` when torch is imported (one thread: no pool
    of compiling subprocesses competing with the timed work).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_SINGLE_THREAD}".strip()
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def fresh_compile_cache():
    """Point torch.compile's on-disk cache at a new, empty directory; return it.

    Inductor keeps compiled graphs across processes (under /tmp by default).
    With that cache warm a first call takes seconds instead of about a minute,
    so the first-call figures would depend on what ran before.
    """
    directory = tempfile.mkdtemp(prefix="bench_frameworks_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory
    return directory


def missing_module(framework):
    """Return the module ``framework`` needs that is not installed, or None."""
    module = REQUIRES[framework]
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return module


def skipped_message(module):
    """Return the message that stands in for a column whose framework is missing."""
    return f"skipped: {module} is not installed (pip install {module})"


# --------------------------------------------------------------------------------------
# The problem, its constants and its random numbers (plain NumPy)
# --------------------------------------------------------------------------------------


def build_problem(n_states, n_steps, n_series):
    """``bench_filter``'s problem, with ``n_series`` series when more than one.

    The networks, the head and the standardisation stay those of the one-series
    problem, so that every case filters with the same parameters.
    """
    problem = build_one_series_problem(n_states, n_steps)
    if n_series == 1:
        return problem
    Y, _, _ = make_lorenz96(
        n_steps,
        n_sequences=n_series,
        n_states=n_states,
        observation_noise=OBSERVATION_NOISE,
        random_state=DATA_SEED,
    )
    return problem._replace(Y=Y)


class FilterConstants(NamedTuple):
    """What the framework filters need besides the parameters: all arrays."""

    initial_mean: np.ndarray
    initial_scale: np.ndarray
    input_mean: np.ndarray
    """The networks' input standardisation, ``(x - mean) / scale``."""
    input_scale: np.ndarray
    location_scale: np.ndarray
    """Mean increment per unit of network output (the mixture head)."""
    scale_offset: np.ndarray
    scale_low: np.ndarray
    scale_range: np.ndarray
    """``scale_high - scale_low``: scales are ``low + range * sigmoid``."""
    observation_matrix_t: np.ndarray
    """``H.T``, shape (n_states, n_outputs)."""
    noise_scale: np.ndarray
    log_noise_det: np.ndarray
    """``log |chol(R)|``, as the library computes it (0-d)."""
    strata: np.ndarray
    """``0, 1, ..., N - 1`` as floats: systematic resampling's strata."""
    series_offsets: np.ndarray
    """(B, 1) ints: the first row of each series in the stacked cloud."""
    particle_rows: np.ndarray
    """``0, 1, ..., B N - 1``: picks one component per row."""


class FilterInputs(NamedTuple):
    """The observations and every random number of one filter pass."""

    initial_noise: np.ndarray
    """(B N, d): standard normal, the initial particles' noise."""
    observations: np.ndarray
    """(T, B, n_outputs)."""
    resampling_uniforms: np.ndarray
    """(T, B): one uniform per series and step (systematic resampling)."""
    component_uniforms: np.ndarray
    """(T, B N): the uniforms choosing each particle's proposal component."""
    normal_noise: np.ndarray
    """(T, B N, d): the reparameterised sample's standard normal noise."""


def filter_constants(problem, n_series, n_particles):
    """Return the problem's :class:`FilterConstants`."""
    head, observation = problem.head, problem.model.observation
    # The library's log-determinant: of the Cholesky factor of R, not of the
    # scales (sqrt(scale**2) can differ from scale in the last bit).
    cholesky = np.linalg.cholesky(observation.noise_covariance)
    states = (head.n_dims,)
    return FilterConstants(
        initial_mean=np.broadcast_to(problem.model.initial_mean, states).astype(float),
        initial_scale=np.broadcast_to(problem.model.initial_scale, states).astype(
            float
        ),
        input_mean=problem.input_stats.mean,
        input_scale=problem.input_stats.scale,
        location_scale=head.location_scale,
        scale_offset=head.scale_offset,
        scale_low=head.scale_low,
        scale_range=head.scale_high - head.scale_low,
        observation_matrix_t=np.ascontiguousarray(observation.observation_matrix.T),
        noise_scale=observation.noise_scale,
        log_noise_det=np.array(np.sum(np.log(np.diag(cholesky)))),
        strata=np.arange(n_particles, dtype=float),
        series_offsets=(np.arange(n_series) * n_particles)[:, None],
        particle_rows=np.arange(n_series * n_particles),
    )


def draw_filter_inputs(problem, n_series, n_particles, seed):
    """Draw every random number of one pass, in the library's order.

    ``particle_filter`` draws the initial particles' noise first; then, per step,
    one uniform per series for its systematic resampling (series after series),
    the uniforms choosing the components (``rng.random(n)``) and the normal
    noise (``rng.standard_normal((n, d))``), n = B N rows.
    """
    n_steps, n_states = problem.Y.shape[-2], problem.head.n_dims
    n_rows = n_series * n_particles
    rng = np.random.default_rng(seed)
    initial_noise = rng.standard_normal((n_rows, n_states))
    resampling = np.empty((n_steps, n_series))
    components = np.empty((n_steps, n_rows))
    noise = np.empty((n_steps, n_rows, n_states))
    for t in range(n_steps):
        resampling[t] = [rng.random() for _ in range(n_series)]
        components[t] = rng.random(n_rows)
        noise[t] = rng.standard_normal((n_rows, n_states))
    observations = np.reshape(problem.Y, (n_series, n_steps, -1)).transpose(1, 0, 2)
    return FilterInputs(
        initial_noise, np.ascontiguousarray(observations), resampling, components, noise
    )


def network_arrays(network):
    """Return a network's arrays in one order: ``W_1, b_1, ..., W_L, b_L, L``."""
    return [array for layer in network["layers"] for array in layer] + [
        network["linear"]
    ]


def parameter_arrays(params):
    """Both networks' arrays: ``(transition arrays, proposal arrays)``."""
    return network_arrays(params["transition"]), network_arrays(params["proposal"])


# --------------------------------------------------------------------------------------
# The filter step, once for both frameworks
# --------------------------------------------------------------------------------------


class ArrayOps(NamedTuple):
    """The array operations that differ between PyTorch and JAX.

    Everything else (arithmetic, ``@``, slicing, indexing by integer arrays,
    ``reshape``) is spelled the same in both.
    """

    exp: object
    log: object
    tanh: object
    amax: object
    """``amax(a, axis)``, keeping the axis."""
    sum: object
    """``sum(a, axis, keepdims=False)``."""
    cumsum: object
    """Running sums along the last axis, added in order (as ``numpy.cumsum``)."""
    searchsorted: object
    """``searchsorted(sorted_rows, values)``, row by row, ``side="right"``."""
    minimum: object
    """``minimum(int_array, bound)``."""
    concatenate: object
    """Join 2-D arrays along columns."""
    stop_gradient: object


def logsumexp(ops, values, axis):
    """``log sum exp`` along ``axis`` (kept), as ``statemix_sk._utils.logsumexp``.

    The shift is a constant there (its gradient is the softmax), hence the stop.
    """
    shift = ops.stop_gradient(ops.amax(values, axis))
    return ops.log(ops.sum(ops.exp(values - shift), axis, keepdims=True)) + shift


def mixture_network(arrays, inputs, ops):
    """``mlp(inputs) + inputs @ L``: tanh hidden layers, linear output layer."""
    *layers, linear = arrays
    hidden = inputs
    for W, b in zip(layers[0:-2:2], layers[1:-2:2], strict=True):
        hidden = ops.tanh(hidden @ W + b)
    return hidden @ layers[-2] + layers[-1] + inputs @ linear


def mixture_head(outputs, reference, constants, ops):
    """Logits, means ``reference + increments`` and bounded scales, (n, S, d)."""
    n_rows, n_states = reference.shape
    n_components = outputs.shape[1] // (1 + 2 * n_states)
    width = n_components * n_states
    logits = outputs[:, :n_components]
    increments = outputs[:, n_components : n_components + width].reshape(
        n_rows, n_components, n_states
    )
    raw = outputs[:, n_components + width : n_components + 2 * width].reshape(
        n_rows, n_components, n_states
    )
    # The library's sigmoid is 1 / (1 + exp(-z)) (statemix_sk.networks.shifted_sigmoid,
    # whose floor at z = -700 only avoids an overflow warning).
    sigmoid = 1.0 / (1.0 + ops.exp(-(raw + constants.scale_offset)))
    means = reference[:, None, :] + increments * constants.location_scale
    scales = constants.scale_low + constants.scale_range * sigmoid
    return logits, means, scales


def mixture_log_density(x, logits, means, scales, ops):
    """Log-density of each row of ``x`` under its diagonal mixture, shape (n,)."""
    n_states = x.shape[1]
    z = (x[:, None, :] - means) / scales
    log_mixture_weights = logits - logsumexp(ops, logits, 1)
    joint = (
        log_mixture_weights
        - 0.5 * ops.sum(z**2, 2)
        - ops.sum(ops.log(scales), 2)
        - 0.5 * n_states * LOG_2PI
    )
    return logsumexp(ops, joint, 1)[:, 0]


def filter_step(ops, constants, networks, x, log_weights, step_inputs):
    """One step of the learned filter for ``B`` series of ``N`` particles.

    Parameters
    ----------
    ops : ArrayOps
    constants : FilterConstants
        As framework arrays.
    networks : (list, list)
        The transition's and the proposal's arrays (:func:`network_arrays`).
    x : array of shape (B N, d)
        The previous particles, series after series.
    log_weights : array of shape (B, N)
        Their normalised log-weights.
    step_inputs : tuple
        This step's observations (B, n_outputs), resampling uniforms (B,),
        component uniforms (B N,) and normal noise (B N, d).

    Returns
    -------
    x, log_weights, increment, ancestors
        The new particles and normalised log-weights, the log-likelihood
        increments (B,) and the ancestors within each series (B, N).
    """
    y, resampling_uniforms, component_uniforms, noise = step_inputs
    n_series, n_particles = log_weights.shape
    transition, proposal = networks

    # Systematic resampling of each series, from values: the ancestors are
    # constants. The running sums are those of numpy.cumsum, so that a position
    # within rounding of a boundary picks the library's ancestor.
    cumulative = ops.cumsum(ops.exp(ops.stop_gradient(log_weights)))
    positions = (
        (constants.strata + resampling_uniforms[:, None])
        / n_particles
        * cumulative[:, -1:]
    )
    ancestors = ops.minimum(ops.searchsorted(cumulative, positions), n_particles - 1)
    rows = (ancestors + constants.series_offsets).reshape(-1)
    gathered = log_weights.reshape(-1)[rows].reshape(n_series, n_particles)
    # Stop-gradient resampling: zero in value, the score of the ancestor choice
    # in gradient (the library adds -stop_gradient(.) - log N as one term).
    carried = gathered + (-ops.stop_gradient(gathered) - math.log(n_particles))
    x_prev = x[rows]

    # The transition mixture around x_prev and its mean (the softmax as the
    # exponential of the log-weights, as the library's fused step computes it).
    standardized = (x_prev - constants.input_mean) / constants.input_scale
    f_logits, f_means, f_scales = mixture_head(
        mixture_network(transition, standardized, ops), x_prev, constants, ops
    )
    f_weights = ops.exp(f_logits - logsumexp(ops, f_logits, 1))
    centre = ops.sum(f_weights[:, :, None] * f_means, 1)

    # The proposal mixture around the centre, from the scaled innovation.
    predicted = (centre @ constants.observation_matrix_t).reshape(
        n_series, n_particles, -1
    )
    innovation = ((y[:, None, :] - predicted) / constants.noise_scale).reshape(
        n_series * n_particles, -1
    )
    q_logits, q_means, q_scales = mixture_head(
        mixture_network(proposal, ops.concatenate([standardized, innovation]), ops),
        centre,
        constants,
        ops,
    )

    # The component by inverting the CDF of the mixture weights (values only, as
    # statemix_sk.mixtures.choose_components), then the reparameterised sample.
    q_logit_values = ops.stop_gradient(q_logits)
    cdf = ops.cumsum(ops.exp(q_logit_values - logsumexp(ops, q_logit_values, 1)))
    n_components = q_logits.shape[1]
    components = ops.minimum(
        ops.sum(cdf < component_uniforms[:, None] * cdf[:, -1:], 1), n_components - 1
    )
    chosen = (constants.particle_rows, components)
    x = q_means[chosen] + q_scales[chosen] * noise

    # log w = carried + (log f - log q) + log g, added in the library's order.
    log_ratio = mixture_log_density(
        x, f_logits, f_means, f_scales, ops
    ) - mixture_log_density(x, q_logits, q_means, q_scales, ops)
    whitened = (
        y[:, None, :]
        - (x @ constants.observation_matrix_t).reshape(n_series, n_particles, -1)
    ) / constants.noise_scale
    log_g = (
        -0.5 * ops.sum(whitened**2, 2)
        - constants.log_noise_det
        - 0.5 * whitened.shape[2] * LOG_2PI
    )
    log_w = carried + log_ratio.reshape(n_series, n_particles) + log_g
    increment = logsumexp(ops, log_w, 1)
    return x, log_w - increment, increment[:, 0], ancestors


# --------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------


@cache
def torch_ops():
    """:class:`ArrayOps` for PyTorch (imports torch).

    One table for the whole process: torch.compile guards on the functions a
    compiled step calls, and new ones would make it compile again.
    """
    import torch

    return ArrayOps(
        exp=torch.exp,
        log=torch.log,
        tanh=torch.tanh,
        amax=lambda a, axis: torch.amax(a, dim=axis, keepdim=True),
        sum=lambda a, axis, keepdims=False: torch.sum(a, dim=axis, keepdim=keepdims),
        # torch's CPU cumsum adds in order, in float64: numpy.cumsum's sums.
        cumsum=lambda a: torch.cumsum(a, dim=-1),
        searchsorted=lambda rows, values: torch.searchsorted(rows, values, right=True),
        minimum=lambda a, bound: torch.clamp(a, max=bound),
        concatenate=lambda arrays: torch.cat(arrays, dim=1),
        stop_gradient=lambda a: a.detach(),
    )


def setup_torch():
    """Import torch for float64 on one thread; return the module."""
    import torch

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or parallel work already started: keep it
    return torch


def torch_runner(problem, n_series, n_particles, seed, compiled):
    """Return a callable computing (value, gradients, ancestors) in PyTorch.

    ``compiled`` compiles the step function with ``torch.compile``: it compiles
    at the first call (forward) and at the first backward pass.
    """
    torch = setup_torch()
    ops = torch_ops()
    constants = FilterConstants(
        *(torch.as_tensor(a) for a in filter_constants(problem, n_series, n_particles))
    )
    inputs = FilterInputs(
        *(
            torch.as_tensor(a)
            for a in draw_filter_inputs(problem, n_series, n_particles, seed)
        )
    )
    step = partial(filter_step, ops)
    if compiled:
        step = torch.compile(step, fullgraph=True, dynamic=False)
    arrays = parameter_arrays(problem.params)

    def run(n_steps=None):
        """Value, gradients and ancestors over the first ``n_steps`` (None: all)."""
        networks = tuple(
            [torch.tensor(a, requires_grad=True) for a in phase] for phase in arrays
        )
        x = constants.initial_mean + constants.initial_scale * inputs.initial_noise
        log_weights = torch.full((n_series, n_particles), -math.log(n_particles))
        increments, ancestors = [], []
        for t in range(n_steps or inputs.observations.shape[0]):
            step_inputs = (
                inputs.observations[t],
                inputs.resampling_uniforms[t],
                inputs.component_uniforms[t],
                inputs.normal_noise[t],
            )
            x, log_weights, increment, step_ancestors = step(
                constants, networks, x, log_weights, step_inputs
            )
            increments.append(increment)
            ancestors.append(step_ancestors)
        # Each series' sum over time, then over the series.
        value = torch.sum(torch.sum(torch.stack(increments), dim=0))
        value.backward()
        gradients = [array.grad.numpy() for phase in networks for array in phase]
        return value.item(), gradients, torch.stack(ancestors).numpy()

    return run


# --------------------------------------------------------------------------------------
# JAX
# --------------------------------------------------------------------------------------


def setup_jax():
    """Import JAX for float64; return ``(jax, jax.numpy)``."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    return jax, jnp


@cache
def jax_ops():
    """:class:`ArrayOps` for JAX (imports jax); one table for the process."""
    jax, jnp = setup_jax()

    def cumsum(a):
        # jnp.cumsum of 1000 entries is a tree of partial sums on the CPU,
        # up to 1e-15 away from numpy.cumsum: a position that close to a
        # boundary would pick another ancestor than the library (rare; none in
        # this benchmark's cases). A scan adds in order, numpy's sums to the
        # bit, and is no slower.
        def add(total, column):
            total = total + column
            return total, total

        _, sums = jax.lax.scan(
            add, jnp.zeros(a.shape[:-1], a.dtype), jnp.moveaxis(a, -1, 0)
        )
        return jnp.moveaxis(sums, 0, -1)

    return ArrayOps(
        exp=jnp.exp,
        log=jnp.log,
        tanh=jnp.tanh,
        amax=lambda a, axis: jnp.max(a, axis=axis, keepdims=True),
        sum=lambda a, axis, keepdims=False: jnp.sum(a, axis=axis, keepdims=keepdims),
        cumsum=cumsum,
        searchsorted=jax.vmap(partial(jnp.searchsorted, side="right")),
        minimum=jnp.minimum,
        concatenate=lambda arrays: jnp.concatenate(arrays, axis=1),
        stop_gradient=jax.lax.stop_gradient,
    )


def jax_log_likelihood(networks, constants, inputs):
    """Return the log-likelihood (summed over series) and the ancestors, in JAX."""
    jax, jnp = setup_jax()
    ops = jax_ops()
    n_series = inputs.resampling_uniforms.shape[1]
    n_particles = inputs.component_uniforms.shape[1] // n_series

    def step(state, step_inputs):
        x, log_weights, increment, ancestors = filter_step(
            ops, constants, networks, *state, step_inputs
        )
        return (x, log_weights), (increment, ancestors)

    x = constants.initial_mean + constants.initial_scale * inputs.initial_noise
    log_weights = jnp.full((n_series, n_particles), -math.log(n_particles))
    _, (increments, ancestors) = jax.lax.scan(
        step,
        (x, log_weights),
        (
            inputs.observations,
            inputs.resampling_uniforms,
            inputs.component_uniforms,
            inputs.normal_noise,
        ),
    )
    return jnp.sum(jnp.sum(increments, axis=0)), ancestors


def jax_runner(problem, n_series, n_particles, seed, ahead_of_time=False):
    """Return a callable computing (value, gradients, ancestors) with JAX.

    ``ahead_of_time`` compiles now (``lower().compile()``) instead of at the
    first call, without running it (the memory children use it).
    """
    jax, jnp = setup_jax()
    constants = FilterConstants(
        *(jnp.asarray(a) for a in filter_constants(problem, n_series, n_particles))
    )
    inputs = FilterInputs(
        *(
            jnp.asarray(a)
            for a in draw_filter_inputs(problem, n_series, n_particles, seed)
        )
    )
    networks = tuple(
        [jnp.asarray(a) for a in phase] for phase in parameter_arrays(problem.params)
    )
    compute = jax.jit(jax.value_and_grad(jax_log_likelihood, has_aux=True))
    if ahead_of_time:
        compute = compute.lower(networks, constants, inputs).compile()

    def run():
        (value, ancestors), gradients = compute(networks, constants, inputs)
        return (
            float(value),
            [np.asarray(array) for phase in gradients for array in phase],
            np.asarray(ancestors),
        )

    return run


# --------------------------------------------------------------------------------------
# The package
# --------------------------------------------------------------------------------------


def summed_log_likelihood(params, problem, n_particles, seed):
    """Return the library's log-likelihood summed over the series."""
    import autograd.numpy as anp

    return anp.sum(library_log_likelihood(params, problem, n_particles, seed))


SUMMED_VALUE_AND_GRAD = value_and_grad(summed_log_likelihood)


def package_runner(problem, n_series, n_particles, seed):
    """Return a callable computing (value, gradients, None) with the package."""
    # One series: exactly bench_filter's value-and-grad; several: of their sum
    # (autograd's value_and_grad needs a scalar).
    compute = LIBRARY_VALUE_AND_GRAD if n_series == 1 else SUMMED_VALUE_AND_GRAD

    def run(n_steps=None):
        """Value, gradients and None over the first ``n_steps`` (None: all)."""
        if n_steps is not None:  # the time axis is the second last
            problem_steps = problem._replace(Y=problem.Y[..., :n_steps, :])
        else:
            problem_steps = problem
        value, gradients = compute(problem.params, problem_steps, n_particles, seed)
        transition, proposal = parameter_arrays(gradients)
        return float(value), transition + proposal, None

    return run


def library_ancestors(problem, n_particles, seed):
    """Return the library's ancestors at every step, shape (T, B, N)."""
    # bench_filter.library_filter's filter, asked for its particle history.
    model = MixtureTransitionModel(
        problem.params["transition"],
        problem.head,
        problem.input_stats,
        problem.model.observation,
        problem.model.initial_mean,
        problem.model.initial_scale,
    )
    proposal = MixtureProposal(
        problem.params["proposal"], problem.head, problem.input_stats
    )
    result = particle_filter(
        problem.Y,
        model,
        proposal,
        n_particles=n_particles,
        random_state=seed,
        return_particles=True,
    )
    ancestors = result.ancestors
    if ancestors.ndim == 2:  # one series: no series axis
        ancestors = ancestors[None]
    return ancestors.transpose(1, 0, 2)


def make_runner(framework, problem, n_series, n_particles, seed):
    """Return the (value, gradients, ancestors) callable of one column."""
    if framework == "package":
        return package_runner(problem, n_series, n_particles, seed)
    if framework == "torch eager":
        return torch_runner(problem, n_series, n_particles, seed, compiled=False)
    if framework == "torch.compile":
        return torch_runner(problem, n_series, n_particles, seed, compiled=True)
    if framework == "JAX jit":
        return jax_runner(problem, n_series, n_particles, seed)
    raise ValueError(f"unknown framework {framework!r}")


# --------------------------------------------------------------------------------------
# Agreement and timing
# --------------------------------------------------------------------------------------


class Column(NamedTuple):
    """One framework's outcome on one case."""

    status: str
    """Either "ok" or why there are no numbers (skipped, failed)."""
    first_call: float = math.nan
    """Seconds of the first call (tracing and compiling included)."""
    seconds: tuple = ()
    """The timed calls' seconds."""
    value: float = math.nan
    value_difference: float = math.nan
    """``|value - package value| / |package value|``."""
    gradient_difference: float = math.nan
    """Largest ``|gradient - package gradient|`` over the largest package entry."""
    ancestors_differing: int = -1
    """Ancestors that differ from the library's (-1: not checked)."""


def compare(result, reference, reference_ancestors):
    """Agreement of one framework's result with the package's."""
    value, gradients, ancestors = result
    reference_value, reference_gradients, _ = reference
    largest = max(float(np.max(np.abs(g))) for g in reference_gradients)
    gradient_difference = max(
        float(np.max(np.abs(g - r)))
        for g, r in zip(gradients, reference_gradients, strict=True)
    )
    return {
        "value": value,
        "value_difference": abs(value - reference_value) / abs(reference_value),
        "gradient_difference": gradient_difference / largest,
        "ancestors_differing": (
            -1
            if ancestors is None
            else int(np.sum(np.asarray(ancestors) != reference_ancestors))
        ),
    }


def timed(function):
    """Call ``function``; return (seconds, result)."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def measure_case(config, n_series, n_particles, repeats):
    """Check and time every framework on one case; return its Columns."""
    problem = build_problem(config["states"], config["steps"], n_series)
    reference_ancestors = library_ancestors(problem, n_particles, FILTER_SEED)
    runners, columns, reference = {}, {}, None
    for framework in FRAMEWORKS:
        module = missing_module(framework)
        if module is not None:
            columns[framework] = Column(skipped_message(module))
            continue
        try:
            runners[framework] = make_runner(
                framework, problem, n_series, n_particles, FILTER_SEED
            )
            first_call, result = timed(runners[framework])
        except Exception as error:
            if framework == "package":
                raise  # the reference: nothing to compare without it
            # An optional framework's failure (say, torch.compile without a C++
            # compiler) must not stop the others.
            runners.pop(framework, None)
            message = " ".join(str(error).split())[:200]
            columns[framework] = Column(f"failed: {type(error).__name__}: {message}")
            print(f"{framework}: {columns[framework].status}", flush=True)
            continue
        if framework == "package":
            reference = result
        columns[framework] = Column(
            "ok", first_call, **compare(result, reference, reference_ancestors)
        )
    # Round robin: each framework's k-th call runs next to the others' k-th call.
    seconds = {framework: [] for framework in runners}
    for _ in range(repeats):
        for framework, run in runners.items():
            seconds[framework].append(timed(run)[0])
    for framework, values in seconds.items():
        columns[framework] = columns[framework]._replace(seconds=tuple(values))
    return columns


# --------------------------------------------------------------------------------------
# Memory (fresh subprocesses)
# --------------------------------------------------------------------------------------


def reset_peak_rss():
    """Reset this process's VmHWM to its current RSS; return whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def current_rss_kib():
    """Return the resident memory now (VmRSS) in KiB, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(framework, mode, n_states, n_steps, n_series, n_particles):
    """Child-process body: prepare one framework's value-and-gradient, maybe run it.

    Both modes import the framework, build the problem and its random numbers,
    and warm up: a value-and-gradient over the first steps (torch.compile
    compiles its step there), or, for JAX, compiling the whole pass ahead of
    time. ``baseline`` stops there; ``run`` then runs one value-and-gradient.
    """
    problem = build_problem(n_states, n_steps, n_series)
    if framework == "JAX jit":
        run = jax_runner(problem, n_series, n_particles, FILTER_SEED, True)
    else:
        run = make_runner(framework, problem, n_series, n_particles, FILTER_SEED)
        run(n_steps=WARM_UP_STEPS)
    report = {"framework": framework, "mode": mode}
    report["peak_before_kib"], report["peak_rss_source"] = peak_rss_kib()
    if mode == "run":
        report["rss_before_kib"] = current_rss_kib()
        report["peak_was_reset"] = reset_peak_rss()
        report["seconds"], _ = timed(run)
    report["peak_rss_kib"] = max(peak_rss_kib()[0], report["peak_before_kib"])
    report["peak_after_kib"] = peak_rss_kib()[0]
    print(json.dumps(report))


def run_memory_child(framework, mode, case):
    """Run :func:`memory_child` in a fresh interpreter; return its report."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child"]
    command += [framework, mode]
    command += [str(case[key]) for key in ("states", "steps", "series", "particles")]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
        env=child_environment(1),
    )
    if completed.returncode != 0:
        tail = " ".join(completed.stderr.strip().splitlines()[-1:])[:200]
        return {"error": f"child failed (exit {completed.returncode}): {tail}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory_table(case):
    """Measure and tabulate the peak memory of every framework."""
    lines = [
        f"d = {case['states']}, {case['series']} series, N = {case['particles']}, "
        f"T = {case['steps']}. Peak RSS is VmHWM (/proc/self/status). Each "
        "framework's baseline child imports it, builds the problem and its random "
        "numbers and warms up (torch: a value-and-gradient over the first "
        f"{WARM_UP_STEPS} steps, which compiles torch.compile's step; JAX: "
        "compiling the pass ahead of time) without running the measured call; "
        "the run child does the same, then runs one value-and-gradient.",
        "",
        "| framework | baseline child peak | run child peak | run minus baseline "
        "| the call's own peak over its starting RSS | call time |",
        "|---|---|---|---|---|---|",
    ]
    for framework in FRAMEWORKS:
        module = missing_module(framework)
        if module is not None:
            lines.append(f"| {framework} | {skipped_message(module)} | | | | |")
            continue
        baseline = run_memory_child(framework, "baseline", case)
        report = run_memory_child(framework, "run", case)
        failure = baseline.get("error") or report.get("error")
        if failure:
            lines.append(f"| {framework} | {failure} | | | | |")
            continue
        own = (
            f"{(report['peak_after_kib'] - report['rss_before_kib']) / 1024:.0f} MiB"
            if report["peak_was_reset"] and report["rss_before_kib"] is not None
            else "n/a (VmHWM could not be reset)"
        )
        lines.append(
            f"| {framework} | {baseline['peak_rss_kib'] / 1024:.0f} MiB "
            f"| {report['peak_rss_kib'] / 1024:.0f} MiB "
            f"| **{(report['peak_rss_kib'] - baseline['peak_rss_kib']) / 1024:.0f} "
            f"MiB** | {own} | {report['seconds']:.2f} s |"
        )
        print(f"  {framework}: done", flush=True)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def versions_rows():
    """Markdown rows: the frameworks' versions and thread settings."""
    rows = []
    for package in ("torch", "jax", "jaxlib", "threadpoolctl"):
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        rows.append(f"| {package} | {version} |")
    cache = (
        "fresh and empty: first calls compile from scratch"
        if os.environ.get("TORCHINDUCTOR_CACHE_DIR", "").startswith(
            tempfile.gettempdir() + "/bench_frameworks_inductor_"
        )
        else "as found: first calls may reuse earlier compilations"
    )
    rows.append(f"| torch.compile cache | {cache} |")
    rows.append(
        "| threads | torch.set_num_threads(1); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}; "
        f"TORCHINDUCTOR_COMPILE_THREADS="
        f"{os.environ.get('TORCHINDUCTOR_COMPILE_THREADS', '')} |"
    )
    return "\n".join(rows)


def milliseconds(seconds):
    return f"{1e3 * seconds:.1f}"


def case_label(name, config):
    n_series, n_particles = config["cases"][name]
    series = "1 series" if n_series == 1 else f"{n_series} series"
    return f"{series} x N = {n_particles}"


def agreement_table(results, config):
    """Markdown: every framework's agreement with the package, per case."""
    lines = [
        "| case | framework | log-likelihood | rel. diff. vs package "
        "| gradient max abs diff / max abs gradient | ancestors differing |",
        "|---|---|---|---|---|---|",
    ]
    for name, columns in results.items():
        for framework, column in columns.items():
            if column.status != "ok":
                lines.append(
                    f"| {case_label(name, config)} | {framework} | {column.status} "
                    "| | | |"
                )
                continue
            if framework == "package":
                lines.append(
                    f"| {case_label(name, config)} | package | {column.value:.10f} "
                    "| (reference) | (reference) | (reference: the library's) |"
                )
                continue
            total = config["steps"] * math.prod(config["cases"][name])
            lines.append(
                f"| {case_label(name, config)} | {framework} | {column.value:.10f} "
                f"| {column.value_difference:.1e} "
                f"| {column.gradient_difference:.1e} "
                f"| {column.ancestors_differing} of {total} |"
            )
    return "\n".join(lines)


def timing_table(results, config):
    """Markdown: median times and the package's ratio to each framework."""
    others = FRAMEWORKS[1:]
    lines = [
        "| case | "
        + " | ".join(f"{framework} ms" for framework in FRAMEWORKS)
        + " | "
        + " | ".join(f"package / {framework}" for framework in others)
        + " |",
        "|---" * (len(FRAMEWORKS) + len(others) + 1) + "|",
    ]
    for name, columns in results.items():
        medians = {
            framework: statistics.median(column.seconds)
            for framework, column in columns.items()
            if column.seconds
        }
        cells = [
            milliseconds(medians[framework])
            if framework in medians
            else columns[framework].status.split(":")[0]
            for framework in FRAMEWORKS
        ]
        ratios = [
            f"{medians['package'] / medians[framework]:.2f}"
            if "package" in medians and framework in medians
            else "-"
            for framework in others
        ]
        lines.append(
            f"| {case_label(name, config)} | " + " | ".join(cells + ratios) + " |"
        )
    return "\n".join(lines)


def spread_table(results, config):
    """Markdown: min / median / max and the first call (compile) of each."""
    lines = [
        "| case | framework | repeats | min / median / max ms | first call s "
        "(compiling included) | first call minus median s |",
        "|---|---|---|---|---|---|",
    ]
    for name, columns in results.items():
        for framework, column in columns.items():
            if not column.seconds:
                continue
            median = statistics.median(column.seconds)
            spread = " / ".join(
                milliseconds(value)
                for value in (min(column.seconds), median, max(column.seconds))
            )
            lines.append(
                f"| {case_label(name, config)} | {framework} | {len(column.seconds)} "
                f"| {spread} | {column.first_call:.2f} "
                f"| {column.first_call - median:.2f} |"
            )
    return "\n".join(lines)


def check_summary(results):
    """One line: the worst agreement figures over every case and framework."""
    checked = [
        column
        for columns in results.values()
        for framework, column in columns.items()
        if framework != "package" and column.status == "ok"
    ]
    if not checked:
        return "No framework was checked (none ran besides the package)."
    return (
        "Worst over every case and framework: log-likelihood relative difference "
        f"{max(c.value_difference for c in checked):.1e}, gradient difference "
        f"{max(c.gradient_difference for c in checked):.1e} of the largest entry, "
        f"{max(c.ancestors_differing for c in checked)} ancestors differing."
    )


def run_benchmark(config, case_names, repeats, memory_case, sections):
    """Run the checks, the timings and maybe the memory children; emit markdown."""
    pools_as_found = thread_pools()
    with limit_threads(1):
        emit(
            "## Machine\n\n"
            + machine_table(pools_as_found)
            + "\n"
            + versions_rows()
            + "\n",
            sections,
        )
        results = {}
        for name in case_names:
            n_series, n_particles = config["cases"][name]
            print(f"measuring {case_label(name, config)} ...", flush=True)
            results[name] = measure_case(config, n_series, n_particles, repeats)
    setting = (
        f"d = {config['states']}, S = 3, hidden (32, 32) plus a linear part, "
        f"T = {config['steps']}, one thread everywhere"
    )
    emit(
        "## Agreement with the package (its random draws)\n\n"
        f"{setting}. The gradient is with respect to both networks' parameters; "
        "ancestors differing counts the (step, series, particle) entries whose "
        "ancestor differs from the library's `particle_filter`'s.\n\n"
        + agreement_table(results, config)
        + "\n\n"
        + check_summary(results)
        + "\n",
        sections,
    )
    emit(
        "## Value and gradient: median ms\n\n"
        f"{setting}; median of {repeats} calls after a first call, the frameworks "
        "taking turns call by call. A ratio above 1: the package is slower.\n\n"
        + timing_table(results, config)
        + "\n",
        sections,
    )
    emit(
        "## Spread and first calls\n\n" + spread_table(results, config) + "\n",
        sections,
    )
    if memory_case is not None:
        print("measuring peak memory (fresh subprocesses) ...", flush=True)
        emit(
            "## Peak memory of one value-and-gradient (fresh subprocesses)\n\n"
            + memory_table(memory_case)
            + "\n",
            sections,
        )


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one small case (d = 8, N = 50, T = 10): a smoke run",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"timed calls per framework and case (default {DEFAULT_REPEATS}, "
        f"{QUICK_REPEATS} with --quick)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=sorted(CASES),
        help="cases to run, named series x particles (default: "
        + " ".join(DEFAULT_CASES)
        + ")",
    )
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also measure peak memory at T = 400, N = 1000 (fresh subprocesses)",
    )
    parser.add_argument(
        "--memory-child", nargs=6, metavar="ARG", help=argparse.SUPPRESS
    )
    return parser


def main(argv=None):
    """Run the comparison and print (and optionally write) the markdown."""
    single_thread_environment()
    args = build_parser().parse_args(argv)
    if args.memory_child:
        framework, mode, *sizes = args.memory_child
        memory_child(framework, mode, *(int(value) for value in sizes))
        return 0
    if args.quick:
        config = QUICK_CONFIG
        case_names = list(config["cases"])
        memory_case = QUICK_MEMORY_CASE if args.memory else None
    else:
        config = FULL_CONFIG
        case_names = args.cases or list(DEFAULT_CASES)
        memory_case = MEMORY_CASE if args.memory else None
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    options = "".join(
        [
            " --quick" if args.quick else "",
            f" --repeats {args.repeats}" if args.repeats else "",
            f" --cases {' '.join(args.cases)}" if args.cases else "",
            " --memory" if args.memory else "",
        ]
    )
    sections = [
        "# statemix-sk against PyTorch and JAX: value and gradient of the filter\n\n"
        f"Command: `python benchmarks/bench_frameworks.py{options}`; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}.\n"
    ]
    print(sections[0], flush=True)
    start = time.perf_counter()
    # --quick keeps the cache as found, to stay a quick smoke run.
    cache = None if args.quick else fresh_compile_cache()
    try:
        run_benchmark(config, case_names, repeats, memory_case, sections)
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    emit(
        f"Total benchmark time: {time.perf_counter() - start:.0f} s; load average "
        f"at the end: {load_average()}; statemix-sk source at the end: "
        f"{source_revision()}.",
        sections,
    )
    if args.output is not None:
        args.output.write_text("\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
