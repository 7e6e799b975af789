"""Cost in the length of a series and in the number of series filtered together.

Run by hand, never part of the test suite::

    python benchmarks/long_series.py            # T up to 10,000; predict at 100,000
    python benchmarks/long_series.py --quick    # a smoke run, small sizes
    python benchmarks/long_series.py --lengths 1000 2000   # only these T

Issue 17 asks for a cost linear in the data and a memory bounded by the output.
On stochastic Lorenz 96 series (``make_lorenz96``, d = 10), with BLAS on one
thread (threadpoolctl), it measures:

- **value and gradient**: one ``autograd.value_and_grad`` of the learned filter's
  log-likelihood per step (``training.mean_log_likelihood``, both networks) over
  one whole series of T steps, N = 50, with the parameters of a StateMixFilter
  after one epoch on 200 steps. Each row gives the time per step and the growth
  against the row before: the time ratio divided by the length ratio, 1 for a
  cost linear in T, the length ratio itself for a quadratic one.
- **fit**: ``StateMixFilter(max_iter=1, n_particles=50).fit`` on one series of T
  steps (the linear start, the regression, one epoch of windows, validation and
  the final scoring pass), with the same ratios.
- **predict memory**: the tracemalloc peak of ``BootstrapFilter.predict`` (the
  true model, N = 100) on one series of T / 10 and of T steps: the growth of the
  peak per step against the output's own 80 bytes per step (d = 10 floats).
- **many series**: ``BootstrapFilter.predict`` (true model, N = 100) on 1, 100
  and 1,000 series of 100 steps filtered together: the time per series-step
  (best of the repeats) and its ratio to that of 100 series, with Lorenz 96
  integrating many rows in cache-sized blocks (``models._BLOCK_ROWS``) and, in
  the same run, in one block as before; then one series with N = 2, whose time
  per step is the filter's fixed cost (almost no particle work).
"""

import argparse
import os
import platform
import subprocess
import time
import tracemalloc
import warnings

import numpy
from autograd import value_and_grad
from threadpoolctl import threadpool_limits

from statemix_sk import BootstrapFilter, StateMixFilter, make_lorenz96, models
from statemix_sk.objective import mean_log_likelihood

FULL = {
    "lengths": (1_000, 2_000, 4_000, 10_000),
    "memory_length": 100_000,
    "batch_sizes": (1, 100, 1_000),
    "batch_steps": 100,
    "repeats": 3,
}
QUICK = {
    "lengths": (250, 500, 1_000),
    "memory_length": 10_000,
    "batch_sizes": (1, 100, 1_000),
    "batch_steps": 20,
    "repeats": 2,
}
N_PARTICLES = 50
"""Particles of the value-and-gradient and of the fit (the issue's setting)."""
PREDICT_PARTICLES = 100


def best_seconds(function, repeats):
    """Return the least wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def one_epoch_estimator(model):
    """``StateMixFilter(max_iter=1, n_particles=50)`` for ``model``'s observation."""
    return StateMixFilter(
        n_particles=N_PARTICLES,
        observation=model.observation,
        max_iter=1,
        random_state=0,
    )


def gradient_seconds(estimator, Y):
    """Time one value-and-gradient of the log-likelihood per step over ``Y``."""
    spec, settings = estimator.spec_, estimator._settings()
    gradient = value_and_grad(
        lambda p: mean_log_likelihood(p, spec, Y, len(Y), settings, 0)
    )
    return best_seconds(lambda: gradient(estimator.params_), 1)


def fit_seconds(Y, model):
    """Time ``one_epoch_estimator(model).fit`` on one series."""
    estimator = one_epoch_estimator(model)
    return best_seconds(lambda: estimator.fit(Y), 1)


def growth_table(lengths, seconds):
    """Markdown rows: time, time per step, and the growth against the row before."""
    lines = [
        "| T | seconds | ms per step | time ratio | / length ratio |",
        "|---|---|---|---|---|",
    ]
    for index, (length, value) in enumerate(zip(lengths, seconds, strict=True)):
        if index == 0:
            ratio = growth = "-"
        else:
            time_ratio = value / seconds[index - 1]
            ratio = f"{time_ratio:.2f}"
            growth = f"{time_ratio / (length / lengths[index - 1]):.2f}"
        lines.append(
            f"| {length:,} | {value:.2f} | {1e3 * value / length:.2f} | {ratio} "
            f"| {growth} |"
        )
    return "\n".join(lines)


