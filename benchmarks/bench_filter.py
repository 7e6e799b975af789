"""Speed and memory of the learned-mixture particle filter (StateMixNN).

Run by hand, never part of the test suite::

    python benchmarks/bench_filter.py            # the full run (several minutes)
    python benchmarks/bench_filter.py --quick    # a small smoke run
    python benchmarks/bench_filter.py --output benchmarks/results.md

The problem: stochastic Lorenz 96 series with ``n_states = d`` observed as
``y = x + N(0, 0.5**2 I)``; the learned filter of ``particle_filter(Y,
MixtureTransitionModel(...), MixtureProposal(...))`` with ``S = 3`` diagonal
Gaussian-mixture components, networks with hidden layers (32, 32) whose parameters
``{"layers": [(W, b), ...], "linear": L}`` come from ``init_mixture_network`` with a
fixed seed, the linear parts ``L`` drawn from ``N(0, 0.01**2)`` with another fixed
seed (non-zero, so that the reference checks them too); the proposal is centred on
the transition's predicted mixture mean ``m`` and its network sees
``[standardised x_{t-1}, (y_t - H m) / noise_scale]``; systematic resampling at every
step.

Five things are timed, each call with the same fixed ``random_state``:

(a) ``numpy forward``: an independent, vectorised plain-NumPy implementation of the
    same filter (no autograd), the reference limit. It makes the same random draws
    in the same order as the library, so its log-likelihood must equal the
    library's; the tables report the relative difference;
(b) ``autograd forward``: the library's ``particle_filter`` on plain arrays;
(c) ``value and grad``: ``autograd.value_and_grad`` of the log-likelihood with
    respect to ``{"transition": ..., "proposal": ...}``, as the library computes it
    (the fused step, holding its intermediates up to its memory budget);
(d) the same, with the fused step always recomputing its intermediates in the
    backward pass (``MixtureProposal(cache_bytes=0)``);
(e) the same, through the composition of autograd primitives that the fused step
    replaced (``MixtureProposal(fused=False)``): the "before" of the performance
    work, kept as the reference; the gradients of (c) and (d) must equal its.

Then the scaling of (c) in the number of steps and of particles, with fitted costs
per step and per particle-step; the peak memory of one (c) in a fresh subprocess;
and the wall time of ``python -m statemix_sk demo``. Everything is printed as
markdown tables.
"""

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import NamedTuple

import numpy as np
from autograd import value_and_grad
from autograd.misc import flatten

from statemix_sk.datasets import make_lorenz96
from statemix_sk.filtering import particle_filter
from statemix_sk.learned import (
    MixtureProposal,
    MixtureTransitionModel,
    init_mixture_network,
)
from statemix_sk.networks import Standardizer, make_mixture_head

DATA_SEED = 0
PARAMS_SEED = 1
FILTER_SEED = 2
LINEAR_SEED = 3
# Larger linear parts make a random linear dynamics whose spectral radius exceeds 1:
# at 0.1 the benchmark's filter diverges (log-likelihood about -1e63 at d = 20).
LINEAR_SCALE = 0.01
N_COMPONENTS = 3
HIDDEN_LAYER_SIZES = (32, 32)
OBSERVATION_NOISE = 0.5
TOLERANCE = 1e-8
LOG_2PI = np.log(2.0 * np.pi)
REPO_ROOT = Path(__file__).resolve().parents[1]
BLAS_THREADS = 1
BLAS_ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

FULL = {
    "grid_dims": (8, 20),
    "grid_particles": (100, 1000),
    "grid_steps": 100,
    "grid_repeats": 5,
    "scaling_dim": 20,
    "steps_series": (50, 100, 200, 400),
    "steps_series_particles": 1000,
    "particles_series": (100, 300, 1000, 3000),
    "particles_series_steps": 100,
    "scaling_repeats": 3,
    "large_repeats": 2,
    "large_work": 300_000,
    "memory_case": (20, 1000, 400),
    "demo_args": ("demo",),
}
QUICK = {
    "grid_dims": (8,),
    "grid_particles": (100,),
    "grid_steps": 20,
    "grid_repeats": 2,
    "scaling_dim": 8,
    "steps_series": (10, 20, 40),
    "steps_series_particles": 100,
    "particles_series": (50, 100, 200),
    "particles_series_steps": 20,
    "scaling_repeats": 1,
    "large_repeats": 1,
    "large_work": 300_000,
    "memory_case": (8, 100, 40),
    "demo_args": ("demo", "--n-steps", "20", "--max-iter", "2", "--verbose", "0"),
}


