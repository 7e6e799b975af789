"""
Linear-Gaussian: every filter against the exact (Kalman) answer
===============================================================

The paper's comparison (``statemix-sk reproduce linear-gaussian``) at a reduced size:
each run draws a model, training and test series; StateMixFilter learns from the
training observations only; every method filters the same test series with the same
number of particles. Here the Kalman filter is exact; the floor (locally optimal
filter, many particles) is essentially it, and StateMixFilter starts from the
maximum-likelihood linear model.

The size comes from ``STATEMIX_EXAMPLES_SIZE``: ``tiny`` takes seconds (CI's
check that the script runs; its numbers mean nothing), ``small`` (the default)
about a minute on two cores, and ``full`` is the command's own comparison (10
runs, N = 100 and 1000, 20 training iterations: 10 to 15 minutes on two cores).
The Kalman-filter example compares the learned filter with the exact answer
series by series.
"""

import os

import matplotlib.pyplot as plt

from statemix_sk.experiments import format_tables, plot_results, run_experiment

EXPERIMENT = "linear-gaussian"
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
RUNS = {"tiny": 1, "small": 2, "full": 10}[SIZE]
N_PARTICLES = {"tiny": (20,), "small": (100,), "full": (100, 1000)}[SIZE]
N_COMPONENTS = {"tiny": (1,), "small": (3,), "full": (3,)}[SIZE]
N_TRAIN = {"tiny": 2, "small": 5, "full": 5}[SIZE]
N_TEST = {"tiny": 1, "small": 5, "full": 5}[SIZE]
N_STEPS = {"tiny": 20, "small": 100, "full": 100}[SIZE]
MAX_ITER = {"tiny": 1, "small": 5, "full": 20}[SIZE]  # the command's default is 20
TRAIN_PARTICLES = {"tiny": 20, "small": 100, "full": 100}[SIZE]
FLOOR_PARTICLES = {"tiny": 200, "small": 2000, "full": 10_000}[SIZE]
SEED = 0

print(
    f"Size {SIZE!r}: {RUNS} run(s), N = {N_PARTICLES}, S = {N_COMPONENTS}, "
    f"{MAX_ITER} training iteration(s)."
)
results = run_experiment(
    EXPERIMENT,
    runs=RUNS,
    n_particles=N_PARTICLES,
    n_components=N_COMPONENTS,
    n_train=N_TRAIN,
    n_test=N_TEST,
    n_steps=N_STEPS,
    max_iter=MAX_ITER,
    train_particles=TRAIN_PARTICLES,
    floor_particles=FLOOR_PARTICLES,
    n_jobs=2,
    seed=SEED,
)
print(format_tables(results))

# %%
# One test series (truth, observations and each method's estimate) and the MSE of
# every method, averaged over the runs.
plot_results(results)
plt.show()
