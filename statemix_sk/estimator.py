"""StateMixFilter: the scikit-learn estimator that learns a filter (StateMixNN).

A thin estimator in scikit-learn's way: :class:`StateMixFilter` validates its
parameters and data, delegates the numerics to pure functions (the start of the
networks to :mod:`statemix_sk.network_start`, training to
:mod:`statemix_sk.training`, filtering to :mod:`statemix_sk.filtering`) and
stores what they return as fitted attributes. The filtering API (``predict``,
``transform``, ``score``, ``score_samples``, ``filter``, ``smooth``,
``forecast``, ``sample``) comes from :mod:`statemix_sk.estimator_base`. The
filters with a known model are in :mod:`statemix_sk.known_model_filters`.
"""

import copy
import functools
import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
)

from ._utils import check_scale, moved_names, pad_series
from .estimator_base import _ParticleFilterEstimator
from .filtering import BootstrapProposal, particle_filter
from .learned import parameter_shapes, periodic_coordinates, with_missing_indicator
from .network_start import (
    dynamics_start,
    linear_smoother,
    particle_smoother,
    regression_start,
    start_score,
    start_spec,
    state_statistics,
)
from .objective import (
    count_observed_steps,
    held_out_log_likelihood,
    split_validation,
)
from .observations import LinearGaussianObservation
from .resampling import RESAMPLING_SCHEMES
from .training import TrainingSettings, best_restart, fit_restarts

__all__ = ["StateMixFilter"]

# Moved in issue 16; the old paths warn (FutureWarning) and will go.
__getattr__ = moved_names(
    "estimator",
    {
        "AuxiliaryFilter": "known_model_filters",
        "BootstrapFilter": "known_model_filters",
        "ImprovedAuxiliaryFilter": "known_model_filters",
        "InconsistentVersionWarning": "estimator_base",
        "LocallyOptimalFilter": "known_model_filters",
    },
)


