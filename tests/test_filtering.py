import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.misc import flatten
from autograd.scipy.special import logsumexp
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from statemix_sk.datasets import make_linear_gaussian
from statemix_sk.filtering import BootstrapProposal, particle_filter
from statemix_sk.kalman import kalman_filter
from statemix_sk.learned import (
    MixtureProposal,
    MixtureTransitionModel,
    _mixture_around,
    apply_mixture_network,
    init_mixture_network,
)
from statemix_sk.mixtures import mixture_log_density
from statemix_sk.models import LinearGaussianModel
from statemix_sk.networks import (
    Standardizer,
    make_mixture_head,
    standardize,
)
from statemix_sk.observations import LinearGaussianObservation
from statemix_sk.resampling import RESAMPLING_SCHEMES, get_resampling_scheme


def _random_linear_gaussian(seed, n_states, n_outputs):
    rng = np.random.default_rng(seed)
    A = 0.9 * np.linalg.qr(rng.standard_normal((n_states, n_states)))[0]
    H = rng.standard_normal((n_outputs, n_states))
    observation = LinearGaussianObservation(H, rng.uniform(0.3, 1.0, n_outputs))
    return LinearGaussianModel(A, rng.uniform(0.2, 0.6, n_states), observation)


class LearnedFilter:
    """A small StateMixNN filter on a linear-Gaussian model, for the tests."""

    def __init__(self, seed=0, n_states=2, n_components=2, covariance_type="diag"):
        self.model = _random_linear_gaussian(seed, n_states, n_states)
        rng = np.random.default_rng(seed)
        self.head = make_mixture_head(
            n_components,
            n_states,
            location_scale=0.5,
            initial_scale=0.5,
            covariance_type=covariance_type,
        )
        self.stats = Standardizer(np.zeros(n_states), np.ones(n_states))

        def network(n_inputs):
            # Move the output layer and the linear part away from zero so that
            # every parameter matters.
            params = init_mixture_network(self.head, n_inputs, (5,), rng)
            *hidden, (W, b) = params["layers"]
            linear = params["linear"]
            return {
                "layers": [*hidden, (W * 30, rng.normal(0, 0.3, b.shape))],
                "linear": rng.normal(0, 0.1, linear.shape),
            }

        self.params = {
            "transition": network(n_states),
            "proposal": network(2 * n_states),
        }

    def parts(self, params):
        model = MixtureTransitionModel(
            params["transition"],
            self.head,
            self.stats,
            self.model.observation,
            self.model.initial_mean,
            self.model.initial_scale,
        )
        return model, MixtureProposal(params["proposal"], self.head, self.stats)

    def run(self, params, Y, **kwargs):
        model, proposal = self.parts(params)
        return particle_filter(Y, model, proposal, **kwargs)


# --------------------------------------------------------------------------------------
# Invariants (hypothesis)
# --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:n_particles=1:UserWarning")
@given(
    seed=st.integers(0, 2**16),
    n_states=st.integers(1, 3),
    n_outputs=st.integers(1, 3),
    n_steps=st.integers(1, 8),
    n_particles=st.integers(1, 30),
    resampling=st.sampled_from(sorted(RESAMPLING_SCHEMES)),
    ess_threshold=st.sampled_from([0.0, 0.5, 1.0]),
    learned=st.booleans(),
    n_series=st.sampled_from([None, 1, 3]),
    missing_fraction=st.sampled_from([0.0, 0.3]),
)
def test_filter_invariants(
    seed,
    n_states,
    n_outputs,
    n_steps,
    n_particles,
    resampling,
    ess_threshold,
    learned,
    n_series,
    missing_fraction,
):
    if learned:
        learned_filter = LearnedFilter(seed, n_states)
        model, proposal = learned_filter.parts(learned_filter.params)
    else:
        model, proposal = _random_linear_gaussian(seed, n_states, n_outputs), None
    Y, _ = _random_linear_gaussian(
        seed, n_states, model.observation.n_outputs
    ).simulate(n_steps, n_sequences=n_series, random_state=seed)
    Y[np.random.default_rng(seed).random(Y.shape) < missing_fraction] = np.nan
    batch = () if n_series is None else (n_series,)
    kwargs = dict(
        n_particles=n_particles,
        resampling=resampling,
        ess_threshold=ess_threshold,
        random_state=seed,
        return_particles=True,
    )
    result = particle_filter(Y, model, proposal, **kwargs)
    assert np.all(np.isfinite(result.log_likelihood))
    assert np.shape(result.log_likelihood) == batch
    np.testing.assert_allclose(
        result.log_likelihood, np.sum(result.log_likelihood_increments, axis=-1)
    )
    assert result.log_likelihood_increments.shape == (*batch, n_steps)
    assert result.filtered_means.shape == (*batch, n_steps, n_states)
    assert result.filtered_scales.shape == (*batch, n_steps, n_states)
    assert np.all(np.isfinite(result.filtered_means))
    assert np.all(result.filtered_scales >= 0)
    assert result.particles.shape == (*batch, n_steps, n_particles, n_states)
    assert result.log_weights.shape == (*batch, n_steps, n_particles)
    np.testing.assert_allclose(np.exp(result.log_weights).sum(-1), 1.0, rtol=1e-12)
    assert np.all((result.ess >= 1 - 1e-9) & (result.ess <= n_particles + 1e-9))
    assert np.all((result.ancestors >= 0) & (result.ancestors < n_particles))
    assert np.all(result.resampling_log_weights[~result.resampled] == 0.0)
    if ess_threshold == 1.0:
        assert result.resampled.all()
    if ess_threshold == 0.0:
        assert not result.resampled.any()
    # A row with nothing observed contributes nothing.
    unobserved = np.isnan(Y).all(axis=-1)
    np.testing.assert_allclose(
        result.log_likelihood_increments[unobserved], 0.0, atol=1e-12
    )
    again = particle_filter(Y, model, proposal, **kwargs)
    np.testing.assert_array_equal(result.particles, again.particles)
    np.testing.assert_array_equal(result.log_likelihood, again.log_likelihood)


