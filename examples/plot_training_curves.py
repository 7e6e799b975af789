"""
Training curves: the log-likelihood per iteration, by window and phase
======================================================================

:class:`~statemix_sk.estimator.StateMixFilter` trains in *iterations*: a few Adam
steps on the transition network with the proposal fixed, then a few on the
proposal with the transition fixed (the two *phases*). It starts on short windows
of the series (the first 10%, 25% and 50% of the steps) and only then trains on the
whole series (*observation batching*): on a long series the likelihood of a random
start is so concentrated that the gradient says little, while a short window lets
the networks find the right region first.

Every ``eval_every`` iterations, after each phase, the log-likelihood per step is
evaluated with one fixed seed on the current window and recorded in
``history_``. Values on different windows are not comparable (a short window
starts from the initial distribution, whose uncertainty weighs more per step), so
the curves are coloured by window; the markers tell the phase apart. The point at
iteration 0 is the start, evaluated on the whole series.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import StateMixFilter, make_lorenz96

# tiny: seconds (CI); small: about a minute; full: the default budget of 60
# iterations (several minutes).
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 30, "small": 60, "full": 100}[SIZE]
N_TRAIN = {"tiny": 2, "small": 4, "full": 5}[SIZE]
MAX_ITER = {"tiny": 4, "small": 16, "full": 60}[SIZE]
HIDDEN_LAYER_SIZES = {"tiny": (8,), "small": (32, 32), "full": (32, 32)}[SIZE]
SEED = 0

print(
    f"Size {SIZE!r}: {N_TRAIN} training series of {N_STEPS} steps, "
    f"{MAX_ITER} iterations."
)

Y, X, model = make_lorenz96(N_STEPS, n_sequences=N_TRAIN, random_state=SEED)
estimator = StateMixFilter(
    n_components=3,
    hidden_layer_sizes=HIDDEN_LAYER_SIZES,
    observation_noise=0.5,
    max_iter=MAX_ITER,
    eval_every=1,  # record every iteration (costs one extra filter pass per phase)
    random_state=SEED,
)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ConvergenceWarning)
    estimator.fit(Y)
print(
    f"n_iter_ = {estimator.n_iter_}, converged_ = {estimator.converged_}, "
    f"{len(caught)} ConvergenceWarning"
)
print(
    f"Kept parameters: log-likelihood per step {estimator.log_likelihood_:.3f} "
    "on all the training data"
)

# %%
# The history
# -----------
# Each entry of ``history_`` is an ``Evaluation`` named tuple: iteration, window,
# phase, log-likelihood per step and seconds since the start.
for entry in estimator.history_[:6]:
    print(entry)

# %%
# Plot it
# -------
history = estimator.history_
windows = sorted({entry.window for entry in history})
colours = dict(
    zip(windows, plt.cm.viridis(np.linspace(0, 0.9, len(windows))), strict=True)
)
markers = {"start": "*", "transition": "o", "proposal": "s"}

figure, axis = plt.subplots(figsize=(9, 4.5))
for window in windows:
    entries = [entry for entry in history if entry.window == window]
    axis.plot(
        [entry.iteration for entry in entries],
        [entry.log_likelihood for entry in entries],
        color=colours[window],
        lw=1,
        alpha=0.6,
    )
    for phase, marker in markers.items():
        chosen = [entry for entry in entries if entry.phase == phase]
        axis.scatter(
            [entry.iteration for entry in chosen],
            [entry.log_likelihood for entry in chosen],
            color=colours[window],
            marker=marker,
            s=80 if phase == "start" else 30,
        )
# Legends: one for the windows (colours), one for the phases (markers).
window_handles = [
    plt.Line2D([], [], color=colours[w], lw=3, label=f"window of {w} steps")
    for w in windows
]
phase_handles = [
    plt.Line2D(
        [],
        [],
        color="gray",
        marker=m,
        ls="",
        label=f"after {p}" if p != "start" else "start (whole series)",
    )
    for p, m in markers.items()
]
first = axis.legend(handles=window_handles, loc="lower right", fontsize=8)
axis.add_artist(first)
axis.legend(handles=phase_handles, loc="lower center", fontsize=8)
axis.set_xlabel("iteration")
axis.set_ylabel("log-likelihood per step (fixed seed)")
axis.set_title("StateMixFilter training on Lorenz 96")
figure.tight_layout()
plt.show()
