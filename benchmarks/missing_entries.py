"""StateMixFilter trained and scored on series with entries missing at random.

Run by hand, never part of the test suite::

    python benchmarks/missing_entries.py              # 50 training series, ~25 min
    python benchmarks/missing_entries.py --quick      # a smoke run, small sizes
    python benchmarks/missing_entries.py --variants indicator no-indicator before

Issue 17 asks what the learned proposal gives on partly observed data. On
stochastic Lorenz 96 (the reproduce definition: d = 10, every state observed
with noise 0.5), each entry of the training and test observations is missing
with probability ``--fraction`` (default 0.3), so that nearly every step is
partly observed (all ten entries are observed at a step with probability
0.7 ** 10 = 2.8%). One StateMixFilter (the estimator's defaults) is fitted on
the training series; every filter then filters the held-out series
``--passes`` times, each pass with its own seed, and the table gives the MSE of
the filtered means against the true states and the log-likelihood per observed
step, averaged over passes; the standard errors and the paired differences are
over the test series. Each variant (``--variants``; the fits run in parallel
with ``--n-jobs``) is one fit of the estimator, scored twice:

- **its proposal**: the fitted estimator's filter (``proposal_``; the learned
  proposal if validation kept it, ``uses_proposal_``);
- **transition as proposal**: the same learned model, bootstrap filter.

The variants:

- ``indicator``, the estimator as it is: at a partly observed step the proposal
  network sees the observed entries' innovation, 0 for the missing ones, and
  the missing-entry indicator (``StateMixSpec.missing_indicator``);
- ``no-indicator``: the same without the indicator (the network cannot tell a
  missing entry from one observed exactly as predicted);
- ``before``: the proposal replaced by the transition wherever an entry is
  missing, as the filter did before issue 17
  (``MixtureProposal.handles_missing_entries = False``), filtered the same way.

Then the true model's bootstrap filter and locally optimal filter (which
conditions on the observed entries: exact, tested against the masked Kalman
filter). Paired differences are against the first variant's filter.
"""

import argparse
import copy
import platform
import time
from unittest import mock

import numpy
from joblib import Parallel, delayed

from statemix_sk import StateMixFilter, estimator
from statemix_sk.baselines import LocallyOptimalProposal
from statemix_sk.experiments import EXPERIMENTS
from statemix_sk.filtering import particle_filter
from statemix_sk.learned import MixtureProposal
from statemix_sk.observations import LinearGaussianObservation

VARIANTS = ("indicator", "no-indicator", "before")


def with_missing_entries(Y, fraction, rng):
    """Return ``Y`` with each entry NaN with probability ``fraction``."""
    Y = Y.copy()
    Y[rng.random(Y.shape) < fraction] = numpy.nan
    return Y


def fit(Y_train, model, seed, variant, max_iter):
    """Fit the estimator's defaults as ``variant`` (see the module docstring)."""
    with_indicator = variant == "indicator"
    original = estimator.start_spec

    def start_spec(*args, **kwargs):
        if not with_indicator:
            kwargs["missing_indicator"] = False
        return original(*args, **kwargs)

    MixtureProposal.handles_missing_entries = variant != "before"
    try:
        with mock.patch.object(estimator, "start_spec", start_spec):
            fitted = StateMixFilter(
                observation=model.observation,
                initial_state_mean=model.initial_mean,
                initial_state_scale=model.initial_scale,
                random_state=seed,
                **({} if max_iter is None else {"max_iter": max_iter}),
            )
            start = time.perf_counter()
            fitted.fit(Y_train)
            seconds = time.perf_counter() - start
    finally:
        MixtureProposal.handles_missing_entries = True
    assert fitted.spec_.missing_indicator == (
        with_indicator and bool(numpy.isnan(Y_train).any())
    )
    return fitted, seconds


def score(Y, X, model, proposal, n_particles, passes, handles_missing=True):
    """Per test series: MSE and log-likelihood per observed step, pass-averaged."""
    MixtureProposal.handles_missing_entries = handles_missing
    try:
        squared, log_likelihood = 0.0, 0.0
        for one in range(passes):
            with numpy.errstate(all="ignore"):
                result = particle_filter(
                    Y, model, proposal, n_particles=n_particles, random_state=one
                )
            squared = squared + numpy.mean(
                (result.filtered_means - X) ** 2, axis=(1, 2)
            )
            log_likelihood = log_likelihood + result.log_likelihood
    finally:
        MixtureProposal.handles_missing_entries = True
    n_observed = numpy.sum(~numpy.all(numpy.isnan(Y), axis=-1), axis=1)
    return squared / passes, log_likelihood / passes / n_observed


