"""Particle smoothers: estimates of ``E[x_t | y_1:T]`` from a particle filter's run.

:func:`genealogy_smoothed_means` reads the smoothed means off the genealogy of a
filter's particles (Kitagawa, 1996): each particle of the last step is traced back
through its ancestors, and the paths are averaged with the final weights. It needs
no transition density and costs ``O(T N)``, but the genealogy of a resampled
cloud collapses going back in time, so the early steps rest on few distinct paths:
the estimates are consistent, with a variance that grows with ``T - t``. The
estimator uses them where only a rough state estimate is needed (the regression
start of :class:`~statemix_sk.StateMixFilter` for a non-linear observation).
"""

import numpy

__all__ = ["genealogy_smoothed_means"]


def genealogy_smoothed_means(result):
    """Smoothed means from the ancestral paths of a particle filter's run.

    Parameters
    ----------
    result : FilterResult
        From :func:`~statemix_sk.filtering.particle_filter` with
        ``return_particles=True``, for one series or several.

    Returns
    -------
    means : ndarray of shape (n_steps, n_states) or (n_series, n_steps, n_states)
        ``sum_n W_T^n x_t^{a_t^n}``: the final weights on the particles' paths,
        where ``a_t^n`` is the ancestor at step ``t`` of the ``n``-th particle of
        the last step. The last row equals the filtered mean.

    Examples
    --------
    >>> from statemix_sk import make_linear_gaussian, particle_filter
    >>> Y, X, model = make_linear_gaussian(30, random_state=0)
    >>> result = particle_filter(Y, model, n_particles=50, random_state=0,
    ...                          return_particles=True)
    >>> genealogy_smoothed_means(result).shape
    (30, 4)
    """
    if result.particles is None or result.ancestors is None:
        raise ValueError(
            "genealogy_smoothed_means needs the particles and their ancestors: "
            "run particle_filter with return_particles=True."
        )
    particles = numpy.asarray(result.particles)
    batched = particles.ndim == 4
    if not batched:
        particles = particles[None]
    ancestors = numpy.asarray(result.ancestors).reshape(particles.shape[:3])
    log_weights = numpy.asarray(result.log_weights).reshape(particles.shape[:3])
    n_series, n_steps, n_particles, n_states = particles.shape
    weights = numpy.exp(log_weights[:, -1])
    weights = weights / weights.sum(axis=1, keepdims=True)
    rows = numpy.arange(n_series)[:, None]
    # index[b, n]: the particle at step t on the path of particle n of step T.
    index = numpy.broadcast_to(numpy.arange(n_particles), (n_series, n_particles))
    means = numpy.empty((n_series, n_steps, n_states))
    for t in range(n_steps - 1, -1, -1):
        means[:, t] = numpy.einsum("bn,bnd->bd", weights, particles[rows, t, index])
        index = ancestors[rows, t, index]
    return means if batched else means[0]
