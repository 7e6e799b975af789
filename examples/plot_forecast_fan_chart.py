"""
Forecast fan chart: learned against true dynamics
=================================================

Forecasting shows what a learned transition has learned. We fit
:class:`~statemix_sk.estimator.StateMixFilter` on noisy Lorenz 96 observations,
then take a held-out series, filter its first part, and forecast the rest with
:meth:`~statemix_sk.estimator.StateMixFilter.forecast`: the filter's final
weighted cloud is moved through the learned Gaussian-mixture transition, step
after step, and its weighted quantiles give the bands of a fan chart (5-95% and
25-75%). The same forecast with the true model (a bootstrap filter given it) is
the reference: a learned model whose fan is as narrow and as well centred on the
truth has learned the dynamics.

The observation's fan includes the observation noise (standard deviation 0.5),
so it never narrows below that, even at the first step ahead.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import BootstrapFilter, StateMixFilter, make_lorenz96

# tiny: seconds (CI); small: about a minute on two cores; full: the estimator's
# default training budget of at most 100 epochs, with early stopping.
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 30, "small": 100, "full": 100}[SIZE]
N_TRAIN = {"tiny": 4, "small": 5, "full": 5}[SIZE]
MAX_ITER = {"tiny": 2, "small": 10, "full": 100}[SIZE]
HIDDEN_LAYER_SIZES = {"tiny": (8,), "small": (32, 32), "full": (32, 32)}[SIZE]
N_PARTICLES = 100
FORECAST_PARTICLES = 1000  # more particles after training are cheap
N_AHEAD = {"tiny": 10, "small": 20, "full": 20}[SIZE]
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SHOWN_OUTPUT = 0
SEED = 0

Y, X, model = make_lorenz96(N_STEPS, n_sequences=N_TRAIN + 1, random_state=SEED)
Y_train = Y[:N_TRAIN]
# The held-out series: filtered up to HISTORY, forecast after it.
HISTORY = N_STEPS - N_AHEAD
Y_test, X_test = Y[N_TRAIN], X[N_TRAIN]

learned = StateMixFilter(
    n_components=3,
    hidden_layer_sizes=HIDDEN_LAYER_SIZES,
    n_particles=N_PARTICLES,
    observation_noise=0.5,
    max_iter=MAX_ITER,
    random_state=SEED,
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # short budgets stop early
    learned.fit(Y_train)
learned.set_params(n_particles=FORECAST_PARTICLES)
true_model = BootstrapFilter(model, n_particles=FORECAST_PARTICLES, random_state=SEED)
true_model.fit(Y_test[:HISTORY])

forecasts = {
    name: estimator.forecast(Y_test[:HISTORY], N_AHEAD, quantiles=QUANTILES)
    for name, estimator in [("learned", learned), ("true model", true_model)]
}
future = Y_test[HISTORY:]
for name, ahead in forecasts.items():
    error = np.mean((ahead.observation_mean - future) ** 2)
    inside = np.mean(
        (future >= ahead.observation_quantiles[0])
        & (future <= ahead.observation_quantiles[-1])
    )
    print(
        f"{name:10s} forecast MSE of the observations {error:.3f}; "
        f"{inside:.0%} of them inside the 5-95% band"
    )

# %%
# The fan chart
# -------------
history_steps = np.arange(1, HISTORY + 1)
ahead_steps = np.arange(HISTORY + 1, N_STEPS + 1)
figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for axis, (name, ahead) in zip(axes, forecasts.items(), strict=True):
    bands = ahead.observation_quantiles[:, :, SHOWN_OUTPUT]
    axis.fill_between(ahead_steps, bands[0], bands[-1], color="tab:blue", alpha=0.2)
    axis.fill_between(ahead_steps, bands[1], bands[-2], color="tab:blue", alpha=0.35)
    axis.plot(ahead_steps, bands[2], color="tab:blue", label="forecast median")
    axis.plot(
        history_steps, Y_test[:HISTORY, SHOWN_OUTPUT], ".", color="tab:gray", ms=4
    )
    axis.plot(
        ahead_steps,
        future[:, SHOWN_OUTPUT],
        "o",
        color="black",
        ms=4,
        label="what was observed",
    )
    axis.axvline(HISTORY + 0.5, color="0.5", lw=0.8)
    axis.set_title(name)
    axis.set_xlabel("time step")
axes[0].set_ylabel(f"y[{SHOWN_OUTPUT}]")
axes[0].legend(loc="upper left", fontsize=8)
figure.suptitle("Lorenz 96: forecasts of a held-out series, 5-95% and 25-75% bands")
figure.tight_layout()
plt.show()
