"""The ``statemix-sk`` command line.

``statemix-sk demo`` filters simulated stochastic Lorenz 96 series with the
true-model bootstrap particle filter and prints its filtered-state MSE next to the
observation-only estimate's.
"""

import argparse
import sys
import time

import numpy

from . import __version__
from .datasets import make_lorenz96
from .filtering import particle_filter

__all__ = ["main"]


def _demo(args):
    """Run the demo: bootstrap filter against observation-only on Lorenz 96."""
    print(
        f"statemix-sk {__version__} demo: stochastic Lorenz 96 (10 states, all "
        f"observed, noise std 0.5), {args.n_sequences} series of {args.n_steps} "
        f"steps, seed {args.seed}."
    )
    start = time.perf_counter()
    Y, X, model = make_lorenz96(
        args.n_steps, n_sequences=args.n_sequences, random_state=args.seed
    )
    rng = numpy.random.default_rng(args.seed + 1)
    filter_errors, observation_errors = [], []
    for series, (y, x) in enumerate(zip(Y, X, strict=True)):
        result = particle_filter(
            y, model, n_particles=args.n_particles, random_state=rng
        )
        filter_errors.append(numpy.mean((result.filtered_means - x) ** 2))
        # Every component is observed with H = I, so y itself is the
        # observation-only (least-squares) estimate of x.
        observation_errors.append(numpy.mean((y - x) ** 2))
        print(
            f"  series {series}: bootstrap MSE {filter_errors[-1]:.3f}, "
            f"observation-only MSE {observation_errors[-1]:.3f}, "
            f"log-likelihood per step {result.log_likelihood / len(y):.2f}"
        )
    elapsed = time.perf_counter() - start

    def summary(errors):
        errors = numpy.asarray(errors)
        standard_error = errors.std(ddof=1) / numpy.sqrt(errors.size)
        return f"{errors.mean():.3f} +/- {standard_error:.3f}"

    print(
        f"True-model bootstrap filter, N = {args.n_particles}: MSE "
        f"{summary(filter_errors)}"
    )
    print(
        f"Observation-only estimate:                MSE {summary(observation_errors)}"
    )
    print(f"({elapsed:.1f} s)")
    return 0


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
        "demo", help="filter simulated Lorenz 96 series with the bootstrap filter"
    )
    demo.add_argument("--n-particles", type=_positive_int, default=1000)
    demo.add_argument("--n-sequences", type=_positive_int, default=5)
    demo.add_argument("--n-steps", type=_positive_int, default=100)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv=None):
    """Entry point of the ``statemix-sk`` command."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
