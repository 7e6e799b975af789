"""The base of every filter estimator: input handling and the filtering API.

:class:`_ParticleFilterEstimator` is what :class:`~statemix_sk.estimator.\
StateMixFilter` and the filters with a known model
(:mod:`statemix_sk.known_model_filters`) share: ``predict`` / ``transform``
(filtered means), ``score`` (log-likelihood per observed step),
``score_samples``, ``filter``, ``smooth`` (smoothed means), ``forecast`` and
``sample``, all run by :func:`statemix_sk.filtering.particle_filter` with the
fitted ``model_`` and ``proposal_``; and pickling with a version check. This
layer and input validation are the only users of scikit-learn.
"""

import contextlib
import warnings

import numpy
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._utils import check_positive_int, pad_series, validate_series
from .filtering import DegeneracyWarning, FilterResult, particle_filter
from .forecasting import ForecastResult, forecast
from .models import simulate
from .objective import count_observed_steps
from .smoothing import ffbs_smoothed_moments

__all__ = ["InconsistentVersionWarning"]


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


# Floats of stored particles (40 MB) per filter pass of ``smooth``; more series
# are filtered and smoothed a few at a time.
_SMOOTHER_FLOATS = 5_000_000


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
                pad_series(series),
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
        n_observed = count_observed_steps(pad_series(series))
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