class Problem(NamedTuple):
    """A learned-filter problem: data, known model, mixture head and parameters."""

    Y: np.ndarray
    model: object
    head: object
    input_stats: Standardizer
    params: dict


# --------------------------------------------------------------------------------------
# The problem and the library's filter
# --------------------------------------------------------------------------------------


def build_problem(n_states, n_steps):
    """Simulate Lorenz 96 data and draw the two networks' parameters.

    The dense layers come from ``init_mixture_network`` (seed ``PARAMS_SEED``), the
    linear parts from ``N(0, LINEAR_SCALE**2)`` (seed ``LINEAR_SEED``): the library
    starts them at zero or at a gain, but non-zero values let the NumPy reference
    check that they enter the outputs as ``inputs @ L``.
    """
    Y, _, model = make_lorenz96(
        n_steps,
        n_states=n_states,
        observation_noise=OBSERVATION_NOISE,
        random_state=DATA_SEED,
    )
    increment_scale = np.nanstd(np.diff(Y, axis=0), axis=0)
    head = make_mixture_head(
        N_COMPONENTS,
        n_states,
        location_scale=increment_scale,
        initial_scale=increment_scale,
    )
    input_stats = Standardizer(np.nanmean(Y, axis=0), np.nanstd(Y, axis=0))
    rng = np.random.default_rng(PARAMS_SEED)
    linear_rng = np.random.default_rng(LINEAR_SEED)
    params = {}
    for phase, n_inputs in (
        ("transition", n_states),
        ("proposal", n_states + Y.shape[1]),
    ):
        linear = LINEAR_SCALE * linear_rng.standard_normal((n_inputs, head.n_outputs))
        params[phase] = init_mixture_network(
            head, n_inputs, HIDDEN_LAYER_SIZES, rng, linear=linear
        )
    return Problem(Y, model, head, input_stats, params)


PATHS = {
    "fused": {},
    "recompute": {"cache_bytes": 0},
    "reference": {"fused": False},
}
"""How the library's proposal step is computed, as MixtureProposal options: the
fused primitive keeping its intermediates up to the default budget (the default),
the fused primitive always recomputing them in the backward pass, and the
composition of autograd primitives that the fused step replaced (the reference)."""


def library_filter(params, problem, n_particles, seed, path="fused"):
    """Run the library's learned filter; return its FilterResult."""
    model = MixtureTransitionModel(
        params["transition"],
        problem.head,
        problem.input_stats,
        problem.model.observation,
        problem.model.initial_mean,
        problem.model.initial_scale,
    )
    proposal = MixtureProposal(
        params["proposal"], problem.head, problem.input_stats, **PATHS[path]
    )
    return particle_filter(
        problem.Y, model, proposal, n_particles=n_particles, random_state=seed
    )


def library_log_likelihood(params, problem, n_particles, seed, path="fused"):
    """Return the library's log-likelihood estimate, a function of ``params``."""
    return library_filter(params, problem, n_particles, seed, path).log_likelihood


LIBRARY_VALUE_AND_GRAD = value_and_grad(library_log_likelihood)


# --------------------------------------------------------------------------------------
# The plain-NumPy reference (no autograd below this line until the next banner)
# --------------------------------------------------------------------------------------


def _logsumexp(a, axis=-1):
    """Stable log-sum-exp along ``axis``, NumPy only."""
    top = np.max(a, axis=axis, keepdims=True)
    total = np.log(np.sum(np.exp(a - top), axis=axis, keepdims=True)) + top
    return np.squeeze(total, axis=axis)


def _mlp(network, inputs):
    """Tanh hidden layers, linear output, plus the linear part ``inputs @ L``."""
    hidden = inputs
    for W, b in network["layers"][:-1]:
        # tanh in its exp form, as the library computes it (networks.tanh_into).
        hidden = 2.0 / (1.0 + np.exp(-2.0 * np.maximum(hidden @ W + b, -20.0))) - 1.0
    W, b = network["layers"][-1]
    return hidden @ W + b + inputs @ network["linear"]


