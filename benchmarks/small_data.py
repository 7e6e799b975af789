"""The small-data case: StateMixFilter on 5 Lorenz 96 series against exact filters.

For each seed, 10 series of 100 steps are drawn from one stochastic Lorenz 96 model
(the ``reproduce`` definition, d = 10); StateMixFilter is fitted with its defaults on
the first 5 (observations only) and every filter is measured on the other 5 by the
MSE of its filtered means against the true states:

- StateMixFilter at N = 100 and N = 1000;
- the random-walk Kalman filter (``kalman.random_walk_model``), exact;
- the linear model that the fit starts from (the EM fit, before the regression),
  filtered exactly by a Kalman filter and by the locally optimal particle filter
  at N = 100, and the random walk's locally optimal particle filter at N = 100:
  how much of a gap at N = 100 is Monte Carlo error rather than the model;
- the observations alone.

Prints per-seed means, the means over all held-out series with standard errors and
the paired differences with the random-walk Kalman filter. About 4 minutes per
seed on one core::

    python benchmarks/small_data.py 1 2 3 4 5
"""

import sys
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from statemix_sk import LocallyOptimalFilter, StateMixFilter, make_lorenz96
from statemix_sk.kalman import kalman_filter, random_walk_model
from statemix_sk.models import LinearGaussianModel
from statemix_sk.network_start import dynamics_start, state_statistics


def linear_start(Y_train, model):
    """Return the EM linear model StateMixFilter starts from, centred, and its mean."""
    observation = model.observation
    series = list(Y_train)
    stats, increments, mean0, scale0 = state_statistics(
        series, observation, model.initial_mean, model.initial_scale
    )
    _, _, (A, q) = dynamics_start(series, observation, stats, increments, mean0, scale0)
    centred = LinearGaussianModel(
        A,
        np.sqrt(q),
        observation,
        initial_mean=mean0 - stats.mean,
        initial_scale=scale0,
    )
    return centred, stats.mean


def one_seed(seed):
    Y, X, model = make_lorenz96(100, n_sequences=10, random_state=seed)
    Y_train, Y_test, X_test = Y[:5], Y[5:], X[5:]

    def mse(estimates):
        return np.mean((np.asarray(estimates) - X_test) ** 2, axis=(1, 2))

    fit = StateMixFilter(
        observation=model.observation,
        initial_state_mean=model.initial_mean,
        initial_state_scale=model.initial_scale,
        random_state=seed,
    ).fit(Y_train)
    rows = {"StateMixFilter N=100": mse(fit.predict(Y_test))}
    rows["StateMixFilter N=1000"] = mse(
        fit.set_params(n_particles=1000).predict(Y_test)
    )
    walk = random_walk_model(
        Y_train, model.observation, model.initial_mean, model.initial_scale
    )
    rows["random-walk Kalman"] = mse(
        [kalman_filter(y, walk).filtered_means for y in Y_test]
    )
    linear, mean = linear_start(Y_train, model)
    offset = model.observation.observation_matrix @ mean
    rows["linear start, Kalman"] = mse(
        [kalman_filter(y - offset, linear).filtered_means + mean for y in Y_test]
    )
    rows["linear start, LOPF N=100"] = mse(
        LocallyOptimalFilter(linear, n_particles=100, random_state=0)
        .fit(Y_test - offset)
        .predict(Y_test - offset)
        + mean
    )
    rows["random walk, LOPF N=100"] = mse(
        LocallyOptimalFilter(walk, n_particles=100, random_state=0)
        .fit(Y_test)
        .predict(Y_test)
    )
    rows["observation-only"] = mse(Y_test)
    return fit.start_, rows


def main(seeds):
    warnings.simplefilter("ignore")
    collected = {}
    with threadpool_limits(1):
        for seed in seeds:
            start, rows = one_seed(seed)
            means = ", ".join(f"{k} {v.mean():.4f}" for k, v in rows.items())
            print(f"seed {seed} ({start} start): {means}", flush=True)
            for key, values in rows.items():
                collected.setdefault(key, []).append(values)
    reference = np.concatenate(collected["random-walk Kalman"])
    print(f"\nMSE over {len(reference)} held-out series (mean +/- s.e.):")
    for key, values in collected.items():
        values = np.concatenate(values)
        error = values.std(ddof=1) / np.sqrt(len(values))
        line = f"  {key:28s} {values.mean():.4f} +/- {error:.4f}"
        if key != "random-walk Kalman":
            difference = values - reference
            line += (
                f"   minus random-walk Kalman {difference.mean():+.4f} +/- "
                f"{difference.std(ddof=1) / np.sqrt(len(difference)):.4f} (paired)"
            )
        print(line)


if __name__ == "__main__":
    main([int(seed) for seed in sys.argv[1:]] or [1, 2, 3, 4, 5])
