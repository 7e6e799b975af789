"""
Linear-Gaussian data: the learned filter against the exact Kalman filter
========================================================================

When the dynamics are linear and the noise Gaussian, the Kalman filter with the
true model is exact: no filter can have a lower expected error or a higher expected
log-likelihood. That makes this the one case where we know what a perfect answer
looks like, so it is where to check that
:class:`~statemix_sk.estimator.StateMixFilter` learns what it should.

StateMixFilter's default start (``init_dynamics="regression"``) builds on the
maximum-likelihood linear-Gaussian model, fitted by EM with the Kalman smoother, so
it begins close to the answer. Training cannot make it worse on its own yardstick: one
training series is held out, scored after every epoch, and the parameters of the
best score are kept, the start included. We compare, on test series the fit never
saw, its filtered means and log-likelihood with the Kalman filter's and with the
bootstrap particle filter given the true model.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import (
    BootstrapFilter,
    StateMixFilter,
    kalman_filter,
    make_linear_gaussian,
)

# tiny: seconds (CI); small: about a minute; full: the estimator's default budget
# of at most 100 epochs, with early stopping.
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 30, "small": 100, "full": 100}[SIZE]
N_TRAIN = {"tiny": 4, "small": 5, "full": 5}[SIZE]
N_TEST = {"tiny": 2, "small": 5, "full": 5}[SIZE]
MAX_ITER = {"tiny": 2, "small": 10, "full": 100}[SIZE]
HIDDEN_LAYER_SIZES = {"tiny": (8,), "small": (32, 32), "full": (32, 32)}[SIZE]
N_PARTICLES = 100
SEED = 0

print(
    f"Size {SIZE!r}: {N_TRAIN} training and {N_TEST} test series of {N_STEPS} "
    f"steps, at most {MAX_ITER} epochs."
)

# Four states, x_t = A x_{t-1} + w with A = 0.95 times a random rotation, process
# noise 0.3, every state observed with noise 0.7.
Y, X, model = make_linear_gaussian(
    N_STEPS, n_sequences=N_TRAIN + N_TEST, random_state=SEED
)
Y_train, Y_test, X_test = Y[:N_TRAIN], Y[N_TRAIN:], X[N_TRAIN:]

learned = StateMixFilter(
    n_components=1,  # one Gaussian is the exact form of this transition
    hidden_layer_sizes=HIDDEN_LAYER_SIZES,
    n_particles=N_PARTICLES,
    observation_noise=0.7,
    max_iter=MAX_ITER,
    random_state=SEED,
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # short budgets stop early
    learned.fit(Y_train)

# %%
# Filter the test series three ways
# ---------------------------------
# The Kalman filter takes one series at a time; the particle filters take the
# 3-D array of all of them.
kalman = [kalman_filter(one, model) for one in Y_test]
kalman_means = np.stack([one.filtered_means for one in kalman])
kalman_loglik = np.mean([one.log_likelihood / N_STEPS for one in kalman])
bootstrap = BootstrapFilter(model, n_particles=N_PARTICLES, random_state=SEED)
bootstrap.fit(Y_test)
learned_result = learned.filter(Y_test)

estimates = {
    "observations alone": Y_test,  # H = I here
    "bootstrap (true model)": bootstrap.predict(Y_test),
    "StateMixFilter (learned)": learned_result.filtered_means,
    "Kalman (exact)": kalman_means,
}
mse = {name: np.mean((value - X_test) ** 2) for name, value in estimates.items()}
for name, value in mse.items():
    print(f"{name:26s} MSE {value:.3f}  ({value / mse['Kalman (exact)']:.2f} x Kalman)")
print(
    f"Log-likelihood per step: exact {kalman_loglik:.3f}, StateMixFilter "
    f"{learned.score(Y_test):.3f}, bootstrap {bootstrap.score(Y_test):.3f}"
)

# %%
# One state of one test series, and the errors
# --------------------------------------------
# The learned filter's band (two particle standard deviations) should match the
# Kalman filter's (two exact posterior standard deviations).
steps = np.arange(1, N_STEPS + 1)
kalman_sd = np.sqrt(kalman[0].filtered_covariances[:, 0, 0])
figure, (top, bottom) = plt.subplots(
    2, 1, figsize=(9, 7), gridspec_kw={"height_ratios": [3, 2]}
)
top.fill_between(
    steps,
    kalman_means[0, :, 0] - 2 * kalman_sd,
    kalman_means[0, :, 0] + 2 * kalman_sd,
    color="tab:orange",
    alpha=0.2,
    label="Kalman +/- 2 sd",
)
top.fill_between(
    steps,
    learned_result.filtered_means[0, :, 0]
    - 2 * learned_result.filtered_scales[0, :, 0],
    learned_result.filtered_means[0, :, 0]
    + 2 * learned_result.filtered_scales[0, :, 0],
    color="tab:blue",
    alpha=0.2,
    label="StateMixFilter +/- 2 sd",
)
top.plot(steps, X_test[0, :, 0], color="black", lw=1.5, label="true state")
top.plot(steps, Y_test[0, :, 0], ".", color="tab:gray", ms=4, label="observation")
top.plot(steps, kalman_means[0, :, 0], color="tab:orange", label="Kalman mean")
top.plot(
    steps,
    learned_result.filtered_means[0, :, 0],
    color="tab:blue",
    label="StateMixFilter mean",
)
top.set_xlabel("time step")
top.set_ylabel("x[0]")
top.legend(loc="upper left", ncol=3, fontsize=8)

names = list(mse)
bottom.barh(names, [mse[name] for name in names], color="tab:blue")
bottom.axvline(mse["Kalman (exact)"], color="tab:orange", ls="--", label="exact")
bottom.set_xlabel("filtered-state MSE over the test series (lower is better)")
bottom.legend(loc="lower right")
figure.tight_layout()
plt.show()
