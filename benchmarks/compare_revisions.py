"""Before and after: two revisions of statemix-sk timed in one process, call by call.

This shared 2-core machine is noisy: the same call can take 30% longer from one
minute to the next, more than most changes it is meant to measure. So this script
imports two revisions of the package side by side (each revision's
``statemix_sk`` extracted with ``git archive`` under another name; the package's
imports are relative) and times them in turns, call after call, so that both
meet the same conditions. It reports the minimum and median of each and the
median of the paired ratios (after / before).

Measures (BLAS on one thread, both networks differentiated):

- ``filter``: one value-and-gradient of the learned filter of
  ``bench_filter.py`` (Lorenz 96, d = 20, S = 3, 32-32) over ``B`` series of
  ``T`` steps with ``N`` particles each (``--case N,B,T``, repeatable);
- ``update``: one training update as ``StateMixFilter`` runs it by default
  (``bench_training.py``'s (u): the value and gradient of a minibatch of 10
  windows of 25 steps with carried clouds, Lorenz 96 d = 10, N = 100, and the
  Adam step); ``1 / time`` is the updates per second.

Run by hand, for example
``python benchmarks/compare_revisions.py e5c2df7 HEAD --rounds 8``.
"""

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import autograd.numpy as anp
import numpy
from autograd import value_and_grad
from autograd.misc import flatten
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_filter import build_problem  # noqa: E402


def import_revision(revision, name, directory):
    """Extract ``statemix_sk`` at ``revision`` as package ``name``; import it."""
    archive = subprocess.run(
        ["git", "archive", revision, "statemix_sk"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    (directory / "statemix_sk").rename(directory / name)
    sys.path.insert(0, str(directory))
    return {
        module: importlib.import_module(f"{name}.{module}")
        for module in ("learned", "filtering", "objective", "training", "estimator")
    }


def filter_call(package, n_particles, n_series, n_steps):
    """Return a no-argument call: value and gradient of the learned filter."""
    problem = build_problem(20, n_steps)
    Y = problem.Y if n_series == 1 else numpy.stack([problem.Y] * n_series)
    learned, filtering = package["learned"], package["filtering"]

    def log_likelihood(params):
        model = learned.MixtureTransitionModel(
            params["transition"],
            problem.head,
            problem.input_stats,
            problem.model.observation,
            problem.model.initial_mean,
            problem.model.initial_scale,
        )
        proposal = learned.MixtureProposal(
            params["proposal"], problem.head, problem.input_stats
        )
        result = filtering.particle_filter(
            Y, model, proposal, n_particles=n_particles, random_state=2
        )
        return anp.sum(result.log_likelihood)

    gradient = value_and_grad(log_likelihood)
    return lambda: gradient(problem.params)


def update_call(package):
    """Return a no-argument call: one default training update (see the docstring)."""
    from statemix_sk.datasets import make_lorenz96

    objective, training = package["objective"], package["training"]
    Y, _, model = make_lorenz96(100, n_sequences=12, random_state=0)
    estimator = package["estimator"].StateMixFilter(
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
    settings = training.TrainingSettings(
        n_particles=100,
        resampling="systematic",
        ess_threshold=1.0,
        max_iter=1,
        tol=1e-3,
        learning_rate=0.001,
    )
    vector, unflatten = flatten(params)
    lengths = objective.series_lengths(Y[:10])
    series = numpy.arange(10)
    first = objective.take_windows(Y[:10], series, numpy.zeros(10, int), 25, lengths)
    _, _, final = objective.window_log_likelihood(
        params, spec, first, {}, settings, numpy.random.default_rng(0)
    )
    clouds = {s: (final[0][s], final[1][s]) for s in series}
    batch = objective.take_windows(Y[:10], series, numpy.ones(10, int), 25, lengths)
    adam = training.adam_init(vector.size)
    gradient = value_and_grad(
        lambda v: objective.window_log_likelihood(
            unflatten(v), spec, batch, clouds, settings, numpy.random.default_rng(1)
        )[0]
    )

    def one_update():
        _, direction = gradient(vector)
        training.adam_update(adam, direction, 0.001)

    return one_update


def interleave(calls, rounds):
    """Time ``calls`` (before, after) in turns; return their times in seconds."""
    for call in calls:
        call()  # warm up
    times = [[], []]
    for _ in range(rounds):
        for index, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[index].append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the revision before (e.g. e5c2df7)")
    parser.add_argument("after", help="the revision after (e.g. HEAD)")
    parser.add_argument(
        "--case",
        action="append",
        default=None,
        help="N,B,T of a filter case (repeatable; default 100,1,100 1000,1,100 "
        "100,5,100)",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-update", action="store_true")
    args = parser.parse_args(argv)
    cases = args.case or ["100,1,100", "1000,1,100", "100,5,100"]
    with tempfile.TemporaryDirectory() as directory:
        packages = []
        for tag, revision in (("before", args.before), ("after", args.after)):
            folder = Path(directory) / tag
            folder.mkdir()
            packages.append(import_revision(revision, f"statemix_sk_{tag}", folder))
        rows = []
        with threadpool_limits(limits=1):
            for case in cases:
                n_particles, n_series, n_steps = (int(v) for v in case.split(","))
                calls = [
                    filter_call(package, n_particles, n_series, n_steps)
                    for package in packages
                ]
                label = (
                    f"value and gradient, {n_series} x N = {n_particles}, T = {n_steps}"
                )
                rows.append((label, interleave(calls, args.rounds)))
            if not args.no_update:
                calls = [update_call(package) for package in packages]
                rows.append(
                    (
                        "one training update (10 windows x 25 steps, N = 100, d = 10)",
                        interleave(calls, args.rounds),
                    )
                )
    print(
        f"{args.before} (before) against {args.after} (after), {args.rounds} "
        "rounds in turns, BLAS on one thread; times in ms\n"
    )
    print("| measure | before min / median | after min / median | after / before |")
    print("|---|---|---|---|")
    for label, (before, after) in rows:
        ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
        print(
            f"| {label} | {1e3 * min(before):.0f} / "
            f"{1e3 * statistics.median(before):.0f} | {1e3 * min(after):.0f} / "
            f"{1e3 * statistics.median(after):.0f} | {ratio:.2f} |"
        )
    for label, (before, after) in rows:
        if label.startswith("one training update"):
            print(
                f"\nupdates per second (median): before "
                f"{1 / statistics.median(before):.2f}, after "
                f"{1 / statistics.median(after):.2f}"
            )


if __name__ == "__main__":
    main()
