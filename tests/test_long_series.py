"""Long series and the filter's cost: linear in the steps, memory of the output.

The gradient of :func:`particle_filter` joins the T log-likelihood increments with
one primitive whose VJP splits the gradient in one pass (autograd's
``concatenate`` VJP was O(T**2)); a pass without gradient writes its per-step
outputs into preallocated arrays. These tests pin both down, and check that the
results are those of the plain ``concatenate`` and of the code before.
"""

import gc
import sys
import time
import tracemalloc

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, value_and_grad
from autograd.test_util import check_grads

from statemix_sk import filtering
from statemix_sk.filtering import particle_filter
from statemix_sk.models import GaussianTransitionModel
from statemix_sk.observations import LinearGaussianObservation


class ScaledWalk(GaussianTransitionModel):
    """``x_t = a x_{t-1} + w``: the cheapest model differentiable in ``a``."""

    def __init__(self, coefficient, n_states=1):
        observation = LinearGaussianObservation(noise_scale=[0.7] * n_states)
        super().__init__(n_states, observation, 0.5, 0.0, 1.0)
        self.coefficient = coefficient

    def transition_mean(self, x_prev):
        return self.coefficient * x_prev


def _series(n_steps, n_sequences=None, n_states=1):
    Y, _ = ScaledWalk(0.9, n_states).simulate(n_steps, n_sequences, random_state=0)
    return Y


def _log_likelihood(Y, **options):
    """The filter's log-likelihood as a function of the coefficient ``a``."""

    def log_likelihood(coefficient):
        model = ScaledWalk(coefficient, Y.shape[-1])
        result = particle_filter(Y, model, n_particles=10, random_state=0, **options)
        return anp.sum(result.log_likelihood)

    return log_likelihood


