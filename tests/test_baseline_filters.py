"""The baseline filters given the true model: bootstrap, APF, IAPF, locally optimal.

Their likelihood estimates against the Kalman filter, their weights against plain
loops over the formulas of :mod:`statemix_sk.baselines` (spec section 4), the
locally optimal proposal against the Kalman one-step posterior, a model written
against the protocol in this file, and the estimators' scikit-learn behaviour.
"""

import pickle

import autograd.numpy as anp
import numpy as np
import pytest
import scipy.stats
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from statemix_sk import (
    AuxiliaryFilter,
    BootstrapFilter,
    FilterResult,
    ImprovedAuxiliaryFilter,
    LinearGaussianModel,
    LinearGaussianObservation,
    LocallyOptimalFilter,
    Lorenz96Model,
    make_kuramoto,
    make_linear_gaussian,
)
from statemix_sk.baselines import (
    AuxiliaryProposal,
    ImprovedAuxiliaryProposal,
    LocallyOptimalProposal,
    check_locally_optimal_applies,
    pairwise_transition_log_density,
)
from statemix_sk.filtering import particle_filter
from statemix_sk.kalman import kalman_filter
from statemix_sk.models import simulate
from statemix_sk.resampling import systematic_resampling

ESTIMATORS = [
    BootstrapFilter,
    AuxiliaryFilter,
    ImprovedAuxiliaryFilter,
    LocallyOptimalFilter,
]

# --------------------------------------------------------------------------------------
# Models written in the test
# --------------------------------------------------------------------------------------


def _sine_mean(x_prev):
    """The user model's transition mean: ``0.8 x + 0.5 sin(x)`` per component."""
    return 0.8 * x_prev + 0.5 * anp.sin(x_prev)


class SineModel:
    """A model written against the protocol of statemix_sk.models, inheriting nothing.

    ``x_t = 0.8 x_{t-1} + 0.5 sin(x_{t-1}) + N(0, 0.4**2 I)`` in 2 states, observed
    through 3 linear outputs with noise 0.5. It has no ``process_noise``, so
    :func:`pairwise_transition_log_density` takes its generic path and the locally
    optimal filter does not apply.
    """

    n_states = 2
    noise = 0.4

    def __init__(self):
        self.observation = LinearGaussianObservation(
            [[1.0, 0.0], [0.5, 1.0], [0.0, -1.0]], noise_scale=0.5
        )
        self.initial_mean = np.zeros(2)
        self.initial_scale = np.ones(2)

    def sample_initial(self, n, rng):
        return self.initial_mean + self.initial_scale * rng.standard_normal((n, 2))

    def sample_transition(self, x_prev, rng):
        return _sine_mean(x_prev) + self.noise * rng.standard_normal(np.shape(x_prev))

    def transition_log_density(self, x, x_prev):
        z = (x - _sine_mean(x_prev)) / self.noise
        return (
            -0.5 * anp.sum(z**2, axis=-1) - 2 * np.log(self.noise) - np.log(2 * np.pi)
        )

    def transition_mean(self, x_prev):
        return _sine_mean(x_prev)


class SineModelWithNoise(SineModel):
    """The same model declaring its diagonal Gaussian noise: the fast paths apply."""

    @property
    def process_noise(self):
        return np.full(2, self.noise)


class RandomWalkWithoutMean:
    """A protocol model without ``transition_mean`` (the auxiliary filters need it)."""

    n_states = 1
    observation = LinearGaussianObservation(noise_scale=0.5, n_states=1)
    initial_mean = np.zeros(1)
    initial_scale = np.ones(1)

    def sample_initial(self, n, rng):
        return rng.standard_normal((n, 1))

    def sample_transition(self, x_prev, rng):
        return x_prev + 0.3 * rng.standard_normal(np.shape(x_prev))

    def transition_log_density(self, x, x_prev):
        z = (x - x_prev) / 0.3
        return -0.5 * anp.sum(z**2, axis=-1) - np.log(0.3) - 0.5 * np.log(2 * np.pi)


def _small_linear_gaussian(n_outputs=2):
    """Two states, a non-identity H and a full observation noise covariance."""
    angle = 0.4
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    )
    if n_outputs == 2:
        observation = LinearGaussianObservation(
            [[1.0, 0.5], [0.0, 1.0]], noise_covariance=[[0.5, 0.1], [0.1, 0.4]]
        )
    else:
        observation = LinearGaussianObservation([[1.0, -0.5]], noise_covariance=[[0.3]])
    return LinearGaussianModel(0.9 * rotation, [0.4, 0.6], observation)


