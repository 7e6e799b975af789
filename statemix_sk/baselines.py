"""Baselines that StateMixNN is measured against.

Filters given the true model, each a proposal for the one loop of
:func:`statemix_sk.filtering.particle_filter` (see its module docstring for the
protocol: ``first_stage_log_weights`` and ``propose``):

- the bootstrap filter, :class:`~statemix_sk.filtering.BootstrapProposal`
  (``q = f``);
- :class:`AuxiliaryProposal`, the auxiliary particle filter of Pitt and Shephard
  (1999): first-stage weights ``eta_n = g(y_t | mu_n)`` at the predicted means
  ``mu_n = E_f[x_t | x_{t-1}^n]``, then ``q = f`` and the second-stage weight
  ``g(y_t | x_t) / g(y_t | mu_a)``;
- :class:`ImprovedAuxiliaryProposal`, the improved auxiliary particle filter of
  Elvira, Martino, Bugallo and Djuric (2018), O(N^2) per step, vectorised;
- :class:`LocallyOptimalProposal`, the exact optimal proposal
  ``p(x_t | x_{t-1}, y_t)`` of a Gaussian transition with a linear-Gaussian
  observation; with many particles it is the best any filter can do there.

The linear-Gaussian models fitted to data for the Kalman filter (random walk,
moments, EM) are in :mod:`statemix_sk.kalman`.

All weights are in the log domain.
"""

import autograd.numpy as np
import numpy
import scipy.linalg

from ._utils import logsumexp, moved_names
from .smoothing import pairwise_transition_log_density

__all__ = [
    "AuxiliaryProposal",
    "ImprovedAuxiliaryProposal",
    "LocallyOptimalProposal",
    "check_locally_optimal_applies",
]

# Moved in issue 16; the old paths warn (FutureWarning) and will go.
__getattr__ = moved_names(
    "baselines",
    {
        "linear_dynamics_by_em": "kalman",
        "linear_dynamics_by_moments": "kalman",
        "random_walk_model": "kalman",
        "smoothed_states": "kalman",
    },
)