# --------------------------------------------------------------------------------------
# Against the Kalman filter
# --------------------------------------------------------------------------------------


def _likelihood_ratios(Y, model, kalman_log_likelihood, n_runs, proposal=None, **kw):
    log_likelihoods = np.array(
        [
            particle_filter(Y, model, proposal, random_state=run, **kw).log_likelihood
            for run in range(n_runs)
        ]
    )
    return np.exp(log_likelihoods - kalman_log_likelihood)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("resampling", "ess_threshold"),
    [("systematic", 1.0), ("multinomial", 1.0), ("stratified", 0.5)],
)
def test_bootstrap_likelihood_is_unbiased_for_the_kalman_likelihood(
    resampling, ess_threshold
):
    """Mean of Zhat / Z over 300 independent runs is within 3 standard errors of 1.

    Zhat is unbiased for Z (not log Zhat for log Z, which is biased low), so the
    ratio's sample mean is approximately normal around 1 with the sample standard
    error, when the ratio's variance is moderate: at this size (T = 15, N = 400)
    Var(log Zhat) is about 0.4, so the ratio is far from heavy-tailed. Three
    standard errors: a false alarm probability of 0.003 per case.
    """
    Y, _, model = make_linear_gaussian(15, random_state=0)
    exact = kalman_filter(Y, model).log_likelihood
    ratios = _likelihood_ratios(
        Y,
        model,
        exact,
        300,
        n_particles=400,
        resampling=resampling,
        ess_threshold=ess_threshold,
    )
    standard_error = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(ratios.mean() - 1.0) < 3 * standard_error
    assert standard_error < 0.1  # the test has power: it resolves a 30% bias


@pytest.mark.slow
def test_filtered_means_converge_to_kalman_at_rate_one_over_n():
    """Squared error to the Kalman means falls like 1/N.

    The error of a particle average is O(1/N) in mean square, so the slope of
    log(mean squared error) against log N is -1; over 30 runs per N the slope is
    estimated within about 0.1, so [-1.3, -0.7] is a wide acceptance band that a
    wrong rate (-0.5, or no convergence) misses.
    """
    Y, _, model = make_linear_gaussian(20, random_state=1)
    kalman_means = kalman_filter(Y, model).filtered_means
    sizes = np.array([100, 400, 1600])
    errors = [
        np.mean(
            [
                np.mean(
                    (
                        particle_filter(
                            Y, model, n_particles=n, random_state=run
                        ).filtered_means
                        - kalman_means
                    )
                    ** 2
                )
                for run in range(30)
            ]
        )
        for n in sizes
    ]
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert -1.3 < slope < -0.7


