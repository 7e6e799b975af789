"""The fused autograd primitives equal the plain compositions they replace."""

import numpy as np
from autograd import grad
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from statemix_sk._utils import logsumexp
from statemix_sk.mixtures import (
    GaussianMixture,
    diag_mixture_log_density,
    reference_mixture_log_density,
)
from statemix_sk.networks import (
    apply_mlp,
    bounded_scale,
    init_mlp,
    reference_apply_mlp,
)

# Agreement with the reference: both compute the same expression in float64, in a
# different order, so they differ by a few rounding errors of the largest term.
RTOL, ATOL = 1e-10, 1e-12


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL * (1 + np.max(np.abs(b))))


@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 6),
    n_components=st.integers(1, 4),
    n_dims=st.integers(1, 5),
)
def test_fused_diag_mixture_density_equals_the_reference(seed, n, n_components, n_dims):
    rng = np.random.default_rng(seed)
    args = (
        rng.standard_normal((n, n_dims)) * 3,
        rng.standard_normal((n, n_components)) * 2,
        rng.standard_normal((n, n_components, n_dims)),
        rng.uniform(0.05, 3.0, (n, n_components, n_dims)),
    )
    weights = rng.standard_normal(n)

    def fused(*a):
        return np.sum(weights * diag_mixture_log_density(*a))

    def reference(*a):
        return np.sum(
            weights * reference_mixture_log_density(GaussianMixture(*a[1:]), a[0])
        )

    _close(fused(*args), reference(*args))
    for argnum in range(4):
        _close(grad(fused, argnum)(*args), grad(reference, argnum)(*args))


@given(
    seed=st.integers(0, 2**16),
    sizes=st.lists(st.integers(1, 7), min_size=2, max_size=4),
    n=st.integers(1, 6),
)
def test_fused_mlp_equals_the_reference(seed, sizes, n):
    rng = np.random.default_rng(seed)
    params = [(W * 50, rng.standard_normal(b.shape)) for W, b in init_mlp(sizes, rng)]
    inputs = rng.standard_normal((n, sizes[0]))
    weights = rng.standard_normal((n, sizes[-1]))

    def fused(params, inputs):
        return np.sum(weights * apply_mlp(params, inputs))

    def reference(params, inputs):
        return np.sum(weights * reference_apply_mlp(params, inputs))

    _close(fused(params, inputs), reference(params, inputs))
    _close(grad(fused, 1)(params, inputs), grad(reference, 1)(params, inputs))
    for fused_layer, reference_layer in zip(
        grad(fused)(params, inputs), grad(reference)(params, inputs), strict=True
    ):
        for a, b in zip(fused_layer, reference_layer, strict=True):
            _close(a, b)


def test_every_primitive_passes_check_grads_on_several_shapes():
    rng = np.random.default_rng(0)
    np.random.seed(0)  # noqa: NPY002 (check_grads draws directions from it)
    for n, n_components, n_dims in [(1, 1, 1), (4, 3, 2), (6, 2, 5)]:
        args = (
            rng.standard_normal((n, n_dims)),
            rng.standard_normal((n, n_components)),
            rng.standard_normal((n, n_components, n_dims)),
            rng.uniform(0.3, 2.0, (n, n_components, n_dims)),
        )
        check_grads(diag_mixture_log_density, modes=["rev"], order=1)(*args)
    for sizes in ([3, 2], [2, 6, 4], [5, 4, 4, 3]):
        params = init_mlp(sizes, rng, output_scale=1.0)
        inputs = rng.standard_normal((4, sizes[0]))
        check_grads(apply_mlp, modes=["rev"], order=1)(params, inputs)
    for shape in [(3,), (2, 4), (2, 3, 5)]:
        raw = rng.standard_normal(shape) * 4
        check_grads(lambda r: bounded_scale(r, 0.1, 5.0), modes=["rev"], order=1)(raw)
        check_grads(lambda v: logsumexp(v, axis=-1), modes=["rev"], order=1)(raw)
        check_grads(logsumexp, modes=["rev"], order=1)(raw)
