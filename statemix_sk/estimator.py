"""The scikit-learn estimators: StateMixFilter and the filters given a known model.

The only module (besides input checks) that uses scikit-learn's estimator API. It
validates parameters and data, chooses the networks' scales from the data, and
hands the numerics to :mod:`statemix_sk.training`, :mod:`statemix_sk.baselines`
and :mod:`statemix_sk.filtering`. Every estimator here has the same filtering
API: ``predict`` / ``transform`` (filtered means), ``score`` (log-likelihood per
observed step), ``score_samples``, ``filter``, ``smooth`` (smoothed means),
``forecast`` and ``sample``.
"""

import contextlib
import copy
import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils.validation import check_is_fitted

from ._utils import (
    check_magnitude,
    check_positive_int,
    check_scale,
    validate_series,
)
from .baselines import (
    AuxiliaryProposal,
    ImprovedAuxiliaryProposal,
    LocallyOptimalProposal,
    check_locally_optimal_applies,
)
from .filtering import (
    BootstrapProposal,
    DegeneracyWarning,
    FilterResult,
    particle_filter,
)
from .forecasting import ForecastResult, forecast
from .kalman import linear_dynamics_by_em, linear_dynamics_by_moments, smoothed_states
from .learned import (
    StateMixSpec,
    expand_components,
    locally_optimal_gain,
    periodic_coordinates,
)
from .models import simulate
from .networks import Standardizer, make_mixture_head
from .observations import LinearGaussianObservation
from .resampling import RESAMPLING_SCHEMES
from .smoothing import ffbs_smoothed_moments, genealogy_smoothed_means
from .training import (
    TrainingSettings,
    Validation,
    count_observed_steps,
    fit_restarts,
    fit_transition_to_states,
    held_out_log_likelihood,
    mean_log_likelihood,
    validation_log_likelihood,
)

__all__ = [
    "AuxiliaryFilter",
    "BootstrapFilter",
    "ImprovedAuxiliaryFilter",
    "InconsistentVersionWarning",
    "LocallyOptimalFilter",
    "StateMixFilter",
]


class InconsistentVersionWarning(UserWarning):
    """An estimator was unpickled under another statemix-sk version.

    Its results may differ from those under the version that pickled it, or it may
    not work at all. Pickles are meant for the same machine and library versions;
    refit the estimator under the version in use.
    """


def _package_version():
    """Return ``statemix_sk.__version__`` (imported late: the package imports us)."""
    from . import __version__

    return __version__


# Every standard deviation of the networks' mixtures stays within these multiples
# of the data's increment spread (the bounded scale link).
_SCALE_BOUNDS = (0.01, 10.0)
# Particles of the filter whose genealogy gives the regression start its states
# for a non-linear observation (on Kuramoto, 20 series: 500 gave a start with
# held-out MSE 0.033 against the random-walk start's 0.069).
_SMOOTHER_PARTICLES = 500
# Floats of stored particles (40 MB) per filter pass of ``smooth``; more series
# are filtered and smoothed a few at a time.
_SMOOTHER_FLOATS = 5_000_000


def _pad(series):
    """Stack series of possibly different lengths into one NaN-padded 3-D array."""
    n_steps = max(len(one) for one in series)
    padded = numpy.full((len(series), n_steps, series[0].shape[1]), numpy.nan)
    for index, one in enumerate(series):
        padded[index, : len(one)] = one
    return padded


def _warn_if_degenerate(ess, series):
    """Warn once if the ESS fell below 2 at a step of a series (padding excluded)."""
    ess = numpy.asarray(ess)
    observed_steps = numpy.arange(ess.shape[1])[None] < numpy.array(
        [[len(one)] for one in series]
    )
    collapsed = (ess < 2.0) & observed_steps
    if numpy.any(collapsed):
        index, step = numpy.argwhere(collapsed)[0]
        warnings.warn(
            f"The effective sample size fell below 2 at {int(collapsed.sum())} of "
            f"{int(observed_steps.sum())} steps (first at step {step} of series "
            f"{index}, ESS {ess[index, step]:.3g}): the filtered estimates there "
            "rest on one or two particles. More particles (n_particles), or a look "
            "at the data for outliers, may help; FilterResult.ess has the ESS of "
            "every step.",
            DegeneracyWarning,
            stacklevel=3,
        )


