"""Shared test settings.

Hypothesis runs a fixed, derandomised set of examples so that CI is repeatable;
statistical tests use fixed seeds and derive their tolerances in their docstrings.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ci")
