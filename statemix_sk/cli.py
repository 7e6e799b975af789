"""The ``statemix-sk`` command line.

``statemix-sk reproduce {lorenz96,kuramoto,linear-gaussian}`` runs the paper's
comparison on our experiment definitions (:mod:`statemix_sk.experiments`): it
prints an estimate of the run time, the tables, and writes ``results.json`` (and,
with matplotlib, ``trajectory.png``, ``mse.png`` and ``learning_curve.png``) to
``--output``; ``--n-train`` takes several numbers of training series, the
learning curve's axis.

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
from .datasets import make_lorenz96
from .estimator import StateMixFilter
from .experiments import EXPERIMENTS, estimate_seconds, run_experiment
from .filtering import particle_filter
from .kalman import kalman_filter, random_walk_model
from .reporting import format_tables, plot_results, plural

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
    print(
        f"Fitting StateMixFilter: a start read off the data, then at most "
        f"{args.max_iter} epoch(s) of training, stopped early on held-out "
        "training series (about a minute on 2 cores)...",
        flush=True,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(Y_train)
    fit_seconds = time.perf_counter() - start

    def errors(estimates):
        return numpy.array(
            [numpy.mean((e - x) ** 2) for e, x in zip(estimates, X_test, strict=True)]
        )

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
    if args.n_test > 1:
        # Paired over the held-out series: both filters see the same series.
        difference = learned - random_walk
        standard_error = difference.std(ddof=1) / numpy.sqrt(difference.size)
        print(
            f"StateMixFilter minus random-walk Kalman filter: {difference.mean():+.4f}"
            f" +/- {standard_error:.4f} (paired s.e.; "
            f"{abs(difference.mean()) / max(standard_error, 1e-300):.1f} s.e. "
            f"{'below' if difference.mean() < 0 else 'above'})."
        )
    print(
        f"StateMixFilter: {estimator.start_} start, {estimator.n_iter_} epoch(s), "
        f"{estimator.n_updates_} updates, fit in {fit_seconds:.1f} s, held-out "
        f"log-likelihood per step {estimator.score(Y_test):.2f}."
    )
    return 0


def _reproduce(args):
    """Run an experiment's comparison and write its results."""
    settings = {
        "runs": args.runs,
        "n_particles": args.n_particles,
        "n_components": args.n_components,
        "n_train": sorted(set(args.n_train)),
        "n_test": args.n_test,
        "n_steps": args.n_steps,
        "max_iter": args.max_iter,
        "update": args.update,
        "train_particles": args.train_particles,
        "floor_particles": args.floor_particles,
        "filter_passes": args.filter_passes,
    }
    n_jobs = args.n_jobs if args.n_jobs > 0 else joblib_cpu_count()
    estimate = estimate_seconds(args.experiment, settings, n_jobs=n_jobs)
    sizes = settings["n_train"]
    training = (
        f"up to {StateMixFilter().max_iter} epochs with early stopping (the "
        "estimator's default)"
        if args.max_iter is None
        else f"at most {args.max_iter} epoch{'s' if args.max_iter > 1 else ''}"
    )
    if args.update is not None:
        training += f", update={args.update!r}"
    print(
        f"statemix-sk {__version__} reproduce {args.experiment}: "
        f"{EXPERIMENTS[args.experiment].description}.\n"
        f"{plural(args.runs, 'run')}, each with {len(sizes)} training "
        f"size{'s' if len(sizes) > 1 else ''} ({', '.join(map(str, sizes))} series; "
        f"one StateMixFilter fit per size and S, on nested subsets) and "
        f"{args.n_test} test series, all of {args.n_steps} steps; N in "
        f"{args.n_particles}, S in {args.n_components}, {training}, floor with "
        f"N = {args.floor_particles}, "
        f"{args.filter_passes} filter pass{'es' if args.filter_passes > 1 else ''} "
        "per method, "
        f"{plural(n_jobs, 'job')}, seed {args.seed}.\n"
        f"Estimated time: about {estimate / 60:.0f} min (rough). Results go to "
        f"{Path(args.output).resolve()}/.",
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
    _add_demo(commands)
    _add_reproduce(commands)
    return parser


def _add_demo(commands):
    """Add the ``demo`` command and its options."""
    demo = commands.add_parser(
        "demo",
        help="fit StateMixFilter on Lorenz 96 and compare it with baselines",
        description="Simulate stochastic Lorenz 96 series, fit StateMixFilter on "
        "the training observations and print, on held-out series, its "
        "filtered-state MSE next to the true-model bootstrap filter's, a "
        "random-walk Kalman filter's and the observation-only estimate's. About "
        "a minute on 2 cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--n-particles",
        type=_positive_int,
        default=100,
        help="particles N, in training and in every filter compared",
    )
    demo.add_argument(
        "--n-components",
        type=_positive_int,
        default=3,
        help="mixture components S of the learned transition and proposal",
    )
    demo.add_argument(
        "--n-train",
        type=_positive_int,
        default=50,
        help="training series (observations only; a tenth held out for early stopping)",
    )
    demo.add_argument(
        "--n-test",
        type=_positive_int,
        default=5,
        help="held-out series every filter is measured on",
    )
    demo.add_argument(
        "--n-steps", type=_positive_int, default=100, help="steps per series"
    )
    demo.add_argument(
        "--max-iter",
        type=_positive_int,
        default=5,
        help="training epochs at most (early stopping may end sooner; the "
        "estimator's default is 100: this keeps the demo near 1.5 minutes)",
    )
    demo.add_argument(
        "--learning-rate",
        type=float,
        default=0.001,
        help="Adam's step size (the estimator's default)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of data and fit")
    demo.add_argument(
        "--verbose",
        type=int,
        default=1,
        help="1 prints one line per training epoch, 0 nothing",
    )
    demo.set_defaults(handler=_demo)


def _add_reproduce(commands):
    """Add the ``reproduce`` command and its options."""
    reproduce = commands.add_parser(
        "reproduce",
        help="run the paper's comparison of StateMixFilter with the baselines",
        description="Each run draws a model, training and test series; "
        "StateMixFilter learns from the training observations, once per number of "
        "training series (nested subsets: the learning curve); every method "
        "filters the same test series with the same N. Prints the tables and "
        "writes results.json, results.md and (with matplotlib) figures: "
        "trajectory.png, mse.png and learning_curve.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    reproduce.add_argument(
        "experiment", choices=sorted(EXPERIMENTS), help="the experiment to run"
    )
    reproduce.add_argument(
        "--runs",
        type=_positive_int,
        default=10,
        help="independent runs, each with its own model and series",
    )
    reproduce.add_argument(
        "--n-particles",
        type=_positive_int,
        nargs="+",
        default=[100, 1000],
        help="the N every method filters with (several allowed; 10 is the "
        "paper's few-particle ablation)",
    )
    reproduce.add_argument(
        "--n-components",
        type=_positive_int,
        nargs="+",
        default=[3],
        help="StateMixFilter's S, one fit each (several allowed, e.g. 1 3 10)",
    )
    reproduce.add_argument(
        "--n-train",
        type=_positive_int,
        nargs="+",
        default=[5, 20, 50],
        help="training series per run, one StateMixFilter fit per value on the "
        "first that many of the run's series (the learning curve's x axis)",
    )
    reproduce.add_argument(
        "--n-test",
        type=_positive_int,
        default=5,
        help="held-out test series per run, the same for every method",
    )
    reproduce.add_argument(
        "--n-steps",
        type=_positive_int,
        default=100,
        help="steps of every training and test series",
    )
    reproduce.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help="StateMixFilter's maximum number of epochs (None: the estimator's "
        "default, 100 epochs with early stopping on held-out training series)",
    )
    reproduce.add_argument(
        "--update",
        choices=["joint", "alternating"],
        default=None,
        help="StateMixFilter's update scheme (None: the estimator's default, "
        "joint): both networks per update, or the paper's alternation",
    )
    reproduce.add_argument(
        "--train-particles",
        type=_positive_int,
        default=100,
        help="particles while training StateMixFilter",
    )
    reproduce.add_argument(
        "--floor-particles",
        type=_positive_int,
        default=10_000,
        help="particles of the floor filter",
    )
    reproduce.add_argument(
        "--filter-passes",
        type=_positive_int,
        default=1,
        help="passes of every method's filter over the test series, each with its "
        "own seed, averaged (the floor filters once): one pass at small N is a "
        "noisy judge where filters lose track on some seeds",
    )
    reproduce.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="parallel runs through joblib (-1: every CPU)",
    )
    reproduce.add_argument(
        "--seed", type=int, default=0, help="seed of every run's random draws"
    )
    reproduce.add_argument(
        "--output",
        default="statemix-results",
        help="folder for results.json, results.md and the figures",
    )
    reproduce.add_argument(
        "--verbose",
        type=int,
        default=1,
        help="0: only the estimate and the tables; 1: a line per fit and per run "
        "done; 2: also a line per training epoch",
    )
    reproduce.set_defaults(handler=_reproduce)


def main(argv=None):
    """Entry point of the ``statemix-sk`` command."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
