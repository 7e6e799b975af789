"""Preprocessing for several series: any 2-D transformer in front of the filters.

scikit-learn's transformers take one 2-D array of samples, so ``make_pipeline(
StandardScaler(), StateMixFilter())`` works for one series only: a 3-D array or a
list of series fails in the scaler's input check. :class:`PerStepTransformer`
reads each time step of each series as one sample. It fits the wrapped
transformer once, on the time steps of all series stacked, and applies it to each
series, returning the series in the form they came in (the same form the
estimators accept: a 2-D array, a 3-D array or a list of 2-D arrays of any
lengths). NaN entries are missing observations and stay NaN, when the wrapped
transformer lets them through (scikit-learn's scalers do).
"""

from typing import ClassVar

import numpy
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._utils import ndim_or_none, validate_series

__all__ = ["PerStepTransformer"]


def _transformer_has(method):
    """Tell ``available_if`` whether the wrapped transformer has ``method``."""

    def check(self):
        # The fitted clone when there is one, as scikit-learn's meta-estimators do.
        transformer = getattr(self, "transformer_", self.transformer)
        return hasattr(transformer, method)

    return check


def _call(transformer, method, rows, name):
    """Call ``transformer.method(rows)``; say so when NaN in ``rows`` is refused."""
    try:
        return getattr(transformer, method)(rows)
    except ValueError as exc:
        if not numpy.isnan(rows).any():
            raise
        # The call itself decides, not the transformer's allow_nan tag: a
        # FunctionTransformer(numpy.log1p) passes NaN through although its tag
        # says it does not.
        raise ValueError(
            f"{type(transformer).__name__}.{method} refused {name}, which has NaN "
            "entries (missing observations). The filters handle missing "
            "observations themselves, so wrap a transformer that lets NaN through "
            "(StandardScaler, MinMaxScaler, MaxAbsScaler and RobustScaler do) "
            f"rather than imputing. {type(transformer).__name__} said: {exc}"
        ) from exc


def _allows_nan(transformer):
    """Return the wrapped transformer's ``allow_nan`` tag, or None without tags."""
    try:
        return get_tags(transformer).input_tags.allow_nan
    except AttributeError:  # not a scikit-learn estimator: it decides for itself
        return None