def mean_and_error(values):
    values = numpy.asarray(values)
    return values.mean(), values.std(ddof=1) / numpy.sqrt(len(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=["indicator"]
    )
    parser.add_argument("--n-jobs", type=int, default=1, help="fits in parallel")
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--n-train", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--n-particles", type=int, default=100)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mixing",
        action="store_true",
        help="observe y = Q x + noise, Q a random rotation, instead of y = x + noise",
    )
    parser.add_argument(
        "--max-iter", type=int, default=None, help="the estimator's (its default)"
    )
    args = parser.parse_args()
    max_iter = args.max_iter
    if args.quick:
        args.n_train, args.n_test, args.passes, max_iter = 5, 5, 2, 3

    rng = numpy.random.default_rng(args.seed)
    Y, X, model = EXPERIMENTS["lorenz96"].make(
        100, args.n_train + args.n_test, int(rng.integers(2**31))
    )
    if args.mixing:
        # Every output mixes every state: y = Q x + noise, Q a random rotation.
        mixing = numpy.linalg.qr(rng.standard_normal((X.shape[-1],) * 2))[0]
        model = copy.copy(model)
        model.observation = LinearGaussianObservation(mixing, noise_scale=0.5)
        Y = X @ mixing.T + 0.5 * rng.standard_normal(X.shape)
    Y = with_missing_entries(Y, args.fraction, rng)
    Y_train, Y_test, X_test = Y[: args.n_train], Y[args.n_train :], X[args.n_train :]
    observed = ", y = Q x + noise, Q a rotation" if args.mixing else ""
    print(
        f"Lorenz 96 (d = 10{observed}), "
        f"{args.fraction:.0%} of the entries missing at random "
        f"({numpy.isnan(Y).mean():.1%} drawn; steps with every entry observed: "
        f"{numpy.mean(~numpy.isnan(Y).any(axis=-1)):.1%}); {args.n_train} training "
        f"and {args.n_test} test series of 100 steps; N = {args.n_particles}, "
        f"{args.passes} filter passes; seed {args.seed}; {platform.machine()}, "
        f"Python {platform.python_version()}.\n"
    )

    fits = Parallel(n_jobs=args.n_jobs)(
        delayed(fit)(Y_train, model, args.seed, variant, max_iter)
        for variant in args.variants
    )
    rows = {}
    common = (args.n_particles, args.passes)
    for variant, (fitted, seconds) in zip(args.variants, fits, strict=True):
        print(
            f"fit {variant}: {seconds:.0f} s, {fitted.n_iter_} epochs, start "
            f"{fitted.start_!r}, uses its proposal: {fitted.uses_proposal_}"
        )
        rows[f"{variant}: its proposal"] = score(
            Y_test,
            X_test,
            fitted.model_,
            fitted.proposal_,
            *common,
            variant != "before",
        )
        rows[f"{variant}: transition as proposal"] = score(
            Y_test, X_test, fitted.model_, None, *common
        )
    rows["true model, bootstrap"] = score(Y_test, X_test, model, None, *common)
    rows["true model, locally optimal"] = score(
        Y_test, X_test, model, LocallyOptimalProposal(model), *common
    )

    reference_mse, reference_ll = rows[f"{args.variants[0]}: its proposal"]
    print(
        f"\n| filter | MSE | s.e. | minus {args.variants[0]}'s, paired | "
        "log-lik/step | s.e. | minus its, paired |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (mse, log_likelihood) in rows.items():
        m, e = mean_and_error(mse)
        d, de = mean_and_error(mse - reference_mse)
        ll, lle = mean_and_error(log_likelihood)
        dl, dle = mean_and_error(log_likelihood - reference_ll)
        print(
            f"| {name} | {m:.3f} | {e:.3f} | {d:+.3f} +/- {de:.3f} | "
            f"{ll:.2f} | {lle:.2f} | {dl:+.2f} +/- {dle:.2f} |"
        )


if __name__ == "__main__":
    main()
