"""
Training curves: training and validation log-likelihood per epoch
=================================================================

:class:`~statemix_sk.estimator.StateMixFilter` trains in *epochs*. Every series is
cut into *windows* of ``window_length`` steps, and one Adam update filters a
minibatch of ``batch_size`` windows and differentiates the filter's log-likelihood
per observed step on them. Each window starts from the particle cloud that the
previous window of its series left (a *carried* cloud: a constant, no gradient
flows back through it), so consecutive windows together still filter the whole
series, while an update costs the same whatever the number and length of the
series; and a short window keeps the gradient informative where the likelihood of
a long series is too concentrated for it. An epoch is one pass over every window of
every training series.

With two series or more, ``early_stopping="auto"`` holds out
``validation_fraction`` of them (here one). After every epoch the held-out series
are filtered with one fixed seed and scored; training stops when that score has not
improved by ``tol`` for ``n_iter_no_change`` epochs (or at ``max_iter`` epochs),
and the parameters of the best validation score are kept, the start (epoch 0)
included. The two curves are not on one footing: the training value of an epoch is
the average over its updates, each with fresh particles and with the parameters of
that moment, on windows started from carried clouds; the validation value is one
fixed-seed filter of the held-out series from their first step, with the parameters
at the end of the epoch. The validation curve decides what is kept.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import StateMixFilter, make_lorenz96

# tiny: seconds (CI); small: about a minute on two cores; full: 50 series (45 to
# train, 5 held out) and the default budget of at most 100 epochs, with early
# stopping (much longer).
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 30, "small": 100, "full": 100}[SIZE]
N_SERIES = {"tiny": 4, "small": 5, "full": 50}[SIZE]
MAX_ITER = {"tiny": 4, "small": 20, "full": 100}[SIZE]
HIDDEN_LAYER_SIZES = {"tiny": (8,), "small": (32, 32), "full": (32, 32)}[SIZE]
SEED = 0

print(
    f"Size {SIZE!r}: {N_SERIES} series of {N_STEPS} steps (some held out), "
    f"at most {MAX_ITER} epochs."
)

Y, X, model = make_lorenz96(N_STEPS, n_sequences=N_SERIES, random_state=SEED)
estimator = StateMixFilter(
    n_components=3,
    hidden_layer_sizes=HIDDEN_LAYER_SIZES,
    observation_noise=0.5,
    max_iter=MAX_ITER,
    random_state=SEED,
)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ConvergenceWarning)
    estimator.fit(Y)
print(
    f"n_iter_ = {estimator.n_iter_} epochs, n_updates_ = {estimator.n_updates_}, "
    f"converged_ = {estimator.converged_}, {len(caught)} ConvergenceWarning"
)
print(
    "Kept parameters: validation log-likelihood per step "
    f"{estimator.best_validation_score_:.3f}; on all the data given to fit "
    f"{estimator.log_likelihood_:.3f}"
)

# %%
# The history
# -----------
# Each entry of ``history_`` is an ``Evaluation`` named tuple: the epoch (0: the
# start), the Adam updates so far, the training and the validation log-likelihood
# per step, and the seconds since the start.
for entry in estimator.history_[:6]:
    print(entry)

# %%
# Plot it
# -------
# The kept epoch is the one of the best validation score (``validation_scores_``
# holds the same values as the history's validation column).
history = estimator.history_
epochs = np.array([entry.epoch for entry in history])
train = np.array([entry.train_log_likelihood for entry in history])
validation = np.array([entry.validation_log_likelihood for entry in history])
kept = int(np.argmax(validation))
print(f"Kept epoch: {epochs[kept]} of {epochs[-1]}")
if kept == 0:
    print("No epoch beat the start on the held-out series: the start is kept.")

figure, axis = plt.subplots(figsize=(9, 4.5))
axis.plot(epochs, train, marker="o", ms=4, color="tab:blue", label="training")
axis.plot(epochs, validation, marker="s", ms=4, color="tab:orange", label="validation")
axis.axvline(epochs[kept], color="tab:green", ls="--", lw=1)
axis.scatter(
    [epochs[kept]],
    [validation[kept]],
    marker="*",
    s=200,
    color="tab:green",
    zorder=3,
    label=f"kept (epoch {epochs[kept]})",
)
axis.set_xlabel("epoch (0: the start)")
axis.set_ylabel("log-likelihood per observed step")
axis.set_title("StateMixFilter training on Lorenz 96")
axis.xaxis.set_major_locator(MaxNLocator(integer=True))
axis.legend(loc="best", fontsize=8)
figure.tight_layout()
plt.show()
