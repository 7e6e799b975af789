import numpy as np
import pytest

from statemix_sk.datasets import make_lorenz96
from statemix_sk.filtering import particle_filter
from statemix_sk.learned import (
    MixtureProposal,
    MixtureTransitionModel,
    init_mixture_network,
)
from statemix_sk.models import simulate
from statemix_sk.networks import Standardizer, make_mixture_head


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