def predict_peak(estimator, Y):
    """Return the tracemalloc peak of ``estimator.predict(Y)`` and the output size."""
    tracemalloc.start()
    try:
        means = estimator.predict(Y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, means.nbytes


def source_revision():
    """Return the git revision of the working tree, marked dirty if changed."""
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument(
        "--lengths", type=int, nargs="+", help="only these T (gradient and fit)"
    )
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=["gradient", "fit", "memory", "batch"],
        help="leave these measurements out",
    )
    args = parser.parse_args()
    config = QUICK if args.quick else FULL
    lengths = tuple(args.lengths) if args.lengths else config["lengths"]
    warnings.simplefilter("ignore")
    print(
        f"Lorenz 96, d = 10; {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} CPUs), load average {os.getloadavg()[0]:.2f}, "
        f"numpy {numpy.__version__}, source {source_revision() or '?'}; "
        "BLAS on one thread.\n",
        flush=True,
    )
    Y_long, _, model = make_lorenz96(
        max(*lengths, config["memory_length"]), random_state=0
    )
    with threadpool_limits(1):
        if "gradient" not in args.skip:
            estimator = one_epoch_estimator(model).fit(Y_long[:200])
            seconds = [gradient_seconds(estimator, Y_long[:T]) for T in lengths]
            print(
                f"## One value-and-gradient over a series of T steps (N = "
                f"{N_PARTICLES})\n\n{growth_table(lengths, seconds)}\n",
                flush=True,
            )
        if "fit" not in args.skip:
            seconds = [fit_seconds(Y_long[:T], model) for T in lengths]
            print(
                f"## StateMixFilter(max_iter=1, n_particles={N_PARTICLES}).fit on "
                f"one series of T steps\n\n{growth_table(lengths, seconds)}\n",
                flush=True,
            )
        if "memory" not in args.skip:
            estimator = BootstrapFilter(
                model, n_particles=PREDICT_PARTICLES, random_state=0
            ).fit(Y_long[:10])
            long = config["memory_length"]
            short = long // 10
            peak_short, out_short = predict_peak(estimator, Y_long[:short])
            peak_long, out_long = predict_peak(estimator, Y_long[:long])
            per_step = (peak_long - peak_short) / (long - short)
            print(
                f"## Peak memory of BootstrapFilter.predict (N = {PREDICT_PARTICLES}), "
                "tracemalloc\n\n"
                "| T | peak MiB | output MiB | peak / output |\n|---|---|---|---|\n"
                f"| {short:,} | {peak_short / 2**20:.1f} | {out_short / 2**20:.1f} "
                f"| {peak_short / out_short:.1f} |\n"
                f"| {long:,} | {peak_long / 2**20:.1f} | {out_long / 2**20:.1f} "
                f"| {peak_long / out_long:.1f} |\n\n"
                f"Growth of the peak: {per_step:.0f} bytes per step, against "
                f"{(out_long - out_short) / (long - short):.0f} bytes per step of "
                "output.\n",
                flush=True,
            )
        if "batch" not in args.skip:
            n_steps = config["batch_steps"]
            Y_batch, _, _ = make_lorenz96(
                n_steps, n_sequences=max(config["batch_sizes"]), random_state=1
            )
            estimator = BootstrapFilter(
                model, n_particles=PREDICT_PARTICLES, random_state=0
            ).fit(Y_batch[:1])
            # Lorenz 96 integrates many rows in cache-sized blocks; one block
            # (the code before) is timed beside it, in the same run.
            per_series_step = {"blocks": {}, "one block": {}}
            block_rows = models._BLOCK_ROWS
            for n_series in config["batch_sizes"]:
                repeats = config["repeats"] if n_series < 1000 else 2
                for name, rows in (("blocks", block_rows), ("one block", 10**12)):
                    models._BLOCK_ROWS = rows
                    seconds = best_seconds(
                        lambda n=n_series: estimator.predict(Y_batch[:n]), repeats
                    )
                    per_series_step[name][n_series] = seconds / (n_series * n_steps)
            models._BLOCK_ROWS = block_rows
            lines = [
                "| series | us per series-step | / 100 series | "
                "one block: us | / 100 series |",
                "|---|---|---|---|---|",
            ]
            for n_series in config["batch_sizes"]:
                cells = []
                for name in ("blocks", "one block"):
                    values = per_series_step[name]
                    reference = values.get(100)
                    ratio = (
                        "-"
                        if reference is None
                        else f"{values[n_series] / reference:.2f}"
                    )
                    cells += [f"{1e6 * values[n_series]:.1f}", ratio]
                lines.append(f"| {n_series:,} | " + " | ".join(cells) + " |")
            print(
                f"## BootstrapFilter.predict (N = {PREDICT_PARTICLES}) on many series "
                f"of {n_steps} steps at once\n\n" + "\n".join(lines) + "\n",
                flush=True,
            )
            # One series' fixed cost: the same call with almost no particles.
            fixed = BootstrapFilter(model, n_particles=2, random_state=0).fit(
                Y_batch[:1]
            )
            seconds = best_seconds(
                lambda: fixed.predict(Y_batch[:1]), config["repeats"]
            )
            reference = per_series_step["blocks"].get(100)
            print(
                f"One series with N = 2 (the fixed cost of a step): "
                f"{1e6 * seconds / n_steps:.1f} us per step"
                + (
                    ""
                    if reference is None
                    else f", {seconds / n_steps / reference:.2f} times 100 series' "
                    "per series-step"
                )
                + ".\n",
                flush=True,
            )


if __name__ == "__main__":
    main()