@pytest.mark.slow
def test_missing_observations_match_the_kalman_filter_that_skips_them():
    """All-NaN and partly-NaN rows: Zhat / Z still unbiased (see above for the bound).

    The proposal object is a learned-style one that must never be called at a
    step with a NaN; the bootstrap step replaces it there.
    """
    Y, _, model = make_linear_gaussian(15, random_state=2)
    Y[3] = np.nan
    Y[7, [0, 2]] = np.nan
    Y[11, 1] = np.nan
    exact = kalman_filter(Y, model)
    assert exact.log_likelihood_increments[3] == 0.0

    class BootstrapOnlyWhereObserved(BootstrapProposal):
        def propose(self, model, x_prev, y, rng, context):
            assert not np.isnan(y).any(), "the proposal was used on a missing row"
            return super().propose(model, x_prev, y, rng, context)

    ratios = _likelihood_ratios(
        Y,
        model,
        exact.log_likelihood,
        300,
        BootstrapOnlyWhereObserved(),
        n_particles=400,
    )
    standard_error = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(ratios.mean() - 1.0) < 3 * standard_error
    result = particle_filter(Y, model, n_particles=50, random_state=0)
    assert abs(result.log_likelihood_increments[3]) < 1e-12
    assert np.all(np.isfinite(result.filtered_means))


def test_a_proposal_that_handles_missing_entries_gets_partly_observed_steps():
    # Two series filtered together: at step 2 the first misses one entry and the
    # second all of them; at step 4 the reverse. A proposal that declares
    # handles_missing_entries sees the partly observed rows with their NaN (and
    # is used there), never a row with nothing observed (the transition is the
    # optimal proposal there); one that does not declare it sees neither.
    Y, _, model = make_linear_gaussian(6, 2, random_state=0)
    Y[0, 2, 0] = np.nan
    Y[1, 2] = np.nan
    Y[0, 4] = np.nan
    Y[1, 4, 1] = np.nan
    n_particles = 5

    class Recording(BootstrapProposal):
        def __init__(self):
            self.seen = []

        def propose(self, model, x_prev, y, rng, context):
            self.seen.append(np.array(y))
            return super().propose(model, x_prev, y, rng, context)

    class HandlesMissing(Recording):
        handles_missing_entries = True

    handles = HandlesMissing()
    particle_filter(Y, model, handles, n_particles=n_particles, random_state=0)
    assert len(handles.seen) == Y.shape[1]
    for t, y in enumerate(handles.seen):
        first, second = y[:n_particles], y[n_particles:]
        if t == 2:
            # The first series' row as given; zeros for the bootstrap step.
            np.testing.assert_array_equal(first, np.broadcast_to(Y[0, 2], first.shape))
            np.testing.assert_array_equal(second, 0.0)
        elif t == 4:
            np.testing.assert_array_equal(first, 0.0)
            np.testing.assert_array_equal(
                second, np.broadcast_to(Y[1, 4], second.shape)
            )
        else:
            assert not np.isnan(y).any()

    # Not declared: at steps 2 and 4 no series uses it, so it is not called.
    plain = Recording()
    particle_filter(Y, model, plain, n_particles=n_particles, random_state=0)
    assert len(plain.seen) == Y.shape[1] - 2
    assert not any(np.isnan(y).any() for y in plain.seen)


# --------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_gradient_without_resampling_matches_finite_differences(covariance_type):
    # With ess_threshold=0 nothing is resampled; with a fixed seed the component
    # choices are piecewise constant in the parameters, so the filter is smooth at
    # this point and check_grads' central differences apply.
    learned = LearnedFilter(seed=3, covariance_type=covariance_type)
    Y, _ = learned.model.simulate(5, random_state=3)

    def log_likelihood(params):
        return learned.run(
            params, Y, n_particles=6, ess_threshold=0.0, random_state=4
        ).log_likelihood

    # check_grads draws its random direction from numpy's global generator.
    np.random.seed(0)  # noqa: NPY002
    check_grads(log_likelihood, modes=["rev"], order=1)(learned.params)


@pytest.mark.parametrize("resampling", ["systematic", "multinomial"])
def test_gradient_with_resampling_matches_the_frozen_surrogate(resampling):
    # The frozen surrogate reuses the base run's ancestors and stop-gradient values:
    # a smooth function whose gradient at the base point is, by construction, the
    # stop-gradient estimator. Finite differences check it; and at the base point
    # its autograd gradient equals that of the live filter.
    learned = LearnedFilter(seed=5)
    Y, _ = learned.model.simulate(6, random_state=5)
    kwargs = dict(n_particles=8, resampling=resampling, random_state=6)
    base = learned.run(learned.params, Y, return_particles=True, **kwargs)
    assert base.resampled.all()

    def surrogate(params):
        return learned.run(params, Y, frozen=base, **kwargs).log_likelihood

    def live(params):
        return learned.run(params, Y, **kwargs).log_likelihood

    assert surrogate(learned.params) == base.log_likelihood
    np.random.seed(1)  # noqa: NPY002 (check_grads uses the global generator)
    check_grads(surrogate, modes=["rev"], order=1)(learned.params)
    np.testing.assert_allclose(
        flatten(grad(surrogate)(learned.params))[0],
        flatten(grad(live)(learned.params))[0],
        rtol=1e-12,
        atol=1e-12,
    )