class StateMixFilter(_ParticleFilterEstimator):
    """Learn a non-linear state-space model from observations (StateMixNN).

    A particle filter whose transition ``f(x_t | x_{t-1})`` and proposal
    ``pi(x_t | x_{t-1}, y_t)`` are Gaussian mixtures whose weights, means and
    scales come from two small dense networks, trained by maximising the filter's
    log-likelihood estimate (differentiated through the filter with stop-gradient
    resampling) on minibatches of windows of the series, each window started
    from the particle cloud its series' previous window left, with early
    stopping on held-out series. The observation model is known. Training starts
    from a transition read off the data (``init_dynamics``).

    Parameters
    ----------
    n_components : int, default=3
        Mixture components ``S`` of the transition and of the proposal.
    hidden_layer_sizes : tuple of int, default=(32, 32)
        Hidden layers of both networks (``tanh``).
    n_particles : int, default=100
        Particles ``N`` per series, in training and after.
    observation : observation model, default=None
        The known ``g(y | x)``: a :class:`~statemix_sk.observations.\
LinearGaussianObservation`, a :class:`~statemix_sk.observations.\
GaussianObservation` or any object with the same members. None means
        ``y = x + v`` with ``v`` of standard deviation ``observation_noise``; the
        state then has as many components as ``Y`` has features.
    observation_noise : float or array-like of shape (n_features,), default=None
        Standard deviation(s) of the observation noise when ``observation`` is
        None (None means 1.0). Setting it together with ``observation`` is an
        error.
    covariance_type : {"diag", "full"}, default="diag"
        Covariance of each mixture component.
    periodic_states : "auto", None or array-like of int, default="auto"
        State coordinates that are phases (in radians). Both networks see such
        a coordinate as ``(sin x, cos x)`` instead of standardised, so that the
        learned transition and proposal are ``2 pi``-periodic in it: an
        unwrapped phase keeps growing, and a series whose phases end up outside
        the range seen in training still meets a network that has learned
        there. ``"auto"``: the coordinates that the observation model sees only
        modulo ``2 pi`` (its mean unchanged by a shift of ``2 pi`` and changed
        by a shift of 1, :func:`~statemix_sk.learned.periodic_coordinates`),
        where the data cannot tell ``x`` from ``x + 2 pi`` anyway: every phase
        of the Kuramoto experiment's ``[sin, cos]`` observation, none for a
        linear observation. None: no coordinate. On Kuramoto (runs 2 and 3 of
        ``reproduce kuramoto --n-test 30``), a network of the raw phases lost
        track of test series that left the training range (held-out MSE 0.133
        and 0.194 at N = 100); with periodic inputs, 0.070 and 0.072. A linear
        start (``init_dynamics``) acts on the other coordinates only.
    init_dynamics : {"regression", "linear", "random_walk"}, \
default="regression"
        Where the transition starts. ``"random_walk"``: a random walk with the
        increment spread of the data. ``"linear"`` (for a linear observation;
        with any other it is the random walk): the maximum-likelihood stationary
        linear-Gaussian model ``x_t - mu = A (x_{t-1} - mu) + w`` (diagonal
        ``Q``), by expectation-maximisation with the Kalman smoother
        (:func:`~statemix_sk.kalman.linear_dynamics_by_em`) started from the
        method of moments on the least-squares states ``pinv(H) y``
        (:func:`~statemix_sk.kalman.linear_dynamics_by_moments`), as
        scikit-learn's mixtures start from k-means (or, where missing entries
        leave too few such states, from the random walk). ``"regression"``: the whole
        transition network fitted by maximum likelihood to estimated states
        (:func:`~statemix_sk.network_start.fit_transition_to_states`, early-stopped
        on the held-out series' estimates), a non-linear regression of each
        state on the previous one. The states are the linear start's Kalman
        smoother's for a linear observation, and for any other the ancestral
        paths of a 500-particle bootstrap filter with the random-walk start
        (:func:`~statemix_sk.smoothing.genealogy_smoothed_means`). The filter's
        likelihood of the held-out data (of the training data without
        validation) then decides between the regression and the linear start
        (the random walk for a non-linear observation); ``start_`` says
        which. On Lorenz 96 with 45 training series the regression moved the
        held-out log-likelihood per step from -17.4 to -14.0, more than
        training from the linear start reached in 740 updates; on Kuramoto
        (18 series), before any training, it halved the random walk's
        held-out MSE (0.033 against 0.069). The proposal starts as the locally
        optimal proposal for the start's noise, around the transition's mean.
    initial_state_mean : float or array-like of shape (n_states,), default=None
        Mean of the initial distribution ``x_0``. None: for a linear observation,
        the least-squares state of the first observation (averaged over the
        training series); for any other, 0.
    initial_state_scale : float or array-like of shape (n_states,), default=None
        Standard deviation(s) of ``x_0``. None: for a linear observation, the
        spread of the least-squares states over the data; for any other, 1.
    max_iter : int, default=100
        Maximum number of epochs; an epoch filters every window of every training
        series once (``ceil(n_steps / window_length)`` times
        ``ceil(n_series / batch_size)`` updates).
    tol : float, default=1e-3
        Training stops when the score (the validation log-likelihood per step,
        or without validation the epoch's training log-likelihood per step) has
        not improved by at least ``tol`` for ``n_iter_no_change`` epochs.
    learning_rate : float, default=0.001
        Adam's step size. From the regression start on Lorenz 96 (50 series),
        0.003 made the held-out score worse than the start, 0.001 and 0.0003
        improved it (0.001 the most in held-out MSE); from a linear start 0.003
        was the better choice (see the project's notes).
    window_length : int, default=25
        Steps per training window. Each update filters a minibatch of windows,
        each started from the particle cloud that the previous window of its
        series left (no gradient flows through that cloud), so that the cost
        of an update does not grow with the number or length of the series,
        and a short window keeps the gradient of a random start informative
        (the likelihood of a long series concentrates).
    batch_size : int, default=10
        Windows per update (fewer when there are fewer training series).
    update : {"joint", "alternating"}, default="joint"
        ``"joint"``: every update steps both networks. ``"alternating"`` (the
        paper's scheme): ``n_transition_steps`` updates of the transition with the
        proposal fixed, then ``n_proposal_steps`` of the proposal with the
        transition fixed, each network with its own Adam state.
    n_transition_steps : int, default=1
        Updates of the transition per cycle, with ``update="alternating"``.
    n_proposal_steps : int, default=1
        Updates of the proposal per cycle, with ``update="alternating"``.
    alpha : float, default=0.0
        Strength of the L2 penalty ``alpha / 2 * sum(W**2)`` of the networks'
        dense weights, per observed step of an update's windows.
    early_stopping : {"auto"} or bool, default="auto"
        Hold out data to score each epoch: keep the parameters of the best
        validation score (the start included) and stop after
        ``n_iter_no_change`` epochs without an improvement of ``tol``. The held
        out data are ``validation_fraction`` of the series (at least one, and
        at least one left to train on), or, for a single series, its last
        ``validation_fraction`` of windows (filtered from the start of the
        series, scored on those windows only). ``"auto"``: on when the data
        allow (two series, or one of two windows or more), otherwise training
        runs on all the data, stops on the training score and keeps the last
        parameters. True: on, and an error when the data do not allow it.
    validation_fraction : float in (0, 1), default=0.1
        Fraction of the series (or of one series' windows) held out.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before training stops.
    use_proposal : {"auto"} or bool, default="auto"
        Whether filtering uses the learned proposal or the learned transition
        (a bootstrap filter of the learned model). ``"auto"``: the one with
        the higher fixed-seed log-likelihood of the held-out data after
        training (the learned proposal when nothing is held out). The learned
        proposal can fit the training series without generalising: on
        Kuramoto, the learned transition proposing did better on held-out
        series.
    resampling : {"systematic", "stratified", "multinomial", "residual"}, \
default="systematic"
    ess_threshold : float in [0, 1], default=1.0
        Resample when ``ESS / N`` falls to it (1: at every step).
    n_init : int, default=1
        Independent restarts; the one with the best validation score (without
        validation: the best fixed-seed log-likelihood of the training data) is
        kept.
    n_jobs : int, default=None
        Processes for the restarts (joblib).
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0
        1 prints one line per epoch: epochs, updates, the training and the
        validation log-likelihood per step, and the seconds so far (the same as
        ``history_``).
    warm_start : bool, default=False
        Start from the previous fit's parameters (a single run: ``n_init`` is
        ignored) where the networks keep their shapes; otherwise (another
        ``n_components`` or ``hidden_layer_sizes``) start afresh. Data with
        missing entries after complete ones add the proposal's missing-entry
        inputs at zero weight, and a proposal that has them keeps them.

    Attributes
    ----------
    params_ : dict
        ``{"transition": {"layers": [(W, b), ...], "linear": L}, "proposal": {...}}``.
    model_ : MixtureTransitionModel
        The learned state-space model (simulate it with :meth:`sample`).
    proposal_ : MixtureProposal
        The learned proposal.
    observation_ : observation model
        The observation model used.
    n_states_ : int
        State dimension.
    periodic_states_ : ndarray of int
        The coordinates treated as phases (see ``periodic_states``).
    initial_state_mean_, initial_state_scale_ : ndarray of shape (n_states,)
    log_likelihood_ : float
        Fixed-seed log-likelihood per observed step on the data given to
        ``fit`` (training and held-out parts): ``score`` of the same data.
    restart_scores_ : ndarray of shape (n_init,)
        Each restart's score: its best validation score, or without validation
        its ``log_likelihood_`` (NaN where a restart diverged entirely). The
        best is kept.
    best_validation_score_ : float or None
        The kept parameters' fixed-seed log-likelihood per observed held-out
        step; None without validation.
    validation_scores_ : list of float or None
        The validation score after each epoch (the first: the start); None
        without validation.
    start_ : {"regression", "linear", "random_walk"}
        Where training started: ``init_dynamics="regression"`` falls back to
        the linear start (the random walk for a non-linear observation) when
        the regression does not give a higher log-likelihood of the held-out
        data (of the training data without validation).
    uses_proposal_ : bool
        Whether the learned proposal is used (see ``use_proposal``); if not,
        ``proposal_`` is the learned transition (a bootstrap filter of the
        learned model).
    n_iter_ : int
        Epochs run by the kept restart.
    n_updates_ : int
        Adam updates run by the kept restart.
    converged_ : bool
        Whether the kept restart stopped because its score stopped improving
        (``tol``, ``n_iter_no_change``), not because of ``max_iter``.
    history_ : list of Evaluation
        ``(epoch, n_updates, train_log_likelihood, validation_log_likelihood,
        seconds)`` after each epoch of the kept restart (the first: the start).
    n_features_in_ : int

    Notes
    -----
    In a :class:`~sklearn.pipeline.Pipeline` after a scaler (wrapped in
    :class:`~statemix_sk.preprocessing.PerStepTransformer` for several series),
    the estimator sees scaled observations: ``observation_noise`` is then in
    scaled units (divide it by the scaler's ``scale_``) and the predicted states
    are in the scaled space (the scaler's ``inverse_transform`` takes them back
    when the observation is the identity). See the user guide's data page.

    Examples
    --------
    >>> from statemix_sk import StateMixFilter, make_linear_gaussian
    >>> Y, X, _ = make_linear_gaussian(30, n_sequences=2, random_state=0)
    >>> model = StateMixFilter(n_components=1, hidden_layer_sizes=(8,), max_iter=3,
    ...                        n_particles=20, observation_noise=0.7, random_state=0)
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # three epochs do not converge
    ...     model = model.fit(Y)
    >>> model.predict(Y).shape
    (2, 30, 4)
    """

    _model_argument = "learned model with the given observation"

    _parameter_constraints: ClassVar[dict] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "n_particles": [Interval(Integral, 1, None, closed="left")],
        "observation": [None, HasMethods(["log_density", "mean", "sample"])],
        "observation_noise": [
            None,
            Interval(Real, 0, None, closed="neither"),
            "array-like",
        ],
        "covariance_type": [StrOptions({"diag", "full"})],
        "periodic_states": [StrOptions({"auto"}), None, "array-like"],
        "init_dynamics": [StrOptions({"regression", "linear", "random_walk"})],
        "initial_state_mean": [None, Real, "array-like"],
        "initial_state_scale": [
            None,
            Interval(Real, 0, None, closed="neither"),
            "array-like",
        ],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "window_length": [Interval(Integral, 2, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "update": [StrOptions({"joint", "alternating"})],
        "n_transition_steps": [Interval(Integral, 0, None, closed="left")],
        "n_proposal_steps": [Interval(Integral, 0, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "use_proposal": [StrOptions({"auto"}), "boolean"],
        "resampling": [StrOptions(set(RESAMPLING_SCHEMES))],
        "ess_threshold": [Interval(Real, 0, 1, closed="both")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        n_components=3,
        *,
        hidden_layer_sizes=(32, 32),
        n_particles=100,
        observation=None,
        observation_noise=None,
        covariance_type="diag",
        periodic_states="auto",
        init_dynamics="regression",
        initial_state_mean=None,
        initial_state_scale=None,
        max_iter=100,
        tol=1e-3,
        learning_rate=0.001,
        window_length=25,
        batch_size=10,
        update="joint",
        n_transition_steps=1,
        n_proposal_steps=1,
        alpha=0.0,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=10,
        use_proposal="auto",
        resampling="systematic",
        ess_threshold=1.0,
        n_init=1,
        n_jobs=None,
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.n_particles = n_particles
        self.observation = observation
        self.observation_noise = observation_noise
        self.covariance_type = covariance_type
        self.periodic_states = periodic_states
        self.init_dynamics = init_dynamics
        self.initial_state_mean = initial_state_mean
        self.initial_state_scale = initial_state_scale
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.window_length = window_length
        self.batch_size = batch_size
        self.update = update
        self.n_transition_steps = n_transition_steps
        self.n_proposal_steps = n_proposal_steps
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.use_proposal = use_proposal
        self.resampling = resampling
        self.ess_threshold = ess_threshold
        self.n_init = n_init
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    def _check_settings(self):
        """Validate the parameters that need more than _parameter_constraints."""
        sizes = self.hidden_layer_sizes
        if not all(
            isinstance(size, Integral) and not isinstance(size, bool) and size > 0
            for size in sizes
        ):
            raise InvalidParameterError(
                "hidden_layer_sizes must be a tuple of positive integers, got "
                f"{sizes!r}."
            )
        if (
            self.update == "alternating"
            and self.n_transition_steps == 0
            and self.n_proposal_steps == 0
        ):
            raise InvalidParameterError(
                "n_transition_steps and n_proposal_steps cannot both be 0 with "
                "update='alternating': nothing would be trained."
            )
        return tuple(int(size) for size in sizes)

    def _resolve_observation(self, n_features):
        """Return the observation model: the given one (copied) or ``y = x + v``."""
        if self.observation is None:
            noise = 1.0 if self.observation_noise is None else self.observation_noise
            return LinearGaussianObservation(
                noise_scale=check_scale(noise, "observation_noise", n_features),
                n_states=n_features,
            )
        if self.observation_noise is not None:
            raise ValueError(
                "observation_noise must be None when an observation model is given: "
                "the observation model carries its own noise."
            )
        if self.observation.n_outputs != n_features:
            raise ValueError(
                f"observation produces {self.observation.n_outputs} outputs but Y "
                f"has {n_features} features."
            )
        return copy.deepcopy(self.observation)

    def _resolve_periodic(self, observation, initial_mean, initial_scale):
        """Return the periodic coordinates (see ``periodic_states``)."""
        n_states = observation.n_states
        if self.periodic_states is None:
            return numpy.zeros(0, dtype=int)
        if isinstance(self.periodic_states, str):  # "auto"
            # Probes where the filter starts: the observation model must accept
            # such states anyway.
            probes = initial_mean + initial_scale * numpy.random.default_rng(
                0
            ).standard_normal((64, n_states))
            return periodic_coordinates(observation, probes)
        value = numpy.asarray(self.periodic_states)
        if value.size == 0:
            return numpy.zeros(0, dtype=int)
        if (
            value.ndim != 1
            or not numpy.issubdtype(value.dtype, numpy.integer)
            or numpy.any(value < 0)
            or numpy.any(value >= n_states)
            or len(numpy.unique(value)) != value.size
        ):
            raise ValueError(
                "periodic_states must be 'auto', None or distinct state indices "
                f"in [0, {n_states}) (the state has {n_states} coordinates), got "
                f"{self.periodic_states!r}."
            )
        return numpy.sort(value).astype(int)

    def _settings(self):
        return TrainingSettings(
            n_particles=self.n_particles,
            resampling=self.resampling,
            ess_threshold=self.ess_threshold,
            max_iter=self.max_iter,
            tol=self.tol,
            learning_rate=self.learning_rate,
            window_length=self.window_length,
            batch_size=self.batch_size,
            update=self.update,
            n_transition_steps=self.n_transition_steps,
            n_proposal_steps=self.n_proposal_steps,
            n_iter_no_change=self.n_iter_no_change,
            alpha=self.alpha,
            verbose=self.verbose,
        )

    # ----------------------------------------------------------------------------
    # Fitting
    # ----------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Y, y=None):
        """Learn the transition and the proposal from observations alone.

        Parameters
        ----------
        Y : array-like of shape (n_steps, n_features), or (n_sequences, n_steps, \
n_features), or list of array-like of shape (n_steps_i, n_features)
            One series (2-D), several of the same length (3-D) or several of any
            lengths (a list). Time down the rows; NaN entries are missing.
        y : None
            Ignored.

        Returns
        -------
        self : StateMixFilter
        """
        with self._unchanged_on_failure():
            return self._fit(Y)

    def _fit(self, Y):
        """Do the work of :meth:`fit`; fitted attributes are set only at the end."""
        hidden_layer_sizes = self._check_settings()
        series, _ = self._validate_series(Y, reset=True)
        if not any(numpy.any(~numpy.isnan(one)) for one in series):
            raise ValueError(
                "Y has no observed entry (every value is NaN): there is nothing to "
                "learn from."
            )
        observation = self._resolve_observation(series[0].shape[1])
        random_state = check_random_state(self.random_state)
        root_seed, eval_seed, start_seed = random_state.randint(0, 2**31 - 1, size=3)
        all_series = series
        series, validation, held_out = split_validation(
            series,
            random_state,
            early_stopping=self.early_stopping,
            validation_fraction=self.validation_fraction,
            window_length=self.window_length,
        )
        Y_padded = pad_series(series)
        spec, start, periodic = self._start(
            all_series,
            series,
            held_out,
            validation,
            observation,
            hidden_layer_sizes,
            int(start_seed),
        )
        best, scores, finite = self._train(
            spec, Y_padded, validation, root_seed, eval_seed
        )
        model, proposal, uses_proposal = self._choose_proposal(
            spec, best.params, validation, int(eval_seed)
        )
        # Every fitted attribute is set here, together, after all the work: an
        # interrupted fit leaves the estimator as it was.
        self.spec_ = spec
        self.params_ = best.params
        self.model_ = model
        self.proposal_ = proposal
        self.observation_ = observation
        self.n_states_ = observation.n_states
        self.periodic_states_ = periodic
        self.initial_state_mean_ = spec.initial_mean
        self.initial_state_scale_ = spec.initial_scale
        Y_all = pad_series(all_series)
        with numpy.errstate(all="ignore"):
            result = particle_filter(
                Y_all,
                model,
                proposal,
                n_particles=self.n_particles,
                resampling=self.resampling,
                ess_threshold=self.ess_threshold,
                random_state=int(eval_seed),
            )
        self.log_likelihood_ = float(
            numpy.sum(result.log_likelihood) / count_observed_steps(Y_all)
        )
        self.restart_scores_ = numpy.where(finite, scores, numpy.nan)
        if validation is None:
            self.best_validation_score_ = None
            self.validation_scores_ = None
        else:
            self.best_validation_score_ = best.validation_score
            self.validation_scores_ = [
                entry.validation_log_likelihood for entry in best.history
            ]
        self.start_ = start
        self.uses_proposal_ = uses_proposal
        self.n_iter_ = best.n_iter
        self.n_updates_ = best.n_updates
        self.converged_ = best.converged
        self.history_ = best.history
        self._eval_seed = int(eval_seed)
        return self

    def _start(
        self, all_series, series, held_out, validation, observation, hidden, seed
    ):
        """Return the spec training starts from, its kind and the periodic states.

        See :mod:`statemix_sk.network_start`. The scales and the linear start (a
        few parameters per state) are read off all the data; what has the
        capacity to overfit (the networks, the regression start) learns from the
        training part only.
        """
        stats, increments, initial_mean, initial_scale = state_statistics(
            all_series, observation, self.initial_state_mean, self.initial_state_scale
        )
        drift, transition_scale, linear = dynamics_start(
            all_series,
            observation,
            stats,
            increments,
            initial_mean,
            initial_scale,
            self.init_dynamics,
        )
        periodic = self._resolve_periodic(observation, initial_mean, initial_scale)
        if periodic.size:
            stats = stats._replace(periodic=periodic)
            if drift is not None:
                # The linear part multiplies sin(x) where x is a phase: the
                # linear start cannot act on a phase.
                drift = drift.copy()
                drift[:, periodic] = 0.0
        make_spec = functools.partial(
            start_spec,
            observation=observation,
            stats=stats,
            increments=increments,
            transition_scale=transition_scale,
            initial_mean=initial_mean,
            initial_scale=initial_scale,
            drift=drift,
            hidden_layer_sizes=hidden,
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            # Only where the data can teach it what a missing entry means (or
            # a warm start continues a proposal that has it).
            missing_indicator=any(numpy.isnan(one).any() for one in all_series)
            or (
                self.warm_start
                and getattr(self, "spec_", None) is not None
                and self.spec_.missing_indicator
            ),
        )
        spec = make_spec(transition_scale)
        start = "linear" if linear is not None else "random_walk"
        if self.init_dynamics != "regression":
            return spec, start, periodic
        if linear is not None:
            smooth = linear_smoother(spec, linear)
        else:
            smooth = self._particle_smoother(spec, seed)
        regression = regression_start(spec, make_spec, series, held_out, smooth, seed)
        # The regression is fitted to smoothed states, not to the data: the
        # filter's likelihood of held-out data (or, without any, of the
        # training data) decides whether it beats the linear (or random-walk)
        # start. On linear-Gaussian data it does not (smoothed states are
        # smoother than the true ones, so its noise comes out too small).
        Y_padded = pad_series(series)
        initial_score, regression_score = (
            self._start_score(candidate, Y_padded, validation, seed)
            for candidate in (spec, regression)
        )
        if regression_score > initial_score:
            return regression, "regression", periodic
        return spec, start, periodic

    @staticmethod
    def _particle_smoother(spec, seed):
        """See :func:`~statemix_sk.network_start.particle_smoother`."""
        return particle_smoother(spec, seed)

    def _start_score(self, spec, Y, validation, seed):
        """See :func:`~statemix_sk.network_start.start_score`."""
        return start_score(spec, Y, validation, self._settings(), seed)

    def _train(self, spec, Y_padded, validation, root_seed, eval_seed):
        """Train from ``spec`` (``n_init`` restarts); return the best and the scores.

        Warns for each diverged restart and when the best did not converge.
        """
        warm = self.warm_start and hasattr(self, "params_")
        previous = self.params_ if warm else None
        if warm:
            if spec.missing_indicator and not self.spec_.missing_indicator:
                # These data have missing entries, the previous ones had none:
                # the proposal gets the indicator's inputs, at zero weight.
                previous = with_missing_indicator(previous, spec.observation.n_outputs)
            # The previous parameters can start this fit only if every array has
            # the shape this fit's networks need.
            fresh = spec.init_params(numpy.random.default_rng(0))
            warm = parameter_shapes(fresh) == parameter_shapes(previous)
        n_init = 1 if warm else self.n_init
        seed_sequences = numpy.random.SeedSequence(int(root_seed)).spawn(n_init)
        results = fit_restarts(
            spec,
            Y_padded,
            self._settings(),
            seed_sequences,
            int(eval_seed),
            validation=validation,
            n_jobs=self.n_jobs,
            init_params=previous if warm else None,
        )
        for index, result in enumerate(results):
            if result.diverged:
                warnings.warn(
                    f"Restart {index} produced a non-finite log-likelihood or "
                    f"gradient in epoch {result.n_iter} and was stopped there; "
                    "its best finite parameters are kept. A smaller learning_rate "
                    "may help.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        best, scores, finite = best_restart(results, validation)
        if not best.converged and not best.diverged:
            warnings.warn(
                f"StateMixFilter did not converge in max_iter={self.max_iter} "
                f"epochs: its score was still improving by more than tol="
                f"{self.tol} within n_iter_no_change={self.n_iter_no_change} "
                "epochs. Increase max_iter, or check history_.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return best, scores, finite

    def _choose_proposal(self, spec, params, validation, eval_seed):
        """Return the model, the proposal filtering uses and whether it is learned.

        See ``use_proposal``.
        """
        model, proposal = spec.build(params)
        uses_proposal = self.use_proposal is True or (
            self.use_proposal == "auto" and validation is None
        )
        if self.use_proposal == "auto" and validation is not None:
            # The learned proposal can fit the training series without
            # generalising (measured on Kuramoto): it is used only if it gives a
            # higher held-out likelihood than the learned transition proposing.
            settings = self._settings()
            with numpy.errstate(all="ignore"):
                learned, transition = (
                    held_out_log_likelihood(
                        model, candidate, validation, settings, eval_seed
                    )
                    for candidate in (proposal, None)
                )
            uses_proposal = not transition > learned
        if not uses_proposal:
            proposal = BootstrapProposal()
        return model, proposal, uses_proposal