def _leaves(params):
    """Return the arrays of a parameter dict, in a fixed order."""
    return [
        array
        for phase in ("transition", "proposal")
        for array in [
            *(array for layer in params[phase]["layers"] for array in layer),
            params[phase]["linear"],
        ]
    ]


def _spread(values, axis):
    """Return the NaN-ignoring standard deviation, 1 where it is 0 or undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = numpy.nanstd(values, axis=axis)
    return numpy.where(numpy.isfinite(spread) & (spread > 0), spread, 1.0)


class _ParticleFilterEstimator(TransformerMixin, BaseEstimator):
    """What every filter estimator shares: input handling and the filtering API.

    A subclass's ``fit`` sets ``model_``, ``proposal_``, ``n_features_in_`` and
    ``_eval_seed``, and has the parameters ``n_particles``, ``resampling``,
    ``ess_threshold`` and ``random_state``.
    """

    # The argument that supplies the model the filter runs (named when its output
    # is not finite).
    _model_argument = "model"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.required = False
        return tags

    # ----------------------------------------------------------------------------
    # Pickling
    # ----------------------------------------------------------------------------

    def __getstate__(self):
        """Return the state to pickle, with the statemix-sk version."""
        state = dict(super().__getstate__())
        state["_statemix_sk_version"] = _package_version()
        return state

    def __setstate__(self, state):
        """Restore a pickled state; warn if another statemix-sk version wrote it."""
        state = dict(state)
        pickled = state.pop("_statemix_sk_version", "unknown")
        current = _package_version()
        if pickled != current:
            warnings.warn(
                f"Unpickling {type(self).__name__} from statemix-sk version "
                f"{pickled} when using version {current}: its results may differ, "
                "or it may not work. Refit it under this version.",
                InconsistentVersionWarning,
                stacklevel=2,
            )
        super().__setstate__(state)

    # ----------------------------------------------------------------------------
    # Input handling
    # ----------------------------------------------------------------------------

    def _validate_series(self, Y, *, reset):
        """Return the series (at least two steps each) and the input's kind.

        See :func:`~statemix_sk._utils.validate_series`.
        """
        return validate_series(self, Y, reset=reset, min_steps=2)

    @contextlib.contextmanager
    def _unchanged_on_failure(self):
        """Undo what a failed or interrupted fit recorded about its input.

        Validation records ``n_features_in_`` and ``feature_names_in_`` before the
        work; the fitted attributes are set only at the end of a fit. A fit that
        raises (KeyboardInterrupt included) leaves the estimator as it was.
        """
        names = ("n_features_in_", "feature_names_in_")
        recorded = {name: getattr(self, name) for name in names if hasattr(self, name)}
        try:
            yield
        except BaseException:
            for name in names:
                if hasattr(self, name):
                    delattr(self, name)
            for name, value in recorded.items():
                setattr(self, name, value)
            raise

    @staticmethod
    def _restore(values, series, kind):
        """Give per-series results (padded, with a series axis) the input's shape."""
        if kind == "single":
            return values[0]
        if kind == "array":
            return values
        return [value[: len(one)] for value, one in zip(values, series, strict=True)]

    # ----------------------------------------------------------------------------
    # After fitting
    # ----------------------------------------------------------------------------

    def _filter_series(self, series, seed, return_particles):
        """Filter series (a list) in one pass with the fitted model; check it."""
        with numpy.errstate(all="ignore"):
            result = particle_filter(
                _pad(series),
                self.model_,
                self.proposal_,
                n_particles=self.n_particles,
                resampling=self.resampling,
                ess_threshold=self.ess_threshold,
                random_state=seed,
                return_particles=return_particles,
            )
        self._check_finite(result)
        return result

    def _run_filter(self, Y, return_particles=False):
        check_is_fitted(self)
        series, kind = self._validate_series(Y, reset=False)
        result = self._filter_series(series, self._eval_seed, return_particles)
        return result, series, kind

    def _check_finite(self, result):
        """Raise a ValueError if the filter's output is not finite.

        The input is finite (checked) and every weight is in the log domain, so
        NaN or infinity can only come from the model: its densities or its states
        (a user's observation function that fails far from the data, say).
        """
        increments = numpy.asarray(result.log_likelihood_increments)
        means = numpy.asarray(result.filtered_means)
        bad = ~numpy.isfinite(increments) | ~numpy.all(numpy.isfinite(means), -1)
        if numpy.any(bad):
            series, step = numpy.argwhere(bad)[0]
            raise ValueError(
                f"The filter's output is not finite from step {step} of series "
                f"{series} on, although Y is finite: the {self._model_argument} "
                f"({type(self.model_).__name__} with "
                f"{type(self.model_.observation).__name__}) gave NaN or infinite "
                "densities or states there. Check that the observation model (for "
                "a GaussianObservation, its function) and the transition are "
                "finite for every state the particles may reach."
            )

    def filter(self, Y, return_particles=False):
        """Filter series with the model and proposal.

        Parameters
        ----------
        Y : array-like or list of array-like
            As in :meth:`fit`.
        return_particles : bool, default=False
            Also return the particles, log-weights and ancestors of every step.

        Returns
        -------
        result : FilterResult or list of FilterResult
            For a 2-D ``Y`` one result with the shapes documented by
            :class:`~statemix_sk.filtering.FilterResult`; for a 3-D ``Y`` one with
            a leading series axis; for a list, one result per series. Its ``ess``
            is the effective sample size after each step.

        Warns
        -----
        DegeneracyWarning
            Once per call, when the effective sample size fell below 2 at some
            step of some series: the estimates there rest on one or two
            particles.
        """
        result, series, kind = self._run_filter(Y, return_particles)
        _warn_if_degenerate(result.ess, series)
        if kind == "array":
            return result
        results = [
            FilterResult(
                *(
                    None
                    if field is None
                    else numpy.asarray(field)[index]
                    if numpy.ndim(field) == 1
                    else numpy.asarray(field)[index, : len(one)]
                    for field in result
                )
            )
            for index, one in enumerate(series)
        ]
        return results[0] if kind == "single" else results

    def predict(self, Y):
        """Return the filtered means ``E[x_t | y_1:t]`` under the model.

        Parameters
        ----------
        Y : array-like or list of array-like
            As in :meth:`fit`.

        Returns
        -------
        states : ndarray of shape (n_steps, n_states), (n_sequences, n_steps, \
n_states), or list of ndarray
            In the structure of ``Y``.
        """
        result, series, kind = self._run_filter(Y)
        return self._restore(result.filtered_means, series, kind)

    def transform(self, Y):
        """Return the filtered means, as :meth:`predict` does (for pipelines)."""
        return self.predict(Y)

    def score_samples(self, Y):
        """Log-likelihood increments ``log p(y_t | y_1:t-1)`` per step.

        Returns
        -------
        increments : ndarray of shape (n_steps,), (n_sequences, n_steps), or list
            In the structure of ``Y``; 0 where a row is entirely missing.
        """
        result, series, kind = self._run_filter(Y)
        return self._restore(
            numpy.asarray(result.log_likelihood_increments), series, kind
        )

    def score(self, Y, y=None):
        """Mean log-likelihood per observed time step (higher is better).

        Parameters
        ----------
        Y : array-like or list of array-like
            As in :meth:`fit`.
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        result, series, _ = self._run_filter(Y)
        n_observed = count_observed_steps(_pad(series))
        return float(numpy.sum(result.log_likelihood) / max(n_observed, 1))

    def sample(self, n_steps, n_sequences=None, random_state=None):
        """Simulate from the model (the learned one, for StateMixFilter).

        Parameters
        ----------
        n_steps : int
        n_sequences : int, default=None
            None returns 2-D arrays; an int, 3-D arrays.
        random_state : int, RandomState instance or None, default=None
            None uses the estimator's ``random_state``.

        Returns
        -------
        Y : ndarray of shape (n_steps, n_features) or (n_sequences, n_steps, \
n_features)
            Simulated observations.
        X : ndarray of shape (n_steps, n_states) or (n_sequences, n_steps, \
n_states)
            Simulated states.
        """
        check_is_fitted(self)
        rng = check_random_state(
            self.random_state if random_state is None else random_state
        )
        seed = int(rng.randint(0, 2**31 - 1))
        return simulate(self.model_, n_steps, n_sequences, seed)

    # ----------------------------------------------------------------------------
    # Smoothing and forecasting
    # ----------------------------------------------------------------------------

    def _filter_groups(self, series, groups, return_particles):
        """Filter each group of series (lists of indices) in one pass; yield results.

        A group whose first series is ``first`` runs with the seed
        ``_eval_seed + first``: the group of all series, from 0, is the run of
        :meth:`predict`.
        """
        for group in groups:
            chunk = [series[index] for index in group]
            result = self._filter_series(
                chunk, self._eval_seed + group[0], return_particles
            )
            yield group, chunk, result

    @staticmethod
    def _gather(values, kind):
        """Put per-series arrays (in the input's order) in the input's structure."""
        if kind == "single":
            return values[0]
        if kind == "array":
            return numpy.stack(values)
        return values

    def smooth(self, Y, return_std=False):
        """Return the smoothed means ``E[x_t | y_1:T]`` under the model.

        Each series is filtered as in :meth:`predict`, keeping the particles of
        every step, and smoothed by forward filtering, backward smoothing
        (:func:`~statemix_sk.smoothing.ffbs_smoothed_moments`) with the model's
        transition density (the learned mixture, for StateMixFilter): every
        estimate uses the whole series, the later observations included. Costs
        ``O(n_particles**2)`` per step; deterministic for a fitted estimator.
        Rows with missing entries are smoothed through.

        Parameters
        ----------
        Y : array-like or list of array-like
            As in :meth:`fit`.
        return_std : bool, default=False
            Also return the smoothed standard deviations.

        Returns
        -------
        states : ndarray of shape (n_steps, n_states), (n_sequences, n_steps, \
n_states), or list of ndarray
            In the structure of ``Y``. The last step's equal :meth:`predict`'s
            when all the series are filtered in one pass (stored particles up to
            about 40 MB; more series are filtered a few at a time, each chunk
            with its own seed).
        std : same structure as ``states``
            With ``return_std=True``: the smoothed standard deviations.
        """
        check_is_fitted(self)
        series, kind = self._validate_series(Y, reset=False)
        length = max(len(one) for one in series)
        per_chunk = max(
            1,
            _SMOOTHER_FLOATS // (length * self.n_particles * int(self.model_.n_states)),
        )
        groups = [
            list(range(first, min(first + per_chunk, len(series))))
            for first in range(0, len(series), per_chunk)
        ]
        means, scales = [], []
        for _, chunk, result in self._filter_groups(series, groups, True):
            moments = ffbs_smoothed_moments(
                result, self.model_, lengths=[len(one) for one in chunk]
            )
            for index, one in enumerate(chunk):
                means.append(moments.smoothed_means[index, : len(one)])
                scales.append(moments.smoothed_scales[index, : len(one)])
        means = self._gather(means, kind)
        if return_std:
            return means, self._gather(scales, kind)
        return means

    def forecast(self, Y, n_steps, *, quantiles=None):
        """Forecast states and observations ``n_steps`` past the end of each series.

        Each series is filtered as in :meth:`predict`; its final weighted cloud
        is moved through the model's transition (the learned one, for
        StateMixFilter), see :func:`~statemix_sk.forecasting.forecast`.
        Missing rows at the end of a series are forecast across: the forecast
        starts after its last row, observed or not. Deterministic for a fitted
        estimator.

        Parameters
        ----------
        Y : array-like or list of array-like
            As in :meth:`fit`; a list's series may have different lengths (each
            is forecast from its own end).
        n_steps : int
            Steps ahead, at least 1.
        quantiles : sequence of float in (0, 1), default=None
            Also return these quantiles of the predictive distributions.

        Returns
        -------
        forecast : ForecastResult
            Its means and standard deviations of the states (``state_mean``,
            ``state_std``) and of the observations, noise included
            (``observation_mean``, ``observation_std``), and with
            ``quantiles`` their quantiles; each field in the structure of
            ``Y``: (n_steps, n_states) for one series, (n_sequences, n_steps,
            n_states) for a 3-D ``Y``, a list for a list (the quantiles'
            levels come before the steps).
        """
        check_is_fitted(self)
        n_steps = check_positive_int(n_steps, "n_steps")
        series, kind = self._validate_series(Y, reset=False)
        # Series of one length share a pass: padding a shorter series would
        # start its forecast after the padding instead of after its end.
        lengths = numpy.array([len(one) for one in series])
        groups = [
            numpy.flatnonzero(lengths == length).tolist()
            for length in numpy.unique(lengths)
        ]
        per_series = [None] * len(series)
        for group, _, result in self._filter_groups(series, groups, False):
            # The forecast's own stream: a child of the evaluation seed's
            # sequence, distinct from the filter's seed.
            seed = numpy.random.SeedSequence(self._eval_seed, spawn_key=(group[0],))
            ahead = forecast(
                result, self.model_, n_steps, quantiles=quantiles, random_state=seed
            )
            for position, index in enumerate(group):
                per_series[index] = [
                    None if field is None else field[position] for field in ahead
                ]
        return ForecastResult(
            *(
                None
                if per_series[0][field] is None
                else self._gather([one[field] for one in per_series], kind)
                for field in range(len(ForecastResult._fields))
            )
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
        scikit-learn's mixtures start from k-means. ``"regression"``: the whole
        transition network fitted by maximum likelihood to estimated states
        (:func:`~statemix_sk.training.fit_transition_to_states`, early-stopped
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
        ignored).

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

    def _state_statistics(self, series, observation):
        """Scales the networks start from, read off the data.

        For a linear observation the least-squares states ``pinv(H) y`` give the
        standardisation of the networks' input, the increment spread (the
        random-walk scale that the untrained transition starts with) and the
        default initial distribution. The increment spread is a method-of-moments
        estimate: the differences of the least-squares states carry the
        observation noise twice, so its variance ``2 diag(pinv(H) R pinv(H)')`` is
        taken off (keeping at least a tenth of the raw spread). For any other
        observation nothing about the state's scale can be read off ``Y``: zero
        mean, unit scale, and an increment spread of a tenth of the initial scale.
        """
        n_states = observation.n_states
        matrix = getattr(observation, "observation_matrix", None)
        if matrix is not None:
            inverse = numpy.linalg.pinv(matrix)
            with numpy.errstate(over="ignore", invalid="ignore"):
                states = [one @ inverse.T for one in series]  # NaN stays NaN
            stacked = numpy.concatenate(states)
            complete = ~numpy.any(numpy.isnan(numpy.concatenate(series)), axis=1)
            try:
                if not numpy.all(numpy.isfinite(stacked[complete])):
                    raise ValueError("They overflow float64.")
                check_magnitude(stacked, "pinv(observation_matrix) @ Y")
            except ValueError as exc:
                raise ValueError(
                    "observation_matrix is too close to singular for this Y: the "
                    f"least-squares states pinv(H) y are out of range. {exc}"
                ) from None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = numpy.nanmean(stacked, axis=0)
                first = numpy.nanmean(numpy.stack([one[0] for one in states]), 0)
            mean = numpy.where(numpy.isfinite(mean), mean, 0.0)
            scale = _spread(stacked, axis=0)
            raw = _spread(
                numpy.concatenate([numpy.diff(one, axis=0) for one in states]), 0
            )
            noise_variance = numpy.diag(
                inverse @ observation.noise_covariance @ inverse.T
            )
            increments = numpy.sqrt(
                numpy.maximum(raw**2 - 2.0 * noise_variance, (0.1 * raw) ** 2)
            )
            initial_mean = numpy.where(numpy.isfinite(first), first, mean)
            initial_scale = scale
        else:
            mean, scale = numpy.zeros(n_states), numpy.ones(n_states)
            initial_mean, initial_scale = mean, scale
            increments = None
        if self.initial_state_mean is not None:
            value = numpy.asarray(self.initial_state_mean, dtype=float)
            if (
                value.ndim > 1
                or (value.ndim == 1 and value.size != n_states)
                or not (numpy.all(numpy.isfinite(value)))
            ):
                raise ValueError(
                    f"initial_state_mean must be a finite scalar or a vector of "
                    f"{n_states} entries, got {self.initial_state_mean!r}."
                )
            initial_mean = numpy.broadcast_to(value, (n_states,)).copy()
        if self.initial_state_scale is not None:
            initial_scale = check_scale(
                self.initial_state_scale, "initial_state_scale", n_states
            )
        if increments is None:
            increments = 0.1 * initial_scale
        return Standardizer(mean, scale), increments, initial_mean, initial_scale

    def _dynamics_start(
        self, series, observation, stats, increments, initial_mean, initial_scale
    ):
        """Where the linear parts start: see ``init_dynamics``.

        Returns the transition's drift (None: a random walk) and spread, and the
        fitted linear model ``(A, diag(Q))`` (None unless one was fitted).
        """
        matrix = getattr(observation, "observation_matrix", None)
        if matrix is None or self.init_dynamics == "random_walk":
            return None, increments, None
        inverse = numpy.linalg.pinv(matrix)
        transition_matrix, process_variance = linear_dynamics_by_moments(
            [one @ inverse.T for one in series],
            inverse @ observation.noise_covariance @ inverse.T,
            stats.mean,
        )
        if transition_matrix is None:
            return None, increments, None
        transition_matrix, process_variance, _ = linear_dynamics_by_em(
            series,
            observation,
            stats.mean,
            transition_matrix,
            process_variance,
            initial_mean,
            initial_scale,
        )
        # Increment = (A - I)(x - mean) = (A - I) diag(scale) z for the
        # standardised input z.
        drift = (transition_matrix - numpy.eye(len(stats.mean))) * stats.scale
        transition_scale = numpy.clip(
            numpy.sqrt(process_variance), 0.05 * increments, increments
        )
        return drift, transition_scale, (transition_matrix, process_variance)

    @staticmethod
    def _proposal_start(observation, transition_scale, increments):
        """Gain and spread of the locally optimal proposal of a transition's noise.

        Returns ``(None, transition_scale)`` (the proposal starts as the
        transition) when the observation is not linear.
        """
        matrix = getattr(observation, "observation_matrix", None)
        if matrix is None:
            return None, transition_scale
        # Without this start, a proposal that starts as the transition is a
        # bootstrap filter, which loses track in a few dimensions and gives the
        # networks little to learn from.
        gain, proposal_scale = locally_optimal_gain(
            matrix, observation.noise_covariance, transition_scale
        )
        gain = gain * observation.noise_scale  # per unit of scaled innovation
        return gain, numpy.maximum(proposal_scale, 1e-3 * increments)

    @staticmethod
    def _kalman_smoother(spec, linear):
        """State estimates for the regression start, linear observation.

        The Kalman smoother of the fitted linear model (``linear``: its
        ``(A, diag(Q))``): a function from series to their smoothed means.
        """
        transition_matrix, process_variance = linear

        def smooth(sequences):
            return smoothed_states(
                sequences,
                spec.observation,
                spec.input_stats.mean,
                transition_matrix,
                process_variance,
                spec.initial_mean,
                spec.initial_scale,
            )

        return smooth

    @staticmethod
    def _particle_smoother(spec, seed):
        """State estimates for the regression start, any observation.

        The ancestral paths of a bootstrap filter with the untrained (random-walk)
        transition of ``spec``, at ``_SMOOTHER_PARTICLES`` particles
        (:func:`~statemix_sk.smoothing.genealogy_smoothed_means`): a function
        from series to their smoothed means. A few series at a time, so that the
        stored particles stay within about 40 MB.
        """
        model, _ = spec.build(spec.init_params(numpy.random.default_rng(seed)))
        n_states = spec.observation.n_states

        def smooth(sequences):
            length = max(len(one) for one in sequences)
            per_chunk = max(1, 5_000_000 // (length * _SMOOTHER_PARTICLES * n_states))
            means = []
            for first in range(0, len(sequences), per_chunk):
                chunk = sequences[first : first + per_chunk]
                with numpy.errstate(all="ignore"):
                    result = particle_filter(
                        _pad(chunk),
                        model,
                        None,
                        n_particles=_SMOOTHER_PARTICLES,
                        random_state=seed + first,
                        return_particles=True,
                    )
                paths = genealogy_smoothed_means(result)
                means.extend(p[: len(y)] for p, y in zip(paths, chunk, strict=True))
            return means

        return smooth

    def _regression_start(self, spec, make_spec, series, held_out, smooth, seed):
        """Start the transition as a regression on smoothed states.

        ``smooth`` estimates the states of every training series (the Kalman
        smoother of the linear start, or the particle smoother of the random-walk
        start); the transition network is fitted to them by maximum likelihood
        (:func:`~statemix_sk.training.fit_transition_to_states`, early-stopped
        on the held-out series' smoothed states when there are any), and the
        proposal starts as the locally optimal proposal for the fitted
        transition's noise. Returns the spec that starts there.
        """
        # The regression is fitted with one component, then each of the S
        # components starts from it: fitted with S components, the mixture
        # overfitted 18 Lorenz 96 series (held-out log-likelihood per step
        # -17.3, against -15.5 with one component).
        one_head = spec.transition_head._replace(n_components=1)
        one_spec = spec._replace(transition_head=one_head)
        rng = numpy.random.default_rng(seed)
        params = one_spec.init_params(rng)
        with numpy.errstate(all="ignore"):
            fitted, noise_scale = fit_transition_to_states(
                params,
                one_spec,
                smooth(series),
                None if held_out is None else smooth(held_out),
                rng=rng,
            )
        # Near-zero output weights, without the linear drift (in the fit already).
        start = spec._replace(transition_drift=None).init_params(rng)["transition"]
        transition = expand_components(
            fitted["transition"], one_head, spec.transition_head, start
        )
        return make_spec(noise_scale, transition)

    def _start_score(self, spec, Y, validation, seed):
        """Fixed-seed log-likelihood per step of a start (held-out data if any)."""
        params = spec.init_params(numpy.random.default_rng(seed))
        settings = self._settings()
        with numpy.errstate(all="ignore"):
            if validation is not None:
                score = validation_log_likelihood(
                    params, spec, validation, settings, seed
                )
            else:
                score = float(
                    mean_log_likelihood(
                        params, spec, Y, count_observed_steps(Y), settings, seed
                    )
                )
        return score if numpy.isfinite(score) else -numpy.inf

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

    def _split_validation(self, series, random_state):
        """Return the training series, the :class:`Validation` and its series.

        See ``early_stopping``: whole series are held out when there are two or
        more, otherwise the last windows of the one series; None (twice) when
        ``early_stopping`` is False or the data are too few.
        """
        if self.early_stopping is False:
            return series, None, None
        n_series = len(series)
        if n_series >= 2:
            n_held = min(
                int(numpy.ceil(self.validation_fraction * n_series)), n_series - 1
            )
            order = random_state.permutation(n_series)
            held = sorted(order[:n_held])
            kept = sorted(order[n_held:])
            held_out = [series[i] for i in held]
            training = [series[i] for i in kept]

            def observed(sequences):
                return any(numpy.any(~numpy.isnan(one)) for one in sequences)

            # Both parts need an observation to learn from and to score.
            if observed(held_out) and observed(training):
                return training, Validation(_pad(held_out)), held_out
        n_steps = len(series[0])
        n_windows = -(-n_steps // self.window_length)
        if n_series == 1 and n_windows >= 2:
            n_held = min(
                int(numpy.ceil(self.validation_fraction * n_windows)), n_windows - 1
            )
            first_held = (n_windows - n_held) * self.window_length
            held = series[0][first_held:]
            if numpy.any(~numpy.isnan(held)) and numpy.any(
                ~numpy.isnan(series[0][:first_held])
            ):
                return (
                    [series[0][:first_held]],
                    Validation(series[0][None], first_step=first_held),
                    [series[0][first_held:]],
                )
        if self.early_stopping is True:
            raise ValueError(
                "early_stopping=True needs data to hold out: two series or more "
                "with observations among both the held-out and the training "
                "series, or one series of at least two windows (window_length="
                f"{self.window_length}) with observations in both parts; got "
                f"{n_series} series of {n_steps} steps. Use early_stopping='auto' "
                "or False to train on all the data."
            )
        return series, None, None

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
        series, validation, held_out = self._split_validation(series, random_state)
        # The scales and the linear start (a few parameters per state) are read
        # off all the data; what has the capacity to overfit (the networks, the
        # regression start) learns from the training part only.
        stats, increments, initial_mean, initial_scale = self._state_statistics(
            all_series, observation
        )
        n_states = observation.n_states
        drift, transition_scale, linear = self._dynamics_start(
            all_series, observation, stats, increments, initial_mean, initial_scale
        )
        periodic = self._resolve_periodic(observation, initial_mean, initial_scale)
        if periodic.size:
            stats = stats._replace(periodic=periodic)
            if drift is not None:
                # The linear part multiplies sin(x) where x is a phase: the
                # linear start cannot act on a phase.
                drift = drift.copy()
                drift[:, periodic] = 0.0

        def head(initial_scale):
            return make_mixture_head(
                self.n_components,
                n_states,
                location_scale=increments,
                initial_scale=initial_scale,
                scale_bounds=_SCALE_BOUNDS,
                covariance_type=self.covariance_type,
            )

        def make_spec(noise_scale, transition_params=None):
            # The proposal starts as the locally optimal proposal for a Gaussian
            # transition of this noise, around the transition's mean.
            gain, proposal_scale = self._proposal_start(
                observation, noise_scale, increments
            )
            return StateMixSpec(
                head(transition_scale),
                head(proposal_scale),
                stats,
                observation,
                initial_mean,
                initial_scale,
                hidden_layer_sizes,
                transition_drift=drift,
                proposal_gain=gain,
                transition_params=transition_params,
            )

        spec = make_spec(transition_scale)
        Y_padded = _pad(series)
        start = "linear" if linear is not None else "random_walk"
        if self.init_dynamics == "regression":
            if linear is not None:
                smooth = self._kalman_smoother(spec, linear)
            else:
                smooth = self._particle_smoother(spec, int(start_seed))
            regression = self._regression_start(
                spec, make_spec, series, held_out, smooth, int(start_seed)
            )
            # The regression is fitted to smoothed states, not to the data: the
            # filter's likelihood of held-out data (or, without any, of the
            # training data) decides whether it beats the linear (or random-walk)
            # start. On linear-Gaussian data it does not (smoothed states are
            # smoother than the true ones, so its noise comes out too small).
            start_score, regression_score = (
                self._start_score(candidate, Y_padded, validation, int(start_seed))
                for candidate in (spec, regression)
            )
            if regression_score > start_score:
                spec, start = regression, "regression"
        warm = self.warm_start and hasattr(self, "params_")
        if warm:
            # The previous parameters can start this fit only if every array has
            # the shape this fit's networks need.
            fresh = spec.init_params(numpy.random.default_rng(0))
            shapes = [numpy.shape(a) for a in _leaves(fresh)]
            warm = shapes == [numpy.shape(a) for a in _leaves(self.params_)]
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
            init_params=self.params_ if warm else None,
        )
        for index, result in enumerate(results):
            if result.diverged:
                warnings.warn(
                    f"Restart {index} produced a non-finite log-likelihood or "
                    f"gradient in epoch {result.n_iter} and was stopped there; "
                    "its best finite parameters are kept. A smaller learning_rate "
                    "may help.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        scores = numpy.array(
            [
                result.score if validation is None else result.validation_score
                for result in results
            ]
        )
        finite = numpy.isfinite(scores)
        if not finite.any():
            raise ValueError(
                "Every restart diverged: no parameters gave a finite "
                "log-likelihood. Check the observation model and its noise against "
                "the data, or lower learning_rate."
            )
        best = results[int(numpy.argmax(numpy.where(finite, scores, -numpy.inf)))]
        if not best.converged and not best.diverged:
            warnings.warn(
                f"StateMixFilter did not converge in max_iter={self.max_iter} "
                f"epochs: its score was still improving by more than tol="
                f"{self.tol} within n_iter_no_change={self.n_iter_no_change} "
                "epochs. Increase max_iter, or check history_.",
                ConvergenceWarning,
                stacklevel=2,
            )
        model, proposal = spec.build(best.params)
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
                        model, candidate, validation, settings, int(eval_seed)
                    )
                    for candidate in (proposal, None)
                )
            uses_proposal = not transition > learned
        if not uses_proposal:
            proposal = BootstrapProposal()
        # Every fitted attribute is set here, together, after all the work: an
        # interrupted fit leaves the estimator as it was.
        self.spec_ = spec
        self.params_ = best.params
        self.model_ = model
        self.proposal_ = proposal
        self.observation_ = observation
        self.n_states_ = n_states
        self.periodic_states_ = periodic
        self.initial_state_mean_ = initial_mean
        self.initial_state_scale_ = initial_scale
        Y_all = _pad(all_series)
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


# --------------------------------------------------------------------------------------
# Filters given a known model
# --------------------------------------------------------------------------------------

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
