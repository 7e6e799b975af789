"""Cost of one training update against a full-series gradient step, in one run.

StateMixFilter trains by minibatches of windows (``batch_size`` windows of
``window_length`` steps, each from the particle cloud its series' previous window
left); before, every Adam step differentiated the filter over every training
series whole. This script times, on Lorenz 96 (d = 10, S = 3, 32-32, N = 100,
BLAS on one thread), in one process and on one set of parameters:

- (u) one update as ``train`` runs it: ``value_and_grad`` of
  ``window_log_likelihood`` over a minibatch of 10 windows of 25 steps with
  carried clouds, both networks (``update="joint"``), plus the Adam step;
- (f5) one full-series step as before, over 5 series of 100 steps (the old
  default data size), both networks;
- (f50) the same over 50 series (the issue's headline data size): its cost grows
  with the data, an update's does not;
- (e) one epoch of ``train`` on 45 series (what a 50-series fit trains on after
  the validation split), with its validation pass on 5 series.

It prints the medians, the ratios and updates per second. Run by hand:
``python benchmarks/bench_training.py [--repeats 5]``.
"""

import argparse
import platform
import time
import warnings

import numpy
from autograd import value_and_grad
from autograd.misc import flatten
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from statemix_sk import StateMixFilter, make_lorenz96
from statemix_sk.objective import (
    Validation,
    count_observed_steps,
    mean_log_likelihood,
    series_lengths,
    take_windows,
    window_log_likelihood,
)
from statemix_sk.training import TrainingSettings, adam_init, adam_update, train


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(numpy.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    Y, _, model = make_lorenz96(100, n_sequences=55, random_state=0)
    # A fitted estimator gives the spec and parameters (one epoch is enough:
    # the cost does not depend on the values).
    estimator = StateMixFilter(
        observation=model.observation,
        initial_state_mean=model.initial_mean,
        initial_state_scale=model.initial_scale,
        max_iter=1,
        early_stopping=False,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(Y[:5])
    spec, params = estimator.spec_, estimator.params_
    settings = TrainingSettings(
        n_particles=100,
        resampling="systematic",
        ess_threshold=1.0,
        max_iter=1,
        tol=1e-3,
        learning_rate=0.001,
    )
    vector, unflatten = flatten(params)
    rng = numpy.random.default_rng(0)
    lengths = series_lengths(Y[:50])
    # Carried clouds for series 0-9 at the end of their first window.
    series = numpy.arange(10)
    first = take_windows(Y[:50], series, numpy.zeros(10, int), 25, lengths)
    _, _, final = window_log_likelihood(params, spec, first, {}, settings, rng)
    clouds = {s: (final[0][s], final[1][s]) for s in series}
    batch = take_windows(Y[:50], series, numpy.ones(10, int), 25, lengths)
    adam = adam_init(vector.size)

    def update_objective(vector):
        value, _, _ = window_log_likelihood(
            unflatten(vector),
            spec,
            batch,
            clouds,
            settings,
            numpy.random.default_rng(1),
        )
        return value

    update_gradient = value_and_grad(update_objective)

    def one_update():
        _, gradient = update_gradient(vector)
        adam_update(adam, gradient, 0.001)

    def full_step(Y_full):
        n_observed = count_observed_steps(Y_full)
        gradient_of = value_and_grad(
            lambda v: mean_log_likelihood(
                unflatten(v), spec, Y_full, n_observed, settings, 1
            )
        )
        return lambda: gradient_of(vector)

    def one_epoch():
        train(
            params,
            spec,
            Y[:45],
            settings,
            numpy.random.default_rng(2),
            3,
            Validation(Y[45:50]),
        )

    with threadpool_limits(limits=1):
        timings = {
            "(u) one update: 10 windows x 25 steps": median_seconds(
                one_update, args.repeats
            ),
            "(f5) full-series step, 5 series x 100 steps": median_seconds(
                full_step(Y[:5]), args.repeats
            ),
            "(f50) full-series step, 50 series x 100 steps": median_seconds(
                full_step(Y[:50]), max(1, args.repeats // 2)
            ),
            "(e) one epoch on 45 series (20 updates + initial pass + validation)": (
                median_seconds(one_epoch, max(1, args.repeats // 2))
            ),
        }
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, numpy {numpy.__version__}, "
        "BLAS 1 thread; Lorenz 96 d = 10, S = 3, 32-32, N = 100\n"
    )
    print("| measure | median s | / (u) |")
    print("|---|---|---|")
    update = timings["(u) one update: 10 windows x 25 steps"]
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.3f} | {seconds / update:.2f} |")
    print(f"\nupdates per second: {1 / update:.2f}")


if __name__ == "__main__":
    main()