def test_stop_gradient_terms_change_the_gradient_but_not_the_value():
    # Forward: the filter with stop-gradient terms is an ordinary particle filter.
    # Recompute its weights from the recorded particles and ancestors with the
    # plain formula (no stop-gradient terms) and compare.
    learned = LearnedFilter(seed=7)
    Y, _ = learned.model.simulate(6, random_state=7)
    n = 10
    result = learned.run(
        learned.params,
        Y,
        n_particles=n,
        ess_threshold=0.6,
        random_state=8,
        return_particles=True,
    )
    model, _ = learned.parts(learned.params)
    previous = model.sample_initial(n, np.random.default_rng(8))
    log_weights = np.full(n, -np.log(n))
    for t, y in enumerate(Y):
        ancestors = result.ancestors[t]
        x_prev, x = previous[ancestors], result.particles[t]
        carried = np.full(n, -np.log(n)) if result.resampled[t] else log_weights
        if not result.resampled[t]:
            np.testing.assert_array_equal(ancestors, np.arange(n))
        # The proposal is centred on the transition's mean, and sees its innovation.
        centre = model.transition_mean(x_prev)
        innovation = (
            y - model.observation.mean(centre)
        ) / model.observation.noise_scale
        q = _mixture_around(
            centre,
            learned.head,
            apply_mixture_network(
                learned.params["proposal"],
                np.concatenate([standardize(x_prev, learned.stats), innovation], 1),
            ),
        )
        log_w = (
            carried
            + model.observation.log_density(x, y)
            + model.transition_log_density(x, x_prev)
            - mixture_log_density(q, x)
        )
        increment = logsumexp(log_w)
        np.testing.assert_allclose(
            result.log_likelihood_increments[t], increment, rtol=1e-12
        )
        log_weights = log_w - increment
        np.testing.assert_allclose(result.log_weights[t], log_weights, atol=1e-12)
        previous = x


# --------------------------------------------------------------------------------------
# An auxiliary-filter step in the same loop
# --------------------------------------------------------------------------------------


class AuxiliaryProposal(BootstrapProposal):
    """Pitt and Shephard's auxiliary filter: eta_n = g(y | E[x_t | x_n])."""

    def first_stage_log_weights(self, model, particles, log_weights, y):
        return model.observation.log_density(model.transition_mean(particles), y)


def test_one_auxiliary_step_matches_the_formula():
    model = _random_linear_gaussian(11, 2, 2)
    Y, _ = model.simulate(1, random_state=11)
    n = 7
    result = particle_filter(
        Y,
        model,
        AuxiliaryProposal(),
        n_particles=n,
        random_state=12,
        return_particles=True,
    )
    assert result.resampled[0]
    rng = np.random.default_rng(12)
    x0 = model.sample_initial(n, rng)
    W = np.full(n, 1.0 / n)
    eta = np.array(
        [
            np.exp(model.observation.log_density(model.transition_mean(x[None]), Y[0]))[
                0
            ]
            for x in x0
        ]
    )
    v = W * eta
    ancestors = get_resampling_scheme("systematic")(v / v.sum(), rng)
    np.testing.assert_array_equal(result.ancestors[0], ancestors)
    x1 = result.particles[0]
    w = np.array(
        [
            np.exp(model.observation.log_density(x1[i][None], Y[0]))[0]
            / eta[ancestors[i]]
            for i in range(n)
        ]
    )
    expected_increment = np.log(v.sum()) + np.log(w.mean())
    np.testing.assert_allclose(
        result.log_likelihood_increments[0], expected_increment, rtol=1e-12
    )
    np.testing.assert_allclose(np.exp(result.log_weights[0]), w / w.sum(), rtol=1e-10)


def test_one_series_in_a_batch_equals_the_series_alone():
    learned = LearnedFilter(seed=9)
    Y, _ = learned.model.simulate(7, random_state=9)
    kwargs = dict(
        n_particles=12, ess_threshold=0.5, random_state=10, return_particles=True
    )
    alone = learned.run(learned.params, Y, **kwargs)
    batch = learned.run(learned.params, Y[None], **kwargs)
    for field_alone, field_batch in zip(alone, batch, strict=True):
        np.testing.assert_array_equal(field_batch[0], field_alone)