def _python_calls(function, *args):
    """Count the Python function calls that ``function(*args)`` makes."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        function(*args)
    finally:
        sys.setprofile(previous)
    return count


def test_gradient_calls_grow_linearly_with_the_length():
    # A pass makes a + c T Python calls when its cost is linear in T, so the
    # count at 4 T is at most 4 times the count at T (the fixed part a only
    # lowers the ratio); 5% more allows the per-step count to vary with the
    # data (a resampling step that sorts, say). autograd's concatenate VJP,
    # which the filter used before, adds about T**2 / 2 calls: the ratio was
    # 6.9 at these lengths. The count is deterministic: no timing noise.
    Y = _series(400)
    gradient = value_and_grad(_log_likelihood(Y[:100]))
    short = _python_calls(gradient, 0.9)
    gradient = value_and_grad(_log_likelihood(Y))
    long = _python_calls(gradient, 0.9)
    assert long / short < 4.2


@pytest.mark.slow
def test_gradient_time_grows_linearly_with_the_length():
    # Linear in T, the time at 4 T is at most 4 times that at T. A part that
    # grows as T**2 and takes a share s of the time at T makes the ratio
    # 4 (1 - s) + 16 s = 4 + 12 s: the bound 6 fails from s = 1/6 on, with
    # 50% of room over 4 for the noise of timing on a busy machine. With
    # autograd's concatenate the quadratic part was a third of the time at
    # T = 500 (ratio about 8). The garbage collector is off while timing: its
    # full collections step up with the number of live tape nodes, which is
    # not what this test is about. Best of two runs of each length.
    Y = _series(2000)
    times = {}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for n_steps in (500, 2000, 500, 2000):
            gradient = value_and_grad(_log_likelihood(Y[:n_steps]))
            start = time.perf_counter()
            gradient(0.9)
            seconds = time.perf_counter() - start
            times[n_steps] = min(times.get(n_steps, np.inf), seconds)
    finally:
        if enabled:
            gc.enable()
    assert times[2000] / times[500] < 6.0


def _with_missing(Y):
    Y = Y.copy()
    Y[0, 5] = np.nan
    Y[1, 7, 0] = np.nan
    return Y


def test_results_are_those_of_plain_concatenate(monkeypatch):
    # Two series with missing entries and adaptive resampling: the same values
    # and gradient, to the last bit, as joining the increments with autograd's
    # concatenate (the join is a copy; its VJP takes the same slices).
    Y = _with_missing(_series(40, 2, n_states=2))
    options = {"ess_threshold": 0.5, "return_particles": True}

    def run():
        results = []

        def objective(coefficient):
            model = ScaledWalk(coefficient, 2)
            result = particle_filter(
                Y, model, n_particles=10, random_state=0, **options
            )
            results.append(result)
            return result.log_likelihood[0] + 2 * result.log_likelihood[1]

        value, gradient = value_and_grad(objective)(0.9)
        return value, gradient, results[0]

    joined = run()
    monkeypatch.setattr(
        filtering,
        "_join_columns",
        lambda *pieces: anp.concatenate(pieces, axis=1),
    )
    concatenated = run()
    assert joined[0] == concatenated[0]
    assert joined[1] == concatenated[1]
    for name, a, b in zip(joined[2]._fields, joined[2], concatenated[2], strict=True):
        np.testing.assert_array_equal(
            np.asarray(a._value if hasattr(a, "_value") else a),
            np.asarray(b._value if hasattr(b, "_value") else b),
            err_msg=name,
        )


def test_results_are_those_before_the_change():
    # Values of the filter before the increments were joined by a primitive and
    # the outputs preallocated (same model, data and seed), printed to the last
    # digit: identical on the machine that computed them; elsewhere the
    # elementary functions may round differently in the last bits.
    Y = _with_missing(_series(40, 2, n_states=2))

    def objective(coefficient):
        result = particle_filter(
            Y,
            ScaledWalk(coefficient, 2),
            n_particles=10,
            random_state=0,
            ess_threshold=0.5,
        )
        return result.log_likelihood[0] + 2 * result.log_likelihood[1]

    value, gradient = value_and_grad(objective)(0.9)
    result = particle_filter(
        Y, ScaledWalk(0.9, 2), n_particles=10, random_state=0, ess_threshold=0.5
    )
    np.testing.assert_allclose(value, -347.2667850660705, rtol=1e-9)
    np.testing.assert_allclose(gradient, -349.4514247670005, rtol=1e-8)
    np.testing.assert_allclose(
        result.log_likelihood, [-119.7817866837537, -113.74249919115842], rtol=1e-9
    )
    np.testing.assert_allclose(
        result.filtered_means[1, -1],
        [-1.6898556578016972, -0.15487659926237968],
        rtol=1e-8,
    )
    assert result.resampled.sum() == 43


def test_pass_without_gradient_equals_the_traced_values():
    Y = _with_missing(_series(30, 2, n_states=2))
    plain = particle_filter(
        Y, ScaledWalk(0.9, 2), n_particles=10, random_state=0, return_particles=True
    )
    traced = []

    def objective(coefficient):
        result = particle_filter(
            Y,
            ScaledWalk(coefficient, 2),
            n_particles=10,
            random_state=0,
            return_particles=True,
        )
        traced.append(result)
        return anp.sum(result.log_likelihood)

    grad(objective)(0.9)
    np.testing.assert_array_equal(
        plain.log_likelihood_increments, traced[0].log_likelihood_increments._value
    )
    for name in plain._fields[2:]:
        np.testing.assert_array_equal(
            getattr(plain, name), getattr(traced[0], name), err_msg=name
        )
    assert plain.filtered_means.shape == (2, 30, 2)
    assert plain.particles.shape == (2, 30, 10, 2)
    assert plain.resampled.dtype == bool
    assert plain.ancestors.dtype.kind == "i"


def test_join_gradient_against_finite_differences():
    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal((2, width)) for width in (1, 3, 1, 2)]
    weights = rng.standard_normal((2, 7))

    def join(*pieces):
        return anp.sum(weights * filtering._join_columns(*pieces))

    check_grads(join, modes=["rev"], order=1)(*pieces)

    # Constant pieces among traced ones: the gradient reaches the traced ones.
    def mixed(first, third):
        return join(first, pieces[1], third, pieces[3])

    check_grads(mixed, modes=["rev"], order=1)(pieces[0], pieces[2])


def _peak_bytes(function):
    """Return the tracemalloc peak of ``function()`` above what was live before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def test_memory_of_a_pass_grows_as_its_output():
    # One series, d = 2: the output is 8 (increment) + 16 (mean) + 16 (scale)
    # + 8 (ESS) + 1 (resampled) = 49 bytes per step, and the checked copy of
    # the input 16 more. Twice that leaves room for allocator rounding; the
    # lists of per-step arrays stacked at the end, as before, cost about
    # 600 bytes per step (some 100 bytes of array header per small array).
    Y = _series(4000, n_states=2)
    model = ScaledWalk(0.9, 2)
    peaks = {
        n_steps: _peak_bytes(
            lambda n_steps=n_steps: particle_filter(
                Y[:n_steps], model, n_particles=10, random_state=0
            )
        )
        for n_steps in (1000, 4000)
    }
    per_step = (peaks[4000] - peaks[1000]) / 3000
    assert per_step < 2 * (49 + 16)


def test_one_particle_warns():
    Y = _series(5)
    with pytest.warns(UserWarning, match="n_particles=1"):
        result = particle_filter(Y, ScaledWalk(0.9), n_particles=1, random_state=0)
    # A single particle has weight 1 at every step.
    np.testing.assert_array_equal(result.ess, 1.0)