# --------------------------------------------------------------------------------------
# Densities for the looped formulas, from scipy, one state at a time
# --------------------------------------------------------------------------------------


def _transition_parts(model):
    """Return ``(mean(x_prev), Q)`` of a test model's Gaussian transition, one row."""
    if isinstance(model, LinearGaussianModel):
        matrix = model.transition_matrix

        def mean(x_prev):
            return matrix @ x_prev

        return mean, np.diag(model.process_noise**2)
    return _sine_mean, np.diag(np.full(2, SineModel.noise**2))


def _log_f(model, x, x_prev):
    """``log f(x | x_prev)`` for one pair of states."""
    mean, covariance = _transition_parts(model)
    return scipy.stats.multivariate_normal(mean(x_prev), covariance).logpdf(x)


def _log_g(model, y, x):
    """``log g(y | x)`` for one state."""
    H = model.observation.observation_matrix
    R = model.observation.noise_covariance
    return scipy.stats.multivariate_normal(H @ x, R).logpdf(y)


# --------------------------------------------------------------------------------------
# 1. Unbiasedness against the Kalman filter
# --------------------------------------------------------------------------------------

PROPOSALS = {
    "bootstrap": lambda model: None,
    "auxiliary": lambda model: AuxiliaryProposal(),
    "improved_auxiliary": lambda model: ImprovedAuxiliaryProposal(),
    "locally_optimal": LocallyOptimalProposal,
}


@pytest.mark.parametrize("name", list(PROPOSALS))
def test_likelihood_estimate_is_unbiased_for_the_kalman_likelihood(name):
    """Mean of Zhat / Z over R = 400 independent runs within 3 standard errors of 1.

    Every filter here is an unbiased estimator of Z = p(y_1:T) (not log Z). The
    runs are 400 copies of the series filtered in one pass (a 3-D Y): each copy
    has its own particles, resampling and draws, so the 400 estimates are
    independent. At T = 12, two states and N = 100, Var(log Zhat) measured 0.08
    to 0.18 for these filters, so Var(Zhat / Z) = exp(Var log) - 1 <= 0.2 and the
    standard error is about sqrt(0.2 / 400) = 0.022: the ratio is far from
    heavy-tailed and its mean is near normal. Three standard errors: a false
    alarm probability of 0.003 per filter. The second assertion is the test's
    power: with a standard error below 0.05, any bias above 15% is outside the
    band (a forgotten first-stage correction is far larger).
    """
    Y, _, model = make_linear_gaussian(12, n_states=2, random_state=0)
    exact = kalman_filter(Y, model).log_likelihood
    copies = np.broadcast_to(Y, (400, *Y.shape))
    result = particle_filter(
        copies, model, PROPOSALS[name](model), n_particles=100, random_state=0
    )
    ratios = np.exp(result.log_likelihood - exact)
    standard_error = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(ratios.mean() - 1.0) < 3 * standard_error
    assert standard_error < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", ["improved_auxiliary", "locally_optimal"])
def test_likelihood_stays_unbiased_with_different_missing_entries_per_series(name):
    """Two series filtered together, each missing other entries at the same steps.

    At a step where one series misses an entry and the other does not, the IAPF
    takes a bootstrap step for the first (its first-stage weights masked) and
    the proposal for the second; the locally optimal proposal conditions the
    first on its observed entries. Each series' Zhat / Z must stay
    unbiased: 300 independent copies of the pair, 3 standard errors as above
    (the standard errors measured 0.015 to 0.035).
    """
    Y, _, model = make_linear_gaussian(12, 2, n_states=2, random_state=4)
    Y[0, 4] = np.nan
    Y[1, 4, 1] = np.nan
    Y[0, 8, 0] = np.nan
    Y[1, 10] = np.nan
    exact = np.array([kalman_filter(y, model).log_likelihood for y in Y])
    copies = np.concatenate([Y] * 300)
    log_likelihoods = particle_filter(
        copies, model, PROPOSALS[name](model), n_particles=100, random_state=0
    ).log_likelihood.reshape(300, 2)
    ratios = np.exp(log_likelihoods - exact)
    standard_errors = ratios.std(axis=0, ddof=1) / np.sqrt(len(ratios))
    assert np.all(np.abs(ratios.mean(axis=0) - 1.0) < 3 * standard_errors)
    assert np.all(standard_errors < 0.1)


# --------------------------------------------------------------------------------------
# 2. Exact weights against looped formulas
# --------------------------------------------------------------------------------------