def _mixture(network, head, inputs, centre):
    """Mixture logits, means and scales (diag) around ``centre``."""
    outputs = _mlp(network, inputs)
    n, S, d = outputs.shape[0], head.n_components, head.n_dims
    logits = outputs[:, :S]
    means = centre[:, None, :] + head.location_scale * outputs[
        :, S : S + S * d
    ].reshape(n, S, d)
    raw = outputs[:, S + S * d : S + 2 * S * d].reshape(n, S, d) + head.scale_offset
    # The sigmoid as the library computes it (networks.shifted_sigmoid): another
    # form (0.5 (tanh(raw / 2) + 1)) differs in the last bit, and the learned
    # dynamics amplify such differences over long series until resampling
    # picks another ancestor.
    sigmoid = 1.0 / (1.0 + np.exp(-np.maximum(raw, -700.0)))
    scales = head.scale_low + (head.scale_high - head.scale_low) * sigmoid
    return logits, means, scales


def _log_mixture_weights(logits):
    """Normalised log mixture weights."""
    return logits - _logsumexp(logits)[:, None]


def _mixture_mean(logits, means):
    """Mixture mean ``sum_k w_k mean_k`` of every row, shape (n, d)."""
    # The same operations in the same order as the library (softmax as exp of the
    # log-weights, then a sum over components), so that the proposal's centre has no
    # rounding difference that resampling could turn into a different ancestor.
    weights = np.exp(_log_mixture_weights(logits))
    return np.sum(weights[:, :, None] * means, axis=1)


def _mixture_log_density(logits, means, scales, x):
    """Log-density of ``x[i]`` under mixture ``i``, shape (n,)."""
    log_mix = _log_mixture_weights(logits)
    z = (x[:, None, :] - means) / scales
    # The log-determinant as the library computes it (mixtures._sum_log_scales):
    # the log of the product of the scales, which stays in the normal range here.
    log_components = (
        -0.5 * np.einsum("nkd,nkd->nk", z, z)
        - np.log(np.prod(scales, axis=-1))
        - 0.5 * x.shape[1] * LOG_2PI
    )
    return _logsumexp(log_mix + log_components)


