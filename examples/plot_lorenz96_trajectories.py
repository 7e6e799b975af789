"""
Lorenz 96: learned dynamics, filtered trajectories and their uncertainty
========================================================================

Fit :class:`~statemix_sk.estimator.StateMixFilter` on noisy observations of a
stochastic Lorenz 96 system (ten coupled states, every one observed with noise of
standard deviation 0.5), then filter a held-out series. The estimator never sees a
true state: it learns the transition and the proposal from the observations alone.

The figure shows, for three of the ten states, the true trajectory, the
observations, the filtered mean ``E[x_t | y_1:t]`` and a band of two filtered
standard deviations. The band is the spread of the weighted particles: it is the
filter's own statement of how unsure it is, and a well-calibrated filter has the
truth inside it about 95% of the time.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import StateMixFilter, make_lorenz96

# tiny: seconds (CI); small: about a minute on two cores; full: the estimator's
# default training budget of at most 100 epochs, with early stopping (longer). One
# of the training series is held out for early stopping.
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 30, "small": 100, "full": 100}[SIZE]
N_TRAIN = {"tiny": 4, "small": 5, "full": 5}[SIZE]
MAX_ITER = {"tiny": 2, "small": 10, "full": 100}[SIZE]
HIDDEN_LAYER_SIZES = {"tiny": (8,), "small": (32, 32), "full": (32, 32)}[SIZE]
N_PARTICLES = 100
SHOWN_STATES = (0, 1, 2)
SEED = 0

print(
    f"Size {SIZE!r}: {N_TRAIN} training series of {N_STEPS} steps, "
    f"at most {MAX_ITER} epochs."
)

# Observations Y, true states X and the true model; the last series is held out.
Y, X, model = make_lorenz96(N_STEPS, n_sequences=N_TRAIN + 1, random_state=SEED)
Y_train, Y_test, X_test = Y[:N_TRAIN], Y[N_TRAIN], X[N_TRAIN]

estimator = StateMixFilter(
    n_components=3,
    hidden_layer_sizes=HIDDEN_LAYER_SIZES,
    n_particles=N_PARTICLES,
    observation_noise=0.5,
    max_iter=MAX_ITER,
    random_state=SEED,
)
with warnings.catch_warnings():
    # A short training budget ends at max_iter before the validation score
    # settles; the estimator says so with a ConvergenceWarning, expected here.
    warnings.simplefilter("ignore", ConvergenceWarning)
    estimator.fit(Y_train)
print(
    f"Trained {estimator.n_iter_} epochs ({estimator.n_updates_} updates); "
    f"converged: {estimator.converged_}."
)

# %%
# Filter the held-out series
# --------------------------
# ``filter`` returns a :class:`~statemix_sk.filtering.FilterResult`: the filtered
# means and standard deviations of every step, the effective sample size and the
# log-likelihood increments. ``predict`` would return the means alone.
#
# The filter may warn (``DegeneracyWarning``) that the effective sample size fell
# below 2 at step 0: the particles start from the wide initial distribution (the
# spread of the whole data), and the first observation, ten components with noise
# 0.5, is far more precise, so a few particles take nearly all the weight. The
# warning counts the steps where that happened; more particles make it rarer.
result = estimator.filter(Y_test)
means, scales = result.filtered_means, result.filtered_scales

mse = np.mean((means - X_test) ** 2)
mse_observations = np.mean((Y_test - X_test) ** 2)
inside = np.mean(np.abs(X_test - means) <= 2 * scales)
print(f"Filtered-state MSE {mse:.3f} (the observations alone: {mse_observations:.3f})")
print(f"Truth inside the two-standard-deviation band: {100 * inside:.0f}% of values")
print(f"Log-likelihood per step on the held-out series: {estimator.score(Y_test):.2f}")

# %%
# Trajectories with the uncertainty band
# --------------------------------------
steps = np.arange(1, N_STEPS + 1)
figure, axes = plt.subplots(len(SHOWN_STATES), 1, figsize=(9, 7), sharex=True)
for axis, state in zip(axes, SHOWN_STATES, strict=True):
    axis.fill_between(
        steps,
        means[:, state] - 2 * scales[:, state],
        means[:, state] + 2 * scales[:, state],
        color="tab:blue",
        alpha=0.25,
        label="filtered mean +/- 2 sd",
    )
    axis.plot(steps, X_test[:, state], color="black", lw=1.5, label="true state")
    axis.plot(steps, Y_test[:, state], ".", color="tab:gray", ms=4, label="observation")
    axis.plot(steps, means[:, state], color="tab:blue", lw=1.2, label="filtered mean")
    axis.set_ylabel(f"x[{state}]")
axes[0].legend(loc="upper left", ncol=4, fontsize=8)
axes[-1].set_xlabel("time step")
figure.suptitle("StateMixFilter on a held-out Lorenz 96 series")
figure.tight_layout()
plt.show()
