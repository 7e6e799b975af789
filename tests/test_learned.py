import autograd.numpy as anp
import numpy as np
import pytest

from statemix_sk.datasets import make_lorenz96
from statemix_sk.filtering import particle_filter
from statemix_sk.learned import (
    MixtureProposal,
    MixtureTransitionModel,
    StateMixSpec,
    expand_components,
    init_mixture_network,
    locally_optimal_gain,
    periodic_coordinates,
)
from statemix_sk.models import simulate
from statemix_sk.networks import Standardizer, make_mixture_head
from statemix_sk.observations import (
    GaussianObservation,
    LinearGaussianObservation,
    phase_observation,
)


@pytest.fixture(params=["diag", "full"])
def learned(request):
    Y, _, model = make_lorenz96(30, random_state=0)
    spread = np.std(np.diff(Y, axis=0), axis=0)
    head = make_mixture_head(
        3,
        10,
        location_scale=spread,
        initial_scale=spread,
        covariance_type=request.param,
    )
    stats = Standardizer(Y.mean(0), Y.std(0))
    rng = np.random.default_rng(0)
    transition = MixtureTransitionModel(
        init_mixture_network(head, 10, (16, 16), rng),
        head,
        stats,
        model.observation,
        model.initial_mean,
        model.initial_scale,
    )
    proposal = MixtureProposal(
        init_mixture_network(head, 20, (16, 16), rng), head, stats
    )
    return Y, transition, proposal, spread


def test_an_untrained_transition_is_a_random_walk_with_the_data_spread(learned):
    Y, transition, _, spread = learned
    mixture = transition.transition_mixture(Y)
    # The output layer starts at 0.01 of its Glorot size, so increments are a
    # small fraction of the spread and scales are close to it.
    np.testing.assert_allclose(
        mixture.means, np.repeat(Y[:, None], 3, 1), atol=0.1 * spread.max()
    )
    np.testing.assert_allclose(
        transition.transition_mean(Y), Y, atol=0.1 * spread.max()
    )
    diagonal = (
        mixture.scales
        if mixture.scales.ndim == 3
        else np.diagonal(mixture.scales, axis1=-2, axis2=-1)
    )
    np.testing.assert_allclose(
        diagonal, np.broadcast_to(spread, diagonal.shape), rtol=0.1
    )


def test_learned_model_and_proposal_run_in_the_loop_and_simulate(learned):
    Y, transition, proposal, _ = learned
    result = particle_filter(Y, transition, proposal, n_particles=20, random_state=0)
    assert np.isfinite(result.log_likelihood)
    Y_sim, X_sim = simulate(transition, 12, n_sequences=2, random_state=0)
    assert Y_sim.shape == (2, 12, 10) and np.all(np.isfinite(X_sim))
    x_prev = Y[:5]
    x = transition.sample_transition(x_prev, np.random.default_rng(0))
    assert x.shape == (5, 10)
    assert np.all(np.isfinite(transition.transition_log_density(x, x_prev)))