def numpy_filter(problem, n_particles, seed):
    """Run the learned filter in plain NumPy: (log-likelihood, filtered means)."""
    Y, head, stats = problem.Y, problem.head, problem.input_stats
    observation = problem.model.observation
    H, noise = observation.observation_matrix, observation.noise_scale
    transition, proposal = problem.params["transition"], problem.params["proposal"]
    n, d = n_particles, head.n_dims
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    log_g_constant = -np.sum(np.log(noise)) - 0.5 * len(noise) * LOG_2PI

    x = problem.model.initial_mean + problem.model.initial_scale * (
        rng.standard_normal((n, d))
    )
    log_weights = np.full(n, -np.log(n))
    log_likelihood, means = 0.0, []
    for y in Y:
        # Systematic resampling: one uniform shifted through the N strata.
        cumulative = np.cumsum(np.exp(log_weights))
        positions = (rows + rng.random()) / n * cumulative[-1]
        ancestors = np.minimum(np.searchsorted(cumulative, positions, "right"), n - 1)
        x_prev = x[ancestors]
        # Transition mixture around x_prev, and its mean m = sum_k w_k mean_k.
        standardised = (x_prev - stats.mean) / stats.scale
        f_logits, f_means, f_scales = _mixture(transition, head, standardised, x_prev)
        centre = _mixture_mean(f_logits, f_means)
        # Proposal mixture around m, of [standardised x_prev, scaled innovation of m].
        innovation = (y - centre @ H.T) / noise
        q_logits, q_means, q_scales = _mixture(
            proposal, head, np.hstack([standardised, innovation]), centre
        )
        # Component by inverting the weights' CDF, then Gaussian noise.
        uniforms = rng.random(n)
        cdf = np.cumsum(np.exp(_log_mixture_weights(q_logits)), axis=1)
        components = np.minimum(
            np.sum(cdf < uniforms[:, None] * cdf[:, -1:], axis=1), head.n_components - 1
        )
        eps = rng.standard_normal((n, d))
        x = q_means[rows, components] + q_scales[rows, components] * eps
        # log w = log(1/N) + log f - log q + log g.
        log_f = _mixture_log_density(f_logits, f_means, f_scales, x)
        log_q = _mixture_log_density(q_logits, q_means, q_scales, x)
        residuals = (y - x @ H.T) / noise
        log_g = -0.5 * np.sum(residuals**2, axis=1) + log_g_constant
        log_w = -np.log(n) + (log_f - log_q) + log_g
        increment = _logsumexp(log_w)
        log_weights = log_w - increment
        log_likelihood += increment
        means.append(np.exp(log_weights) @ x)
    return log_likelihood, np.array(means)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def time_calls(function, repeats):
    """Call ``function`` ``repeats`` times; return (seconds per call, last result)."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def summarise(seconds):
    """Min, median and max of a list of timings."""
    return min(seconds), statistics.median(seconds), max(seconds)


def repeats_for(config, n_particles, n_steps, repeats):
    """Fewer repeats for the largest cases."""
    if n_particles * n_steps >= config["large_work"]:
        return min(repeats, config["large_repeats"])
    return repeats


def measure_case(n_states, n_particles, n_steps, repeats):
    """Time the three methods on one problem and check the NumPy reference."""
    problem = build_problem(n_states, n_steps)
    numpy_seconds, (numpy_value, numpy_means) = time_calls(
        lambda: numpy_filter(problem, n_particles, FILTER_SEED), repeats
    )
    forward_seconds, forward = time_calls(
        lambda: library_filter(problem.params, problem, n_particles, FILTER_SEED),
        repeats,
    )
    grads, grad_seconds, grad_values = {}, {}, {}
    for path in PATHS:
        grad_seconds[path], (grad_values[path], grads[path]) = time_calls(
            lambda path=path: LIBRARY_VALUE_AND_GRAD(
                problem.params, problem, n_particles, FILTER_SEED, path
            ),
            repeats,
        )
    reference = flatten(grads["reference"])[0]
    library_value = float(forward.log_likelihood)
    return {
        "d": n_states,
        "N": n_particles,
        "T": n_steps,
        "repeats": repeats,
        "numpy": summarise(numpy_seconds),
        "forward": summarise(forward_seconds),
        "grad": summarise(grad_seconds["fused"]),
        "recompute": summarise(grad_seconds["recompute"]),
        "reference": summarise(grad_seconds["reference"]),
        "numpy_value": float(numpy_value),
        "library_value": library_value,
        "relative_difference": abs(numpy_value - library_value) / abs(library_value),
        "means_difference": float(np.max(np.abs(numpy_means - forward.filtered_means))),
        "grad_value_difference": max(
            abs(float(value) - library_value) for value in grad_values.values()
        ),
        # Largest difference of a fused gradient from the reference's, relative
        # to the reference gradient's largest entry.
        "gradient_difference": max(
            float(np.max(np.abs(flatten(grads[path])[0] - reference)))
            for path in ("fused", "recompute")
        )
        / float(np.max(np.abs(reference))),
    }


def fit_linear(design, times):
    """Least-squares coefficients and the largest relative residual."""
    design, times = np.asarray(design, float), np.asarray(times, float)
    coefficients = np.linalg.lstsq(design, times, rcond=None)[0]
    residual = np.max(np.abs(design @ coefficients - times) / times)
    return coefficients, residual


# --------------------------------------------------------------------------------------
# Memory (fresh subprocesses) and the demo
# --------------------------------------------------------------------------------------


def peak_rss_kib():
    """Peak resident memory of this process in KiB, and where it was read."""
    # VmHWM is the high-water mark of this process's own address space, which
    # starts afresh at exec. ru_maxrss is not usable here: Linux carries the
    # parent's peak into a child created by (v)fork + exec, and the parent has
    # just run the largest value-and-grad of the benchmark.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    # Linux and most BSDs report ru_maxrss in KiB (macOS in bytes).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def memory_child(mode, n_states, n_particles, n_steps):
    """Child-process body: build the problem, maybe run one value-and-grad."""
    problem = build_problem(n_states, n_steps)
    report = {"mode": mode}
    if mode == "tracemalloc":
        tracemalloc.start()
    if mode != "baseline":
        path = mode.removeprefix("rss-") if mode.startswith("rss-") else "fused"
        start = time.perf_counter()
        LIBRARY_VALUE_AND_GRAD(problem.params, problem, n_particles, FILTER_SEED, path)
        report["seconds"] = time.perf_counter() - start
    if mode == "tracemalloc":
        report["traced_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    report["peak_rss_kib"], report["peak_rss_source"] = peak_rss_kib()
    print(json.dumps(report))


def child_environment(blas_threads):
    """Return the environment for a child process, with BLAS limited if asked."""
    environment = dict(os.environ)
    if blas_threads > 0:
        environment.update({name: str(blas_threads) for name in BLAS_ENVIRONMENT})
    return environment


def run_memory_child(mode, case, blas_threads):
    """Run ``memory_child`` in a fresh interpreter and return its report."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", mode]
    command += [str(value) for value in case]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=child_environment(blas_threads),
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_demo(demo_args, blas_threads):
    """Wall time of ``python -m statemix_sk demo`` in a subprocess."""
    command = [sys.executable, "-m", "statemix_sk", *demo_args]
    start = time.perf_counter()
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=child_environment(blas_threads),
    )
    seconds = time.perf_counter() - start
    summary = "; ".join(
        " ".join(line.split()) for line in completed.stdout.splitlines()[-5:]
    )
    return seconds, summary


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def load_average():
    """Return the load averages, to show whether something else was running."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def thread_pools():
    """Describe the loaded BLAS / OpenMP thread pools via threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    pools = [
        f"{pool.get('internal_api')} {pool.get('version')}: "
        f"{pool.get('num_threads')} threads"
        for pool in threadpool_info()
    ]
    return "; ".join(pools) or "none found"


