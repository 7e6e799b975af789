"""What training achieves, measured statistically on held-out data."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from statemix_sk import StateMixFilter, make_linear_gaussian
from statemix_sk.filtering import particle_filter


def _held_out_log_likelihoods(estimator, Y, n_seeds):
    """Per-step log-likelihood of each held-out series, for several filter seeds."""
    n_steps = Y.shape[1]
    return np.array(
        [
            particle_filter(
                Y,
                estimator.model_,
                estimator.proposal_,
                n_particles=estimator.n_particles,
                random_state=seed,
            ).log_likelihood
            / n_steps
            for seed in range(n_seeds)
        ]
    )


@pytest.mark.slow
def test_training_raises_the_held_out_likelihood_on_linear_gaussian_data():
    """Twenty iterations beat one, on series the fit never saw.

    Both models filter the same held-out series with ten filter seeds; the
    difference of their mean log-likelihood per step must exceed three standard
    errors of that difference (the seeds' spread), so a training loop that does
    not learn (or learns the wrong sign) fails.
    """
    Y, _, _ = make_linear_gaussian(50, n_sequences=6, random_state=0)
    Y_train, Y_test = Y[:3], Y[3:]
    settings = dict(
        n_components=1,
        hidden_layer_sizes=(16,),
        n_particles=50,
        observation_noise=0.7,
        eval_every=5,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        barely = StateMixFilter(max_iter=1, **settings).fit(Y_train)
        trained = StateMixFilter(max_iter=20, **settings).fit(Y_train)
    difference = (
        _held_out_log_likelihoods(trained, Y_test, 10)
        - _held_out_log_likelihoods(barely, Y_test, 10)
    ).mean(axis=1)
    standard_error = difference.std(ddof=1) / np.sqrt(difference.size)
    assert difference.mean() > 3 * standard_error
    assert difference.mean() > 0.1  # at least a tenth of a nat per step