class AuxiliaryProposal:
    """The auxiliary particle filter (Pitt and Shephard, 1999).

    First-stage weights ``eta_n = g(y_t | mu_n)`` with ``mu_n =`` the model's
    ``transition_mean(x_{t-1}^n)``; particles move with the transition, and the
    loop's weight becomes ``g(y_t | x_t) / g(y_t | mu_a)`` (times the
    normalising constant the loop carries), which keeps the likelihood estimate
    unbiased. Any model of the protocol with ``transition_mean`` works.
    """

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """Return ``log g(y | mu_n)`` for every particle."""
        return model.observation.log_density(model.transition_mean(particles), y)

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``f(. | x_prev)``; ``q = f``, so the ratio is None."""
        return model.sample_transition(x_prev, rng), None

    def __repr__(self):  # noqa: D105
        return "AuxiliaryProposal()"


def _log_weighted_sums(pairs, log_a, log_b):
    """Return ``log sum_i a_i exp(pairs[m, i])`` and the same with ``b``, per row.

    One exponential of the (m, i) array serves both sums (matrix-vector products
    after shifting by the row maxima); rows where a shifted sum underflows fall
    back to an exact logsumexp.
    """
    row_max = numpy.max(pairs, axis=1, keepdims=True)
    scaled = numpy.subtract(pairs, row_max)
    numpy.exp(scaled, out=scaled)
    results = []
    for log_c in (log_a, log_b):
        top = numpy.max(log_c)
        with numpy.errstate(divide="ignore"):
            value = numpy.log(scaled @ numpy.exp(log_c - top)) + row_max[:, 0] + top
        bad = ~numpy.isfinite(value)
        if bad.any():
            value[bad] = logsumexp(pairs[bad] + log_c[None, :], axis=1)
        results.append(value)
    return results


class ImprovedAuxiliaryProposal:
    """The improved auxiliary particle filter (Elvira et al., EUSIPCO 2018).

    At step ``t``, with previous particles ``x^i``, normalised weights ``W_i`` and
    predicted means ``mu_m = E_f[x_t | x^m]``, the particles are drawn from the
    mixture ``sum_m lambda_m f(x | x^m)`` with

    ``lambda_m ~ g(y | mu_m) sum_i W_i f(mu_m | x^i) / sum_i f(mu_m | x^i)``

    (normalised) and weighted by
    ``g(y | x) sum_i W_i f(x | x^i) / sum_i lambda_i f(x | x^i)``; the likelihood
    increment is the mean of those weights. Every sum runs over all particles:
    O(N^2) per step, computed as (N, N) arrays of pairwise log-densities
    (:func:`~statemix_sk.smoothing.pairwise_transition_log_density`), one series
    at a time.

    In the loop's terms the ancestor draw ``a ~ W eta`` with
    ``eta_m = lambda_m / W_m`` is the draw of the mixture component, and the
    ratio returned by :meth:`propose` turns the loop's carried weight into the
    weight above. Particles whose weight ``W_m`` is exactly 0 cannot be drawn.
    """

    def _log_lambda(self, model, particles, log_weights, y):
        """Unnormalised ``log lambda``, (B, N), and the pairwise terms it used."""
        n_series, n_particles = numpy.shape(log_weights)
        states = numpy.reshape(particles, (n_series, n_particles, -1))
        means = numpy.asarray(model.transition_mean(particles))
        log_g = numpy.reshape(
            model.observation.log_density(means, y), (n_series, n_particles)
        )
        means = numpy.reshape(means, (n_series, n_particles, -1))
        log_lambda = numpy.empty((n_series, n_particles))
        for b in range(n_series):
            pairs = pairwise_transition_log_density(model, means[b], states[b])
            weighted, plain = _log_weighted_sums(
                pairs, log_weights[b], numpy.zeros(n_particles)
            )
            log_lambda[b] = log_g[b] + weighted - plain
        return log_lambda

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """Return ``log eta = log lambda - log W``, so that ``W eta = lambda``."""
        log_weights = numpy.asarray(log_weights)
        log_lambda = self._log_lambda(model, particles, log_weights, y)
        return numpy.reshape(
            log_lambda - numpy.maximum(log_weights, -numpy.finfo(float).max), (-1,)
        )

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``f(. | x^a)``; return the ratio that completes the weight.

        The loop carries ``log sum(lambda) - log N - log eta_a``; adding
        ``log sum_i W_i f(x|x^i) - log sum_i lambda_i f(x|x^i) + log eta_a`` and
        ``log g(y|x)`` gives the IAPF weight over ``N``.
        """
        x = numpy.asarray(model.sample_transition(x_prev, rng))
        n_series = context.n_series
        log_weights = numpy.asarray(context.log_weights)
        n_particles = log_weights.shape[1]
        log_eta = numpy.reshape(
            context.first_stage_log_weights, (n_series, n_particles)
        )
        log_lambda = log_eta + log_weights
        states = numpy.reshape(context.particles, (n_series, n_particles, -1))
        new = numpy.reshape(x, (n_series, n_particles, -1))
        ancestors = numpy.reshape(context.ancestors, (n_series, n_particles))
        ancestors = ancestors - (numpy.arange(n_series) * n_particles)[:, None]
        log_ratio = numpy.empty((n_series, n_particles))
        for b in range(n_series):
            pairs = pairwise_transition_log_density(model, new[b], states[b])
            weighted, mixture = _log_weighted_sums(pairs, log_weights[b], log_lambda[b])
            log_ratio[b] = weighted - mixture + log_eta[b][ancestors[b]]
        return x, numpy.reshape(log_ratio, (-1,))

    def __repr__(self):  # noqa: D105
        return "ImprovedAuxiliaryProposal()"


def check_locally_optimal_applies(model):
    """Raise a ValueError unless ``model`` has what the locally optimal proposal needs.

    That is a Gaussian transition around ``transition_mean`` with diagonal
    ``process_noise`` and a linear-Gaussian observation (``observation_matrix``
    and ``noise_covariance``).
    """
    missing = [
        name
        for name, owner in (
            ("transition_mean", model),
            ("process_noise", model),
            ("observation_matrix", model.observation),
            ("noise_covariance", model.observation),
        )
        if getattr(owner, name, None) is None
    ]
    if missing:
        raise ValueError(
            "The locally optimal proposal needs a Gaussian transition "
            "(transition_mean and process_noise) and a linear-Gaussian observation "
            "(observation_matrix and noise_covariance); "
            f"{type(model).__name__} with {type(model.observation).__name__} lacks "
            f"{', '.join(missing)}. Use the bootstrap or an auxiliary filter instead."
        )