def limit_threads(blas_threads):
    """Return a context limiting BLAS threads (threadpoolctl), or doing nothing."""
    if blas_threads <= 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=blas_threads)


def source_revision():
    """Return the commit and whether the working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if changed else "")


def machine_table(pools_as_found):
    """Markdown table describing the machine and library versions."""
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    rows = [
        ("platform", platform.platform()),
        ("CPU", cpu_model),
        ("CPU count (os / usable)", f"{os.cpu_count()} / {usable}"),
        ("python", platform.python_version()),
        ("statemix-sk source", source_revision()),
        ("load average at start (1, 5, 15 min)", load_average()),
    ]
    for package in ("numpy", "autograd", "scipy"):
        rows.append((package, importlib.metadata.version(package)))
    rows.append(("thread pools as found (threadpoolctl)", pools_as_found))
    rows.append(("thread pools while timing", thread_pools()))
    lines = ["| item | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def format_seconds(triple):
    """Format (min, median, max) seconds as milliseconds."""
    return " / ".join(f"{1e3 * value:.1f}" for value in triple)


def grid_table(results):
    """Markdown table of the grid timings and ratios."""
    lines = [
        "| d | N | T | repeats | (a) numpy forward ms | (b) autograd forward ms "
        "| (c) value and grad ms | (d) value and grad, recomputing ms "
        "| (e) value and grad, reference path ms | (b)/(a) | (c)/(a) | (d)/(a) "
        "| (e)/(a) | (e)/(c) | log-lik (numpy) | rel. diff. vs library |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        numpy_median = row["numpy"][1]
        lines.append(
            f"| {row['d']} | {row['N']} | {row['T']} | {row['repeats']} "
            f"| {format_seconds(row['numpy'])} | {format_seconds(row['forward'])} "
            f"| {format_seconds(row['grad'])} | {format_seconds(row['recompute'])} "
            f"| {format_seconds(row['reference'])} "
            f"| {row['forward'][1] / numpy_median:.1f} "
            f"| {row['grad'][1] / numpy_median:.1f} "
            f"| {row['recompute'][1] / numpy_median:.1f} "
            f"| {row['reference'][1] / numpy_median:.1f} "
            f"| {row['reference'][1] / row['grad'][1]:.1f} "
            f"| {row['numpy_value']:.6f} | {row['relative_difference']:.1e} |"
        )
    return "\n".join(lines)


def scaling_table(results, varying):
    """Markdown table of a scaling series (median seconds)."""
    lines = [
        f"| {varying} | repeats | (a) numpy forward ms | (c) value and grad ms "
        "| (c)/(a) | (c) per step ms | (d) recomputing ms | (d)/(a) "
        "| (d) per step ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        grad, recompute, numpy_median = (
            row["grad"][1],
            row["recompute"][1],
            row["numpy"][1],
        )
        lines.append(
            f"| {row[varying]} | {row['repeats']} | {1e3 * numpy_median:.1f} "
            f"| {format_seconds(row['grad'])} | {grad / numpy_median:.1f} "
            f"| {1e3 * grad / row['T']:.2f} "
            f"| {format_seconds(row['recompute'])} | {recompute / numpy_median:.1f} "
            f"| {1e3 * recompute / row['T']:.2f} |"
        )
    return "\n".join(lines)


def fits_table(steps_results, particles_results):
    """Least-squares fits of the value-and-grad time, for (c) and (d)."""
    lines = [
        "| method | fit | coefficients | largest relative residual |",
        "|---|---|---|---|",
    ]
    for key, label in (("grad", "(c)"), ("recompute", "(d) recomputing")):
        steps = [row["T"] for row in steps_results]
        times = [row[key][1] for row in steps_results]
        (a, b), residual_t = fit_linear([[1.0, t] for t in steps], times)
        design = [[row["T"], row["T"] * row["N"]] for row in particles_results]
        times_n = [row[key][1] for row in particles_results]
        (per_step, per_particle_step), residual_n = fit_linear(design, times_n)
        lines += [
            f"| {label} | time = a + b T (N = {steps_results[0]['N']}) "
            f"| a = {1e3 * a:.1f} ms, b = {1e3 * b:.2f} ms per step "
            f"| {residual_t:.1%} |",
            f"| {label} | time = (c0 + c1 N) T (T = {particles_results[0]['T']}) "
            f"| c0 = {1e3 * per_step:.3f} ms fixed per step, "
            f"c1 = {1e6 * per_particle_step:.3f} us per particle-step "
            f"| {residual_n:.1%} |",
        ]
    return "\n".join(lines)


def memory_table(case, baseline, rss, traced):
    """Markdown table of the peak memory of one value-and-grad.

    ``rss`` maps each path of :data:`PATHS` to its child's report.
    """
    d, n, t = case
    source = f"{rss['fused']['peak_rss_source']}, /proc/self/status"
    if rss["fused"]["peak_rss_source"] == "ru_maxrss":
        source = "ru_maxrss, RUSAGE_SELF"
    lines = [
        "| d | N | T | path | peak RSS of a fresh child that runs one "
        f"value-and-grad ({source}) | minus the baseline | value-and-grad time |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, report in rss.items():
        delta = (report["peak_rss_kib"] - baseline["peak_rss_kib"]) / 1024
        bold = "**" if path == "fused" else ""
        lines.append(
            f"| {d} | {n} | {t} | {bold}{path}{bold} "
            f"| {report['peak_rss_kib'] / 1024:.0f} MiB "
            f"| {bold}{delta:.0f} MiB{bold} | {report['seconds']:.1f} s |"
        )
    lines += [
        "",
        f"Baseline: a child that only imports and builds the problem, "
        f"{baseline['peak_rss_kib'] / 1024:.0f} MiB. The tracemalloc peak during "
        f"the fused value-and-grad (another child): "
        f"{traced['traced_peak_bytes'] / 2**20:.0f} MiB.",
    ]
    return "\n".join(lines)


def emit(text, sections):
    """Print a section and keep it for ``--output``."""
    print(text, flush=True)
    sections.append(text)


def warm_up():
    """Run each method once on a tiny problem, so that no timing pays first calls."""
    problem = build_problem(4, 5)
    numpy_filter(problem, 10, FILTER_SEED)
    library_filter(problem.params, problem, 10, FILTER_SEED)
    for path in PATHS:
        LIBRARY_VALUE_AND_GRAD(problem.params, problem, 10, FILTER_SEED, path)


def run_benchmarks(config, blas_threads, sections):
    """Run every measurement of ``config`` and emit the markdown."""
    pools_as_found = thread_pools()
    with limit_threads(blas_threads):
        emit("## Machine\n\n" + machine_table(pools_as_found) + "\n", sections)
        warm_up()
        cache = {}

        def case(d, n, t, repeats):
            """Measure (d, N, T) once; later requests reuse the first measurement."""
            if (d, n, t) not in cache:
                repeats = repeats_for(config, n, t, repeats)
                cache[d, n, t] = measure_case(d, n, t, repeats)
            return cache[d, n, t]

        t = config["grid_steps"]
        grid = [
            case(d, n, t, config["grid_repeats"])
            for d in config["grid_dims"]
            for n in config["grid_particles"]
        ]
        worst = max(row["relative_difference"] for row in grid)
        emit(
            "## Grid: five methods, min / median / max\n\n"
            f"S = {N_COMPONENTS}, MLP {HIDDEN_LAYER_SIZES} plus a linear part "
            f"(drawn from N(0, {LINEAR_SCALE}**2)), diag covariances, proposal "
            "centred on the transition's predicted mean, systematic resampling "
            "every step, one fixed random_state per call. "
            "Times in ms as min / median / max; ratios use the medians.\n\n"
            + grid_table(grid)
            + "\n\nLargest relative difference between the NumPy reference and the "
            f"library's log-likelihood: {worst:.1e} (tolerance {TOLERANCE:.0e}: "
            f"{'match' if worst <= TOLERANCE else 'MISMATCH'}); largest absolute "
            "difference of the filtered means: "
            f"{max(row['means_difference'] for row in grid):.1e}; value from "
            "value_and_grad minus the forward value, on every path: "
            f"{max(row['grad_value_difference'] for row in grid):.1e}; largest "
            "difference of the fused paths' gradients from the reference path's, "
            "relative to its largest entry: "
            f"{max(row['gradient_difference'] for row in grid):.1e}.\n",
            sections,
        )

        d = config["scaling_dim"]
        n_fixed = config["steps_series_particles"]
        repeats = config["scaling_repeats"]
        by_steps = [case(d, n_fixed, t, repeats) for t in config["steps_series"]]
        emit(
            f"## Scaling of value-and-grad in T (d = {d}, N = {n_fixed})\n\n"
            + scaling_table(by_steps, "T")
            + "\n",
            sections,
        )
        t_fixed = config["particles_series_steps"]
        by_particles = [
            case(d, n, t_fixed, repeats) for n in config["particles_series"]
        ]
        emit(
            f"## Scaling of value-and-grad in N (d = {d}, T = {t_fixed})\n\n"
            + scaling_table(by_particles, "N")
            + "\n",
            sections,
        )
        emit(
            "## Fitted costs of value-and-grad (medians, least squares)\n\n"
            + fits_table(by_steps, by_particles)
            + "\n",
            sections,
        )

    memory_case = config["memory_case"]
    baseline = run_memory_child("baseline", memory_case, blas_threads)
    rss = {
        path: run_memory_child(f"rss-{path}", memory_case, blas_threads)
        for path in PATHS
    }
    traced = run_memory_child("tracemalloc", memory_case, blas_threads)
    emit(
        "## Peak memory of one value-and-grad (fresh subprocesses)\n\n"
        + memory_table(memory_case, baseline, rss, traced)
        + "\n",
        sections,
    )

    command = " ".join(["python", "-m", "statemix_sk", *config["demo_args"]])
    lines = [
        "## Demo (subprocess)\n",
        "| command | BLAS threads | wall time | its last lines |",
        "|---|---|---|---|",
    ]
    for threads in sorted({0, blas_threads}):
        seconds, summary = measure_demo(config["demo_args"], threads)
        label = "as found" if threads <= 0 else str(threads)
        lines.append(f"| `{command}` | {label} | {seconds:.1f} s | {summary} |")
    emit("\n".join(lines) + "\n", sections)


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small grid, 1-2 repeats (a smoke run)"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=BLAS_THREADS,
        help=f"limit BLAS threads while timing (default {BLAS_THREADS}; 0: as found)",
    )
    parser.add_argument(
        "--memory-child", nargs=4, metavar="ARG", help=argparse.SUPPRESS
    )
    return parser


def main(argv=None):
    """Run the benchmark and print (and optionally write) the markdown."""
    args = build_parser().parse_args(argv)
    if args.memory_child:
        mode, *case = args.memory_child
        memory_child(mode, *(int(value) for value in case))
        return 0
    config = QUICK if args.quick else FULL
    options = " --quick" if args.quick else ""
    if args.blas_threads != BLAS_THREADS:
        options += f" --blas-threads {args.blas_threads}"
    sections = [
        "# statemix-sk filter benchmark\n\n"
        f"Command: `python benchmarks/bench_filter.py{options}`\n"
    ]
    print(sections[0], flush=True)
    start = time.perf_counter()
    run_benchmarks(config, args.blas_threads, sections)
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
