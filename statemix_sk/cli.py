"""The ``statemix-sk`` command line.

``statemix-sk reproduce {lorenz96,kuramoto,linear-gaussian}`` runs the paper's
comparison on our experiment definitions (:mod:`statemix_sk.experiments`): it
prints an estimate of the run time, the tables, and writes ``results.json`` (and,
with matplotlib, ``trajectory.png`` and ``mse.png``) to ``--output``.

``statemix-sk demo`` fits :class:`~statemix_sk.StateMixFilter` on simulated
stochastic Lorenz 96 series (observations only) and compares, on held-out series
of the same model and with the same number of particles, its filtered-state MSE
with the true-model bootstrap particle filter's, a random-walk Kalman filter's
(the best filter without dynamics) and the observation-only estimate's.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy
from sklearn.exceptions import ConvergenceWarning

from . import __version__
from .baselines import random_walk_model
from .datasets import make_lorenz96
from .estimator import StateMixFilter
from .experiments import (
    EXPERIMENTS,
    estimate_seconds,
    format_tables,
    plot_results,
    run_experiment,
)
from .filtering import particle_filter
from .models import kalman_filter

__all__ = ["build_parser", "main"]


def _mean_and_error(errors):
    """Format the mean of per-series errors with its standard error."""
    errors = numpy.asarray(errors)
    standard_error = errors.std(ddof=1) / numpy.sqrt(errors.size)
    return f"{errors.mean():7.3f} +/- {standard_error:.3f}"


def _demo(args):
    """Fit StateMixFilter on Lorenz 96 and compare it on held-out series."""
    print(
        f"statemix-sk {__version__} demo: stochastic Lorenz 96 (10 states, all "
        f"observed with noise std 0.5), {args.n_train} training and {args.n_test} "
        f"held-out series of {args.n_steps} steps, N = {args.n_particles} "
        f"particles, seed {args.seed}.",
        flush=True,
    )
    Y, X, model = make_lorenz96(
        args.n_steps, n_sequences=args.n_train + args.n_test, random_state=args.seed
    )
    Y_train, Y_test, X_test = Y[: args.n_train], Y[args.n_train :], X[args.n_train :]
    estimator = StateMixFilter(
        n_components=args.n_components,
        n_particles=args.n_particles,
        observation_noise=0.5,
        max_iter=args.max_iter,
        learning_rate=args.learning_rate,
        random_state=args.seed,
        verbose=args.verbose,
    )
    print(f"Fitting StateMixFilter ({args.max_iter} iterations at most)...", flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(Y_train)
    fit_seconds = time.perf_counter() - start

    def errors(estimates):
        return [
            numpy.mean((e - x) ** 2) for e, x in zip(estimates, X_test, strict=True)
        ]

    learned = errors(estimator.predict(Y_test))
    rng = numpy.random.default_rng(args.seed + 1)
    bootstrap = errors(
        particle_filter(
            y, model, n_particles=args.n_particles, random_state=rng
        ).filtered_means
        for y in Y_test
    )
    walk = random_walk_model(
        Y_train, model.observation, model.initial_mean, model.initial_scale
    )
    random_walk = errors(kalman_filter(y, walk).filtered_means for y in Y_test)
    # Every component is observed with H = I: y itself is the least-squares
    # (observation-only) estimate of x.
    observation_only = errors(Y_test)
    print(f"\nFiltered-state MSE on {args.n_test} held-out series (mean +/- s.e.):")
    rows = [
        (f"StateMixFilter (learned, S = {args.n_components})", learned),
        ("bootstrap filter (true model)", bootstrap),
        ("random-walk Kalman filter", random_walk),
        ("observation-only", observation_only),
    ]
    for name, values in rows:
        print(f"  {name:36s} {_mean_and_error(values)}")
    print(
        f"StateMixFilter: {estimator.n_iter_} iterations, fit in {fit_seconds:.1f} s, "
        f"held-out log-likelihood per step {estimator.score(Y_test):.2f}."
    )
    return 0


def _reproduce(args):
    """Run an experiment's comparison and write its results."""
    settings = {
        "runs": args.runs,
        "n_particles": args.n_particles,
        "n_components": args.n_components,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "n_steps": args.n_steps,
        "max_iter": args.max_iter,
        "train_particles": args.train_particles,
        "floor_particles": args.floor_particles,
    }
    n_jobs = args.n_jobs if args.n_jobs > 0 else joblib_cpu_count()
    estimate = estimate_seconds(args.experiment, settings, n_jobs=n_jobs)
    print(
        f"statemix-sk {__version__} reproduce {args.experiment}: "
        f"{EXPERIMENTS[args.experiment].description}.\n"
        f"{args.runs} runs ({args.n_train} training and {args.n_test} test series "
        f"of {args.n_steps} steps each), N in {args.n_particles}, S in "
        f"{args.n_components}, {args.max_iter} training iterations, floor with "
        f"N = {args.floor_particles}, {n_jobs} jobs, seed {args.seed}.\n"
        f"Estimated time: about {estimate / 60:.0f} min (rough).",
        flush=True,
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = run_experiment(
        args.experiment,
        n_jobs=n_jobs,
        seed=args.seed,
        verbose=args.verbose,
        **settings,
    )
    tables = format_tables(results)
    print()
    print(tables)
    print(f"Wall time: {results['wall_seconds']:.0f} s.")
    path = output / "results.json"
    path.write_text(json.dumps(results, indent=1))
    (output / "results.md").write_text(tables)
    print(f"Wrote {path} and {output / 'results.md'}.")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, whatever the display
        files = plot_results(results, output)
    except ImportError:
        print(
            "Figures need matplotlib: pip install 'statemix-sk[plot]' (or "
            "pip install matplotlib), then run this command again."
        )
    else:
        print("Figures: " + ", ".join(str(f) for f in files))
    return 0


def joblib_cpu_count():
    """Return the number of CPUs joblib sees."""
    import joblib

    return joblib.cpu_count()


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    """Build the argument parser of ``statemix-sk``."""
    parser = argparse.ArgumentParser(
        prog="statemix-sk",
        description="Learn state-space dynamics with differentiable particle filters.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="fit StateMixFilter on Lorenz 96 and compare it with baselines",
    )
    demo.add_argument("--n-particles", type=_positive_int, default=100)
    demo.add_argument("--n-components", type=_positive_int, default=3)
    demo.add_argument("--n-train", type=_positive_int, default=5)
    demo.add_argument("--n-test", type=_positive_int, default=5)
    demo.add_argument("--n-steps", type=_positive_int, default=100)
    demo.add_argument(
        "--max-iter",
        type=_positive_int,
        default=20,
        help="training iterations (default 20: under 3 minutes on 2 cores)",
    )
    demo.add_argument(
        "--learning-rate",
        type=float,
        default=0.003,
        help="Adam step size (default 0.003, the estimator's: at 0.01 the held-out "
        "MSE got worse while the training likelihood rose)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--verbose", type=int, default=1)
    demo.set_defaults(handler=_demo)

    reproduce = commands.add_parser(
        "reproduce",
        help="run the paper's comparison of StateMixFilter with the baselines",
        description="Each run draws a model, training and test series; "
        "StateMixFilter learns from the training observations; every method "
        "filters the same test series with the same N. Prints the tables and "
        "writes results.json, results.md and (with matplotlib) figures.",
    )
    reproduce.add_argument("experiment", choices=sorted(EXPERIMENTS))
    reproduce.add_argument("--runs", type=_positive_int, default=10)
    reproduce.add_argument(
        "--n-particles",
        type=_positive_int,
        nargs="+",
        default=[100, 1000],
        help="the N every method filters with (several allowed; default 100 1000; "
        "10 is the paper's few-particle ablation)",
    )
    reproduce.add_argument(
        "--n-components",
        type=_positive_int,
        nargs="+",
        default=[3],
        help="StateMixFilter's S, one fit each (several allowed, e.g. 1 3 10)",
    )
    reproduce.add_argument("--n-train", type=_positive_int, default=5)
    reproduce.add_argument("--n-test", type=_positive_int, default=5)
    reproduce.add_argument("--n-steps", type=_positive_int, default=100)
    reproduce.add_argument(
        "--max-iter",
        type=_positive_int,
        default=20,
        help="StateMixFilter's training iterations (default 20, as the demo)",
    )
    reproduce.add_argument(
        "--train-particles",
        type=_positive_int,
        default=100,
        help="particles while training StateMixFilter (default 100)",
    )
    reproduce.add_argument(
        "--floor-particles",
        type=_positive_int,
        default=10_000,
        help="particles of the floor filter (default 10000)",
    )
    reproduce.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="parallel runs through joblib (default -1: every CPU)",
    )
    reproduce.add_argument("--seed", type=int, default=0)
    reproduce.add_argument("--output", default="statemix-results")
    reproduce.add_argument("--verbose", type=int, default=0)
    reproduce.set_defaults(handler=_reproduce)
    return parser


def main(argv=None):
    """Entry point of the ``statemix-sk`` command."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
