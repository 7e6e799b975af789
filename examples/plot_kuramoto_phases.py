"""
Kuramoto oscillators: phases seen through [sin, cos]
====================================================

Six coupled oscillators whose phases are observed only through
``[sin(theta), cos(theta)] + noise``: a non-linear observation, so neither the
Kalman filter nor the locally optimal proposal applies, and nothing about the
dynamics can be read off the observations by least squares.
:class:`~statemix_sk.estimator.StateMixFilter` is given the known observation model
(a :class:`~statemix_sk.observations.GaussianObservation` around the ``[sin, cos]``
function) and learns the transition; it starts as a random walk.

Phases are angles, so the estimate is the weighted *circular* mean of the particles,
``atan2(sum W sin x, sum W cos x)``, and errors are wrapped to ``(-pi, pi]``. Its
spread is the circular standard deviation ``sqrt(-2 log R)``, where ``R`` is the
length of the weighted mean of the unit vectors. We compare with the bootstrap
filter given the true model, both with the same number of particles.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import BootstrapFilter, StateMixFilter, make_kuramoto

# tiny: seconds (CI); small: about a minute; full: the default training budget of
# at most 100 epochs, with early stopping.
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 30, "small": 100, "full": 100}[SIZE]
N_TRAIN = {"tiny": 4, "small": 5, "full": 5}[SIZE]
MAX_ITER = {"tiny": 2, "small": 10, "full": 100}[SIZE]
HIDDEN_LAYER_SIZES = {"tiny": (8,), "small": (32, 32), "full": (32, 32)}[SIZE]
TRAIN_PARTICLES = 100
FILTER_PARTICLES = 500  # more particles after training are cheap
SHOWN = (0, 1)
SEED = 0

print(
    f"Size {SIZE!r}: {N_TRAIN} training series of {N_STEPS} steps, "
    f"at most {MAX_ITER} epochs."
)

Y, X, model = make_kuramoto(N_STEPS, n_sequences=N_TRAIN + 1, random_state=SEED)
Y_train, Y_test, X_test = Y[:N_TRAIN], Y[N_TRAIN], X[N_TRAIN]

learned = StateMixFilter(
    n_components=3,
    hidden_layer_sizes=HIDDEN_LAYER_SIZES,
    n_particles=TRAIN_PARTICLES,
    # The observation is known; with a function of the state, the estimator also
    # needs the initial distribution (it cannot be read off Y by least squares).
    observation=model.observation,
    initial_state_mean=model.initial_mean,
    initial_state_scale=model.initial_scale,
    max_iter=MAX_ITER,
    random_state=SEED,
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # short budgets stop early
    learned.fit(Y_train)
# Filtering with more particles than training needs no refit.
learned.set_params(n_particles=FILTER_PARTICLES)
bootstrap = BootstrapFilter(model, n_particles=FILTER_PARTICLES, random_state=SEED)
bootstrap.fit(Y_test)


def circular_summary(result):
    """Weighted circular mean and circular standard deviation of each step."""
    weights = np.exp(result.log_weights)[..., None]  # (n_steps, N, 1)
    sine = np.sum(weights * np.sin(result.particles), axis=-2)
    cosine = np.sum(weights * np.cos(result.particles), axis=-2)
    length = np.clip(np.hypot(sine, cosine), 1e-12, 1.0)
    return np.arctan2(sine, cosine), np.sqrt(-2.0 * np.log(length))


def wrap(angle):
    """Wrap angles to (-pi, pi]."""
    return np.angle(np.exp(1j * angle))


estimates = {}
for name, estimator in [
    ("bootstrap (true model)", bootstrap),
    ("StateMixFilter (learned)", learned),
]:
    estimates[name] = circular_summary(estimator.filter(Y_test, return_particles=True))
observation_only = np.arctan2(Y_test[:, : model.n_states], Y_test[:, model.n_states :])
print(
    f"observation only          wrapped MSE "
    f"{np.mean(wrap(observation_only - X_test) ** 2):.3f}"
)
for name, (mean, _) in estimates.items():
    print(f"{name:25s} wrapped MSE {np.mean(wrap(mean - X_test) ** 2):.3f}")

# %%
# Phases over time
# ----------------
# Each estimate is drawn as the truth plus its wrapped error, so that a line does
# not jump by 2 pi when the phase goes round; the band is +/- 2 circular
# standard deviations.
steps = np.arange(1, N_STEPS + 1)
figure, axes = plt.subplots(len(SHOWN), 1, figsize=(9, 6), sharex=True)
colours = {
    "bootstrap (true model)": "tab:orange",
    "StateMixFilter (learned)": "tab:blue",
}
for axis, oscillator in zip(axes, SHOWN, strict=True):
    truth = X_test[:, oscillator]
    axis.plot(steps, truth, color="black", lw=1.5, label="true phase")
    axis.plot(
        steps,
        truth + wrap(observation_only[:, oscillator] - truth),
        ".",
        color="tab:gray",
        ms=4,
        label="observation only",
    )
    for name, (mean, spread) in estimates.items():
        centre = truth + wrap(mean[:, oscillator] - truth)
        axis.fill_between(
            steps,
            centre - 2 * spread[:, oscillator],
            centre + 2 * spread[:, oscillator],
            color=colours[name],
            alpha=0.15,
        )
        axis.plot(steps, centre, color=colours[name], label=name)
    axis.set_ylabel(f"theta[{oscillator}] (rad)")
axes[0].legend(loc="upper left", fontsize=8, ncol=2)
axes[-1].set_xlabel("time step")
figure.suptitle("Kuramoto: filtered phases of a held-out series")
figure.tight_layout()
plt.show()