def _auxiliary_probabilities(model, previous, weights, y):
    """APF: ``v_m = W_m g(y | mu_m)``, normalised; also ``eta``."""
    mean, _ = _transition_parts(model)
    eta = np.array([np.exp(_log_g(model, y, mean(x))) for x in previous])
    v = np.array([weights[m] * eta[m] for m in range(len(previous))])
    return v / v.sum(), {"eta": eta, "total": v.sum()}


def _auxiliary_weights(model, previous, weights, y, particles, ancestors, extra):
    """APF: ``w_n = g(y | x_n) / eta_a``, increment ``log(sum v) + log(mean w)``."""
    n = len(particles)
    w = np.array(
        [
            np.exp(_log_g(model, y, particles[i])) / extra["eta"][ancestors[i]]
            for i in range(n)
        ]
    )
    return np.log(w / w.sum()), np.log(extra["total"]) + np.log(w.sum() / n)


def _improved_probabilities(model, previous, weights, y):
    """IAPF: ``lambda_m ~ g(y|mu_m) sum_i W_i f(mu_m|x^i) / sum_i f(mu_m|x^i)``."""
    mean, _ = _transition_parts(model)
    n = len(previous)
    lam = np.empty(n)
    for m in range(n):
        mu = mean(previous[m])
        weighted = plain = 0.0
        for i in range(n):
            f = np.exp(_log_f(model, mu, previous[i]))
            weighted += weights[i] * f
            plain += f
        lam[m] = np.exp(_log_g(model, y, mu)) * weighted / plain
    return lam / lam.sum(), {"lambda": lam / lam.sum()}


def _improved_weights(model, previous, weights, y, particles, ancestors, extra):
    """IAPF: ``w = g(y|x) sum_i W_i f(x|x^i) / sum_i lambda_i f(x|x^i)``."""
    n = len(particles)
    w = np.empty(n)
    for j in range(n):
        weighted = mixture = 0.0
        for i in range(n):
            f = np.exp(_log_f(model, particles[j], previous[i]))
            weighted += weights[i] * f
            mixture += extra["lambda"][i] * f
        w[j] = np.exp(_log_g(model, y, particles[j])) * weighted / mixture
    return np.log(w / w.sum()), np.log(w.sum() / n)


LOOPED = {
    "auxiliary": (AuxiliaryProposal, _auxiliary_probabilities, _auxiliary_weights),
    "improved_auxiliary": (
        ImprovedAuxiliaryProposal,
        _improved_probabilities,
        _improved_weights,
    ),
}


@pytest.mark.parametrize("n_series", [None, 3])
@pytest.mark.parametrize("model_kind", ["linear_gaussian", "user_model"])
@pytest.mark.parametrize("name", list(LOOPED))
def test_auxiliary_weights_match_looped_formulas(name, model_kind, n_series):
    """Every step's ancestors, particles, log-weights and increment, to 1e-10.

    The filter runs with N = 4 over 3 steps (one series, or three in one 3-D Y).
    From the particles and log-weights it returned for step t - 1 the loops give
    the ancestor probabilities of step t; the ancestors must be the systematic
    draw with those probabilities, and the particles the transition draws from
    the chosen parents, both from the same generator in the loop's order
    (initial states, then per step the series' resampling in turn and one
    transition draw for all rows). From the returned particles and ancestors the
    loops give the normalised log-weights and the log-likelihood increment. The
    loops work in probability space with scipy's densities; with N = 4 and these
    moderate densities their rounding is near 1e-15 relative, so 1e-10 is an
    exact comparison. The user model (no process_noise) takes the generic path
    of the pairwise densities inside the IAPF, the linear-Gaussian one the fast
    path.
    """
    proposal_class, probabilities, weights_of = LOOPED[name]
    model = _small_linear_gaussian() if model_kind == "linear_gaussian" else SineModel()
    n_particles, n_steps, seed = 4, 3, 5
    Y, _ = simulate(model, n_steps, n_sequences=n_series, random_state=seed)
    proposal = proposal_class()
    result = particle_filter(
        Y,
        model,
        proposal,
        n_particles=n_particles,
        random_state=seed + 1,
        return_particles=True,
    )
    if n_series is None:
        Y, result = Y[None], FilterResult(*(field[None] for field in result))
    n_series, n_states = len(Y), model.n_states
    assert result.resampled.all()

    rng = np.random.default_rng(seed + 1)
    previous = model.sample_initial(n_series * n_particles, rng).reshape(
        n_series, n_particles, n_states
    )
    log_weights = np.full((n_series, n_particles), -np.log(n_particles))
    offsets = (np.arange(n_series) * n_particles)[:, None]
    for t in range(n_steps):
        looped = [
            probabilities(model, previous[b], np.exp(log_weights[b]), Y[b, t])
            for b in range(n_series)
        ]
        # The first-stage weights make W eta the ancestor probabilities, up to a
        # constant per series.
        log_eta = proposal.first_stage_log_weights(
            model,
            previous.reshape(-1, n_states),
            log_weights,
            np.repeat(Y[:, t], n_particles, axis=0),
        ).reshape(n_series, n_particles)
        for b in range(n_series):
            difference = log_eta[b] + log_weights[b] - np.log(looped[b][0])
            np.testing.assert_allclose(difference, difference[0], rtol=0, atol=1e-10)
            np.testing.assert_array_equal(
                result.ancestors[b, t], systematic_resampling(looped[b][0], rng)
            )
        rows = (result.ancestors[:, t] + offsets).ravel()
        drawn = model.sample_transition(previous.reshape(-1, n_states)[rows], rng)
        np.testing.assert_allclose(
            drawn, result.particles[:, t].reshape(-1, n_states), rtol=1e-13
        )
        for b in range(n_series):
            expected_log_weights, expected_increment = weights_of(
                model,
                previous[b],
                np.exp(log_weights[b]),
                Y[b, t],
                result.particles[b, t],
                result.ancestors[b, t],
                looped[b][1],
            )
            np.testing.assert_allclose(
                result.log_weights[b, t], expected_log_weights, rtol=0, atol=1e-10
            )
            np.testing.assert_allclose(
                result.log_likelihood_increments[b, t],
                expected_increment,
                rtol=0,
                atol=1e-10,
            )
        previous, log_weights = result.particles[:, t], result.log_weights[:, t]