class PerStepTransformer(TransformerMixin, BaseEstimator):
    """Fit a 2-D transformer on the time steps of all series; apply it per series.

    The name says what it does: every time step (row) of every series is one
    sample of the wrapped transformer. ``fit`` stacks the rows of all series and
    fits a clone of ``transformer`` on them once, so that every series is scaled
    alike (a scaler fitted per series would erase the differences in level and
    spread between series, which the filters need to see). ``transform`` applies
    the fitted clone to each series and returns the series in the form they were
    given: a 2-D array for one series, a 3-D array for several of one length, a
    list for several of any lengths. It puts scikit-learn preprocessing in front
    of the estimators in a :class:`~sklearn.pipeline.Pipeline`, which also works
    in :class:`~sklearn.model_selection.GridSearchCV` and
    :func:`~sklearn.model_selection.cross_val_score` with several series.

    After a scaler the estimator sees scaled observations: its
    ``observation_noise`` is in scaled units (the noise standard deviation in
    data units divided by the scaler's ``scale_``), and its predicted states are
    in the scaled space; :meth:`inverse_transform` brings them back to the data's
    units when the observation is the identity (see :doc:`/user_guide/data`).

    Parameters
    ----------
    transformer : transformer object
        A scikit-learn-style transformer of 2-D arrays (``fit`` and
        ``transform``, and ``inverse_transform`` for :meth:`inverse_transform`),
        which maps each row to one row. It is cloned in ``fit`` and left as it
        is. NaN marks a missing observation; a transformer must let NaN through
        (the scalers ``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler`` and
        ``RobustScaler`` do) if ``Y`` has any.

    Attributes
    ----------
    transformer_ : transformer object
        The clone of ``transformer`` fitted on the stacked time steps.
    n_features_in_ : int
        The number of features of each series seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features,)
        The column names, when ``fit`` was given one series as a data frame with
        string column names.

    See Also
    --------
    statemix_sk.estimator.StateMixFilter : the estimator it is meant to precede.

    Examples
    --------
    >>> import numpy
    >>> from sklearn.preprocessing import StandardScaler
    >>> from statemix_sk import PerStepTransformer
    >>> Y = [numpy.array([[0.0, 10.0], [2.0, numpy.nan], [4.0, 30.0]]),
    ...      numpy.array([[6.0, 50.0], [8.0, 70.0]])]
    >>> scaler = PerStepTransformer(StandardScaler()).fit(Y)
    >>> scaler.transformer_.mean_
    array([ 4., 40.])
    >>> scaled = scaler.transform(Y)
    >>> [one.shape for one in scaled]
    [(3, 2), (2, 2)]
    >>> scaled[0].round(2)
    array([[-1.41, -1.34],
           [-0.71,   nan],
           [ 0.  , -0.45]])
    >>> numpy.allclose(scaler.inverse_transform(scaled)[1], Y[1])
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "transformer": [HasMethods(["fit", "transform"])],
    }

    def __init__(self, transformer):
        self.transformer = transformer

    def __sklearn_tags__(self):
        """Return the tags: 3-D input accepted, NaN where the transformer allows it."""
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.sparse = False
        # NaN passes through only if the wrapped transformer lets it.
        tags.input_tags.allow_nan = bool(_allows_nan(self.transformer))
        return tags

    # ----------------------------------------------------------------------------
    # Input
    # ----------------------------------------------------------------------------

    def _validate_series(self, Y, *, reset, check_n_features=True):
        """Return the series as a list of 2-D float arrays, and the input's kind.

        Read as :class:`~statemix_sk.estimator.StateMixFilter` reads them
        (:func:`~statemix_sk._utils.validate_series`), with a clear error for
        more than three dimensions.
        """
        dimensions = ndim_or_none(Y)
        several = isinstance(Y, list | tuple) and (
            len(Y) == 0 or ndim_or_none(Y[0]) == 2
        )
        if not several and dimensions is not None and dimensions > 3:
            raise ValueError(
                "Y must be one series, a 2-D array (n_steps, n_features); several "
                "series of one length, a 3-D array (n_series, n_steps, n_features); "
                f"or a list of 2-D series of any lengths. Got {dimensions}-D input."
            )
        return validate_series(self, Y, reset=reset, check_n_features=check_n_features)

    @staticmethod
    def _restore(outputs, kind):
        """Give the per-series outputs the form of the input."""
        if kind == "single":
            return outputs[0]
        if kind == "array":
            return numpy.stack(outputs)
        return outputs

    def _apply(self, method, series, kind):
        """Apply the fitted transformer's ``method`` to each series, row for row."""
        outputs = []
        for index, one in enumerate(series):
            name = "Y" if kind == "single" else f"Y[{index}]"
            output = _call(self.transformer_, method, one, name)
            if scipy.sparse.issparse(output):
                raise ValueError(
                    f"{type(self.transformer_).__name__}.{method} returned a sparse "
                    f"matrix for {name}; the filters need dense series (set the "
                    "transformer's sparse_output=False, say)."
                )
            output = numpy.asarray(output)
            if output.ndim != 2 or len(output) != len(one):
                raise ValueError(
                    f"{type(self.transformer_).__name__}.{method} returned an array "
                    f"of shape {output.shape} for {name}, which has {len(one)} "
                    "steps: PerStepTransformer needs a transformer that maps each "
                    "time step (row) to one row."
                )
            outputs.append(output)
        return self._restore(outputs, kind)

    # ----------------------------------------------------------------------------
    # Fitting and transforming
    # ----------------------------------------------------------------------------

    @_fit_context(
        # The wrapped transformer validates its own parameters when it is fitted.
        prefer_skip_nested_validation=False
    )
    def fit(self, Y, y=None):
        """Fit the transformer on the time steps of all series, stacked.

        Parameters
        ----------
        Y : array-like of shape (n_steps, n_features), or of shape (n_series, \
n_steps, n_features), or list of array-like of shape (n_steps_i, n_features)
            One series, several of one length, or several of any lengths. NaN
            marks a missing entry.
        y : None
            Ignored; present for the scikit-learn API.

        Returns
        -------
        self : PerStepTransformer
            The fitted transformer.
        """
        series, _ = self._validate_series(Y, reset=True)
        transformer = clone(self.transformer)
        _call(transformer, "fit", numpy.concatenate(series), "Y")
        self.transformer_ = transformer
        return self

    def transform(self, Y):
        """Apply the fitted transformer to each series.

        Parameters
        ----------
        Y : array-like or list of array-like
            As in :meth:`fit`, with the same number of features.

        Returns
        -------
        Y_transformed : ndarray or list of ndarray
            The transformed series, in the form of ``Y`` (2-D, 3-D or a list).
            NaN entries stay NaN when the transformer lets them through.
        """
        check_is_fitted(self)
        series, kind = self._validate_series(Y, reset=False)
        return self._apply("transform", series, kind)

    @available_if(_transformer_has("inverse_transform"))
    def inverse_transform(self, Y):
        """Undo the transformation of each series.

        Available only when the wrapped transformer has ``inverse_transform``.
        It brings predicted states back to the data's units when the
        observation is the identity (the default of the estimators).

        Parameters
        ----------
        Y : array-like or list of array-like
            Transformed series, or predicted states, in one of the forms of
            :meth:`fit`, with as many features as the transformer's output.

        Returns
        -------
        Y_original : ndarray or list of ndarray
            The series in the units of the data given to ``fit``, in the form of
            ``Y``.
        """
        check_is_fitted(self)
        # The output may have another number of features than the input (a PCA,
        # say): the wrapped transformer checks that number itself.
        series, kind = self._validate_series(Y, reset=False, check_n_features=False)
        return self._apply("inverse_transform", series, kind)
