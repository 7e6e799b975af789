"""Particle filters given a known model, as scikit-learn estimators.

:class:`BootstrapFilter`, :class:`AuxiliaryFilter`,
:class:`ImprovedAuxiliaryFilter` and :class:`LocallyOptimalFilter` run the one
loop of :func:`statemix_sk.filtering.particle_filter` with the true model and
one of the proposals of :mod:`statemix_sk.baselines`. Their ``fit`` learns
nothing: it validates the model and the observations and fixes the seed. They
share the filtering API of :mod:`statemix_sk.estimator_base`.
"""

import copy
from numbers import Integral, Real
from typing import ClassVar

from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from .baselines import (
    AuxiliaryProposal,
    ImprovedAuxiliaryProposal,
    LocallyOptimalProposal,
    check_locally_optimal_applies,
)
from .estimator_base import _ParticleFilterEstimator
from .filtering import BootstrapProposal
from .resampling import RESAMPLING_SCHEMES

__all__ = [
    "AuxiliaryFilter",
    "BootstrapFilter",
    "ImprovedAuxiliaryFilter",
    "LocallyOptimalFilter",
]

_MODEL_METHODS = ["sample_initial", "sample_transition", "transition_log_density"]


class _KnownModelFilter(_ParticleFilterEstimator):
    """A particle filter with a given model: ``fit`` only validates and records."""

    _parameter_constraints: ClassVar[dict] = {
        "model": [HasMethods(_MODEL_METHODS)],
        "n_particles": [Interval(Integral, 1, None, closed="left")],
        "resampling": [StrOptions(set(RESAMPLING_SCHEMES))],
        "random_state": ["random_state"],
    }
    # Auxiliary filters resample at every step; the others when ESS / N falls to
    # ess_threshold.
    ess_threshold = 1.0

    def __init__(
        self, model, *, n_particles=100, resampling="systematic", random_state=None
    ):
        self.model = model
        self.n_particles = n_particles
        self.resampling = resampling
        self.random_state = random_state

    def _make_proposal(self, model):
        raise NotImplementedError

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Y, y=None):
        """Validate the model and the observations, and fix the filter's seed.

        Nothing is learned: the model is known. ``fit`` records the number of
        features (which must be the model's ``observation.n_outputs``), copies
        the model and draws the seed that makes every later method
        deterministic.

        Parameters
        ----------
        Y : array-like of shape (n_steps, n_features), or (n_sequences, n_steps, \
n_features), or list of array-like of shape (n_steps_i, n_features)
            Observations; NaN entries are missing.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        observation = getattr(self.model, "observation", None)
        n_outputs = getattr(observation, "n_outputs", None)
        if n_outputs is None:
            raise ValueError(
                "model must have an observation model with n_outputs (see the "
                "model protocol in statemix_sk.models), got "
                f"{type(self.model).__name__} without one."
            )
        model = copy.deepcopy(self.model)
        proposal = self._make_proposal(model)
        with self._unchanged_on_failure():
            series, _ = self._validate_series(Y, reset=True)
            if series[0].shape[1] != n_outputs:
                raise ValueError(
                    f"Y has {series[0].shape[1]} features, but the model's "
                    f"observation has {n_outputs} outputs."
                )
            eval_seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        # The fitted attributes are set together, after everything that can fail.
        self.model_ = model
        self.proposal_ = proposal
        self.n_states_ = int(model.n_states)
        self._eval_seed = eval_seed
        return self


class BootstrapFilter(_KnownModelFilter):
    """The bootstrap particle filter with a known model: particles move with ``f``.

    Parameters
    ----------
    model : state-space model
        A model of :mod:`statemix_sk.models` or any object with the members of
        the model protocol documented there.
    n_particles : int, default=100
    resampling : {"systematic", "stratified", "multinomial", "residual"}, \
