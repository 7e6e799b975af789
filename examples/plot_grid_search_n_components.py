"""
Choosing the number of mixture components with GridSearchCV
===========================================================

:class:`~statemix_sk.estimator.StateMixFilter` is a scikit-learn estimator, and its
``score`` is the log-likelihood per observed step of held-out series (higher is
better). So :class:`~sklearn.model_selection.GridSearchCV` can choose
``n_components`` (the mixture components ``S`` of the transition and the proposal)
by cross-validation, with nothing specific to state-space models.

Cross-validation splits *whole series*: with a 3-D array of shape
``(n_series, n_steps, n_features)`` every fold trains on some series and scores
others. (For one long series, use
:class:`~sklearn.model_selection.TimeSeriesSplit`, which scores each fold on the
steps after its training steps.) The same search runs on a dask cluster inside
``with joblib.parallel_config(backend="dask"):``; see the user guide.

Inside each fit, ``early_stopping="auto"`` also holds out ``validation_fraction``
of that fold's training series to decide when to stop and which epoch's parameters
to keep; the fold's test series are never seen by the fit. More components can
only help the training objective; the held-out score says whether they help on new
data. A score that is flat within its spread over the folds says: take the
smallest ``S``.
"""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold

from statemix_sk import StateMixFilter, make_lorenz96

# tiny: seconds (CI); small: about a minute on two cores; full: longer series and
# the default training budget of at most 100 epochs (an hour or more).
SIZE = os.environ.get("STATEMIX_EXAMPLES_SIZE", "small")
N_STEPS = {"tiny": 40, "small": 40, "full": 100}[SIZE]
# Each fit starts from a linear model of the ten states fitted to its series (and
# holds one out for early stopping); fitted to two series of 20 steps, that start
# was far off on new series, so even tiny gives each fit three series of 40 steps.
N_SERIES = {"tiny": 6, "small": 6, "full": 10}[SIZE]
N_COMPONENTS = {"tiny": [1, 2], "small": [1, 2, 3], "full": [1, 2, 3, 5]}[SIZE]
N_SPLITS = {"tiny": 2, "small": 3, "full": 5}[SIZE]
MAX_ITER = {"tiny": 1, "small": 4, "full": 100}[SIZE]  # epochs
HIDDEN_LAYER_SIZES = {"tiny": (8,), "small": (16,), "full": (32, 32)}[SIZE]
SEED = 0

Y, X, model = make_lorenz96(N_STEPS, n_sequences=N_SERIES, random_state=SEED)
search = GridSearchCV(
    StateMixFilter(
        hidden_layer_sizes=HIDDEN_LAYER_SIZES,
        observation_noise=0.5,
        max_iter=MAX_ITER,
        random_state=SEED,
    ),
    param_grid={"n_components": N_COMPONENTS},
    cv=KFold(n_splits=N_SPLITS, shuffle=True, random_state=SEED),
    n_jobs=2,
)
with warnings.catch_warnings():
    # Short budgets stop at max_iter; the worker processes print nothing either.
    warnings.simplefilter("ignore", ConvergenceWarning)
    search.fit(Y)

results = search.cv_results_
for n_components, mean, spread in zip(
    N_COMPONENTS, results["mean_test_score"], results["std_test_score"], strict=True
):
    print(
        f"S = {n_components}: held-out log-likelihood per step {mean:.3f} "
        f"+/- {spread:.3f}"
    )
print(f"Best: {search.best_params_} (refitted on all {N_SERIES} series)")

# %%
# The scores, fold by fold
# ------------------------
# The line is the mean over folds with one standard deviation; the dots are the
# individual folds. Each fold scores different series, so the folds differ by
# more than the candidates do, and the comparison that counts is within a fold.
figure, axis = plt.subplots(figsize=(7, 4.5))
axis.errorbar(
    N_COMPONENTS,
    results["mean_test_score"],
    yerr=results["std_test_score"],
    marker="o",
    capsize=4,
    color="black",
    label="mean over folds +/- 1 sd",
)
for split in range(N_SPLITS):
    axis.plot(
        N_COMPONENTS,
        results[f"split{split}_test_score"],
        marker=".",
        ls=":",
        alpha=0.7,
        label=f"fold {split}",
    )
axis.axvline(
    search.best_params_["n_components"], color="tab:green", ls="--", label="chosen"
)
axis.set_xticks(N_COMPONENTS)
axis.set_xlabel("n_components (S)")
axis.set_ylabel("held-out log-likelihood per step")
axis.set_title("GridSearchCV over n_components (Lorenz 96)")
axis.legend(fontsize=8)
figure.tight_layout()
plt.show()

# %%
# Scores on the same scale everywhere
# -----------------------------------
# ``np.ptp`` of the mean scores against their spread over folds: when the first is
# not larger, the candidates are not told apart by this data.
print(
    f"range of the mean scores {np.ptp(results['mean_test_score']):.3f}, "
    f"typical spread over folds {np.mean(results['std_test_score']):.3f}"
)
