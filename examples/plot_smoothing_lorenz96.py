"""
Lorenz 96: smoothed against filtered trajectories, across a gap
===============================================================

The filtered mean ``E[x_t | y_1:t]`` uses the observations up to ``t``; the
smoothed mean ``E[x_t | y_1:T]`` uses the whole series, so it knows where the
state went next. We filter a stochastic Lorenz 96 series (ten states, each
observed with noise of standard deviation 0.5) with the locally optimal particle
filter given the true model, and smooth it with
:meth:`~statemix_sk.known_model_filters.LocallyOptimalFilter.smooth`: forward filtering,
backward smoothing (FFBS), which reweights the filter's particles with the
transition density. Six rows in the middle are missing: the filter can only
predict across them, and its band widens; the smoother carries the observations
after the gap back through it.

The bands are two standard deviations of each estimate. A smoothed band is the
narrower one: the spread of ``x_t`` given more data.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

from statemix_sk import DegeneracyWarning, LocallyOptimalFilter, make_lorenz96
from statemix_sk.smoothing import genealogy_smoothed_means

# tiny: seconds (CI); small and full: a longer series.
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 40, "small": 100, "full": 100}[SIZE]
# FFBS reweights the filter's particles: it needs a cloud that covers where the
# smoothed states lie (the user guide's page on smoothing says more).
N_PARTICLES = {"tiny": 300, "small": 300, "full": 1000}[SIZE]
GAP = slice(N_STEPS // 2 - 3, N_STEPS // 2 + 3)
SHOWN_STATES = (0, 1)
SEED = 0

Y, X, model = make_lorenz96(N_STEPS, random_state=SEED)
Y = Y.copy()
Y[GAP] = np.nan  # missing rows: nothing observed there

estimator = LocallyOptimalFilter(model, n_particles=N_PARTICLES, random_state=SEED)
estimator.fit(Y)
with warnings.catch_warnings():
    # The first observation, ten components with noise 0.5, is far more precise
    # than the wide initial distribution: at step 0 a few particles take nearly
    # all the weight, and ``filter`` says so. Expected here.
    warnings.simplefilter("ignore", DegeneracyWarning)
    result = estimator.filter(Y, return_particles=True)
filtered, filtered_std = result.filtered_means, result.filtered_scales
# Same seed, same filter run: the smoother reweights exactly these particles.
smoothed, smoothed_std = estimator.smooth(Y, return_std=True)
genealogy = genealogy_smoothed_means(result)

gap = np.zeros(N_STEPS, dtype=bool)
gap[GAP] = True
for name, estimate in [
    ("filtered", filtered),
    ("smoothed (FFBS)", smoothed),
    ("genealogy", genealogy),
]:
    print(
        f"{name:16s} MSE {np.mean((estimate - X) ** 2):.3f} "
        f"(in the gap {np.mean((estimate[gap] - X[gap]) ** 2):.3f})"
    )

# %%
# Trajectories
# ------------
steps = np.arange(1, N_STEPS + 1)
figure, axes = plt.subplots(len(SHOWN_STATES), 1, figsize=(9, 6), sharex=True)
for axis, state in zip(axes, SHOWN_STATES, strict=True):
    axis.axvspan(steps[GAP][0], steps[GAP][-1], color="0.92", label="missing rows")
    axis.plot(steps, X[:, state], color="black", lw=1.5, label="true state")
    axis.plot(steps, Y[:, state], ".", color="tab:gray", ms=4, label="observation")
    for name, mean, std, colour in [
        ("filtered", filtered, filtered_std, "tab:orange"),
        ("smoothed", smoothed, smoothed_std, "tab:blue"),
    ]:
        axis.fill_between(
            steps,
            mean[:, state] - 2 * std[:, state],
            mean[:, state] + 2 * std[:, state],
            color=colour,
            alpha=0.2,
        )
        axis.plot(steps, mean[:, state], color=colour, label=name)
    axis.set_ylabel(f"x[{state}]")
axes[0].legend(loc="upper left", fontsize=8, ncol=3)
axes[-1].set_xlabel("time step")
figure.suptitle("Lorenz 96: filtered and smoothed means, +/- 2 std")
figure.tight_layout()
plt.show()
