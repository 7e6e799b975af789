"""Scale-out on a dask.distributed cluster through joblib.

``with joblib.parallel_config(backend="dask"):`` sends statemix-sk's joblib tasks
(the ``n_init`` restarts, a GridSearchCV's fits, the ``reproduce`` runs) to a dask
cluster. Here the cluster is a ``LocalCluster`` of two worker *processes* on this
machine, so the tasks really leave the test's process; the results must equal
those of joblib's default backend for the same ``random_state``, bit for bit,
because every task's randomness comes from its own seed and BLAS runs on one
thread inside each task (so the order of floating-point sums cannot change).

The estimator is tiny (one component, four hidden units, eight particles, two
epochs): the test checks where the work runs and that it gives the same
numbers, not what is learned. It needs the ``distributed`` extra and skips, saying
so, without it; CI installs it.
"""

import logging
import warnings

import joblib
import numpy as np
import pytest
from autograd.misc import flatten
from sklearn.model_selection import GridSearchCV

from statemix_sk import StateMixFilter, make_linear_gaussian
from statemix_sk.experiments import run_experiment

distributed = pytest.importorskip(
    "distributed",
    reason="dask.distributed is not installed (pip install -e '.[distributed]'); "
    "CI installs it",
)

TINY = dict(
    n_components=1,
    hidden_layer_sizes=(4,),
    n_particles=8,
    max_iter=2,
    # The linear and regression starts (an EM fit, then a network fitted to its
    # smoothed states) take most of a tiny fit's time and are the same on every
    # backend: a random walk keeps the test fast.
    init_dynamics="random_walk",
    random_state=0,
)

# Two epochs never converge and eight particles may collapse: those warnings
# say nothing about where the work ran.
pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::statemix_sk.DegeneracyWarning"),
]


@pytest.fixture(scope="module")
def client():
    """A client of a LocalCluster with two single-threaded worker processes."""
    with warnings.catch_warnings():
        # Starting a cluster may warn about things outside statemix-sk (a busy
        # dashboard port, say); the dashboard is off anyway.
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.close()
            cluster.close()


@pytest.fixture(scope="module")
def data():
    Y, _, _ = make_linear_gaussian(20, 4, n_states=2, random_state=0)
    return Y


def test_restarts_on_dask_equal_the_default_backend(client, data):
    estimator = StateMixFilter(n_init=3, **TINY)
    default = StateMixFilter(n_init=3, **TINY).fit(data)
    with distributed.get_task_stream(client) as tasks:
        with joblib.parallel_config(backend="dask"):
            on_dask = estimator.fit(data)
    # The restarts ran as dask tasks, on the workers.
    assert any("_fit_one" in task["key"] for task in tasks.data)
    np.testing.assert_array_equal(
        flatten(on_dask.params_)[0], flatten(default.params_)[0]
    )
    np.testing.assert_array_equal(on_dask.restart_scores_, default.restart_scores_)
    assert on_dask.log_likelihood_ == default.log_likelihood_
    np.testing.assert_array_equal(on_dask.predict(data), default.predict(data))
    # The restarts differ, so a mix-up of their order would show.
    assert len(set(default.restart_scores_)) == 3


def test_grid_search_on_dask_equals_the_default_backend(client, data):
    # Two restarts per fit: inside each grid-search task the restarts are a
    # nested joblib call, which the dask backend also sends to the cluster.
    grid = {"n_components": [1, 2]}
    default = GridSearchCV(StateMixFilter(n_init=2, **TINY), grid, cv=2).fit(data)
    with distributed.get_task_stream(client) as tasks:
        with joblib.parallel_config(backend="dask"):
            search = GridSearchCV(StateMixFilter(n_init=2, **TINY), grid, cv=2)
            on_dask = search.fit(data)
    names = {task["key"] for task in tasks.data}
    assert any("_fit_and_score" in name for name in names)  # the grid's fits
    assert any("_fit_one" in name for name in names)  # the restarts inside them
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_array_equal(
            on_dask.cv_results_[key], default.cv_results_[key]
        )
    assert on_dask.best_params_ == default.best_params_
    np.testing.assert_array_equal(
        on_dask.best_estimator_.predict(data), default.best_estimator_.predict(data)
    )


def test_reproduce_runs_on_dask_equal_the_default_backend(client):
    tiny = {
        "runs": 2,
        "n_particles": (10,),
        "n_components": (1,),
        "n_train": 2,
        "n_test": 2,
        "n_steps": 12,
        "max_iter": 1,
        "train_particles": 10,
        "floor_particles": 100,
        "seed": 1,
    }
    default = run_experiment("linear-gaussian", **tiny)
    with distributed.get_task_stream(client) as tasks:
        with joblib.parallel_config(backend="dask"):
            on_dask = run_experiment("linear-gaussian", **tiny)
    assert any("run_one" in task["key"] for task in tasks.data)  # the runs
    for one, other in zip(default["runs"], on_dask["runs"], strict=True):
        assert [row["mse"] for row in one["rows"]] == [
            row["mse"] for row in other["rows"]
        ]
        assert [row["log_likelihood"] for row in one["rows"]] == [
            row["log_likelihood"] for row in other["rows"]
        ]