@pytest.mark.parametrize(
    "model",
    [
        _small_linear_gaussian(),
        SineModelWithNoise(),
        SineModel(),
        Lorenz96Model(6, process_noise=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
    ],
    ids=["linear_gaussian", "user_fast_path", "user_generic_path", "lorenz96"],
)
def test_pairwise_transition_log_density_matches_the_row_wise_density(model):
    """Entry (m, i) is ``log f(x[m] | x_prev[i])``, for a non-square (5, 4) case.

    The fast path expands ``-|a - b|^2 / 2`` as ``a.b - |a|^2 / 2 - |b|^2 / 2`` in
    whitened coordinates, whose rounding error is a few ``eps * (|a|^2 + |b|^2)``;
    the bound below is ten times that. The generic path calls the model's own
    density on the pairs: equal to rounding.
    """
    rng = np.random.default_rng(0)
    scale = 4.0 if isinstance(model, Lorenz96Model) else 1.5
    x = model.initial_mean + scale * rng.standard_normal((5, model.n_states))
    x_prev = model.initial_mean + scale * rng.standard_normal((4, model.n_states))
    pairs = pairwise_transition_log_density(model, x, x_prev)
    expected = np.array(
        [
            [model.transition_log_density(x[[m]], x_prev[[i]])[0] for i in range(4)]
            for m in range(5)
        ]
    )
    assert pairs.shape == (5, 4)
    noise = getattr(model, "process_noise", None)
    if noise is None:
        np.testing.assert_allclose(pairs, expected, rtol=1e-13)
    else:
        squared = np.sum((x / noise) ** 2, 1)[:, None] + np.sum(
            (model.transition_mean(x_prev) / noise) ** 2, 1
        )
        bound = 10 * np.finfo(float).eps * squared.max()
        np.testing.assert_allclose(pairs, expected, rtol=0, atol=bound)
    if isinstance(model, SineModelWithNoise):
        # The fast path equals the generic path of the same model.
        generic = pairwise_transition_log_density(SineModel(), x, x_prev)
        np.testing.assert_allclose(pairs, generic, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# 3. The locally optimal filter
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [_small_linear_gaussian(1), SineModelWithNoise()],
    ids=["linear_gaussian_one_output", "user_model"],
)
def test_locally_optimal_proposal_is_the_kalman_one_step_posterior(model):
    """``q(x | x_prev, y) = N(x; m_post, P_post)`` and ``g f / q = p(y | x_prev)``.

    The closed form is written in information form, not as the library's gain:
    ``P_post = (Q^-1 + H' R^-1 H)^-1``, ``m_post = P_post (Q^-1 m + H' R^-1 y)``
    with ``m`` the transition mean. Exact (1e-10): ``log q`` at the drawn states,
    recovered from the returned ratio as ``log f - ratio``, and the weight
    ``g f / q``, which must be ``N(y; H m, H Q H' + R)`` whatever state is drawn.
    Statistical: 20,000 draws from one ``x_prev``, whitened with the closed form,
    must have mean 0 and covariance I: each mean entry has standard error
    1/sqrt(n) = 0.0071, each covariance entry at most sqrt(2/n) = 0.01; 4.5 of
    them (a false alarm chance near 1e-5 per entry).
    """
    rng = np.random.default_rng(3)
    mean_of, Q = _transition_parts(model)
    H = model.observation.observation_matrix
    R = model.observation.noise_covariance
    n_outputs = H.shape[0]
    proposal = LocallyOptimalProposal(model)
    x_prev = rng.standard_normal((6, 2))
    y = rng.standard_normal((6, n_outputs))
    x, log_ratio = proposal.propose(model, x_prev, y, rng, None)
    information = np.linalg.inv(Q) + H.T @ np.linalg.solve(R, H)
    covariance = np.linalg.inv(information)
    for row in range(6):
        m = mean_of(x_prev[row])
        centre = covariance @ (np.linalg.solve(Q, m) + H.T @ np.linalg.solve(R, y[row]))
        log_q = _log_f(model, x[row], x_prev[row]) - log_ratio[row]
        expected_log_q = scipy.stats.multivariate_normal(centre, covariance).logpdf(
            x[row]
        )
        assert log_q == pytest.approx(expected_log_q, abs=1e-10)
        evidence = scipy.stats.multivariate_normal(H @ m, H @ Q @ H.T + R).logpdf(
            y[row]
        )
        assert _log_g(model, y[row], x[row]) + log_ratio[row] == pytest.approx(
            evidence, abs=1e-10
        )

    n = 20_000
    draws, _ = proposal.propose(
        model, np.repeat(x_prev[:1], n, 0), np.repeat(y[:1], n, 0), rng, None
    )
    m = mean_of(x_prev[0])
    centre = covariance @ (np.linalg.solve(Q, m) + H.T @ np.linalg.solve(R, y[0]))
    whitened = np.linalg.solve(np.linalg.cholesky(covariance), (draws - centre).T).T
    assert np.all(np.abs(whitened.mean(0)) < 4.5 / np.sqrt(n))
    assert np.all(np.abs(np.cov(whitened.T) - np.eye(2)) < 4.5 * np.sqrt(2 / n))


def test_locally_optimal_proposal_conditions_on_the_observed_entries():
    """A partly observed ``y``: the closed form with H's observed rows, R's block.

    Three outputs (a full R, so the block matters), rows missing other entries,
    one missing all of them. Exact as above (1e-10): ``log q`` at the drawn
    states and the weight ``g f / q``, which must be
    ``N(y_o; H_o m, H_o Q H_o' + R_oo)``; with nothing observed the proposal is
    the transition and the weight is 1 (log 0).
    """
    rng = np.random.default_rng(5)
    observation = LinearGaussianObservation(
        [[1.0, 0.5], [0.0, 1.0], [0.7, -0.3]],
        noise_covariance=[[0.5, 0.1, 0.05], [0.1, 0.4, 0.0], [0.05, 0.0, 0.3]],
    )
    model = LinearGaussianModel(np.diag([0.9, 0.8]), [0.4, 0.6], observation)
    mean_of, Q = _transition_parts(model)
    H = observation.observation_matrix
    R = observation.noise_covariance
    proposal = LocallyOptimalProposal(model)
    patterns = np.array(
        [
            [True, True, True],
            [True, False, True],
            [False, True, False],
            [False, False, False],
            [True, False, True],
        ]
    )
    x_prev = rng.standard_normal((len(patterns), 2))
    y = np.where(patterns, rng.standard_normal(patterns.shape), np.nan)
    x, log_ratio = proposal.propose(model, x_prev, y, rng, None)
    for row, observed in enumerate(patterns):
        m = mean_of(x_prev[row])
        H_o, R_o, y_o = H[observed], R[np.ix_(observed, observed)], y[row, observed]
        information = np.linalg.inv(Q) + H_o.T @ np.linalg.solve(R_o, H_o)
        covariance = np.linalg.inv(information)
        centre = covariance @ (
            np.linalg.solve(Q, m) + H_o.T @ np.linalg.solve(R_o, y_o)
        )
        log_q = _log_f(model, x[row], x_prev[row]) - log_ratio[row]
        expected = scipy.stats.multivariate_normal(centre, covariance).logpdf(x[row])
        assert log_q == pytest.approx(expected, abs=1e-10)
        log_g = observation.log_density(x[row : row + 1], y[row])[0]
        evidence = (
            scipy.stats.multivariate_normal(H_o @ m, H_o @ Q @ H_o.T + R_o).logpdf(y_o)
            if observed.any()
            else 0.0
        )
        assert log_g + log_ratio[row] == pytest.approx(evidence, abs=1e-10)


def _squared_differences_to(kalman_means, Y, model, proposal):
    """Mean squared difference of the filtered means to ``kalman_means``.

    Per run, for 50 independent runs (copies of ``Y`` in a 3-D batch), at
    N = 100 and N = 1600: ``{N: array of 50}``.
    """
    copies = np.broadcast_to(Y, (50, *Y.shape))
    errors = {}
    for n_particles in (100, 1600):
        means = particle_filter(
            copies, model, proposal, n_particles=n_particles, random_state=0
        ).filtered_means
        errors[n_particles] = np.mean((means - kalman_means) ** 2, axis=(1, 2))
    return errors


def _with_missing_entries(Y, fraction, seed=6):
    """``Y`` with each entry missing with probability ``fraction``."""
    Y = Y.copy()
    Y[np.random.default_rng(seed).random(Y.shape) < fraction] = np.nan
    return Y


@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_locally_optimal_filter_with_missing_entries_is_the_masked_kalman_filter(
    fraction,
):
    """30% and 90% of the entries missing at random (at 90% no row is complete).

    The filtered means against the Kalman filter that skips the missing entries:
    the same rate test as above (ratio of mean squared differences at N = 1600
    and N = 100 in (1/64, 1/4)), and the likelihood estimate unbiased for the
    exact one (400 copies, 3 standard errors, as in section 1). The proposal is
    used at partly observed steps, so the filter is not the bootstrap filter:
    with the same seed, its log-likelihood and means differ from the bootstrap
    filter's, and its estimates of Z vary less (measured: standard deviation
    of Zhat / Z 0.48 against 0.54 at 30%, 0.097 against 0.109 at 90%).
    """
    Y, _, model = make_linear_gaussian(15, n_states=2, random_state=3)
    Y = _with_missing_entries(Y, fraction)
    if fraction == 0.9:
        assert np.isnan(Y).any(axis=1).all()
    exact = kalman_filter(Y, model)
    proposal = LocallyOptimalProposal(model)
    errors = _squared_differences_to(exact.filtered_means, Y, model, proposal)
    ratio = errors[1600].mean() / errors[100].mean()
    assert 1 / 64 < ratio < 1 / 4

    copies = np.broadcast_to(Y, (400, *Y.shape))
    ratios = {}
    for name, one in (("optimal", proposal), ("bootstrap", None)):
        result = particle_filter(copies, model, one, n_particles=100, random_state=1)
        ratios[name] = np.exp(result.log_likelihood - exact.log_likelihood)
    standard_error = ratios["optimal"].std(ddof=1) / np.sqrt(400)
    assert abs(ratios["optimal"].mean() - 1.0) < 3 * standard_error
    assert standard_error < 0.05
    assert not np.array_equal(ratios["optimal"], ratios["bootstrap"])


def test_locally_optimal_filtered_means_converge_to_kalman_at_rate_one_over_n():
    """Mean squared difference to the Kalman means: ratio at N = 1600 over N = 100.

    A particle average has mean squared error c / N + O(1 / N^2), so the ratio is
    about 100 / 1600 = 1/16; a filter that converged at 1/sqrt(N) would give 1/4,
    one that converged elsewhere (a wrong weight) about 1. The band
    (1/64, 1/4) is a rate exponent in (0.5, 1.5), half a unit either side of 1.
    Each mean squared error is averaged over 50 independent runs (copies in a
    3-D Y) of 15 steps. From the runs' spread, the standard error of the log of
    each mean is its relative standard error, and that of the log-ratio combines
    the two; the last assertion is the test's power: below log(4) / 3 = 0.46, so
    that the exact rate lies at least three standard errors inside either end of
    the band (it measured 0.10, with the ratio at 0.062).
    """
    Y, _, model = make_linear_gaussian(15, n_states=2, random_state=3)
    kalman_means = kalman_filter(Y, model).filtered_means
    proposal = LocallyOptimalProposal(model)
    errors = _squared_differences_to(kalman_means, Y, model, proposal)
    ratio = errors[1600].mean() / errors[100].mean()
    assert 1 / 64 < ratio < 1 / 4
    log_standard_errors = [
        one.std(ddof=1) / one.mean() / np.sqrt(one.size) for one in errors.values()
    ]
    assert np.hypot(*log_standard_errors) < np.log(4) / 3


# --------------------------------------------------------------------------------------
# 4. A user-written model with every estimator
# --------------------------------------------------------------------------------------


# Thirty particles may collapse at a step: filter's DegeneracyWarning is expected.
@pytest.mark.filterwarnings("ignore::statemix_sk.DegeneracyWarning")
@pytest.mark.parametrize(
    ("model_class", "estimator_class"),
    [(SineModelWithNoise, one) for one in ESTIMATORS]
    + [(SineModel, one) for one in ESTIMATORS[:3]],
)
def test_a_user_written_model_works_with_every_estimator(model_class, estimator_class):
    model = model_class()
    Y, _ = simulate(model, 15, n_sequences=2, random_state=0)
    estimator = estimator_class(model, n_particles=30, random_state=0)
    assert estimator.fit(Y) is estimator
    assert estimator.n_states_ == 2 and estimator.n_features_in_ == 3
    states = estimator.predict(Y)
    assert states.shape == (2, 15, 2) and np.all(np.isfinite(states))
    assert estimator.predict(Y[0]).shape == (15, 2)
    increments = estimator.score_samples(Y)
    assert increments.shape == (2, 15) and np.all(np.isfinite(increments))
    # score is the log-likelihood per observed step: the increments' sum over 30.
    assert estimator.score(Y) == pytest.approx(increments.sum() / 30, rel=1e-12)
    result = estimator.filter(Y)
    assert isinstance(result, FilterResult)
    assert result.filtered_means.shape == (2, 15, 2)
    assert np.all(np.isfinite(result.log_likelihood))
    assert estimator.filter(Y[0]).filtered_means.shape == (15, 2)
    sampled_Y, sampled_X = estimator.sample(5, 2)
    assert sampled_Y.shape == (2, 5, 3) and sampled_X.shape == (2, 5, 2)


def test_locally_optimal_filter_names_what_the_model_lacks():
    Y, _ = simulate(SineModel(), 10, random_state=0)
    with pytest.raises(ValueError, match=r"SineModel .* lacks process_noise"):
        LocallyOptimalFilter(SineModel()).fit(Y)
    with pytest.raises(ValueError, match="lacks process_noise"):
        LocallyOptimalProposal(SineModel())
    # A non-linear observation (the Kuramoto experiment's sin / cos).
    Y, _, kuramoto = make_kuramoto(10, random_state=0)
    estimator = LocallyOptimalFilter(kuramoto)
    with pytest.raises(
        ValueError, match="GaussianObservation lacks observation_matrix"
    ):
        estimator.fit(Y)
    # The failed fit leaves the estimator unfitted.
    with pytest.raises(NotFittedError):
        estimator.predict(Y)
    with pytest.raises(ValueError, match="observation_matrix"):
        check_locally_optimal_applies(kuramoto)


def test_auxiliary_filters_need_the_transition_mean_and_the_bootstrap_does_not():
    model = RandomWalkWithoutMean()
    Y, _ = simulate(model, 10, random_state=0)
    states = BootstrapFilter(model, n_particles=20, random_state=0).fit(Y).predict(Y)
    assert states.shape == (10, 1) and np.all(np.isfinite(states))
    for estimator_class in (AuxiliaryFilter, ImprovedAuxiliaryFilter):
        with pytest.raises(ValueError, match="transition_mean"):
            estimator_class(model).fit(Y)
    with pytest.raises(ValueError, match="transition_mean"):
        LocallyOptimalFilter(model).fit(Y)


# --------------------------------------------------------------------------------------
# 5. Estimator behaviour
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    """Three series of 12 steps of a 2-state linear-Gaussian model, and the model."""
    Y, _, model = make_linear_gaussian(12, 3, n_states=2, random_state=0)
    return Y, model


def _fitted(estimator_class, data, **params):
    Y, model = data
    return estimator_class(
        model, **{"n_particles": 20, "random_state": 0, **params}
    ).fit(Y)


# Seven particles may collapse at a step: filter's DegeneracyWarning is expected.
@pytest.mark.filterwarnings("ignore::statemix_sk.DegeneracyWarning")
@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_clone_and_params(estimator_class, data):
    estimator = _fitted(estimator_class, data)
    params = estimator.get_params()
    assert params["n_particles"] == 20 and params["random_state"] == 0
    assert params["model"] is data[1]
    assert ("ess_threshold" in params) == (
        estimator_class in (BootstrapFilter, LocallyOptimalFilter)
    )
    copy = clone(estimator)
    assert not hasattr(copy, "model_")
    assert copy.get_params().keys() == params.keys()
    assert copy.n_particles == 20
    assert copy.set_params(n_particles=7, resampling="multinomial") is copy
    assert copy.n_particles == 7 and copy.resampling == "multinomial"
    assert estimator.n_particles == 20
    # The new parameters are those the refitted estimator filters with.
    assert (
        copy.fit(data[0]).filter(data[0], return_particles=True).particles.shape[-2]
        == 7
    )


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_pickle_round_trip_predicts_identically(estimator_class, data):
    estimator = _fitted(estimator_class, data)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.predict(data[0]), estimator.predict(data[0]))
    assert restored.score(data[0]) == estimator.score(data[0])


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_predict_is_deterministic_and_fixed_by_random_state(estimator_class, data):
    Y = data[0]
    estimator = _fitted(estimator_class, data)
    first = estimator.predict(Y)
    np.testing.assert_array_equal(estimator.predict(Y), first)
    np.testing.assert_array_equal(_fitted(estimator_class, data).predict(Y), first)
    other = _fitted(estimator_class, data, random_state=1).predict(Y)
    assert not np.array_equal(other, first)


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
@pytest.mark.parametrize(
    "method", ["predict", "transform", "score", "score_samples", "filter"]
)
def test_methods_need_a_fit(estimator_class, method, data):
    with pytest.raises(NotFittedError):
        getattr(estimator_class(data[1]), method)(data[0])


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_a_wrong_feature_count_raises_and_a_failed_fit_changes_nothing(
    estimator_class, data
):
    Y, model = data
    wider = np.concatenate([Y, Y[..., :1]], axis=-1)
    fresh = estimator_class(model, n_particles=20, random_state=0)
    with pytest.raises(ValueError, match="3 features, but the model's observation"):
        fresh.fit(wider)
    assert not hasattr(fresh, "n_features_in_")
    estimator = _fitted(estimator_class, data)
    before = estimator.predict(Y)
    for bad in (wider, wider[0], list(wider)):
        with pytest.raises(ValueError, match="3 features, but the model's observation"):
            estimator.fit(bad)
        assert estimator.n_features_in_ == 2
    np.testing.assert_array_equal(estimator.predict(Y), before)
    for bad in (Y[..., :1], Y[0, :, :1], list(Y[..., :1])):
        with pytest.raises(
            ValueError, match=r"1 features, but .* expecting 2 features"
        ):
            estimator.predict(bad)


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_missing_rows_give_finite_predictions(estimator_class, data):
    Y = data[0].copy()
    Y[0, 3] = np.nan  # a whole row
    Y[1, 5, 0] = np.nan  # one entry
    Y[2, 0] = np.nan  # the first row
    estimator = _fitted(estimator_class, data)
    for structure in (Y, Y[0], list(Y)):
        states = estimator.predict(structure)
        assert np.all(np.isfinite(np.asarray(states)))
    increments = estimator.score_samples(Y)
    assert np.all(np.isfinite(increments))
    # A row with nothing observed contributes nothing to the likelihood.
    assert increments[0, 3] == 0.0 and increments[2, 0] == 0.0
    assert np.isfinite(estimator.score(Y))


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_3d_and_list_input_give_their_structure_back(estimator_class, data):
    Y = data[0]
    estimator = _fitted(estimator_class, data)
    stacked = estimator.predict(Y)
    assert stacked.shape == (3, 12, 2)
    # A list of equal-length series is the same padded batch: the same numbers.
    as_list = estimator.predict(list(Y))
    assert isinstance(as_list, list) and len(as_list) == 3
    for one, row in zip(as_list, stacked, strict=True):
        np.testing.assert_array_equal(one, row)
    # Ragged lists come back ragged, equal to the NaN-padded 3-D batch cut to length.
    ragged = [Y[0], Y[1][:7], Y[2][:10]]
    padded = Y.copy()
    padded[1, 7:] = np.nan
    padded[2, 10:] = np.nan
    states, increments = estimator.predict(ragged), estimator.score_samples(ragged)
    expected_states = estimator.predict(padded)
    expected_increments = estimator.score_samples(padded)
    for index, one in enumerate(ragged):
        assert states[index].shape == (len(one), 2)
        np.testing.assert_array_equal(states[index], expected_states[index, : len(one)])
        np.testing.assert_array_equal(
            increments[index], expected_increments[index, : len(one)]
        )
    results = estimator.filter(ragged)
    assert isinstance(results, list) and len(results) == 3
    assert [len(one.filtered_means) for one in results] == [12, 7, 10]
    batch = estimator.filter(Y)
    assert isinstance(batch, FilterResult)
    assert batch.filtered_means.shape == (3, 12, 2)
    assert batch.log_likelihood.shape == (3,)
