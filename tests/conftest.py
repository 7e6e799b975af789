"""Shared test settings.

Hypothesis runs a fixed, derandomised set of examples so that CI is repeatable;
statistical tests use fixed seeds and derive their tolerances in their docstrings.
"""

import pytest
from hypothesis import HealthCheck, settings
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import StateMixFilter
from statemix_sk.datasets import make_linear_gaussian

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def fitted_state_mix():
    """A StateMixFilter of two iterations (a mixture of 2 components)."""
    Y, _, _ = make_linear_gaussian(20, 3, n_states=2, random_state=0)
    estimator = StateMixFilter(
        n_components=2,
        hidden_layer_sizes=(8,),
        n_particles=20,
        max_iter=2,
        window_length=10,
        batch_size=2,
        random_state=0,
    )
    # Two iterations cannot converge; the warning says so, as it should.
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        estimator.fit(Y)
    return estimator, Y