def test_the_spec_starts_at_a_linear_model_and_its_locally_optimal_proposal():
    # With the dense parts zeroed, the transition is exactly the linear model
    # x_t = x + (A - I)(x - mean) and the proposal's mean is m + K (y - H m),
    # m the transition's mean, K the Kalman gain of that model: the start the
    # estimator builds from the data.
    rng = np.random.default_rng(3)
    n_states, n_outputs = 3, 2
    H = rng.standard_normal((n_outputs, n_states))
    observation = LinearGaussianObservation(H, [0.5, 0.8])
    A = 0.9 * np.linalg.qr(rng.standard_normal((n_states, n_states)))[0]
    stats = Standardizer(rng.standard_normal(n_states), rng.uniform(1, 2, n_states))
    process = np.array([0.3, 0.4, 0.5])
    head = make_mixture_head(2, n_states, location_scale=0.7, initial_scale=process)
    gain, posterior = locally_optimal_gain(H, observation.noise_covariance, process)
    spec = StateMixSpec(
        head,
        make_mixture_head(2, n_states, location_scale=0.7, initial_scale=posterior),
        stats,
        observation,
        np.zeros(n_states),
        np.ones(n_states),
        (4,),
        transition_drift=(A - np.eye(n_states)) * stats.scale,
        proposal_gain=gain * observation.noise_scale,
    )
    params = spec.init_params(rng)
    for network in params.values():
        network["layers"] = [(0 * W, 0 * b) for W, b in network["layers"]]
    model, proposal = spec.build(params)
    x_prev = rng.standard_normal((5, n_states))
    y = rng.standard_normal((5, n_outputs))
    mean = x_prev + (x_prev - stats.mean) @ (A - np.eye(n_states)).T
    transition = model.transition_mixture(x_prev)
    np.testing.assert_allclose(transition.means, np.stack([mean, mean], 1))
    np.testing.assert_allclose(transition.scales, np.broadcast_to(process, (5, 2, 3)))
    x, log_ratio = proposal.propose(model, x_prev, y, np.random.default_rng(0), None)
    # Recover the proposal's density from the returned ratio and compare it with
    # the Gaussian N(m + K (y - H m), diag(posterior**2)) at the draws.
    log_proposal = model.transition_log_density(x, x_prev) - log_ratio
    centre = mean + (y - mean @ H.T) @ gain.T
    expected = -0.5 * np.sum(
        ((x - centre) / posterior) ** 2 + np.log(2 * np.pi * posterior**2), axis=1
    )
    np.testing.assert_allclose(log_proposal, expected, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_expand_components_copies_one_component_into_every_one(covariance_type):
    Y, _, model = make_lorenz96(30, random_state=0)
    spread = np.std(np.diff(Y, axis=0), axis=0)

    def head(n_components):
        return make_mixture_head(
            n_components,
            10,
            location_scale=spread,
            initial_scale=spread,
            covariance_type=covariance_type,
        )

    stats = Standardizer(Y.mean(0), Y.std(0))
    rng = np.random.default_rng(0)
    # A one-component network far from zero (as a fit leaves it).
    one = init_mixture_network(head(1), 10, (16,), rng)
    one["layers"][-1] = tuple(a * 100 for a in one["layers"][-1])
    one["linear"] = rng.normal(size=one["linear"].shape)
    start = init_mixture_network(head(3), 10, (16,), rng)

    def mixture(params, mixture_head):
        transition = MixtureTransitionModel(
            params,
            mixture_head,
            stats,
            model.observation,
            model.initial_mean,
            model.initial_scale,
        )
        return transition.transition_mixture(Y)

    fitted = mixture(one, head(1))
    # With the start's output layer and linear part at zero, every component is
    # exactly the one component, with equal weights.
    zero = {
        "layers": [
            *start["layers"][:-1],
            tuple(np.zeros_like(a) for a in start["layers"][-1]),
        ],
        "linear": np.zeros_like(start["linear"]),
    }
    exact = mixture(expand_components(one, head(1), head(3), zero), head(3))
    np.testing.assert_array_equal(exact.logits, 0.0)
    for k in range(3):
        np.testing.assert_allclose(exact.means[:, k], fitted.means[:, 0], rtol=1e-12)
        np.testing.assert_allclose(exact.scales[:, k], fitted.scales[:, 0], rtol=1e-12)
    # With the start's small draws the components differ, but only a little.
    near = mixture(expand_components(one, head(1), head(3), start), head(3))
    assert not np.array_equal(near.means[:, 0], near.means[:, 1])
    np.testing.assert_allclose(
        near.means, np.repeat(fitted.means, 3, axis=1), atol=0.05 * spread.max()
    )


def _sine_and_state(x):
    return anp.stack([anp.sin(x[:, 0]), x[:, 1], anp.cos(2 * x[:, 2])], axis=1)


def _first_two(x):
    return anp.stack([anp.sin(x[:, 0]), anp.cos(x[:, 1])], axis=1)


def _undefined_beyond_one_and_a_half(x):
    inside = anp.where(anp.abs(x[:, 0]) < 1.5, anp.sin(x[:, 0]), anp.nan)
    return anp.stack([inside, anp.sin(x[:, 1])], axis=1)


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        (GaussianObservation(phase_observation, 4, 0.5), [0, 1, 2, 3]),
        # A phase, a plain coordinate, a phase seen as cos(2 x) (period pi, so
        # 2 pi too).
        (GaussianObservation(_sine_and_state, 3, 0.5), [0, 2]),
        # The third coordinate is not observed at all: not a phase.
        (GaussianObservation(_first_two, 3, 0.5), [0, 1]),
        # NaN at some probes: nothing is claimed.
        (GaussianObservation(_undefined_beyond_one_and_a_half, 2, 0.5), []),
        (LinearGaussianObservation(np.ones((2, 3)), noise_scale=0.5), []),
        # A linear map that ignores a coordinate: still none.
        (LinearGaussianObservation(np.eye(3)[:2], noise_scale=0.5), []),
    ],
    ids=["kuramoto", "mixed", "unobserved", "non-finite", "linear", "partial"],
)
def test_periodic_coordinates_are_those_the_observation_sees_modulo_2_pi(
    observation, expected
):
    probes = np.random.default_rng(0).normal(size=(64, observation.n_states))
    assert periodic_coordinates(observation, probes).tolist() == expected