@pytest.mark.slow
def test_a_batch_with_different_missing_entries_per_series_is_unbiased():
    """Two series filtered together, each missing other entries at the same steps.

    At a step where one series misses an entry and the other does not, the first
    takes a bootstrap step and the second the auxiliary proposal with its
    first-stage weights. Each series' Zhat / Z must stay unbiased (3 standard
    errors, as above).
    """
    Y, _, model = make_linear_gaussian(15, n_sequences=2, random_state=4)
    Y[0, 4] = np.nan
    Y[1, 4, 1] = np.nan
    Y[0, 9, [0, 3]] = np.nan
    Y[1, 12] = np.nan
    exact = np.array([kalman_filter(y, model).log_likelihood for y in Y])
    log_likelihoods = np.array(
        [
            particle_filter(
                Y, model, AuxiliaryProposal(), n_particles=400, random_state=run
            ).log_likelihood
            for run in range(300)
        ]
    )
    ratios = np.exp(log_likelihoods - exact)
    standard_errors = ratios.std(axis=0, ddof=1) / np.sqrt(len(ratios))
    assert np.all(np.abs(ratios.mean(axis=0) - 1.0) < 3 * standard_errors)


@pytest.mark.slow
def test_auxiliary_filter_likelihood_is_unbiased():
    Y, _, model = make_linear_gaussian(15, random_state=3)
    exact = kalman_filter(Y, model).log_likelihood
    ratios = _likelihood_ratios(
        Y, model, exact, 300, AuxiliaryProposal(), n_particles=400
    )
    standard_error = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(ratios.mean() - 1.0) < 3 * standard_error


# --------------------------------------------------------------------------------------
# Numerics and bad input
# --------------------------------------------------------------------------------------


def test_an_outlier_far_from_every_particle_gives_a_finite_likelihood():
    Y, _, model = make_linear_gaussian(10, random_state=0)
    Y[5, 0] = 1e6
    result = particle_filter(Y, model, n_particles=50, random_state=0)
    assert np.isfinite(result.log_likelihood)
    assert np.all(np.isfinite(result.filtered_means))


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (lambda Y: Y[:, 0], "Y"),
        (lambda Y: Y[None, None], "Y"),
        (lambda Y: Y[:, :2], "features"),
        (lambda Y: np.where(np.arange(Y.size).reshape(Y.shape) == 3, np.inf, Y), "Y"),
        (lambda Y: Y[:0], "Y"),
    ],
)
def test_bad_observations_raise_naming_the_argument(change, name):
    Y, _, model = make_linear_gaussian(10, random_state=0)
    with pytest.raises(ValueError, match=name):
        particle_filter(change(Y), model, n_particles=5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"resampling": "bogus"}, "resampling"),
        ({"n_particles": 0}, "n_particles"),
        ({"n_particles": 2.5}, "n_particles"),
        ({"ess_threshold": 1.5}, "ess_threshold"),
        ({"ess_threshold": -0.1}, "ess_threshold"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    Y, _, model = make_linear_gaussian(5, random_state=0)
    with pytest.raises(ValueError, match=name):
        particle_filter(Y, model, **kwargs)


def test_frozen_must_come_from_a_run_with_particles():
    Y, _, model = make_linear_gaussian(5, random_state=0)
    plain = particle_filter(Y, model, n_particles=5, random_state=0)
    with pytest.raises(ValueError, match="frozen"):
        particle_filter(Y, model, n_particles=5, frozen=plain)
    full = particle_filter(
        Y, model, n_particles=5, random_state=0, return_particles=True
    )
    with pytest.raises(ValueError, match="frozen"):
        particle_filter(Y, model, n_particles=6, frozen=full)


def test_the_gradient_reaches_the_model_through_autograd_numpy():
    # A user-written model's parameters get gradients through the loop.
    Y, _, model = make_linear_gaussian(5, random_state=0)

    def log_likelihood(scale):
        class Scaled(LinearGaussianModel):
            def transition_mean(self, x_prev):
                return scale * anp.dot(x_prev, self.transition_matrix.T)

        scaled = Scaled(model.transition_matrix, model.process_noise, model.observation)
        return particle_filter(
            Y, scaled, n_particles=20, ess_threshold=0.0, random_state=0
        ).log_likelihood

    np.random.seed(2)  # noqa: NPY002 (check_grads uses the global generator)
    check_grads(log_likelihood, modes=["rev"], order=1)(1.0)