class LocallyOptimalProposal:
    """The exact optimal proposal ``p(x_t | x_{t-1}, y_t)``.

    For ``x_t = m(x_{t-1}) + w``, ``w ~ N(0, Q)`` and ``y_t = H x_t + v``,
    ``v ~ N(0, R)``, it is ``N(m + K (y - H m), (I - K H) Q)`` with
    ``K = Q H' (H Q H' + R)^-1``, and the weight ``g f / q`` equals
    ``p(y_t | x_{t-1}) = N(y_t; H m, H Q H' + R)`` whatever ``x_t`` is drawn. With
    many particles this filter is the best any filter can do with the true model;
    the experiments use it (N = 10,000) as the floor.

    Where some entries of ``y_t`` are missing (NaN), the same formulas hold with
    the observation restricted to the observed entries (the rows of ``H``, the
    sub-block of ``R``): the proposal is still exact, and the weight is
    ``p(y_t^obs | x_{t-1})``. The gain and covariance are computed once per
    pattern of missing entries and kept.

    Parameters
    ----------
    model : state-space model
        Checked by :func:`check_locally_optimal_applies`.
    """

    handles_missing_entries = True
    """The filter gives it partly observed steps (with NaN), not only full ones."""

    def __init__(self, model):
        check_locally_optimal_applies(model)
        H = numpy.asarray(model.observation.observation_matrix, dtype=float)
        R = numpy.asarray(model.observation.noise_covariance, dtype=float)
        Q = numpy.diag(
            numpy.broadcast_to(
                numpy.asarray(model.process_noise, dtype=float) ** 2, (H.shape[1],)
            )
        )
        self.observation_matrix = H
        self._noise_covariance = R
        self._process_covariance = Q
        self._by_pattern = {}
        self.gain, self.cholesky, self.log_det = self._conditional(
            numpy.ones(len(H), dtype=bool)
        )

    def _conditional(self, observed):
        """Gain, covariance factor and log-determinant given the observed entries.

        The gain has a zero column for each missing entry, so it can multiply a
        residual whose missing entries are anything finite.
        """
        key = observed.tobytes()
        if key in self._by_pattern:
            return self._by_pattern[key]
        H_all, Q = self.observation_matrix, self._process_covariance
        gain = numpy.zeros((len(Q), len(H_all)))
        if observed.any():
            H = H_all[observed]
            R = self._noise_covariance[numpy.ix_(observed, observed)]
            innovation_cov = H @ Q @ H.T + R
            gain[:, observed] = scipy.linalg.solve(
                innovation_cov, H @ Q, assume_a="pos"
            ).T
            # The covariance in information form, (Q^-1 + H' R^-1 H)^-1: positive
            # definite by construction. Q - K H Q loses it to cancellation when R
            # is small next to H Q H' (a nearly noiseless observation).
            whitened = scipy.linalg.solve_triangular(
                numpy.linalg.cholesky(R), H, lower=True
            )
            information = numpy.diag(1.0 / numpy.diag(Q)) + whitened.T @ whitened
            covariance = scipy.linalg.cho_solve(
                scipy.linalg.cho_factor(information, lower=True), numpy.eye(len(Q))
            )
        else:
            covariance = Q
        cholesky = numpy.linalg.cholesky(0.5 * (covariance + covariance.T))
        log_det = 2.0 * numpy.sum(numpy.log(numpy.diag(cholesky)))
        self._by_pattern[key] = gain, cholesky, log_det
        return self._by_pattern[key]

    def first_stage_log_weights(self, model, particles, log_weights, y):
        """Return None: the weight is ``p(y_t | x_{t-1})``, applied after the move."""
        return None

    def propose(self, model, x_prev, y, rng, context):
        """Draw from ``p(x_t | x_{t-1}, y_t)``; return ``log f - log q``.

        NaN entries of ``y`` are missing: each row conditions on its observed
        entries only.
        """
        mean = np.asarray(model.transition_mean(x_prev))
        y = numpy.asarray(y, dtype=float)
        observed = ~numpy.isnan(y)
        n_states = self.cholesky.shape[0]
        if observed.all():
            centre = mean + (y - mean @ self.observation_matrix.T) @ self.gain.T
            noise = rng.standard_normal(numpy.shape(centre))
            x = centre + noise @ self.cholesky.T
            log_det = self.log_det
        else:
            # The rows come in runs sharing a pattern of missing entries (a
            # series' particles): one conditional per run, found in one pass
            # over the rows instead of by sorting them.
            observed = numpy.broadcast_to(observed, (len(mean), y.shape[-1]))
            changes = numpy.any(observed[1:] != observed[:-1], axis=1)
            starts = numpy.flatnonzero(numpy.concatenate([[True], changes]))
            stops = numpy.append(starts[1:], len(observed))
            residual = numpy.where(observed, y, 0.0) - mean @ self.observation_matrix.T
            noise = rng.standard_normal(numpy.shape(mean))
            pieces, log_det = [], numpy.empty(len(observed))
            for start, stop in zip(starts, stops, strict=True):
                gain, cholesky, log_det[start:stop] = self._conditional(observed[start])
                pieces.append(
                    mean[start:stop]
                    + residual[start:stop] @ gain.T
                    + noise[start:stop] @ cholesky.T
                )
            x = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        log_q = -0.5 * (
            np.sum(noise**2, axis=1) + log_det + n_states * numpy.log(2.0 * numpy.pi)
        )
        return x, model.transition_log_density(x, x_prev) - log_q

    def __repr__(self):  # noqa: D105
        return "LocallyOptimalProposal(...)"
