"""Training windows: held-out results of StateMixFilter for several window lengths.

For each seed, ``n_train + 5`` stochastic Lorenz 96 series of 100 steps are drawn
from one model (the ``reproduce`` definition, d = 10); StateMixFilter is fitted with
its defaults except ``window_length`` on the first ``n_train`` and measured on the
other 5 (MSE of the filtered means at N = 100 and 1000, log-likelihood per step).
``grow`` fits windows of 10, 25, 50 and 100 steps in turn by warm starts (early
stopping in each stage): the paper's growing observation batches. About 5 to 15
minutes per fit on one core with 50 series::

    python benchmarks/window_length.py --seeds 0 1 2 --windows 25 100 grow

The measurements quoted in the user guide (training page) and in the method notes
(section 6) were made this way.
"""

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from statemix_sk import StateMixFilter, make_lorenz96

GROWING = (10, 25, 50, 100)


def fit(window, Y_train, model, seed, max_iter):
    """Fit with one window length or the growing schedule; return it, its updates."""
    estimator = StateMixFilter(
        observation=model.observation,
        initial_state_mean=model.initial_mean,
        initial_state_scale=model.initial_scale,
        random_state=seed,
        **({} if max_iter is None else {"max_iter": max_iter}),
    )
    lengths = GROWING if window == "grow" else (int(window),)
    updates = 0
    for stage, length in enumerate(lengths):
        estimator.set_params(window_length=length, warm_start=stage > 0)
        estimator.fit(Y_train)
        updates += estimator.n_updates_
    return estimator, updates


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--windows", nargs="+", default=["25", "100", "grow"])
    parser.add_argument("--n-train", type=int, default=50)
    parser.add_argument("--max-iter", type=int, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("seed | windows | MSE N=100 | MSE N=1000 | log-lik/step | updates | fit s")
    with threadpool_limits(1):
        for seed in args.seeds:
            Y, X, model = make_lorenz96(
                100, n_sequences=args.n_train + 5, random_state=seed
            )
            Y_train, Y_test, X_test = Y[: args.n_train], Y[args.n_train :], X[-5:]
            for window in args.windows:
                start = time.perf_counter()
                estimator, updates = fit(window, Y_train, model, seed, args.max_iter)
                seconds = time.perf_counter() - start
                mse = {}
                for n_particles in (100, 1000):
                    estimator.set_params(n_particles=n_particles)
                    mse[n_particles] = np.mean(
                        (estimator.predict(Y_test) - X_test) ** 2
                    )
                estimator.set_params(n_particles=100)
                log_likelihood = estimator.score(Y_test)
                print(
                    f"{seed} | {window} | {mse[100]:.4f} | {mse[1000]:.4f} | "
                    f"{log_likelihood:.3f} | {updates} | {seconds:.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
