"""StateMixFilter trained and scored on series with entries missing at random.

Run by hand, never part of the test suite::

    python benchmarks/missing_entries.py              # 50 training series, ~15 min
    python benchmarks/missing_entries.py --quick      # a smoke run, small sizes
    python benchmarks/missing_entries.py --before     # also the filter as it was

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
over the test series. The filters:

- **learned, its proposal**: the fitted estimator's filter (``proposal_``; the
  learned proposal if validation kept it, ``uses_proposal_``), which at a partly
  observed step sees the observed entries' innovation and 0 for the missing ones;
- **learned, transition as proposal**: the same learned model, bootstrap filter;
- **before** (``--before``): a second fit with the proposal replaced by the
  transition wherever an entry is missing, as the filter did before issue 17
  (``MixtureProposal.handles_missing_entries = False``), filtered the same way;
- the true model's bootstrap filter and locally optimal filter (which conditions
  on the observed entries: exact, tested against the masked Kalman filter).
"""

import argparse
import platform
import time

import numpy

from statemix_sk import StateMixFilter
from statemix_sk.baselines import LocallyOptimalProposal
from statemix_sk.experiments import EXPERIMENTS
from statemix_sk.filtering import particle_filter
from statemix_sk.learned import MixtureProposal


def with_missing_entries(Y, fraction, rng):
    """Return ``Y`` with each entry NaN with probability ``fraction``."""
    Y = Y.copy()
    Y[rng.random(Y.shape) < fraction] = numpy.nan
    return Y


def fit(Y_train, model, seed, handles_missing, max_iter):
    """Fit the estimator's defaults, the proposal using partial steps or not."""
    MixtureProposal.handles_missing_entries = handles_missing
    try:
        estimator = StateMixFilter(
            observation=model.observation,
            initial_state_mean=model.initial_mean,
            initial_state_scale=model.initial_scale,
            random_state=seed,
            **({} if max_iter is None else {"max_iter": max_iter}),
        )
        start = time.perf_counter()
        estimator.fit(Y_train)
        return estimator, time.perf_counter() - start
    finally:
        MixtureProposal.handles_missing_entries = True


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
    parser.add_argument("--before", action="store_true", help="also fit as before")
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--n-train", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--n-particles", type=int, default=100)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    max_iter = None
    if args.quick:
        args.n_train, args.n_test, args.passes, max_iter = 5, 5, 2, 3

    rng = numpy.random.default_rng(args.seed)
    Y, X, model = EXPERIMENTS["lorenz96"].make(
        100, args.n_train + args.n_test, int(rng.integers(2**31))
    )
    Y = with_missing_entries(Y, args.fraction, rng)
    Y_train, Y_test, X_test = Y[: args.n_train], Y[args.n_train :], X[args.n_train :]
    print(
        f"Lorenz 96 (d = 10), {args.fraction:.0%} of the entries missing at random "
        f"({numpy.isnan(Y).mean():.1%} drawn; steps with every entry observed: "
        f"{numpy.mean(~numpy.isnan(Y).any(axis=-1)):.1%}); {args.n_train} training "
        f"and {args.n_test} test series of 100 steps; N = {args.n_particles}, "
        f"{args.passes} filter passes; seed {args.seed}; {platform.machine()}, "
        f"Python {platform.python_version()}.\n"
    )

    rows = {}
    estimator, seconds = fit(Y_train, model, args.seed, True, max_iter)
    print(
        f"fit: {seconds:.0f} s, {estimator.n_iter_} epochs, start "
        f"{estimator.start_!r}, uses its proposal: {estimator.uses_proposal_}"
    )
    common = (args.n_particles, args.passes)
    rows["learned, its proposal"] = score(
        Y_test, X_test, estimator.model_, estimator.proposal_, *common
    )
    rows["learned, transition as proposal"] = score(
        Y_test, X_test, estimator.model_, None, *common
    )
    if args.before:
        before, seconds = fit(Y_train, model, args.seed, False, max_iter)
        print(
            f"fit before: {seconds:.0f} s, {before.n_iter_} epochs, uses its "
            f"proposal: {before.uses_proposal_}"
        )
        rows["before: proposal only at complete steps"] = score(
            Y_test, X_test, before.model_, before.proposal_, *common, False
        )
    rows["true model, bootstrap"] = score(Y_test, X_test, model, None, *common)
    rows["true model, locally optimal"] = score(
        Y_test, X_test, model, LocallyOptimalProposal(model), *common
    )

    reference = rows["learned, transition as proposal"][0]
    print(
        "\n| filter | MSE | s.e. | minus learned transition's, paired | "
        "log-lik/step | s.e. |"
    )
    print("|---|---|---|---|---|---|")
    for name, (mse, log_likelihood) in rows.items():
        m, e = mean_and_error(mse)
        d, de = mean_and_error(mse - reference)
        ll, lle = mean_and_error(log_likelihood)
        print(
            f"| {name} | {m:.3f} | {e:.3f} | {d:+.3f} +/- {de:.3f} | "
            f"{ll:.2f} | {lle:.2f} |"
        )


if __name__ == "__main__":
    main()
