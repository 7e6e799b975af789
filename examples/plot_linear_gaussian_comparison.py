"""
Linear-Gaussian: every filter against the exact (Kalman) answer
===============================================================

The paper's comparison (``statemix-sk reproduce linear-gaussian``) at a small size:
each run draws a model, training and test series; StateMixFilter learns from the
training observations only; every method filters the same test series with the same
number of particles. Here the Kalman filter is exact; the floor (locally optimal
filter, many particles) is essentially it, and StateMixFilter starts from the
maximum-likelihood linear model.

The full comparison (10 runs, N = 100 and 1000) is in the README; this script keeps
to about a minute on two cores.
"""

import matplotlib.pyplot as plt

from statemix_sk.experiments import format_tables, plot_results, run_experiment

EXPERIMENT = "linear-gaussian"
RUNS = 2
N_PARTICLES = (100,)
N_COMPONENTS = (3,)
MAX_ITER = 5  # the command's default is 20
FLOOR_PARTICLES = 2000  # the command's default is 10,000
SEED = 0

results = run_experiment(
    EXPERIMENT,
    runs=RUNS,
    n_particles=N_PARTICLES,
    n_components=N_COMPONENTS,
    max_iter=MAX_ITER,
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