default="systematic"
    ess_threshold : float in [0, 1], default=1.0
        Resample when ``ESS / N <= ess_threshold`` (1: at every step).
    random_state : int, RandomState instance or None, default=None
        Fixes, in ``fit``, the seed of every later method.

    Attributes
    ----------
    model_ : state-space model
        A copy of ``model``.
    proposal_ : BootstrapProposal
    n_states_ : int
    n_features_in_ : int

    Examples
    --------
    >>> from statemix_sk import BootstrapFilter, make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(50, random_state=0)
    >>> bootstrap = BootstrapFilter(model, n_particles=200, random_state=0).fit(Y)
    >>> bootstrap.predict(Y).shape
    (50, 4)
    """

    _parameter_constraints: ClassVar[dict] = {
        **_KnownModelFilter._parameter_constraints,
        "ess_threshold": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(
        self,
        model,
        *,
        n_particles=100,
        resampling="systematic",
        ess_threshold=1.0,
        random_state=None,
    ):
        super().__init__(
            model,
            n_particles=n_particles,
            resampling=resampling,
            random_state=random_state,
        )
        self.ess_threshold = ess_threshold

    def _make_proposal(self, model):
        return BootstrapProposal()


class AuxiliaryFilter(_KnownModelFilter):
    """The auxiliary particle filter (Pitt and Shephard, 1999) with a known model.

    See :class:`~statemix_sk.baselines.AuxiliaryProposal`. It resamples at every
    step. The model needs ``transition_mean``.

    Parameters
    ----------
    model : state-space model
    n_particles : int, default=100
    resampling : {"systematic", "stratified", "multinomial", "residual"}, \
default="systematic"
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    model_, proposal_, n_states_, n_features_in_
        As for :class:`BootstrapFilter`.

    Examples
    --------
    >>> from statemix_sk import AuxiliaryFilter, make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(50, random_state=0)
    >>> AuxiliaryFilter(model, random_state=0).fit(Y).predict(Y).shape
    (50, 4)
    """

    def _make_proposal(self, model):
        if not hasattr(model, "transition_mean"):
            raise ValueError(
                "AuxiliaryFilter needs the model's transition_mean (the predicted "
                f"means of its first-stage weights); {type(model).__name__} has none."
            )
        return AuxiliaryProposal()


class ImprovedAuxiliaryFilter(AuxiliaryFilter):
    """The improved auxiliary particle filter (Elvira et al., 2018), known model.

    See :class:`~statemix_sk.baselines.ImprovedAuxiliaryProposal`: O(N^2) time
    and memory per step (an (N, N) array of transition densities per series).
    It resamples at every step. The model needs ``transition_mean``.

    Parameters
    ----------
    model : state-space model
    n_particles : int, default=100
    resampling : {"systematic", "stratified", "multinomial", "residual"}, \
default="systematic"
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    model_, proposal_, n_states_, n_features_in_
        As for :class:`BootstrapFilter`.

    Examples
    --------
    >>> from statemix_sk import ImprovedAuxiliaryFilter, make_linear_gaussian
    >>> Y, X, model = make_linear_gaussian(50, random_state=0)
    >>> ImprovedAuxiliaryFilter(model, random_state=0).fit(Y).score(Y) < 0
    True
    """

    def _make_proposal(self, model):
        super()._make_proposal(model)
        return ImprovedAuxiliaryProposal()


class LocallyOptimalFilter(BootstrapFilter):
    """The particle filter with the exact optimal proposal ``p(x_t | x_{t-1}, y_t)``.

    See :class:`~statemix_sk.baselines.LocallyOptimalProposal`. It needs a
    Gaussian transition (``transition_mean`` and ``process_noise``) and a
    linear-Gaussian observation (``observation_matrix``, ``noise_covariance``);
    ``fit`` raises a ValueError that says what is missing otherwise. With many
    particles it is the best any filter can do with the true model.

    Parameters
    ----------
    model : state-space model
    n_particles : int, default=100
    resampling : {"systematic", "stratified", "multinomial", "residual"}, \
default="systematic"
    ess_threshold : float in [0, 1], default=1.0
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    model_, proposal_, n_states_, n_features_in_
        As for :class:`BootstrapFilter`.

    Examples
    --------
    >>> from statemix_sk import LocallyOptimalFilter, make_lorenz96
    >>> Y, X, model = make_lorenz96(50, random_state=0)
    >>> states = LocallyOptimalFilter(model, random_state=0).fit(Y).predict(Y)
    >>> bool(((states - X) ** 2).mean() < ((Y - X) ** 2).mean())
    True
    """

    def _make_proposal(self, model):
        check_locally_optimal_applies(model)
        return LocallyOptimalProposal(model)
