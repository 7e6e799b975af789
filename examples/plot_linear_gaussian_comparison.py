"""
Linear-Gaussian: every filter against the exact (Kalman) answer
===============================================================

The paper's comparison (``statemix-sk reproduce linear-gaussian``) at a reduced size:
each run draws a model, training and test series; StateMixFilter learns from the
training observations only; every method filters the same test series with the same
number of particles. Here the Kalman filter is exact; the floor (locally optimal
filter, many particles) is essentially it, and StateMixFilter starts from a
regression on the states that the maximum-likelihood linear model's Kalman
smoother estimates.

StateMixFilter is fitted once per number of training series, on nested subsets
of each run's series (the smaller set is the start of the larger), so the
learning curve compares like with like; the baselines and the floor do not learn
and are run once.

The size comes from ``STATEMIX_EXAMPLES_SIZE``: ``tiny`` takes seconds (CI's
check that the script runs; its numbers mean nothing), ``small`` (the default)
one to a few minutes on two cores (5 and 20 training series, at most 5 epochs),
and ``full`` is the command's own comparison (10 runs, N = 100 and 1000, 5, 20
and 50 training series, up to 100 epochs with early stopping; the script prints
the command's rough time estimate: tens of minutes on two cores).
The Kalman-filter example compares the learned filter with the exact answer
series by series.
"""

import os

import matplotlib.pyplot as plt

from statemix_sk.experiments import estimate_seconds, run_experiment
from statemix_sk.reporting import format_tables, plot_results

EXPERIMENT = "linear-gaussian"
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
RUNS = {"tiny": 1, "small": 2, "full": 10}[SIZE]
N_PARTICLES = {"tiny": (20,), "small": (100,), "full": (100, 1000)}[SIZE]
N_COMPONENTS = {"tiny": (1,), "small": (3,), "full": (3,)}[SIZE]
N_TRAIN = {"tiny": (2, 3), "small": (5, 20), "full": (5, 20, 50)}[SIZE]
N_TEST = {"tiny": 1, "small": 5, "full": 5}[SIZE]
N_STEPS = {"tiny": 20, "small": 100, "full": 100}[SIZE]
# Epochs; None: the estimator's default (100, with early stopping), as the command.
MAX_ITER = {"tiny": 1, "small": 5, "full": None}[SIZE]
TRAIN_PARTICLES = {"tiny": 20, "small": 100, "full": 100}[SIZE]
FLOOR_PARTICLES = {"tiny": 200, "small": 2000, "full": 10_000}[SIZE]
SEED = 0

SETTINGS = {
    "runs": RUNS,
    "n_particles": N_PARTICLES,
    "n_components": N_COMPONENTS,
    "n_train": N_TRAIN,
    "n_test": N_TEST,
    "n_steps": N_STEPS,
    "max_iter": MAX_ITER,
    "train_particles": TRAIN_PARTICLES,
    "floor_particles": FLOOR_PARTICLES,
}
epochs = "up to 100 epochs" if MAX_ITER is None else f"at most {MAX_ITER} epoch(s)"
print(
    f"Size {SIZE!r}: {RUNS} run(s), N = {N_PARTICLES}, S = {N_COMPONENTS}, "
    f"{N_TRAIN} training series, {epochs}; roughly "
    f"{estimate_seconds(EXPERIMENT, SETTINGS, n_jobs=2) / 60:.0f} min."
)
results = run_experiment(EXPERIMENT, n_jobs=2, seed=SEED, **SETTINGS)
print(format_tables(results))

# %%
# One test series (truth, observations and each method's estimate), the MSE of
# every method averaged over the runs, and the learning curve: StateMixFilter's
# held-out MSE and log-likelihood per step against the number of training series,
# with the filters given the true model as horizontal lines.
plot_results(results)
plt.show()