def test_a_transition_of_phases_is_periodic_in_them():
    # f(x + 2 pi e_i | x_prev + 2 pi e_i) = f(x | x_prev) for a periodic i: the
    # mixture's means move by 2 pi, its weights and scales do not change.
    rng = np.random.default_rng(5)
    n_states = 3
    head = make_mixture_head(3, n_states, location_scale=0.3, initial_scale=0.3)
    stats = Standardizer(np.zeros(n_states), np.ones(n_states), np.array([0, 2]))
    params = init_mixture_network(head, 5, (8,), rng)
    # Far from the near-zero start, so that the network's inputs matter.
    params["layers"] = [
        (rng.normal(size=W.shape), rng.normal(size=b.shape))
        for W, b in params["layers"]
    ]
    observation = GaussianObservation(phase_observation, n_states, 0.5)
    model = MixtureTransitionModel(
        params, head, stats, observation, np.zeros(n_states), np.ones(n_states)
    )
    x_prev = rng.normal(size=(10, n_states))
    x = x_prev + 0.3 * rng.normal(size=(10, n_states))
    for shift, periodic in (
        ([2 * np.pi, 0, 0], True),
        ([0, 0, -4 * np.pi], True),
        (
            [0, 2 * np.pi, 0],
            False,
        ),
    ):
        before = model.transition_mixture(x_prev)
        after = model.transition_mixture(x_prev + np.array(shift))
        same = np.allclose(after.logits, before.logits, atol=1e-10) and np.allclose(
            after.scales, before.scales, atol=1e-10
        )
        assert same == periodic
        if periodic:
            np.testing.assert_allclose(after.means, before.means + shift, atol=1e-10)
            np.testing.assert_allclose(
                model.transition_log_density(x + shift, x_prev + shift),
                model.transition_log_density(x, x_prev),
                atol=1e-10,
            )


def _without_indicator(params, n_inputs):
    """The proposal network ``params`` without its inputs from ``n_inputs`` on."""
    (W, b), *rest = params["layers"]
    return {"layers": [(W[:n_inputs], b), *rest], "linear": params["linear"][:n_inputs]}


@pytest.mark.parametrize("fused", [True, False])
def test_the_missing_indicator_changes_nothing_where_every_entry_is_observed(
    learned, fused
):
    # The indicator is 0 at every observed entry, so whatever its weights, a
    # filter of complete data gives what the same network without them gives:
    # the same draws and, up to the order in which the first layer's product
    # sums its terms, the same values.
    Y, transition, proposal, _ = learned
    if proposal.head.covariance_type != "diag":
        # Random dense weights this large make full covariances near singular;
        # the indicator's code is the same for both heads.
        pytest.skip("diagonal heads only")
    rng = np.random.default_rng(1)
    params = init_mixture_network(proposal.head, 30, (16, 16), rng)
    params["layers"][0][0][:] = rng.standard_normal(params["layers"][0][0].shape)
    params["linear"][:] = 0.1 * rng.standard_normal(params["linear"].shape)
    without = _without_indicator(params, 20)
    results = [
        particle_filter(
            Y,
            transition,
            MixtureProposal(
                network, proposal.head, proposal.input_stats, fused, **options
            ),
            n_particles=20,
            random_state=0,
            return_particles=True,
        )
        for network, options in [(params, {"missing_indicator": True}), (without, {})]
    ]
    np.testing.assert_array_equal(results[0].ancestors, results[1].ancestors)
    np.testing.assert_allclose(
        results[0].log_likelihood, results[1].log_likelihood, rtol=1e-12
    )
    np.testing.assert_allclose(
        results[0].filtered_means, results[1].filtered_means, rtol=1e-10, atol=1e-10
    )


def test_the_missing_indicator_tells_a_missing_entry_from_a_predicted_one(learned):
    # Without the indicator, a missing entry and one observed exactly where the
    # transition predicts it give the network the same input (innovation 0).
    # With it they differ, and the indicator's weights decide how.
    Y, transition, proposal, _ = learned
    rng = np.random.default_rng(2)
    params = init_mixture_network(proposal.head, 30, (16, 16), rng)
    params["linear"][20:] = rng.standard_normal((10, params["linear"].shape[1]))
    x_prev = Y[:4]
    predicted = transition.observation.mean(transition.transition_mean(x_prev))
    y_missing = predicted.copy()
    y_missing[:, ::2] = np.nan

    def draw(network, y, **options):
        mixture_proposal = MixtureProposal(
            network, proposal.head, proposal.input_stats, fused=False, **options
        )
        return mixture_proposal.propose(
            transition, x_prev, y, np.random.default_rng(0), None
        )

    without = _without_indicator(params, 20)
    np.testing.assert_allclose(
        draw(without, predicted)[0], draw(without, y_missing)[0], rtol=1e-12
    )
    with_indicator = [
        draw(params, y, missing_indicator=True) for y in (predicted, y_missing)
    ]
    assert np.max(np.abs(with_indicator[0][0] - with_indicator[1][0])) > 1e-3
