"""Time and memory of ``smooth`` (FFBS) against the forward filter.

Run by hand, never part of the test suite::

    python benchmarks/smoothing.py            # N = 1000, T = 100, d = 10
    python benchmarks/smoothing.py --quick    # a smoke run

The problem: one stochastic Lorenz 96 series (``make_lorenz96``, d = 10, T = 100)
filtered by :class:`~statemix_sk.BootstrapFilter` with the true model. Each method
runs ``--repeats`` times with the estimator's fixed seed; the table gives the
minimum and median wall times and, in a separate call under ``tracemalloc``
(which slows numpy down, so it is never timed), the peak of traced memory:

- ``predict``: the forward filter, keeping nothing but the moments;
- ``filter, particles kept``: the same run with ``return_particles=True``, what the
  smoother needs;
- ``ffbs_smoothed_moments``: the backward pass alone, on that run;
- ``smooth``: the estimator's method, both of the above.

Ratios are to ``predict``, measured in the same process. BLAS runs on one thread
(threadpoolctl), as the smoother's matrix products would otherwise use the
second core.
"""

import argparse
import os
import platform
import statistics
import subprocess
import time
import tracemalloc
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from statemix_sk import BootstrapFilter, DegeneracyWarning, make_lorenz96
from statemix_sk.smoothing import ffbs_smoothed_moments


def measure(function, repeats):
    """Return (min, median) wall seconds of ``repeats`` calls, and the traced peak."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return min(times), statistics.median(times), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n_states, n_steps, n_particles = (10, 20, 200) if args.quick else (10, 100, 1000)
    repeats = 2 if args.quick else args.repeats
    Y, X, model = make_lorenz96(n_steps, n_states=n_states, random_state=0)
    estimator = BootstrapFilter(model, n_particles=n_particles, random_state=0).fit(Y)
    # The bootstrap filter's ESS falls below 2 at some steps of this problem
    # (d = 10, observation noise 0.5); the costs measured here do not depend on it.
    warnings.simplefilter("ignore", DegeneracyWarning)
    result = estimator.filter(Y, return_particles=True)
    methods = {
        "predict": lambda: estimator.predict(Y),
        "filter, particles kept": lambda: estimator.filter(Y, return_particles=True),
        "ffbs_smoothed_moments": lambda: ffbs_smoothed_moments(result, model),
        "smooth": lambda: estimator.smooth(Y),
    }
    with threadpool_limits(1):
        rows = {name: measure(method, repeats) for name, method in methods.items()}
    base_time, base_peak = rows["predict"][1], rows["predict"][2]
    source = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(
        f"Lorenz 96, d = {n_states}, T = {n_steps}, N = {n_particles}, bootstrap "
        f"filter, {repeats} repeats, one BLAS thread; {platform.processor() or '?'} "
        f"({os.cpu_count()} CPUs), load average {os.getloadavg()[0]:.2f}, "
        f"source {source or '?'}.\n"
    )
    print(
        "| method | min s | median s | / predict (median) | tracemalloc peak MiB "
        "| / predict |"
    )
    print("|---|---|---|---|---|---|")
    for name, (fastest, median, peak) in rows.items():
        print(
            f"| {name} | {fastest:.3f} | {median:.3f} | {median / base_time:.1f} | "
            f"{peak / 2**20:.1f} | {peak / base_peak:.1f} |"
        )
    smoothed = estimator.smooth(Y)
    filtered = estimator.predict(Y)
    print(
        f"\nMSE against the true states: filtered {np.mean((filtered - X) ** 2):.4f}, "
        f"smoothed {np.mean((smoothed - X) ** 2):.4f}."
    )


if __name__ == "__main__":
    main()
