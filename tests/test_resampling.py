"""Tests for the resampling schemes and the resampling decision."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from statemix_sk.resampling import (
    RESAMPLING_SCHEMES,
    get_resampling_scheme,
    multinomial_resampling,
    residual_resampling,
    should_resample,
    stratified_resampling,
    systematic_resampling,
)

SCHEME_NAMES = sorted(RESAMPLING_SCHEMES)

FAMILY_ALPHA = 0.001
"""Probability that a statistical test here fails although the code is correct."""

SLACK = 1e-9
"""Allowance for the rounding of N * W and of cumulative sums of the weights."""


@st.composite
def normalised_weights(draw, max_size=60):
    """Normalised weights with some exact zeros and at least one positive entry."""
    n = draw(st.integers(1, max_size))
    raw = draw(
        arrays(
            float,
            n,
            elements=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)),
        )
    )
    positive = draw(st.integers(0, n - 1))
    raw[positive] = max(raw[positive], 0.5)
    return raw / raw.sum()


def offspring_counts(ancestors, n):
    return np.bincount(ancestors, minlength=n)


# Properties shared by every scheme ---------------------------------------------


@pytest.mark.parametrize("name", SCHEME_NAMES)
@given(weights=normalised_weights(), seed=st.integers(0, 2**32 - 1))
def test_scheme_returns_sorted_valid_ancestors(name, weights, seed):
    scheme = RESAMPLING_SCHEMES[name]
    n = len(weights)
    ancestors = scheme(weights, np.random.default_rng(seed))
    assert isinstance(ancestors, np.ndarray)
    assert ancestors.shape == (n,)
    assert np.issubdtype(ancestors.dtype, np.integer)
    assert np.all((ancestors >= 0) & (ancestors < n))
    assert np.all(np.diff(ancestors) >= 0)
    assert not np.any(weights[ancestors] == 0.0)


@pytest.mark.parametrize("name", SCHEME_NAMES)
@given(weights=normalised_weights(), seed=st.integers(0, 2**32 - 1))
def test_scheme_is_reproducible_with_a_seed(name, weights, seed):
    scheme = RESAMPLING_SCHEMES[name]
    first = scheme(weights, np.random.default_rng(seed))
    second = scheme(weights, np.random.default_rng(seed))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_zero_weights_at_the_ends_are_never_picked(name):
    scheme = RESAMPLING_SCHEMES[name]
    weights = np.array([0.0, 0.0, 0.3, 0.0, 0.7, 0.0, 0.0])
    rng = np.random.default_rng(17)
    for _ in range(200):
        ancestors = scheme(weights, rng)
        assert set(ancestors.tolist()) <= {2, 4}


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_degenerate_weights_copy_one_particle(name):
    weights = np.zeros(5)
    weights[3] = 1.0
    ancestors = RESAMPLING_SCHEMES[name](weights, np.random.default_rng(0))
    np.testing.assert_array_equal(ancestors, np.full(5, 3))


@given(weights=normalised_weights(), seed=st.integers(0, 2**32 - 1))
def test_systematic_counts_are_floor_or_ceil(weights, seed):
    n = len(weights)
    counts = offspring_counts(
        systematic_resampling(weights, np.random.default_rng(seed)), n
    )
    expected = n * weights
    assert np.all(np.floor(expected - SLACK) <= counts)
    assert np.all(counts <= np.ceil(expected + SLACK))


@given(weights=normalised_weights(), seed=st.integers(0, 2**32 - 1))
def test_stratified_counts_are_within_one_of_floor_or_ceil(weights, seed):
    # A particle's interval of length N W meets at most floor(N W) + 2 strata.
    n = len(weights)
    counts = offspring_counts(
        stratified_resampling(weights, np.random.default_rng(seed)), n
    )
    expected = n * weights
    assert np.all(counts <= np.floor(expected + SLACK) + 2)


@given(weights=normalised_weights(), seed=st.integers(0, 2**32 - 1))
def test_residual_keeps_the_deterministic_copies(weights, seed):
    n = len(weights)
    counts = offspring_counts(
        residual_resampling(weights, np.random.default_rng(seed)), n
    )
    assert np.all(counts >= np.floor(n * weights - SLACK))


def test_residual_with_integer_expected_counts_is_deterministic():
    weights = np.array([0.25, 0.5, 0.0, 0.25])
    for seed in range(5):
        ancestors = residual_resampling(weights, np.random.default_rng(seed))
        np.testing.assert_array_equal(ancestors, [0, 1, 1, 3])


# Statistical tests with fixed seeds --------------------------------------------


STAT_WEIGHTS = np.array([0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.15])
N_REPS = 2000


def repeated_counts(scheme, weights, n_reps, seed):
    """Offspring counts of ``n_reps`` independent resamplings: (n_reps, N)."""
    rng = np.random.default_rng(seed)
    n = len(weights)
    return np.array([offspring_counts(scheme(weights, rng), n) for _ in range(n_reps)])


@pytest.mark.parametrize(
    "scheme", [multinomial_resampling, stratified_resampling], ids=lambda s: s.__name__
)
def test_pooled_offspring_counts_chi_square(scheme):
    """Pooled counts over 2000 resamplings fit N W * 2000 (Pearson chi-square).

    For multinomial resampling the pooled counts are Multinomial(N * reps, W), so
    the statistic is chi-square with N - 1 degrees of freedom; stratified counts
    vary less (Douc, Cappe and Moulines 2005), which makes the same test
    conservative. Smallest expected count 0.02 * 8 * 2000 = 320. Two tests:
    each uses FAMILY_ALPHA / 2 (Bonferroni).
    """
    n = len(STAT_WEIGHTS)
    pooled = repeated_counts(scheme, STAT_WEIGHTS, N_REPS, seed=99).sum(axis=0)
    assert pooled.sum() == n * N_REPS
    result = stats.chisquare(pooled, n * STAT_WEIGHTS * N_REPS)
    assert result.pvalue > FAMILY_ALPHA / 2, (pooled, n * STAT_WEIGHTS * N_REPS)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_mean_offspring_count_is_n_times_weight(name):
    """E[count_n] = N W_n for every scheme.

    For every scheme Var(count_n) <= N W_n (1 - W_n), the multinomial variance
    (Douc, Cappe and Moulines 2005 for residual and stratified; systematic counts
    take the two values floor(N W) and ceil(N W), whose variance f (1 - f),
    f = frac(N W), is below that bound). The mean over 2000 repetitions is compared
    with N W at z standard errors, z two-sided for FAMILY_ALPHA split over the
    4 schemes x 8 particles (Bonferroni).
    """
    n = len(STAT_WEIGHTS)
    counts = repeated_counts(RESAMPLING_SCHEMES[name], STAT_WEIGHTS, N_REPS, seed=7)
    expected = n * STAT_WEIGHTS
    standard_error = np.sqrt(expected * (1 - STAT_WEIGHTS) / N_REPS)
    z = stats.norm.isf(FAMILY_ALPHA / (len(SCHEME_NAMES) * n) / 2)
    error = np.abs(counts.mean(axis=0) - expected)
    assert np.all(error < z * standard_error), (error / standard_error, z)


def test_multinomial_count_variance_is_multinomial():
    """Var(count_n) = N W_n (1 - W_n) for multinomial resampling.

    Distinguishes multinomial from the lower-variance schemes, which the pooled
    chi-square cannot. The variance is estimated by the mean of squared deviations
    from the known mean N W (unbiased), with its standard error estimated from
    their sample standard deviation; 8 two-sided tests at FAMILY_ALPHA / 8.
    """
    n = len(STAT_WEIGHTS)
    counts = repeated_counts(multinomial_resampling, STAT_WEIGHTS, N_REPS, seed=5)
    squared = (counts - n * STAT_WEIGHTS) ** 2
    variance = n * STAT_WEIGHTS * (1 - STAT_WEIGHTS)
    standard_error = squared.std(axis=0, ddof=1) / np.sqrt(N_REPS)
    z = stats.norm.isf(FAMILY_ALPHA / n / 2)
    error = np.abs(squared.mean(axis=0) - variance)
    assert np.all(error < z * standard_error), (error / standard_error, z)


# Scheme lookup and the resampling decision -------------------------------------


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_get_resampling_scheme_returns_the_table_entry(name):
    assert get_resampling_scheme(name) is RESAMPLING_SCHEMES[name]


def test_scheme_table_has_the_four_schemes():
    assert SCHEME_NAMES == ["multinomial", "residual", "stratified", "systematic"]


@pytest.mark.parametrize("bad", ["bogus", "Systematic", "", None, ["systematic"]])
def test_get_resampling_scheme_unknown_name_lists_valid_names(bad):
    with pytest.raises(ValueError) as excinfo:
        get_resampling_scheme(bad)
    message = str(excinfo.value)
    for name in SCHEME_NAMES:
        assert repr(name) in message


EQUAL = np.zeros(10)
DEGENERATE = np.array([0.0] + [-np.inf] * 9)
HALF = np.array([0.0, -np.inf])  # ESS = 1 = 0.5 * N exactly


def test_should_resample_threshold_zero_never():
    assert not should_resample(EQUAL, 0.0)
    assert not should_resample(DEGENERATE, 0.0)
    assert not should_resample(HALF, 0.0)


def test_should_resample_threshold_one_always():
    assert should_resample(EQUAL, 1.0)
    assert should_resample(DEGENERATE, 1.0)
    assert should_resample(np.full(7, 1e6), 1.0)


def test_should_resample_threshold_half():
    assert not should_resample(EQUAL, 0.5)
    assert should_resample(DEGENERATE, 0.5)
    assert should_resample(HALF, 0.5)  # the comparison is ESS / N <= threshold
    # ESS of weights (1, 1, 1, 0.01, ...) is just above 3: 3 / 10 <= 0.5.
    assert should_resample(np.log([1, 1, 1] + [0.01] * 7), 0.5)
    # ESS of 6 equal and 4 tiny weights is about 6: 6 / 10 > 0.5.
    assert not should_resample(np.log([1.0] * 6 + [1e-3] * 4), 0.5)
